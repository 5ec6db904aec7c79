// Block low-rank checkpoints, end to end: a tiny Llama whose projections are stored as low-rank,
// Monarch and BLAST factors — in our format (config blr_layers) and in the BLAST authors' Hugging
// Face format (model_type blast_llama) — gives the logits of its dense twin, whose weights are the
// factors' dense equivalents (kernels/cpu/blr.ts toDense). And bad ones are refused by name.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Rng } from '../engine/rng.ts';
import { CpuBackend } from '../kernels/cpu/backend.ts';
import { blrToDense, type BlrFactors } from '../kernels/cpu/blr.ts';
import { parseModelConfig } from '../models/config.ts';
import { loadModel } from '../models/load.ts';
import { SeparateLinears, StackedBlockLinears, StackedLowRankLinears } from '../models/linear.ts';
import { WeightReader } from '../models/model.ts';
import { loadRandomModel, RandomTensorSource, tensorPlan } from '../models/random.ts';
import type { Tensor } from '../kernels/backend.ts';
import { transpose } from '../kernels/cpu/ops.ts';
import { compressCheckpoint, GPT2_PROJECTIONS } from '../models/compress.ts';
import type { ModelDirectory } from '../weights/model-directory.ts';
import { ShardedSafetensors, writeSafetensors, type TensorToWrite } from '../weights/safetensors.ts';
import { fromFloat32 } from '../weights/dtypes.ts';
import { maxRelativeError, tinyModelDirectory } from './helpers.ts';

const rng = new Rng(2024);
const random = (n: number, scale: number) => Float32Array.from({ length: n }, () => scale * rng.normal());
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'blr-checkpoint-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const BASE = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 96, hidden_size: 32, intermediate_size: 48,
  num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64,
  rms_norm_eps: 1e-5, rope_theta: 10000, hidden_act: 'silu', tie_word_embeddings: false,
};

interface Replacement {
  module: string;
  factors: BlrFactors;
  /** Tensor names (after the module name) and shapes of the factors, as the format stores them. */
  tensors: [string, number[], Float32Array][];
  rank: number;
  blocks: number;
  /** The twin's dense weight, where blrToDense cannot make it (BLAST on b_out ≠ b_in blocks). */
  dense?: Float32Array;
}

/**
 * BLAST factors on blocksOut output and blocksIn input blocks, in the authors' layout, and their
 * dense equivalent in float64: W[a·o/bo + p, c·i/bi + m] = Σ_k U[a][p][k] S[a][c][k] V[c][k][m].
 */
function rectangularBlast(module: string, inFeatures: number, outFeatures: number, rank: number, blocksOut: number, blocksIn: number): Replacement {
  const scale = 1 / Math.sqrt(Math.sqrt(inFeatures * rank));
  const ob = outFeatures / blocksOut, ib = inFeatures / blocksIn;
  const u = random(outFeatures * rank, scale), v = random(rank * inFeatures, scale), s = random(blocksOut * blocksIn * rank, 1);
  const dense = new Float32Array(outFeatures * inFeatures);
  for (let row = 0; row < outFeatures; row++) {
    for (let col = 0; col < inFeatures; col++) {
      const a = Math.floor(row / ob), c = Math.floor(col / ib);
      let sum = 0;
      for (let k = 0; k < rank; k++) sum += u[row * rank + k] * s[(a * blocksIn + c) * rank + k] * v[(c * rank + k) * ib + (col % ib)];
      dense[row * inFeatures + col] = sum;
    }
  }
  return {
    module, rank, blocks: blocksOut, dense, factors: { method: 'blast', u, v, s },
    tensors: [['B', [blocksOut, ob, rank], u], ['C', [blocksIn, rank, ib], v], ['D', [blocksOut, blocksIn, rank], s]],
  };
}

