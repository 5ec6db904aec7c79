// The blr command as a user runs it: a subprocess, its stdout, stderr and exit code.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compressCheckpoint } from '../models/compress.ts';
import { gpuForTests } from './gpu.ts';
import { DEFAULT_MODEL, reference, runBlr, STORIES_SOURCES, tempDirectory, tinyModelDirectory } from './helpers.ts';

const blr = runBlr;
/** Whether `--backend webgpu` will find an adapter (in CI it must: gpuForTests throws). */
const gpuAvailable = (await gpuForTests()).backend !== undefined;

describe('blr generate', () => {
  const expected = reference('stories260K');

  // On the CPU backend: `auto` takes a hardware GPU where there is one (the GPU host's), whose f16
  // weights may tell the story differently from the f32 one this checks.
  it('streams the bundled model story after the prompt', () => {
    const run = blr(['generate', 'Once upon a time', '--max-tokens', '40', '--backend', 'cpu']);
    expect(run.status).toBe(0);
    expect(run.stdout.startsWith('Once upon a time, there was a little girl named Lily.')).toBe(true);
    expect(run.stderr).toMatch(/stories260K \(llama, 0\.26M parameters\) on CPU/);
    expect(run.stderr).toMatch(/40 tokens \(finish: length\); prompt 5 tokens in [\d.]+ ms; decode \d+ tokens\/s/);
  });

  it('prints one JSON line with the ids transformers produces', () => {
    const run = blr(['generate', 'Once upon a time', '--json', '--ignore-eos', '--max-tokens', String(expected.greedy_ids.length)]);
    expect(run.status).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const out = JSON.parse(lines[0]);
    expect(Object.keys(out)).toEqual(['prompt_ids', 'ids', 'text', 'finish_reason', 'timings']);
    expect(out.prompt_ids).toEqual(expected.prompt_ids);
    expect(out.ids).toEqual(expected.greedy_ids);
    expect(out.text).toBe(expected.greedy_text);
    expect(out.finish_reason).toBe('length');
    expect(Object.keys(out.timings)).toEqual(['load_ms', 'prefill_ms', 'decode_tokens_per_s', 'backend']);
    expect(out.timings.decode_tokens_per_s).toBeGreaterThan(0);
  });

  it('reads the prompt from stdin, samples reproducibly with a seed, and stops at --stop', () => {
    const args = ['generate', '--json', '--temperature', '0.9', '--top-p', '0.9', '--seed', '5', '--max-tokens', '30'];
    const a = JSON.parse(blr(args, 'Once upon a time').stdout);
    const b = JSON.parse(blr(args, 'Once upon a time').stdout);
    expect(a.prompt_ids).toEqual(expected.prompt_ids);
    expect(a.ids).toEqual(b.ids);
    const stopped = JSON.parse(blr(['generate', 'Once upon a time', '--json', '--stop', 'Lily']).stdout);
    expect(stopped.text).toBe(', there was a little girl named ');
    expect(stopped.finish_reason).toBe('stop');
  });

  // The GPU's KV cache in f16 (its default where the adapter has shader-f16) and in f32.
  it.skipIf(!gpuAvailable)('generates the same greedy ids on WebGPU with either KV cache', () => {
    const ids = (['f16', 'f32'] as const).map((kv) => {
      const run = blr(['generate', 'Once upon a time', '--json', '--ignore-eos', '--backend', 'webgpu', '--kv-cache', kv, '--max-tokens', String(expected.greedy_ids.length)]);
      expect(run.status, run.stderr).toBe(0);
      return JSON.parse(run.stdout).ids;
    });
    expect(ids[0]).toEqual(expected.greedy_ids);
    expect(ids[1]).toEqual(expected.greedy_ids);
  });

  it('shows help', () => {
    const run = blr(['generate', '--help']);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/Usage: blr generate \[PROMPT\]/);
    expect(blr(['--help']).stdout).toMatch(/generate \[PROMPT\]/);
  });

  it.each([
    [['generate', 'hi', '--bogus'], 2, /Unknown option '--bogus'/],
    [['generate', 'hi', '--temperature', 'hot'], 2, /--temperature must be a number ≥ 0, got "hot"/],
    [['generate', 'hi', '--backend', 'tpu'], 2, /--backend must be one of auto, cpu, webgpu/],
    [['generate', 'hi', '--kv-cache', 'f8'], 2, /--kv-cache must be one of f32, f16, got "f8"/],
    [['generate', 'hi', '--model', '/no/such/dir'], 1, /\/no\/such\/dir: model directory not found/],
    [['frobnicate'], 2, /unknown command "frobnicate"/],
  ])('blr %j exits %i with a clear message', (args, status, message) => {
    const run = blr(args);
    expect(run.status).toBe(status);
    expect(run.stderr).toMatch(message);
  });

  it('names the file and tensor of a truncated checkpoint', () => {
    const dir = tempDirectory('corrupt');
    for (const file of fs.readdirSync(DEFAULT_MODEL)) fs.copyFileSync(path.join(DEFAULT_MODEL, file), path.join(dir, file));
    const weights = path.join(dir, 'model.safetensors');
    fs.truncateSync(weights, fs.statSync(weights).size - 1000);
    const run = blr(['generate', 'hi', '--model', dir]);
    expect(run.status).toBe(1);
    expect(run.stderr).toContain(weights);
    expect(run.stderr).toMatch(/tensor "[^"]+": data_offsets end at byte \d+ but the file holds only \d+ data bytes \(truncated file\?\)/);
  });
});

