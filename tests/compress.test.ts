// Dense → block low-rank factorisations (models/factorize.ts) and `blr compress` on a real model.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Rng } from '../engine/rng.ts';
import { blrToDense, type BlrFactors, type BlrShape } from '../kernels/cpu/blr.ts';
import { transpose } from '../kernels/cpu/ops.ts';
import { compressCheckpoint, rankForRatio } from '../models/compress.ts';
import { compressBlast, compressLowRank, compressMonarch, relativeError } from '../models/factorize.ts';
import { ShardedSafetensors } from '../weights/safetensors.ts';
import { gpuForTests } from './gpu.ts';
import { DEFAULT_MODEL, runBlr, tempDirectory, tinyModelDirectory } from './helpers.ts';

/** Whether the subprocess's `--backend webgpu` will find an adapter (in CI it must: gpuForTests throws). */
const gpuAvailable = (await gpuForTests()).backend !== undefined;

const rng = new Rng(77);
const random = (n: number) => Float32Array.from({ length: n }, () => rng.normal());

describe('factorisations', () => {
  it('low-rank recovers a matrix of that rank, and truncates a general one to its best approximation', () => {
    const shape = { inFeatures: 20, outFeatures: 30, rank: 5, blocks: 1 };
    const exact = blrToDense({ method: 'lowrank', v: random(100), u: random(150) }, shape);
    expect(relativeError(exact, blrToDense(compressLowRank(exact, shape), shape))).toBeLessThan(1e-6);
    // W = Q1 diag(σ) Q2ᵀ with σ = 10, 9, …, 1: the best rank-3 error is √(Σ_{t>3} σ²) / √(Σ σ²).
    const q1 = orthonormal(30, 10), q2 = orthonormal(20, 10);
    const sigma = Array.from({ length: 10 }, (_, t) => 10 - t);
    const w = new Float32Array(30 * 20);
    for (let a = 0; a < 30; a++) for (let b = 0; b < 20; b++) for (let t = 0; t < 10; t++) w[a * 20 + b] += q1[a][t] * sigma[t] * q2[b][t];
    const best = Math.sqrt(sigma.slice(3).reduce((s, x) => s + x * x, 0) / sigma.reduce((s, x) => s + x * x, 0));
    const three = { inFeatures: 20, outFeatures: 30, rank: 3, blocks: 1 };
    expect(relativeError(w, blrToDense(compressLowRank(w, three), three))).toBeCloseTo(best, 5);
  });

  it('Monarch recovers a Monarch matrix', () => {
    const shape = { inFeatures: 24, outFeatures: 16, rank: 8, blocks: 4 };
    const w = blrToDense({ method: 'monarch', w1: random(8 * 24), w2: random(16 * 8) }, shape);
    expect(relativeError(w, blrToDense(compressMonarch(w, shape), shape))).toBeLessThan(1e-6);
  });

  it('BLAST descends from the low-rank start: below the low-rank error on a BLAST matrix, never above it', () => {
    const shape: BlrShape = { inFeatures: 16, outFeatures: 24, rank: 4, blocks: 2 };
    const w = blrToDense({ method: 'blast', u: random(24 * 4), v: random(4 * 16), s: random(16) }, shape);
    const lowRank = relativeError(w, blrToDense(compressLowRank(w, { ...shape, blocks: 1 }), { ...shape, blocks: 1 }));
    const errors: number[] = [];
    const factors = compressBlast(w, shape, { iterations: 60, onIteration: (_, error) => errors.push(error) });
    const final = relativeError(w, blrToDense(factors, shape));
    expect(errors).toHaveLength(60);
    expect(final).toBeCloseTo(errors.at(-1)!, 4);
    expect(final).toBeLessThan(0.5 * lowRank);
    expect(Math.max(...errors)).toBeLessThanOrEqual(lowRank * 1.001);
  });

  it('turns a ratio into a rank each method can hold', () => {
    expect(rankForRatio('blast', 0.5, 4096, 4096, 16)).toBe(Math.floor((0.5 * 4096 * 4096) / (8192 + 256)));
    expect(rankForRatio('monarch', 0.5, 4096, 4096, 16) % 16).toBe(0);
    expect(rankForRatio('lowrank', 0.5, 64, 172, 1)).toBe(Math.floor((0.5 * 64 * 172) / 236));
    expect(() => rankForRatio('monarch', 0.01, 64, 64, 16)).toThrow(/leaves no rank/);
  });
});

/** n × k with orthonormal columns (Gram–Schmidt on random vectors). */
function orthonormal(n: number, k: number): number[][] {
  const columns: number[][] = [];
  while (columns.length < k) {
    const v = Array.from({ length: n }, () => rng.normal());
    for (const c of columns) {
      const dot = c.reduce((s, x, i) => s + x * v[i], 0);
      c.forEach((x, i) => { v[i] -= dot * x; });
    }
    const norm = Math.hypot(...v);
    columns.push(v.map((x) => x / norm));
  }
  return Array.from({ length: n }, (_, i) => columns.map((c) => c[i]));
}