/** Random factors for `module` (out × in) in `method` form, and the tensors our format stores. */
function replacement(module: string, method: BlrFactors['method'], inFeatures: number, outFeatures: number, rank: number, blocks: number): Replacement {
  const scale = 1 / Math.sqrt(Math.sqrt(inFeatures * rank));
  const b = blocks;
  if (method === 'lowrank') {
    const v = random(rank * inFeatures, scale), u = random(outFeatures * rank, scale);
    return { module, rank, blocks, factors: { method, v, u }, tensors: [['V', [rank, inFeatures], v], ['U', [outFeatures, rank], u]] };
  }
  if (method === 'monarch') {
    const w1 = random(rank * inFeatures, scale), w2 = random(outFeatures * rank, scale);
    return { module, rank, blocks, factors: { method, w1, w2 }, tensors: [['W1', [b, rank, inFeatures / b], w1], ['W2', [b, outFeatures / b, rank], w2]] };
  }
  const u = random(outFeatures * rank, scale), v = random(rank * inFeatures, scale), s = random(b * b * rank, 1);
  return { module, rank, blocks, factors: { method, u, v, s }, tensors: [['B', [b, outFeatures / b, rank], u], ['C', [b, rank, inFeatures / b], v], ['D', [b, b, rank], s]] };
}

/** Writes a checkpoint: the dense plan, with each replaced module's weight as factors (or, for the twin, as its dense equivalent). */
function writeCheckpoint(name: string, config: Record<string, unknown>, replacements: Replacement[], dense: Map<string, Float32Array>, twin: boolean): string {
  const directory = path.join(root, name);
  fs.mkdirSync(directory, { recursive: true });
  const tensors: TensorToWrite[] = [];
  for (const { name: tensor, shape } of tensorPlan(BASE)) {
    const replaced = replacements.find((r) => `${r.module}.weight` === tensor);
    if (!replaced) {
      tensors.push({ name: tensor, dtype: 'F32', shape, data: fromFloat32(dense.get(tensor)!, 'F32') });
    } else if (twin) {
      const shapeOf = { inFeatures: shape[1], outFeatures: shape[0], rank: replaced.rank, blocks: replaced.blocks };
      tensors.push({ name: tensor, dtype: 'F32', shape, data: fromFloat32(replaced.dense ?? blrToDense(replaced.factors, shapeOf), 'F32') });
    } else {
      for (const [suffix, factorShape, values] of replaced.tensors) tensors.push({ name: `${replaced.module}.${suffix}`, dtype: 'F32', shape: factorShape, data: fromFloat32(values, 'F32') });
    }
  }
  writeSafetensors(path.join(directory, 'model.safetensors'), tensors);
  fs.writeFileSync(path.join(directory, 'config.json'), JSON.stringify(config));
  return directory;
}

function load(directory: string, backend = new CpuBackend()) {
  const config = JSON.parse(fs.readFileSync(path.join(directory, 'config.json'), 'utf8'));
  const modelDirectory = { path: directory, config, openTensors: () => ShardedSafetensors.openDirectory(directory) } as unknown as ModelDirectory;
  return loadModel(modelDirectory, backend, { maxStepTokens: 8 });
}

async function logits(directory: string, backend?: CpuBackend): Promise<{ logits: Float32Array[]; parameters: number; padding: number }> {
  const model = load(directory, backend);
  const cache = model.createCache(12);
  const prompt = Int32Array.of(5, 17, 3, 90, 41, 8, 8, 60, 2, 33); // two chunks of up to 8 rows
  const first = Float32Array.from(await model.forward(cache, prompt.subarray(0, 8), 0));
  const second = Float32Array.from(await model.forward(cache, prompt.subarray(8), 8));
  return { logits: [first, second], parameters: model.parameters, padding: model.padding };
}

function denseWeights(): Map<string, Float32Array> {
  return new Map(tensorPlan(BASE).map(({ name, shape, kind }) => {
    const count = shape.reduce((a, b) => a * b, 1);
    return [name, kind === 'norm' ? Float32Array.from({ length: count }, () => 1 + 0.1 * rng.normal()) : random(count, kind === 'matrix' ? 1 / Math.sqrt(shape[1]) : 0.5)];
  }));
}