describe('blr convert', () => {
  it('converts both stories260K sources into model directories that generate the same story', () => {
    const out = tempDirectory('cli-convert');
    for (const source of ['stories260K.bin', 'stories260K.gguf']) {
      const target = path.join(out, source);
      const run = blr(['convert', path.join(STORIES_SOURCES, source), target]);
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/47 tensors, 260,032 parameters/);
      expect(run.stderr).toMatch(/blr convert: tensor 47\/47 model.norm.weight \[64\] F32/);
    }
    const stories = (dir: string) => JSON.parse(blr(['generate', 'Once upon a time', '--json', '--model', dir, '--max-tokens', '24']).stdout).ids;
    expect(stories(path.join(out, 'stories260K.gguf'))).toEqual(stories(path.join(out, 'stories260K.bin')));
    expect(stories(path.join(out, 'stories260K.bin'))).toEqual(reference('stories260K').greedy_ids.slice(0, 24));
  });

  it('needs INPUT and OUTDIR', () => {
    const run = blr(['convert', 'only-one']);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/expected INPUT and OUTDIR/);
  });
});

describe('blr roofline', () => {
  it('prints each layer at each token count for dense, PyTorch-style and fused BLR, the model totals, and an SVG', () => {
    const svg = path.join(tempDirectory('blr-roofline-'), 'gpt2-roofline.svg');
    const run = blr(['roofline', '--model', 'gpt2', '--device', 'a40', '--tokens', '1,1024', '--svg', svg]);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^gpt2 on a40 \(696 GB\/s, 149\.7 TFLOP\/s/);
    // c_fc 768 → 3072 as Monarch (b 4, r 192) at N = 1: dense reads 2(768 + 768·3072 + 3072) bytes.
    expect(run.stdout).toContain('| mlp.c_fc | 768 → 3072 | monarch b4 r192 | 12 | 1 | dense | 4.73 |');
    for (const method of ['lowrank', 'monarch', 'blast']) expect(run.stdout).toMatch(new RegExp(`\\| ${method} \\| 1024 \\| [\\d.]+ \\| [\\d.]+ \\| [\\d.]+ \\| [\\d.]+x \\|`));
    const plot = fs.readFileSync(svg, 'utf8');
    expect(plot).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    expect(plot.match(/<circle /g)!.length).toBe(3 * 3 * 2 * 3 + 3); // layers × methods × N × variants, plus the legend
  });

  it('takes a measured device, and refuses what it cannot use', () => {
    const json = blr(['roofline', '--model', 'llama-3.2-1b', '--method', 'blast', '--bandwidth', '3800', '--peak', '700', '--tokens', '16', '--json']);
    expect(json.status).toBe(0);
    const points = JSON.parse(json.stdout).points as { layer: string; variant: string; bound: string }[];
    expect(points.map((p) => `${p.layer}/${p.variant}`)).toContain('gate/fused');
    expect(points.every((p) => p.bound === 'memory')).toBe(true);
    expect(blr(['roofline', '--model', 'gpt2', '--device', 'tpu']).stderr).toMatch(/unknown --device "tpu"/);
    expect(blr(['roofline', '--model', 'gpt2', '--bandwidth', '100']).status).toBe(2);
    const dense = blr(['roofline', '--model', DEFAULT_MODEL]);
    expect(dense.status).toBe(1);
    expect(dense.stderr).toMatch(/no projection is stored in block low-rank form/);
  });

  it('reads the block low-rank projections of a GPT-2 checkpoint directory', async () => {
    const directory = path.join(tempDirectory('blr-roofline-'), 'gpt2-monarch');
    await compressCheckpoint(tinyModelDirectory('gpt2-style'), directory, { method: 'monarch', blocks: 4, rank: 8, projections: ['c_attn', 'c_proj'], iterations: 1 });
    const run = blr(['roofline', '--model', directory, '--device', 'h200', '--tokens', '1']);
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('| c_attn | 64 → 192 | monarch b4 r8 | 2 | 1 | dense |');
    expect(run.stdout).toContain('| c_proj | 256 → 64 | monarch b4 r8 | 2 | 1 | dense |');
  });
});
