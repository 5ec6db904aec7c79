// Our models against Hugging Face transformers (tests/fixtures/reference, produced on the GPU host
// by tests/reference/hf_reference.py from exactly the checkpoints these tests build).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Generator } from '../engine/generate.ts';
import { GREEDY } from '../engine/sampler.ts';
import { CpuBackend } from '../kernels/cpu/backend.ts';
import { loadModel } from '../models/load.ts';
import { KV_BLOCK_SIZE, StepIndices, type StepEntry } from '../models/model.ts';
import type { ModelConfig } from '../models/config.ts';
import { readModelDirectory } from '../weights/model-directory.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../weights/safetensors.ts';
import { DEFAULT_MODEL, maxRelativeError, PROBES, reference, tempDirectory, tinyModelDirectory } from './helpers.ts';

const CASES = [
  { name: 'llama2-style', what: 'Llama-2 style: MHA, untied head, linear RoPE scaling, f32' },
  { name: 'llama3-style', what: 'Llama-3 style: GQA, head_dim from config, llama3 RoPE scaling, tied, bf16' },
  { name: 'gpt2-style', what: 'GPT-2: learned positions, LayerNorm, gelu_new, Conv1D, tied, f32' },
  { name: 'stories260K', what: 'stories260K converted from llama2.c by our converter' },
];

describe.each(CASES)('$name matches transformers ($what)', ({ name }) => {
  const expected = reference(name);
  let cached: ReturnType<typeof readModelDirectory> | undefined;
  const directory = () => (cached ??= readModelDirectory(name === 'stories260K' ? DEFAULT_MODEL : tinyModelDirectory(name)));

  it('tokenizes the prompt and every probe string to the same ids', () => {
    const { tokenizer } = directory();
    expect(tokenizer.encode(expected.prompt)).toEqual(expected.prompt_ids);
    PROBES.forEach((probe, i) => expect(tokenizer.encode(probe), JSON.stringify(probe)).toEqual(expected.probe_ids[i]));
  });

  it('gives the same last-position logits within 1e-4 relative', async () => {
    const model = loadModel(directory(), new CpuBackend());
    const cache = model.createCache(expected.prompt_ids.length);
    const logits = await model.forward(cache, Int32Array.from(expected.prompt_ids), 0);
    const ours = expected.top_ids.map((id) => logits[id]);
    expect(maxRelativeError(ours, expected.top_logits)).toBeLessThan(1e-4);
    // The same tokens are on top, in the same order.
    const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, 4);
    expect(order).toEqual(expected.top_ids.slice(0, 4));
  });

  it('decodes the same greedy tokens, prefilling in chunks', async () => {
    const dir = directory();
    const model = loadModel(dir, new CpuBackend(), { maxStepTokens: 7 });
    const generator = new Generator(model, dir.tokenizer, dir.eosTokenIds);
    const result = await generator.generate({
      promptIds: expected.prompt_ids,
      maxTokens: expected.greedy_ids.length,
      sampling: { ...GREEDY, seed: 0 },
      ignoreEos: true,
    });
    expect(result.ids).toEqual(expected.greedy_ids);
    expect(result.finishReason).toBe('length');
  });
});

describe('stories260K (the default model)', () => {
  it('writes the story transformers writes', async () => {
    const expected = reference('stories260K');
    expect(expected.greedy_text).toContain('Lily');
    const dir = readModelDirectory(DEFAULT_MODEL);
    const generator = new Generator(loadModel(dir, new CpuBackend()), dir.tokenizer, dir.eosTokenIds);
    const result = await generator.generate({ promptIds: dir.tokenizer.encode('Once upon a time'), maxTokens: expected.greedy_ids.length, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true });
    expect(result.ids).toEqual(expected.greedy_ids);
    expect(result.text).toBe(expected.greedy_text);
  });
});

describe('loading bad checkpoints', () => {
  function brokenCopy(edit: (tensors: TensorToWrite[], config: Record<string, unknown>) => void): string {
    const source = tinyModelDirectory('llama2-style');
    const target = tempDirectory('broken');
    for (const file of fs.readdirSync(source)) fs.copyFileSync(path.join(source, file), path.join(target, file));
    const weights = SafetensorsFile.open(path.join(source, 'model.safetensors'));
    const tensors = weights.names().map((name) => ({ name, dtype: weights.info(name).dtype, shape: weights.info(name).shape, data: weights.readBytes(name) }));
    weights.close();
    const config = JSON.parse(fs.readFileSync(path.join(source, 'config.json'), 'utf8'));
    edit(tensors, config);
    writeSafetensors(path.join(target, 'model.safetensors'), tensors);
    fs.writeFileSync(path.join(target, 'config.json'), JSON.stringify(config));
    return target;
  }
  const load = (dir: string) => loadModel(readModelDirectory(dir), new CpuBackend());

  it('names the checkpoint and the missing tensor', () => {
    const dir = brokenCopy((tensors) => tensors.splice(tensors.findIndex((t) => t.name === 'model.layers.1.mlp.up_proj.weight'), 1));
    expect(() => load(dir)).toThrow(`${dir}: missing tensor "model.layers.1.mlp.up_proj.weight" (expected shape [172,64])`);
  });

  it('names the file and tensor whose shape disagrees with the config', () => {
    const dir = brokenCopy((_, config) => { config.intermediate_size = 171; });
    expect(() => load(dir)).toThrow(new RegExp(`${path.join(dir, 'model.safetensors')}: tensor "model.layers.0.mlp.gate_proj.weight" has shape \\[172,64\\] but the config implies \\[171,64\\]`));
  });

  it('says which config field is unsupported', () => {
    const dir = brokenCopy((_, config) => { config.model_type = 'mamba'; });
    expect(() => load(dir)).toThrow(/config.json: model_type "mamba" is not supported \(supported: llama, blast_llama, gpt2\)/);
    const scaling = brokenCopy((_, config) => { config.rope_scaling = { rope_type: 'yarn', factor: 2 }; });
    expect(() => load(scaling)).toThrow(/rope_scaling type "yarn" is not supported/);
  });
});

describe('a step\'s attention segments', () => {
  it('merge decoding rows into one call marked as many sequences, and give each prompt chunk its own, marked one sequence', () => {
    const be = new CpuBackend();
    const config = { maxPositions: 64, vocabSize: 10 } as ModelConfig;
    const indices = new StepIndices(be, config, 32, 8, be.allocateIndices(8));
    const cache = be.createKVCache({ layers: 1, kvHeads: 1, headDim: 4, blocks: 8, blockSize: KV_BLOCK_SIZE, sequences: 8, vocabSize: 10 });
    const decoding = (slot: number, position: number): StepEntry => ({ sequence: { slot, blockTable: [slot] }, tokens: Int32Array.of(1), startPosition: position, logits: true });
    const plan = indices.set(cache, [
      decoding(0, 5), decoding(1, 9), decoding(2, 3),
      { sequence: { slot: 3, blockTable: [3] }, tokens: Int32Array.of(1, 2, 3, 4, 5), startPosition: 0, logits: true },
      decoding(4, 7),
    ]);
    expect(plan.segments).toEqual([
      { firstRow: 0, rows: 3, length: 10, oneSequence: false },
      { firstRow: 3, rows: 5, length: 5, oneSequence: true },
      { firstRow: 8, rows: 1, length: 8, oneSequence: true },
    ]);
  });
});