function expectSameLogits(a: Float32Array[], b: Float32Array[]): void {
  for (const [step, values] of a.entries()) expect(maxRelativeError(values, b[step])).toBeLessThan(1e-4);
}

describe('block low-rank checkpoints', () => {
  it('our format (blr_layers: low-rank, Monarch and BLAST projections) gives its dense twin\'s logits', async () => {
    const dense = denseWeights();
    const l0 = 'model.layers.0', l1 = 'model.layers.1';
    const replacements = [
      replacement(`${l0}.self_attn.q_proj`, 'lowrank', 32, 32, 5, 1),
      replacement(`${l0}.self_attn.k_proj`, 'monarch', 32, 16, 4, 2),
      replacement(`${l0}.self_attn.o_proj`, 'monarch', 32, 32, 8, 4),
      replacement(`${l0}.mlp.gate_proj`, 'blast', 32, 48, 6, 4),
      replacement(`${l1}.mlp.down_proj`, 'blast', 48, 32, 7, 2),
    ];
    const blrLayers = Object.fromEntries(replacements.map((r) => [r.module, { method: r.factors.method, rank: r.rank, blocks: r.blocks }]));
    const compressed = await logits(writeCheckpoint('ours', { ...BASE, blr_layers: blrLayers }, replacements, dense, false));
    const twin = await logits(writeCheckpoint('ours-twin', BASE, replacements, dense, true));
    expectSameLogits(compressed.logits, twin.logits);
    expect(compressed.parameters).toBeLessThan(twin.parameters);
  });

  it('projections of one input, method and shape are stacked (gate|up as BLAST and as low-rank; q|k|v with q dense stays separate) and give the dense twin\'s logits', async () => {
    const dense = denseWeights();
    const l0 = 'model.layers.0', l1 = 'model.layers.1';
    const replacements = [
      replacement(`${l0}.mlp.gate_proj`, 'blast', 32, 48, 6, 4),
      replacement(`${l0}.mlp.up_proj`, 'blast', 32, 48, 6, 4),
      replacement(`${l1}.self_attn.k_proj`, 'monarch', 32, 16, 8, 4),
      replacement(`${l1}.self_attn.v_proj`, 'monarch', 32, 16, 8, 4),
      replacement(`${l1}.mlp.gate_proj`, 'lowrank', 32, 48, 5, 1),
      replacement(`${l1}.mlp.up_proj`, 'lowrank', 32, 48, 5, 1),
    ];
    const blrLayers = Object.fromEntries(replacements.map((r) => [r.module, { method: r.factors.method, rank: r.rank, blocks: r.blocks }]));
    const directory = writeCheckpoint('stacked', { ...BASE, blr_layers: blrLayers }, replacements, dense, false);
    const compressed = await logits(directory);
    const twin = await logits(writeCheckpoint('stacked-twin', BASE, replacements, dense, true));
    expectSameLogits(compressed.logits, twin.logits);
    // The loader stacks them: one group of two for gate|up.
    const config = parseModelConfig({ ...BASE, blr_layers: blrLayers });
    const reader = new WeightReader(ShardedSafetensors.openDirectory(directory), new CpuBackend(), undefined, { config, maxRows: 4 });
    expect(reader.linearGroup([`${l0}.mlp.gate_proj`, `${l0}.mlp.up_proj`], 32, [48, 48], false)).toBeInstanceOf(StackedBlockLinears);
    expect(reader.linearGroup([`${l1}.mlp.gate_proj`, `${l1}.mlp.up_proj`], 32, [48, 48], false)).toBeInstanceOf(StackedLowRankLinears);
    expect(reader.linearGroup([`${l1}.self_attn.q_proj`, `${l1}.self_attn.k_proj`, `${l1}.self_attn.v_proj`], 32, [32, 16, 16], false)).not.toBeInstanceOf(StackedBlockLinears);
  });

  it('a norm\'s weight folds into the dense projections that read it (the norm then ones; checkpoint and random weights alike), not into block low-rank ones, and their outputs stay as they were', async () => {
    const dense = denseWeights();
    const l0 = 'model.layers.0';
    const replacements = [replacement(`${l0}.mlp.gate_proj`, 'blast', 32, 48, 6, 4)];
    const blrConfig = { ...BASE, blr_layers: { [`${l0}.mlp.gate_proj`]: { method: 'blast', rank: 6, blocks: 4 } } };
    const directory = writeCheckpoint('folded', blrConfig, replacements, dense, false);
    const config = parseModelConfig(blrConfig);
    const backend = new CpuBackend();
    const x = random(2 * 32, 1);
    const eps = 1e-5;
    const project = async (forward: (outs: Tensor[], x: Tensor, norm: { weight: Tensor; eps: number }) => void, norm: Tensor, widths: number[]) => {
      const outs = widths.map((w) => backend.allocate(2 * w));
      forward(outs, backend.upload(x), { weight: norm, eps });
      return Float32Array.from((await Promise.all(outs.map((o, i) => backend.read(o, 2 * widths[i])))).flatMap((v) => Array.from(v)));
    };
    const ones = new Float32Array(32).fill(1);
    const qkv = [`${l0}.self_attn.q_proj`, `${l0}.self_attn.k_proj`, `${l0}.self_attn.v_proj`], qkvWidths = [32, 16, 16];
    const attentionNorm = `${l0}.input_layernorm.weight`;
    for (const source of [() => ShardedSafetensors.openDirectory(directory), () => new RandomTensorSource(BASE, 3)]) {
      const reader = () => new WeightReader(source(), backend, undefined, { config, maxRows: 4 });
      const g = reader().upload(attentionNorm, [32]);
      expect(Array.from(await backend.read(g, 32)).some((v) => Math.abs(v - 1) > 0.01)).toBe(true);
      // q|k|v, all dense: folded, against the same projections of the norm with its weight.
      const folded = reader().normedGroup(attentionNorm, qkv, 32, qkvWidths, false);
      expect(await backend.read(folded.norm, 32)).toEqual(ones);
      const plain = reader().linearGroup(qkv, 32, qkvWidths, false);
      const want = await project((outs, xt, norm) => plain.forward(outs, xt, 2, norm), g, qkvWidths);
      expect(maxRelativeError(await project((outs, xt, norm) => folded.group.forward(outs, xt, 2, norm), folded.norm, qkvWidths), want)).toBeLessThan(1e-5);
      // The LM head (untied) likewise.
      const head = reader().normedLinear('model.norm.weight', 'lm_head', 32, 96, false);
      expect(await backend.read(head.norm, 32)).toEqual(ones);
      const plainHead = reader().linear('lm_head', 32, 96, false);
      const finalNorm = reader().upload('model.norm.weight', [32]);
      const wantHead = await project(([out], xt, norm) => plainHead.forward(out, xt, 2, norm), finalNorm, [96]);
      expect(maxRelativeError(await project(([out], xt, norm) => head.layer.forward(out, xt, 2, norm), head.norm, [96]), wantHead)).toBeLessThan(1e-5);
    }
    // gate|up with a BLAST gate: the norm keeps its weight.
    const reader = new WeightReader(ShardedSafetensors.openDirectory(directory), backend, undefined, { config, maxRows: 4 });
    const mlp = reader.normedGroup(`${l0}.post_attention_layernorm.weight`, [`${l0}.mlp.gate_proj`, `${l0}.mlp.up_proj`], 32, [48, 48], false);
    expect(await backend.read(mlp.norm, 32)).toEqual(dense.get(`${l0}.post_attention_layernorm.weight`));
  });

  it('gate|up of different ranks stack padded to the larger rank where the backend asks (BLAST and low-rank; Monarch, or padding past the limit, stay apart) and give the dense twin\'s logits', async () => {
    const dense = denseWeights();
    const l0 = 'model.layers.0', l1 = 'model.layers.1';
    const replacements = [
      replacement(`${l0}.mlp.gate_proj`, 'blast', 32, 48, 5, 4),
      replacement(`${l0}.mlp.up_proj`, 'blast', 32, 48, 6, 4),
      replacement(`${l1}.mlp.gate_proj`, 'lowrank', 32, 48, 4, 1),
      replacement(`${l1}.mlp.up_proj`, 'lowrank', 32, 48, 5, 1),
      replacement(`${l1}.self_attn.k_proj`, 'monarch', 32, 16, 4, 4),
      replacement(`${l1}.self_attn.v_proj`, 'monarch', 32, 16, 8, 4),
    ];
    const blrLayers = Object.fromEntries(replacements.map((r) => [r.module, { method: r.factors.method, rank: r.rank, blocks: r.blocks }]));
    const directory = writeCheckpoint('padded', { ...BASE, blr_layers: blrLayers }, replacements, dense, false);
    const padding = new CpuBackend({ stacksPaddedRanks: true });
    const padded = await logits(directory, padding);
    const apart = await logits(directory);
    const twin = await logits(writeCheckpoint('padded-twin', BASE, replacements, dense, true));
    expectSameLogits(padded.logits, twin.logits);
    expectSameLogits(apart.logits, twin.logits);
    // The checkpoint's parameters either way; the zeros counted apart: gate's one BLAST channel
    // (32 + 48 + 4² values) and low-rank's one (32 + 48).
    expect(padded.parameters).toBe(apart.parameters);
    expect(padded.padding).toBe(32 + 48 + 16 + 32 + 48);
    expect(apart.padding).toBe(0);
    const config = parseModelConfig({ ...BASE, blr_layers: blrLayers });
    const reader = (backend: CpuBackend) => new WeightReader(ShardedSafetensors.openDirectory(directory), backend, undefined, { config, maxRows: 4 });
    expect(reader(padding).linearGroup([`${l0}.mlp.gate_proj`, `${l0}.mlp.up_proj`], 32, [48, 48], false)).toBeInstanceOf(StackedBlockLinears);
    expect(reader(padding).linearGroup([`${l1}.mlp.gate_proj`, `${l1}.mlp.up_proj`], 32, [48, 48], false)).toBeInstanceOf(StackedLowRankLinears);
    expect(reader(padding).linearGroup([`${l1}.self_attn.k_proj`, `${l1}.self_attn.v_proj`], 32, [16, 16], false)).toBeInstanceOf(SeparateLinears);
    expect(reader(new CpuBackend()).linearGroup([`${l0}.mlp.gate_proj`, `${l0}.mlp.up_proj`], 32, [48, 48], false)).toBeInstanceOf(SeparateLinears);
    // Past the limit (ranks 2 and 6: 12 channels for 8) they stay apart.
    const far = [replacement(`${l0}.mlp.gate_proj`, 'blast', 32, 48, 2, 4), replacement(`${l0}.mlp.up_proj`, 'blast', 32, 48, 6, 4)];
    const farLayers = Object.fromEntries(far.map((r) => [r.module, { method: r.factors.method, rank: r.rank, blocks: r.blocks }]));
    const farDirectory = writeCheckpoint('padded-far', { ...BASE, blr_layers: farLayers }, far, dense, false);
    const farReader = new WeightReader(ShardedSafetensors.openDirectory(farDirectory), padding, undefined, { config: parseModelConfig({ ...BASE, blr_layers: farLayers }), maxRows: 4 });
    expect(farReader.linearGroup([`${l0}.mlp.gate_proj`, `${l0}.mlp.up_proj`], 32, [48, 48], false)).toBeInstanceOf(SeparateLinears);
  });

  it('random models pad as checkpoints do: the channels past a member\'s rank are zero where they would count (low-rank V, BLAST coupling)', async () => {
    for (const method of ['lowrank', 'blast'] as const) {
      const b = method === 'blast' ? 4 : 1;
      const config = {
        ...BASE, blr_layers: Object.fromEntries(['model.layers.0', 'model.layers.1'].flatMap((l) => [
          [`${l}.mlp.gate_proj`, { method, rank: 4, blocks: b }],
          [`${l}.mlp.up_proj`, { method, rank: 5, blocks: b }],
        ])),
      };
      const backend = new CpuBackend({ stacksPaddedRanks: true });
      const model = loadRandomModel(config, backend, { maxStepTokens: 8 });
      expect(model.padding, method).toBe(2 * (method === 'blast' ? 32 + 48 + 16 : 32 + 48));
      const logits = await model.forward(model.createCache(8), Int32Array.of(5, 17, 3, 90), 0);
      expect(logits.every(Number.isFinite)).toBe(true);
      // The group's own factors: gate's fifth channel (index 4 of 5) is zero wherever it would count.
      const group = new WeightReader(new RandomTensorSource(config, 0), backend, undefined, { config: parseModelConfig(config), maxRows: 4 })
        .linearGroup(['model.layers.0.mlp.gate_proj', 'model.layers.0.mlp.up_proj'], 32, [48, 48], false) as unknown as Record<string, Tensor>;
      if (method === 'lowrank') {
        const v = await backend.read(group.v, 2 * 5 * 32);
        expect(Array.from(v.subarray(4 * 32, 5 * 32)).every((x) => x === 0)).toBe(true);
        expect(Array.from(v.subarray(9 * 32, 10 * 32)).some((x) => x !== 0)).toBe(true);
      } else {
        const s = await backend.read(group.coupling, 2 * b * b * 5);
        // (b × b pairs of blocks for gate, then for up: only gate's are padding.)
        for (let pair = 0; pair < b * b; pair++) expect(s[pair * 5 + 4], `gate pair ${pair}`).toBe(0);
        for (let pair = b * b; pair < 2 * b * b; pair++) expect(s[pair * 5 + 4], `up pair ${pair}`).not.toBe(0);
      }
    }
  });

  it('the BLAST authors\' format (blast_llama: target_modules, blast_rank per projection, blocks, indices) gives its dense twin\'s logits', async () => {
    const dense = denseWeights();
    const l1 = 'model.layers.1';
    const replacements = [
      replacement(`${l1}.self_attn.q_proj`, 'blast', 32, 32, 6, 4),
      replacement(`${l1}.self_attn.v_proj`, 'blast', 32, 16, 3, 4),
      replacement(`${l1}.mlp.up_proj`, 'blast', 32, 48, 8, 4),
      replacement(`${l1}.mlp.down_proj`, 'blast', 48, 32, 8, 4),
    ];
    const config = {
      ...BASE, model_type: 'blast_llama', target_modules: ['q_proj', 'v_proj', 'up_proj', 'down_proj'],
      blast_rank: { q_proj: 6, v_proj: 3, up_proj: 8, down_proj: 8 }, blast_num_blocks: [4, 4], indices: [1],
    };
    const compressed = await logits(writeCheckpoint('blast', config, replacements, dense, false));
    const twin = await logits(writeCheckpoint('blast-twin', BASE, replacements, dense, true));
    expectSameLogits(compressed.logits, twin.logits);
  });

  it('the BLAST authors\' format with different output and input blocks (blast_num_blocks [b_out, b_in]) gives its dense twin\'s logits', async () => {
    const dense = denseWeights();
    const l0 = 'model.layers.0';
    // [4, 2]: q 32→32, up 32→48, down 48→32 (lcm 4); the same layers written again with [2, 4].
    for (const [blocksOut, blocksIn] of [[4, 2], [2, 4]]) {
      const replacements = [
        rectangularBlast(`${l0}.self_attn.q_proj`, 32, 32, 6, blocksOut, blocksIn),
        rectangularBlast(`${l0}.mlp.up_proj`, 32, 48, 8, blocksOut, blocksIn),
        rectangularBlast(`${l0}.mlp.down_proj`, 48, 32, 5, blocksOut, blocksIn),
      ];
      const config = {
        ...BASE, model_type: 'blast_llama', target_modules: ['q_proj', 'up_proj', 'down_proj'],
        blast_rank: { q_proj: 6, up_proj: 8, down_proj: 5 }, blast_num_blocks: [blocksOut, blocksIn], indices: [0],
      };
      const compressed = await logits(writeCheckpoint(`blast-${blocksOut}x${blocksIn}`, config, replacements, dense, false));
      const twin = await logits(writeCheckpoint(`blast-${blocksOut}x${blocksIn}-twin`, BASE, replacements, dense, true));
      expectSameLogits(compressed.logits, twin.logits);
    }
    // lcm(4, 3) = 12 blocks do not divide 32: refused, saying so.
    const odd = rectangularBlast(`${l0}.mlp.down_proj`, 48, 32, 5, 4, 3);
    const directory = writeCheckpoint('blast-4x3', { ...BASE, model_type: 'blast_llama', target_modules: ['down_proj'], blast_rank: 5, blast_num_blocks: [4, 3], indices: [0] }, [odd], dense, false);
    expect(() => load(directory)).toThrow(/down_proj is BLAST with 4 output and 3 input blocks; it runs on their least common multiple/);
  });

  it('refuses a factor of the wrong shape, naming the file and tensor, and configs it cannot honour', () => {
    const dense = denseWeights();
    const module = 'model.layers.0.mlp.up_proj';
    const good = replacement(module, 'blast', 32, 48, 6, 4);
    const bad = { ...good, tensors: good.tensors.map(([name, shape, values]) => [name, name === 'D' ? [4, 4, 5] : shape, name === 'D' ? values.subarray(0, 80) : values] as [string, number[], Float32Array]) };
    const directory = writeCheckpoint('bad-shape', { ...BASE, blr_layers: { [module]: { method: 'blast', rank: 6, blocks: 4 } } }, [bad], dense, false);
    expect(() => load(directory)).toThrow(/model\.safetensors: tensor "model\.layers\.0\.mlp\.up_proj\.D" has shape \[4,4,5\] but the config implies \[4,4,6\]/);
    expect(() => parseModelConfig({ ...BASE, model_type: 'blast_llama', target_modules: ['q_proj'], blast_rank: 8, blast_num_blocks: [4, 2, 1] })).toThrow(/"blast_num_blocks" must be a positive integer, \[b\] or \[b_out, b_in\]/);
    expect(() => parseModelConfig({ ...BASE, blr_layers: { [module]: { method: 'lowrank', rank: 4, blocks: 2 } } })).toThrow(/low-rank: one block/);
    const indivisible = writeCheckpoint('indivisible', { ...BASE, blr_layers: { [module]: { method: 'monarch', rank: 6, blocks: 4 } } }, [], dense, false);
    expect(() => load(indivisible)).toThrow(/up_proj is monarch with 4 blocks of rank 6/);
  });

  it('random models (benchmarks) plan and build the factors a blr_layers config names', async () => {
    const blrLayers = {
      'model.layers.0.self_attn.q_proj': { method: 'lowrank', rank: 5, blocks: 1 },
      'model.layers.0.mlp.up_proj': { method: 'monarch', rank: 8, blocks: 4 },
      'model.layers.1.mlp.down_proj': { method: 'blast', rank: 6, blocks: 2 },
    };
    const config = { ...BASE, blr_layers: blrLayers };
    const plan = new Map(tensorPlan(config).map((t) => [t.name, t.shape]));
    expect(plan.has('model.layers.0.self_attn.q_proj.weight')).toBe(false);
    expect(plan.get('model.layers.0.self_attn.q_proj.U')).toEqual([32, 5]);
    expect(plan.get('model.layers.0.self_attn.q_proj.V')).toEqual([5, 32]);
    expect(plan.get('model.layers.0.mlp.up_proj.W1')).toEqual([4, 8, 8]);
    expect(plan.get('model.layers.0.mlp.up_proj.W2')).toEqual([4, 12, 8]);
    expect(plan.get('model.layers.1.mlp.down_proj.B')).toEqual([2, 16, 6]);
    expect(plan.get('model.layers.1.mlp.down_proj.C')).toEqual([2, 6, 24]);
    expect(plan.get('model.layers.1.mlp.down_proj.D')).toEqual([2, 2, 6]);
    expect(plan.get('model.layers.1.mlp.down_proj.weight')).toBeUndefined();
    const planned = [...plan.values()].reduce((sum, shape) => sum + shape.reduce((a, b) => a * b, 1), 0);
    const model = loadRandomModel(config, new CpuBackend(), { maxStepTokens: 4 });
    expect(model.parameters).toBe(planned);
    const dense = loadRandomModel(BASE, new CpuBackend(), { maxStepTokens: 4 });
    expect(model.parameters).toBeLessThan(dense.parameters);
    const out = await model.forward(model.createCache(8), Int32Array.of(1, 2, 3), 0);
    expect(out.every(Number.isFinite)).toBe(true);
  });

  it.for(['monarch', 'blast'] as const)('a GPT-2 checkpoint compressed to %s (c_attn split into q, k, v) gives its dense twin\'s logits', async (method) => {
    const input = tinyModelDirectory('gpt2-style');
    const compressed = path.join(root, `gpt2-${method}`);
    const modules = await compressCheckpoint(input, compressed, { method, blocks: 4, rank: 8, projections: [...GPT2_PROJECTIONS], iterations: 3 });
    // The twin: the same checkpoint, each compressed module's Conv1D weight (in × out) the transpose of its factors' dense equivalent.
    const twin = path.join(root, `gpt2-${method}-twin`);
    fs.mkdirSync(twin, { recursive: true });
    const source = ShardedSafetensors.openDirectory(compressed);
    const byModule = new Map(modules.map((m) => [m.module, m.shape]));
    const tensors: TensorToWrite[] = [];
    for (const name of source.names()) {
      const module = name.slice(0, name.lastIndexOf('.'));
      const suffix = name.slice(name.lastIndexOf('.') + 1);
      const shape = byModule.get(module);
      if (!shape || suffix === 'bias') {
        tensors.push({ name, dtype: 'F32', shape: source.info(name).shape, data: fromFloat32(source.readFloat32(name), 'F32') });
      } else if (suffix === 'B' || suffix === 'W1') {
        const f = (suffix: string) => source.readFloat32(`${module}.${suffix}`);
        const factors: BlrFactors = method === 'monarch' ? { method, w1: f('W1'), w2: f('W2') } : { method, u: f('B'), v: f('C'), s: f('D') };
        tensors.push({ name: `${module}.weight`, dtype: 'F32', shape: [shape.inFeatures, shape.outFeatures], data: fromFloat32(transpose(blrToDense(factors, shape), shape.outFeatures, shape.inFeatures), 'F32') });
      }
    }
    source.close();
    writeSafetensors(path.join(twin, 'model.safetensors'), tensors);
    const config = JSON.parse(fs.readFileSync(path.join(compressed, 'config.json'), 'utf8'));
    delete config.blr_layers;
    fs.writeFileSync(path.join(twin, 'config.json'), JSON.stringify(config));
    const a = await logits(compressed), b = await logits(twin);
    expectSameLogits(a.logits, b.logits);
    expect(a.parameters).toBeLessThan(b.parameters);
  });
});