describe('blr compress', () => {
  const blr = runBlr;

  it('compresses the chosen projections of stories260K, reporting errors that the written factors reproduce, and the result generates', () => {
    const out = path.join(tempDirectory('blr-compress-'), 'monarch');
    const run = blr(['compress', DEFAULT_MODEL, out, '--method', 'monarch', '--blocks', '2', '--rank', '16', '--layers', 'q,up']);
    expect(run.status).toBe(0);
    // One result line per projection (besides where it runs, the adapter's notices, and any progress within a long one).
    const lines = run.stderr.trim().split('\n').filter((l) => /^blr compress: \d+\/\d+ .* MB \(/.test(l));
    expect(lines).toHaveLength(10); // 5 layers × (q, up)
    expect(lines.map((l) => /^blr compress: (\d+)\/10 /.exec(l)?.[1])).toEqual(['1', '2', '3', '4', '5', '6', '7', '8', '9', '10']);
    expect(run.stdout).toMatch(/10 projections as monarch, [\d.]+ → [\d.]+ MB \([\d.]+%\), relative error mean [\d.]+, worst [\d.]+/);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(config.blr_layers['model.layers.0.mlp.up_proj']).toEqual({ method: 'monarch', rank: 16, blocks: 2 });
    // The reported error of layer 3's up_proj, recomputed from the files.
    const line = lines.find((l) => l.includes('model.layers.3.mlp.up_proj'))!;
    const reported = Number(/relative error ([\d.]+)/.exec(line)![1]);
    const original = ShardedSafetensors.openDirectory(DEFAULT_MODEL);
    const written = ShardedSafetensors.openDirectory(out);
    const shape = { inFeatures: 64, outFeatures: 172, rank: 16, blocks: 2 };
    const factors: BlrFactors = { method: 'monarch', w1: written.readFloat32('model.layers.3.mlp.up_proj.W1'), w2: written.readFloat32('model.layers.3.mlp.up_proj.W2') };
    expect(relativeError(original.readFloat32('model.layers.3.mlp.up_proj.weight'), blrToDense(factors, shape))).toBeCloseTo(reported, 3);
    expect(written.has('model.layers.3.mlp.up_proj.weight')).toBe(false);
    expect(written.has('model.layers.3.mlp.down_proj.weight')).toBe(true);
    original.close();
    written.close();
    const generated = blr(['generate', 'Once upon a time', '--model', out, '--max-tokens', '8']);
    expect(generated.status).toBe(0);
    expect(generated.stderr).toMatch(/loaded in/);
  });

  it('compresses a GPT-2 checkpoint (Conv1D weights, in × out): factors of the transposed weight, and the result generates', () => {
    const input = tinyModelDirectory('gpt2-style');
    const out = path.join(tempDirectory('blr-compress-'), 'gpt2-blast');
    const run = blr(['compress', input, out, '--method', 'blast', '--blocks', '2', '--rank', '8', '--layers', 'c_attn,c_proj', '--iterations', '20']);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/4 projections as blast/); // 2 layers × (c_attn, mlp c_proj)
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(Object.keys(config.blr_layers).sort()).toEqual(['h.0.attn.c_attn', 'h.0.mlp.c_proj', 'h.1.attn.c_attn', 'h.1.mlp.c_proj']);
    const line = run.stderr.split('\n').find((l) => l.includes('h.1.attn.c_attn') && l.includes(' MB ('))!;
    const reported = Number(/relative error ([\d.]+)/.exec(line)![1]);
    const original = ShardedSafetensors.openDirectory(input);
    const written = ShardedSafetensors.openDirectory(out);
    const shape = { inFeatures: 64, outFeatures: 192, rank: 8, blocks: 2 };
    const factors: BlrFactors = { method: 'blast', u: written.readFloat32('h.1.attn.c_attn.B'), v: written.readFloat32('h.1.attn.c_attn.C'), s: written.readFloat32('h.1.attn.c_attn.D') };
    expect(relativeError(transpose(original.readFloat32('h.1.attn.c_attn.weight'), 64, 192), blrToDense(factors, shape))).toBeCloseTo(reported, 3);
    expect(written.has('h.1.attn.c_attn.weight')).toBe(false);
    expect(written.has('h.1.attn.c_attn.bias')).toBe(true);
    expect(written.has('h.1.attn.c_proj.weight')).toBe(true);
    original.close();
    written.close();
    const generated = blr(['generate', 'Hello, my dog', '--model', out, '--max-tokens', '6']);
    expect(generated.status).toBe(0);
    // A rank too high for the model: written, with a warning that nothing got smaller.
    const larger = blr(['compress', input, path.join(tempDirectory('blr-compress-'), 'gpt2-larger'), '--method', 'lowrank', '--rank', '64', '--layers', 'c_fc']);
    expect(larger.status).toBe(0);
    expect(larger.stderr).toMatch(/warning: 2 of 2 projections are no smaller than their dense weights \(e\.g\. h\.0\.mlp\.c_fc, rank 64/);
  });

  it.skipIf(!gpuAvailable)('compresses on the GPU with --backend webgpu (every method), reporting errors the written factors have', () => {
    const input = tinyModelDirectory('gpt2-style');
    for (const method of ['blast', 'lowrank', 'monarch'] as const) {
      const out = path.join(tempDirectory('blr-compress-'), `gpt2-${method}-gpu`);
      const run = blr(['compress', input, out, '--method', method, '--blocks', '2', '--rank', '8', '--layers', 'c_attn', '--iterations', '30', '--backend', 'webgpu']);
      expect(run.status).toBe(0);
      expect(run.stderr).toMatch(/factorising on WebGPU/);
      const line = run.stderr.split('\n').find((l) => l.includes('h.1.attn.c_attn') && l.includes(' MB ('))!;
      expect(line).toMatch(/on the GPU\)$/);
      const reported = Number(/relative error ([\d.]+)/.exec(line)![1]);
      const original = ShardedSafetensors.openDirectory(input);
      const written = ShardedSafetensors.openDirectory(out);
      const shape = { inFeatures: 64, outFeatures: 192, rank: 8, blocks: method === 'lowrank' ? 1 : 2 };
      const factors: BlrFactors = method === 'blast'
        ? { method, u: written.readFloat32('h.1.attn.c_attn.B'), v: written.readFloat32('h.1.attn.c_attn.C'), s: written.readFloat32('h.1.attn.c_attn.D') }
        : method === 'monarch' ? { method, w1: written.readFloat32('h.1.attn.c_attn.W1'), w2: written.readFloat32('h.1.attn.c_attn.W2') }
          : { method, u: written.readFloat32('h.1.attn.c_attn.U'), v: written.readFloat32('h.1.attn.c_attn.V') };
      const weight = transpose(original.readFloat32('h.1.attn.c_attn.weight'), 64, 192);
      expect(relativeError(weight, blrToDense(factors, shape))).toBeCloseTo(reported, 3);
      // As good as the CPU's factorisation of the same weight.
      const cpuFactors = method === 'blast' ? compressBlast(weight, shape, { iterations: 30 }) : method === 'monarch' ? compressMonarch(weight, shape) : compressLowRank(weight, shape);
      const cpu = relativeError(weight, blrToDense(cpuFactors, shape));
      expect(reported).toBeLessThan(1.05 * cpu + 1e-3);
      original.close();
      written.close();
      expect(blr(['generate', 'Hello, my dog', '--model', out, '--max-tokens', '4']).status).toBe(0);
    }
  });

  it('shows progress within a long factorisation (BLAST\'s iterations), then the projection\'s result', async () => {
    const messages: string[] = [];
    const out = path.join(tempDirectory('blr-compress-'), 'progress');
    await compressCheckpoint(DEFAULT_MODEL, out, { method: 'blast', blocks: 2, rank: 8, projections: ['q'], iterations: 4, progressEveryMs: 0, onProgress: (m) => messages.push(m) });
    const first = messages.filter((m) => m.includes('model.layers.0.self_attn.q_proj'));
    expect(first.slice(0, 4).map((m) => /iteration (\d+)\/4, relative error [\d.]+ \(\d+ s\)$/.exec(m)?.[1])).toEqual(['1', '2', '3', '4']);
    expect(first[4]).toMatch(/^1\/5 model\.layers\.0\.self_attn\.q_proj 64→64 blast b2 r8: relative error [\d.]+, /);
    expect(first).toHaveLength(5);
  });

  it('refuses options it cannot honour', () => {
    expect(blr(['compress', DEFAULT_MODEL, 'x', '--method', 'lowrank', '--rank', '4', '--backend', 'tpu']).stderr).toMatch(/--backend must be one of auto, cpu, webgpu/);
    const out = path.join(tempDirectory('blr-compress-'), 'x');
    expect(blr(['compress', DEFAULT_MODEL, out, '--method', 'tucker', '--rank', '4']).status).toBe(2);
    expect(blr(['compress', DEFAULT_MODEL, out, '--method', 'blast', '--blocks', '4']).stderr).toMatch(/give --rank or --ratio/);
    expect(blr(['compress', DEFAULT_MODEL, out, '--method', 'monarch', '--blocks', '3', '--rank', '6', '--layers', 'q']).stderr).toMatch(/multiples of the blocks/);
    expect(blr(['compress', DEFAULT_MODEL, out, '--method', 'lowrank', '--rank', '4', '--layers', 'qkv']).stderr).toMatch(/unknown projection "qkv"/);
    expect(blr(['compress', DEFAULT_MODEL, out, '--method', 'lowrank', '--rank', '4', '--layers', 'c_fc']).stderr).toMatch(/unknown projection "c_fc" for a llama checkpoint/);
  });
});
