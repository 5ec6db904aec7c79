// Every WGSL kernel against the CPU backend (whose ops are checked against float64 math in
// ops.test.ts) on random inputs of awkward sizes, then whole models: WebGPU against the CPU
// backend with the same f16-rounded weights. Runs on lavapipe in CI.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Generator } from '../engine/generate.ts';
import { Rng } from '../engine/rng.ts';
import { GREEDY } from '../engine/sampler.ts';
import { flagStride, KV_PRECISIONS, logprobStride, type Backend, type BlockShape, type IndexTensor, type InputNorm, type OutputRope, type SampleParams, type Tensor } from '../kernels/backend.ts';
import { CpuBackend } from '../kernels/cpu/backend.ts';
import { ropeTables } from '../kernels/cpu/ops.ts';
import { candidateDistribution } from '../kernels/cpu/sample.ts';
import { LAYER_NORM_GEMV_MAX_OUT, type WebGpuBackend } from '../kernels/webgpu/backend.ts';
import { compressCheckpoint, GPT2_PROJECTIONS, PROJECTIONS } from '../models/compress.ts';
import { BlockLowRankLinear, ConcatenatedLinear, LowRankLinear, SeparateLinears, SplitOutputs, StackedBlockLinears, StackedLowRankLinears, type LinearGroup } from '../models/linear.ts';
import { loadModel } from '../models/load.ts';
import { readModelDirectory } from '../weights/model-directory.ts';
import { floatToHalf, halfToFloat } from '../weights/dtypes.ts';
import { DEFAULT_WORKGROUP_STORAGE } from '../kernels/webgpu/gpu.ts';
import { ATTENTION_TENSOR_HEAD_DIMS, attentionSubgroupMatrixSource, attentionTensorWorkgroupBytes } from '../kernels/webgpu/attention_subgroup_matrix.ts';
import { gemmSubgroupMatrixSource, gemmTileWorkgroupBytes } from '../kernels/webgpu/gemm_subgroup_matrix.ts';
import { gpuForTests } from './gpu.ts';
import { DEFAULT_MODEL, maxRelativeError, reference, tempDirectory, tinyModelDirectory } from './helpers.ts';

/** The backend under test: set by each variant's beforeAll (describe blocks run in order). */
let gpu: WebGpuBackend | undefined;
const cpu = new CpuBackend({ matrixPrecision: 'f16' });
/** The oracle for a GPU whose KV cache is f16: the keys and values it stores rounded as the GPU's are. */
const cpuHalfKV = new CpuBackend({ matrixPrecision: 'f16', kvPrecision: 'f16' });
/** A fresh CPU oracle for the GPU under test: its f16 weights, and its KV cache's precision. */
const cpuLikeGpu = () => new CpuBackend({ matrixPrecision: 'f16', kvPrecision: gpu!.kvPrecision });
/**
 * Logits of a whole model on the GPU against cpuLikeGpu. With an f32 cache they differ by f32 sums
 * in another order. An f16 cache rounds each key and value, and a value whose f32 sums differ by
 * that much may round to the neighbouring f16 on one side only (1 part in 2048): a few such
 * flips move the logits by ~1e-3 (stories260K compressed: 3e-3). Wrong keys would move them by ~1.
 */
const modelTolerance = () => (gpu!.kvPrecision === 'f16' ? 1e-2 : 1e-4);
const rng = new Rng(99);
const random = (n: number, scale = 1) => Float32Array.from({ length: n }, () => scale * rng.normal());

/** Runs `op` on the GPU and on the CPU oracle with the same inputs; returns both results. */
async function both(op: (backend: Backend) => Promise<Float32Array>): Promise<[Float32Array, Float32Array]> {
  return [await op(gpu!), await op(gpu!.kvPrecision === 'f16' ? cpuHalfKV : cpu)];
}

/** A tensor holding `values` that kernels may write and tests read back (uploads are read-only). */
function writableCopy(be: Backend, values: Float32Array): Tensor {
  const t = be.allocate(values.length);
  be.add(t, be.upload(values), be.upload(new Float32Array(values.length)), values.length);
  return t;
}

/**
 * A Monarch or BLAST layer with random factors and bias on the GPU and on the CPU oracle: its
 * forward (of RMSNorm(x) with `withNorm`), then forwardAdd onto a residual, of x and of SwiGLU's
 * silu(x) ⊙ up; the three results, joined.
 */
async function blockLayerBoth(method: 'monarch' | 'blast', shape: BlockShape, rows: number, withNorm: boolean): Promise<[Float32Array, Float32Array]> {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  const inner = random(b * r * (i / b)), outer = random(o * r), coupling = random(b * b * r), bias = random(o);
  const x = random(rows * i), norm = withNorm ? random(i) : null, residual = random(rows * o), up = random(rows * i);
  return both(async (be) => {
    const layer = new BlockLowRankLinear(be, method, be.uploadMatrix(inner, b * r, i / b, 'inner'), be.uploadMatrix(outer, o, r, 'outer'),
      method === 'blast' ? be.upload(coupling) : null, be.upload(bias), shape, rows);
    const out = be.allocate(rows * o);
    layer.forward(out, be.upload(x), rows, norm ? { weight: be.upload(norm), eps: 1e-5 } : undefined);
    const sum = be.allocate(rows * o);
    be.add(sum, be.upload(residual), be.upload(new Float32Array(rows * o)), rows * o);
    layer.forwardAdd(sum, be.upload(x), rows);
    const gated = writableCopy(be, residual);
    layer.forwardAdd(gated, be.upload(x), rows, { up: be.upload(up) });
    return concat(await be.read(out, rows * o), await be.read(sum, rows * o), await be.read(gated, rows * o));
  });
}

/**
 * Tensor cores multiply f16 exactly but their f32 accumulation is not IEEE (NVIDIA's truncates
 * partial sums), so sums drift further than a scalar f32 loop's.
 */
const TENSOR_CORE_TOLERANCE = 2e-4;

/**
 * Block tables for sequences of `lengths` positions over a pool whose blocks are handed out in a
 * shuffled order; `pages(rowSequences)` lays out backend.ts KVPages for rows of those sequences.
 */
function pagedLayout(lengths: number[], blockSize: number) {
  const counts = lengths.map((n) => Math.ceil(n / blockSize));
  const blocks = counts.reduce((a, b) => a + b, 0) + 2;
  const order = Array.from({ length: blocks }, (_, i) => i).sort(() => rng.next() - 0.5);
  let next = 0;
  const tables = counts.map((n) => order.slice(next, (next += n)));
  return {
    blocks,
    pages(rowSequences: number[]): Int32Array {
      const rows = rowSequences.length;
      const starts: number[] = [];
      let at = rows;
      for (const table of tables) {
        starts.push(at);
        at += table.length;
      }
      return Int32Array.of(...rowSequences.map((s) => starts[s]), ...tables.flat());
    },
  };
}

function uploadPages(be: Backend, pages: Int32Array): IndexTensor {
  const tensor = be.allocateIndices(pages.length);
  be.uploadIndices(tensor, pages);
  return tensor;
}

function concat(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** A group of `layers` stacked projections (o outputs each) of RMSNorm(x) · norm: their outputs, joined. */
async function stackedOutputs(be: Backend, group: LinearGroup, x: Float32Array, norm: Float32Array, rows: number, o: number, layers: number): Promise<Float32Array> {
  const outs = Array.from({ length: layers }, () => be.allocate(rows * o));
  group.forward(outs, be.upload(x), rows, { weight: be.upload(norm), eps: 1e-5 });
  const results: Float32Array[] = [];
  for (const out of outs) results.push(await be.read(out, rows * o));
  return concat(...results);
}

function expectClose(actual: Float32Array, expected: Float32Array, tolerance = 1e-5) {
  expect(actual.length).toBe(expected.length);
  expect(maxRelativeError(actual, expected)).toBeLessThan(tolerance);
}

/**
 * Block low-rank layers on tensor cores round x and the intermediate z to f16: errors follow the
 * size of the terms, not of each (possibly cancelled) output, so they are measured against the
 * largest output (~3e-4 on an H200; a wrong block or permutation gives O(1)).
 */
function expectCloseToLargest(actual: Float32Array, expected: Float32Array, tolerance = 2e-3) {
  expect(actual.length).toBe(expected.length);
  const scale = expected.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const worst = actual.reduce((m, v, k) => Math.max(m, Math.abs(v - expected[k])), 0);
  expect(worst / scale).toBeLessThan(tolerance);
}

/** A generated kernel's workgroup variables: name and bytes (arrays of f16, f32 or u32, and scalars). */
function workgroupVariables(source: string): { name: string; bytes: number }[] {
  const bytesOf = { f16: 2, f32: 4, u32: 4 } as Record<string, number>;
  return [...source.matchAll(/var<workgroup> (\w+): (?:array<(\w+), (\d+)>|(\w+));/g)].map(([, name, element, count, scalar]) =>
    ({ name, bytes: element ? bytesOf[element] * Number(count) : bytesOf[scalar] }));
}

// The tensor-core kernels are written by TS functions and run only where subgroup matrices are (not
// on lavapipe); what can be checked without them is checked here. Matrix loads and stores need
// 16-byte aligned addresses: a lone u32 among the workgroup variables shifted every matrix of the
// attention kernel by one element on an H200, so every variable must be a multiple of 16 bytes.
describe('tensor-core kernel sources', () => {
  // (A tile of 32 keys at head_dim 16 is 64 loads of 8 halves: too few for 128 threads.)
  it.for([...ATTENTION_TENSOR_HEAD_DIMS, 16, 256].flatMap((headDim) => KV_PRECISIONS.filter((kv) => kv === 'f32' || headDim > 16).map((kv) => [headDim, kv] as const)))('attention at head_dim %i with an %s cache: workgroup variables in multiples of 16 bytes, adding up to what the backend checks against the limit', ([headDim, kv]) => {
    const variables = workgroupVariables(attentionSubgroupMatrixSource(headDim, kv));
    expect(variables.map((v) => v.name).sort()).toEqual(['lengths', 'probs', 'scores', 'stage']);
    for (const v of variables) expect(v.bytes % 16, v.name).toBe(0);
    expect(variables.reduce((sum, v) => sum + v.bytes, 0)).toBe(attentionTensorWorkgroupBytes(headDim));
  });

  it('attention refuses a head_dim that is not a multiple of 16', () => {
    expect(() => attentionSubgroupMatrixSource(72)).toThrow(/multiple of 16/);
  });

  it('the GEMM: workgroup variables in multiples of 16 bytes, adding up to what the backend checks', () => {
    for (const stages of [1, 2] as const) {
      const tile = { subgroupsM: 2, subgroupsN: 4, blocksM: 4, blocksN: 2, depth: 64, stages };
      for (const [input, layout] of [['f16', 'dense'], ['vec4', 'blocks'], ['f16', 'blocks']] as const) {
        const variables = workgroupVariables(gemmSubgroupMatrixSource(tile, input, layout));
        for (const v of variables) expect(v.bytes % 16, v.name).toBe(0);
        expect(variables.reduce((sum, v) => sum + v.bytes, 0)).toBe(gemmTileWorkgroupBytes(tile));
      }
    }
  });
});

interface AttentionCase { heads: number; kvHeads: number; headDim: number; length: number; rows: number; batch?: boolean }
const ATTENTION_CASES: AttentionCase[] = [
  { heads: 6, kvHeads: 2, headDim: 10, length: 7, rows: 3 },
  { heads: 4, kvHeads: 4, headDim: 24, length: 300, rows: 2 },
  { heads: 8, kvHeads: 1, headDim: 64, length: 530, rows: 1 },
  { heads: 4, kvHeads: 2, headDim: 128, length: 257, rows: 3 },
  { heads: 2, kvHeads: 2, headDim: 12, length: 40, rows: 2 },
  { heads: 2, kvHeads: 1, headDim: 64, length: 2100, rows: 1 },
  { heads: 3, kvHeads: 3, headDim: 32, length: 1300, rows: 4 },
  // Either side of the wide pipeline's longest cache (1024 positions, one workgroup a row and head).
  { heads: 4, kvHeads: 2, headDim: 128, length: 1024, rows: 1 },
  { heads: 4, kvHeads: 2, headDim: 128, length: 1025, rows: 1 },
  // Prefill (16+ rows, head_dim ≤ 128): blocks of 16 rows, rows of one block at different lengths.
  { heads: 4, kvHeads: 2, headDim: 128, length: 40, rows: 37 },
  { heads: 3, kvHeads: 1, headDim: 64, length: 300, rows: 17 },
  { heads: 2, kvHeads: 2, headDim: 44, length: 20, rows: 20 },
  { heads: 2, kvHeads: 1, headDim: 136, length: 18, rows: 18 },
  // 256+ rows at head_dim 128 or 64: tensor cores where the adapter has them (blocks of 64 rows,
  // tiles of 32 positions), each call with a part block; a continued prefill, GQA; a fresh one.
  { heads: 2, kvHeads: 1, headDim: 128, length: 300, rows: 290 },
  { heads: 3, kvHeads: 3, headDim: 64, length: 260, rows: 260 },
  // A batch of 20 decoding rows, each its own sequence: not the prefill kernels, which stage one
  // sequence's keys for a block of rows (they once took every call of 16+ rows).
  { heads: 4, kvHeads: 2, headDim: 64, length: 100, rows: 20, batch: true },
];

/** Bytes of one layer's keys in a cache of 2 KV heads of 64, 3 blocks of 16 positions, on `be`. */
function kvLayerBytes(be: WebGpuBackend): number {
  const cache = be.createKVCache({ layers: 1, kvHeads: 2, headDim: 64, blocks: 3, blockSize: 16, sequences: 1, vocabSize: 5 });
  const bytes = (cache as unknown as { keys: GPUBuffer[] }).keys[0].size;
  cache.release();
  return bytes;
}

/** writeKV, then attention over the paged cache, on the GPU under test and the CPU oracle; and the CPU against direct sums. */
async function attentionCase({ heads, kvHeads, headDim, length, rows, batch }: AttentionCase): Promise<void> {
  const tested = gpu!;
  // Decode calls (under 16 rows, or `batch`) take a row of each of `rows` sequences of different
  // lengths; prefill-sized ones take one sequence's last rows. Blocks are shuffled over the pool,
  // and the call starts at row 1 (row 0 belongs to the caller, untouched).
  const prefill = rows >= 16 && !batch;
  const lengths = prefill ? [length] : Array.from({ length: rows }, (_, r) => length - 3 * r);
  const layout = pagedLayout(lengths, 16);
  const kv = lengths.map((n) => ({ k: random(n * kvHeads * headDim), v: random(n * kvHeads * headDim) }));
  const q = random((rows + 1) * heads * headDim);
  const queryPositions = Int32Array.of(0, ...Array.from({ length: rows }, (_, r) => (prefill ? length - rows + r : lengths[r] - 1)));
  const querySequences = [0, ...Array.from({ length: rows }, (_, r) => (prefill ? 0 : r))];
  const [g, c] = await both(async (be) => {
    const cache = be.createKVCache({ layers: 2, kvHeads, headDim, blocks: layout.blocks, blockSize: 16, sequences: lengths.length, vocabSize: 5 });
    lengths.forEach((n, s) => {
      const all = be.allocateIndices(n);
      be.uploadIndices(all, Int32Array.from({ length: n }, (_, i) => i));
      be.writeKV(cache, 1, be.upload(kv[s].k), be.upload(kv[s].v), all, uploadPages(be, layout.pages(new Array(n).fill(s))), n);
    });
    const positions = be.allocateIndices(rows + 1);
    be.uploadIndices(positions, queryPositions);
    const out = be.allocate((rows + 1) * heads * headDim);
    be.attention(out, be.upload(q), cache, 1, positions, uploadPages(be, layout.pages(querySequences)), 1, rows, { heads, kvHeads, headDim, scale: 1 / Math.sqrt(headDim) }, length, prefill);
    const result = await be.read(out, (rows + 1) * heads * headDim);
    cache.release();
    return result.subarray(heads * headDim);
  });
  // Tensor cores round q, k, v and the weights to f16 (~1e-3 of the largest output).
  if (prefill && tested.attentionOnTensorCores(rows, headDim)) expectCloseToLargest(g, c, 5e-3);
  else expectClose(g, c);
  // The CPU side against attention computed directly from each sequence's keys and values (as
  // the cache holds them: rounded to f16 where it is f16).
  const stored = (values: Float32Array) => (tested.kvPrecision === 'f16' ? values.map((x) => halfToFloat(floatToHalf(x))) : values);
  const cached = kv.map(({ k, v }) => ({ k: stored(k), v: stored(v) }));
  const direct = new Float32Array(rows * heads * headDim);
  for (let r = 0; r < rows; r++) {
    const { k, v } = cached[querySequences[r + 1]];
    for (let h = 0; h < heads; h++) {
      const group = Math.floor(h / (heads / kvHeads));
      const scores = Array.from({ length: queryPositions[r + 1] + 1 }, (_, t) => {
        let sum = 0;
        for (let d = 0; d < headDim; d++) sum += q[((r + 1) * heads + h) * headDim + d] * k[(t * kvHeads + group) * headDim + d];
        return sum / Math.sqrt(headDim);
      });
      const top = Math.max(...scores);
      const weights = scores.map((x) => Math.exp(x - top));
      const total = weights.reduce((a, b) => a + b, 0);
      for (let d = 0; d < headDim; d++) direct[(r * heads + h) * headDim + d] = weights.reduce((sum, p, t) => sum + (p / total) * v[(t * kvHeads + group) * headDim + d], 0);
    }
  }
  expectClose(c, direct, 1e-4);
}

// Every test runs twice: with every feature the adapter offers (subgroup GEMV, tensor cores), and
// portable, without subgroups or subgroup matrices, so the kernels for adapters lacking them run too.
describe.each([
  { variant: 'all adapter features', portable: false },
  { variant: 'portable (no subgroups, no subgroup matrices)', portable: true },
])('WebGPU with $variant', ({ portable }) => {
  beforeAll(async () => {
    gpu = (await gpuForTests(portable)).backend;
  });

  it('opens the device this variant asks for', ({ skip }) => {
    if (!gpu) return skip();
    // The KV cache in f16 where the device has shader-f16 (tests/gpu.ts keeps the portable one in f32).
    const half = !portable && gpu.gpu.features.shaderF16;
    expect(gpu.kvPrecision).toBe(half ? 'f16' : 'f32');
    expect(kvLayerBytes(gpu)).toBe(2 * 64 * 3 * 16 * (half ? 2 : 4));
    if (portable) {
      expect(gpu.gpu.features.subgroups).toBe(false);
      expect(gpu.gpu.features.subgroupMatrix).toBe(false);
      expect(gpu.description).not.toMatch(/subgroups/);
    }
    expect(gpu.description).toMatch(/^WebGPU /);
  });

  describe('WGSL kernels against the CPU backend', () => {
    it.for<[number, number, number]>([
      [1, 1, 1], [1, 7, 9], [1, 67, 131], [3, 130, 65], [4, 64, 64], [1, 8, 1], [2, 2048, 7], [1, 4096, 130], [2, 4104, 9],
      [5, 67, 9], [67, 130, 131], [64, 16, 64], [130, 33, 70],
      // The subgroup GEMV over batches of 4 and 16 rows (two batches and a ragged one for 17 and 31).
      [2, 64, 9], [4, 136, 33], [5, 136, 33], [16, 72, 70], [17, 264, 13], [31, 4104, 9],
    ])('matmul rows=%i in=%i out=%i (gemv, batched subgroup gemv, aligned gemv and gemm paths), with and without bias, and accumulating', async ([rows, inFeatures, outFeatures], { skip }) => {
      if (!gpu) return skip();
      // Where tensor cores take these rows, activations are rounded to f16: so is the oracle's x.
      const tensorCores = gpu.matmulRoundsActivations(rows);
      const x = random(rows * inFeatures).map((v) => (tensorCores ? halfToFloat(floatToHalf(v)) : v));
      const w = random(outFeatures * inFeatures), bias = random(outFeatures);
      const residual = random(rows * outFeatures);
      for (const [withBias, accumulate] of [[false, false], [true, false], [true, true]]) {
        const [g, c] = await both((be) => {
          const out = be.allocate(rows * outFeatures);
          if (accumulate) be.add(out, be.upload(residual), be.upload(new Float32Array(residual.length)), residual.length);
          be.matmul(out, be.upload(x), be.uploadMatrix(w, outFeatures, inFeatures, 'w'), withBias ? be.upload(bias) : null, rows, inFeatures, outFeatures, accumulate);
          return be.read(out, rows * outFeatures);
        });
        // Sums of `inFeatures` terms in another order: the tolerance grows with √inFeatures, and for
        // f32 sums at least as f32 rounding of partial sums that reach ~√inFeatures does (as the
        // matmulSplit case's: an output cancelled to ~1 of 4104 terms differed by 1.9e-4 on an H200's
        // portable GEMM, over the √inFeatures bound of 1.6e-4).
        expectClose(g, c, tensorCores ? TENSOR_CORE_TOLERANCE * Math.max(1, Math.sqrt(inFeatures) / 8) : Math.max(2e-5 * Math.max(1, Math.sqrt(inFeatures) / 8), inFeatures * 6e-8));
      }
    });

    // K split 8 ways (64 × 4096) and 2 ways with x read as scalars (40 × 1030).
    it.for<[number, number, number]>([[32, 64, 64], [64, 4096, 96], [130, 200, 131], [257, 72, 70], [40, 67, 33], [300, 136, 260], [40, 1030, 50]])('tensor-core matmul rows=%i in=%i out=%i where the adapter has subgroup matrices', async ([rows, inFeatures, outFeatures], { skip }) => {
      if (!gpu?.gpu.features.subgroupMatrixF16) return skip();
      // That kernel rounds activations to f16: the oracle gets x rounded too.
      const x = random(rows * inFeatures).map((v) => halfToFloat(floatToHalf(v)));
      const w = random(outFeatures * inFeatures), bias = random(outFeatures);
      const residual = random(rows * outFeatures);
      const [g, c] = await both((be) => {
        const out = be.allocate(rows * outFeatures);
        be.add(out, be.upload(residual), be.upload(new Float32Array(residual.length)), residual.length);
        be.matmul(out, be.upload(x), be.uploadMatrix(w, outFeatures, inFeatures, 'w'), be.upload(bias), rows, inFeatures, outFeatures, true);
        return be.read(out, rows * outFeatures);
      });
      expectClose(g, c, TENSOR_CORE_TOLERANCE * Math.max(1, Math.sqrt(inFeatures) / 8));
    });

    it.for<[number, number]>([[1, 16], [1, 13], [3, 64], [6, 40], [40, 64], [40, 1030]])('matmulSplit rows=%i in=%i writes three projections in one dispatch', async ([rows, inFeatures], { skip }) => {
      if (!gpu) return skip();
      const widths = [9, 4, 12];
      const total = 25;
      const tensorCores = gpu.matmulRoundsActivations(rows);
      const x = random(rows * inFeatures).map((v) => (tensorCores ? halfToFloat(floatToHalf(v)) : v));
      const w = random(total * inFeatures), bias = random(total);
      const [g, c] = await both(async (be) => {
        const outs = widths.map((width) => be.allocate(rows * width));
        be.matmulSplit(outs, be.upload(x), be.uploadMatrix(w, total, inFeatures, 'qkv'), be.upload(bias), rows, inFeatures, widths);
        const results: Float32Array[] = [];
        for (const [i, o] of outs.entries()) results.push(await be.read(o, rows * widths[i]));
        return concat(...results);
      });
      // f32 sums in another order: rounding grows with the length of the dot products.
      expectClose(g, c, tensorCores ? TENSOR_CORE_TOLERANCE * Math.max(1, Math.sqrt(inFeatures) / 8) : Math.max(1e-5, inFeatures * 6e-8));
      // matmulStacked: the same projections (no bias) one after another in one tensor, which is
      // what the split writes, joined: the same sums, so exactly the same values.
      for (const be of [gpu, cpu] as Backend[]) {
        const xt = be.upload(x), wt = be.uploadMatrix(w, total, inFeatures, 'qkv');
        const stacked = be.allocate(rows * total);
        be.matmulStacked(stacked, xt, wt, rows, inFeatures, widths);
        const outs = widths.map((width) => be.allocate(rows * width));
        be.matmulSplit(outs, xt, wt, null, rows, inFeatures, widths);
        const split: Float32Array[] = [];
        for (const [i, o] of outs.entries()) split.push(await be.read(o, rows * widths[i]));
        expect(Array.from(await be.read(stacked, rows * total)), be.name).toEqual(Array.from(concat(...split)));
      }
    });

    // Dispatches recorded by `record` (counted at the next read; the GPU backend only).
    async function dispatchesOf(be: Backend, record: () => void): Promise<number> {
      const flush = be.allocate(1);
      await be.read(flush, 1);
      record();
      await be.read(flush, 1);
      return be.name === 'webgpu' ? (be as WebGpuBackend).lastStep.dispatches : 0;
    }

    // The RoPE epilogue's pipelines: subgroups, and room for their twelve storage buffers.
    const ropeEpilogue = () => gpu!.gpu.features.subgroups && gpu!.gpu.device.limits.maxStorageBuffersPerShaderStage >= 12;

    type QkvProjection = (be: Backend, outs: Tensor[], x: Tensor, norm: InputNorm, rope: OutputRope) => void;
    /**
     * q|k|v of RMSNorm(x) (one row at position 13, or several from there) recorded by `project` with
     * RoPE and the KV cache store, on the GPU and the CPU: q, k, v, then attention over the cache
     * (which reads the stored k and v back), joined; and how many dispatches the GPU recorded.
     */
    async function ropeCase(rows: number, inFeatures: number, heads: number, kvHeads: number, headDim: number, project: QkvProjection, draw = random, onesNorm = false) {
      const kvWidth = kvHeads * headDim;
      const first = 13; // positions 0..12 hold earlier keys and values, written the separate way
      const inv = Float32Array.from({ length: headDim / 2 }, (_, i) => 1 / 500 ** ((2 * i) / headDim));
      const { cos, sin } = ropeTables(inv, 40);
      const x = draw(rows * inFeatures, 2), norm = onesNorm ? new Float32Array(inFeatures).fill(1) : draw(inFeatures);
      const earlierK = draw(first * kvWidth), earlierV = draw(first * kvWidth);
      const layout = pagedLayout([first + rows], 4);
      const widths = [heads * headDim, kvWidth, kvWidth];
      let dispatches = 0;
      const [g, c] = await both(async (be) => {
        const cache = be.createKVCache({ layers: 2, kvHeads, headDim, blocks: layout.blocks, blockSize: 4, sequences: 1, vocabSize: 1 });
        const before = be.allocateIndices(first);
        be.uploadIndices(before, Int32Array.from({ length: first }, (_, i) => i));
        be.writeKV(cache, 1, be.upload(earlierK), be.upload(earlierV), before, uploadPages(be, layout.pages(new Array(first).fill(0))), first);
        const positions = be.allocateIndices(rows);
        be.uploadIndices(positions, Int32Array.from({ length: rows }, (_, i) => first + i));
        const pages = uploadPages(be, layout.pages(new Array(rows).fill(0)));
        const outs = widths.map((width) => be.allocate(rows * width));
        const xt = be.upload(x), nt = be.upload(norm), rotary = be.upload(concat(cos, sin));
        const recorded = await dispatchesOf(be, () => project(be, outs, xt, { weight: nt, eps: 1e-5 }, { positions, rotary, heads, kvHeads, headDim, store: { cache, layer: 1, pages } }));
        if (be === gpu) dispatches = recorded;
        const results: Float32Array[] = [];
        for (const [i, o] of outs.entries()) results.push(await be.read(o, rows * widths[i]));
        const attended = be.allocate(rows * widths[0]);
        be.attention(attended, outs[0], cache, 1, positions, pages, 0, rows, { heads, kvHeads, headDim, scale: 0.3 }, first + rows, true);
        results.push(await be.read(attended, rows * widths[0]));
        cache.release();
        return concat(...results);
      });
      return { g, c, dispatches };
    }

    it.for<[number, number, number, number, number]>([[1, 40, 3, 1, 10], [1, 48, 4, 2, 8], [3, 40, 3, 1, 10], [1, 13, 2, 2, 6]])('matmulSplit with RoPE rows=%i in=%i heads=%i/%i head_dim=%i: q, k, v rotated and stored in the paged cache (one dispatch for one row where the adapter has subgroups)', async ([rows, inFeatures, heads, kvHeads, headDim], { skip }) => {
      if (!gpu) return skip();
      const total = (heads + 2 * kvHeads) * headDim;
      const w = random(total * inFeatures), bias = random(total);
      const widths = [heads * headDim, kvHeads * headDim, kvHeads * headDim];
      const { g, c, dispatches } = await ropeCase(rows, inFeatures, heads, kvHeads, headDim, (be, outs, x, norm, rope) =>
        be.matmulSplit(outs, x, be.uploadMatrix(w, total, inFeatures, 'qkv'), be.upload(bias), rows, inFeatures, widths, norm, rope));
      expectClose(g, c, 1e-4);
      if (rows === 1 && inFeatures % 8 === 0 && ropeEpilogue()) expect(dispatches).toBe(1);
      else expect(dispatches).toBeGreaterThan(1);
    });

    it('matmulSplit with RoPE of a norm weight of ones (folded into the weights): the pipeline that does not load it, as the CPU makes it', async ({ skip }) => {
      if (!gpu || !ropeEpilogue()) return skip();
      const [heads, kvHeads, headDim, inFeatures] = [4, 2, 8, 48];
      const total = (heads + 2 * kvHeads) * headDim;
      const w = random(total * inFeatures), bias = random(total);
      const project: QkvProjection = (be, outs, x, norm, rope) => be.matmulSplit(outs, x, be.uploadMatrix(w, total, inFeatures, 'qkv'), be.upload(bias), 1, inFeatures, [heads * headDim, kvHeads * headDim, kvHeads * headDim], norm, rope);
      const { g, c, dispatches } = await ropeCase(1, inFeatures, heads, kvHeads, headDim, project, random, true);
      expectClose(g, c, 1e-4);
      expect(dispatches).toBe(1);
      // That pipeline made q: left out, q is never written.
      gpu.setSkippedKernels(/Unscaled$/);
      try {
        const skipped = await ropeCase(1, inFeatures, heads, kvHeads, headDim, project, random, true);
        expect(skipped.g.subarray(0, heads * headDim).every((v) => v === 0)).toBe(true);
      } finally {
        gpu.setSkippedKernels(undefined);
      }
    });

    // Stacked q|k|v block low-rank layers: RoPE in the expansion's epilogue (BLAST and low-rank, one
    // row, heads whole within an output block); Monarch's strided outputs rotate after.
    it.for<['lowrank' | 'monarch' | 'blast', number, number]>([['blast', 1, 2], ['blast', 2, 2], ['lowrank', 1, 1], ['monarch', 1, 2], ['blast', 1, 8]])('stacked %s q|k|v with RoPE rows=%i blocks=%i: rotated and stored as the CPU does (RoPE in the expansion where it can)', async ([method, rows, b], { skip }) => {
      if (!gpu) return skip();
      const heads = 4, headDim = 8, o = heads * headDim, i = 32, r = 8;
      const inner = random(3 * (method === 'lowrank' ? r * i : b * r * (i / b))), outer = random(3 * o * r), coupling = random(3 * b * b * r);
      const shape = { inFeatures: i, outFeatures: o, rank: r, blocks: b };
      const { g, c, dispatches } = await ropeCase(rows, i, heads, heads, headDim, (be, outs, x, norm, rope) => {
        const group: LinearGroup = method === 'lowrank'
          ? new StackedLowRankLinears(be, be.uploadMatrix(inner, 3 * r, i, 'v'), be.uploadMatrix(outer, 3 * o, r, 'u'), i, o, r, 3, rows)
          : new StackedBlockLinears(be, method, be.uploadMatrix(inner, 3 * b * r, i / b, 'inner'), be.uploadMatrix(outer, 3 * o, r, 'outer'), method === 'blast' ? be.upload(coupling) : null, shape, 3, rows);
        group.forward(outs, x, rows, norm, rope);
      });
      expectClose(g, c, 1e-4);
      // One dispatch for steps 1–2 (the norm inside), one for step 3 with RoPE; three where RoPE runs apart.
      const fused = rows === 1 && method !== 'monarch' && (o / b) % headDim === 0 && ropeEpilogue();
      if (fused) expect(dispatches).toBe(2);
      else expect(dispatches).toBeGreaterThan(2);
    });

    // (Their own random stream, so the cases after them draw what they drew before these existed.)
    const ownRng = new Rng(7);
    const ownRandom = (n: number, scale = 1) => Float32Array.from({ length: n }, () => scale * ownRng.normal());

    // Llama-3.2-1B's q|k|v: q in block low-rank form, k and v dense as one matrix (SeparateLinears);
    // for one row each member normalises x itself where it can (the subgroup GEMV, BLAST's block
    // projection), so no dispatch of its own runs the norm.
    it.for<['monarch' | 'blast', number]>([['blast', 1], ['blast', 3], ['monarch', 1], ['blast', 40]])('separate %s q and dense k|v of RMSNorm(x), rows=%i: each projection as the CPU makes it (the norm inside each for one row where it can)', async ([method, rows], { skip }) => {
      if (!gpu) return skip();
      const i = 64, o = 32, kv = 16, r = 8, b = 4;
      const shape = { inFeatures: i, outFeatures: o, rank: r, blocks: b };
      const inner = ownRandom(b * r * (i / b)), outer = ownRandom(o * r), coupling = ownRandom(b * b * r), kvWeight = ownRandom(2 * kv * i, 0.2);
      const x = ownRandom(rows * i), norm = ownRandom(i);
      let normInside = false;
      let gpuDispatches = 0;
      const [g, c] = await both(async (be) => {
        const q = new BlockLowRankLinear(be, method, be.uploadMatrix(inner, b * r, i / b, 'inner'), be.uploadMatrix(outer, o, r, 'outer'), method === 'blast' ? be.upload(coupling) : null, null, shape, rows);
        const group = new SeparateLinears(be, [q, new ConcatenatedLinear(be, be.uploadMatrix(kvWeight, 2 * kv, i, 'k|v'), null, i, [kv, kv])], i, rows);
        const outs = [be.allocate(rows * o), be.allocate(rows * kv), be.allocate(rows * kv)];
        const xt = be.upload(x), nt = be.upload(norm);
        const dispatches = await dispatchesOf(be, () => group.forward(outs, xt, rows, { weight: nt, eps: 1e-5 }));
        if (be === gpu) {
          gpuDispatches = dispatches;
          normInside = be.normsInside('matmul', rows, i) && be.normsInside(method, rows, i, b);
        }
        return concat(await be.read(outs[0], rows * o), await be.read(outs[1], rows * kv), await be.read(outs[2], rows * kv));
      });
      if (gpu.matmulRoundsActivations(rows) && gpu.gpu.features.subgroupMatrixF16) expectCloseToLargest(g, c);
      else expectClose(g, c, 1e-4);
      expect(normInside).toBe(rows === 1 && method === 'blast' && gpu.gpu.features.subgroups);
      if (normInside) expect(gpuDispatches).toBe(3); // q's two steps, k|v
      else expect(gpuDispatches).toBeGreaterThan(3);
    });

    // The same with RoPE and GQA: the q member rotates q in its expansion's epilogue, the k|v matmul
    // rotates k and stores k and v in its own, where they can (one row; not Monarch's strided q,
    // whose q one rope dispatch then rotates, nor several rows, where one rope dispatch does all).
    it.for<['lowrank' | 'monarch' | 'blast', number]>([['blast', 1], ['lowrank', 1], ['monarch', 1], ['blast', 3]])('separate %s q and dense k|v with RoPE (GQA), rows=%i: rotated and stored as the CPU does (in each member\'s last dispatch where it can)', async ([method, rows], { skip }) => {
      if (!gpu) return skip();
      const heads = 4, kvHeads = 2, headDim = 8, i = 32, r = 8, b = method === 'lowrank' ? 1 : 2;
      const o = heads * headDim, kv = kvHeads * headDim;
      const shape = { inFeatures: i, outFeatures: o, rank: r, blocks: b };
      const inner = ownRandom(r * i), outer = ownRandom(o * r), coupling = ownRandom(b * b * r), kvWeight = ownRandom(2 * kv * i, 0.2);
      const { g, c, dispatches } = await ropeCase(rows, i, heads, kvHeads, headDim, (be, outs, x, norm, rope) => {
        const q = method === 'lowrank'
          ? new LowRankLinear(be, be.uploadMatrix(inner, r, i, 'v'), be.uploadMatrix(outer, o, r, 'u'), null, i, o, r, rows)
          : new BlockLowRankLinear(be, method, be.uploadMatrix(inner, b * r, i / b, 'inner'), be.uploadMatrix(outer, o, r, 'outer'), method === 'blast' ? be.upload(coupling) : null, null, shape, rows);
        new SeparateLinears(be, [q, new ConcatenatedLinear(be, be.uploadMatrix(kvWeight, 2 * kv, i, 'k|v'), null, i, [kv, kv])], i, rows).forward(outs, x, rows, norm, rope);
      }, ownRandom);
      expectClose(g, c, 1e-4);
      // q's two dispatches (the norm inside the first) and k|v's one, RoPE in both; Monarch: its norm
      // first, no epilogue for either (the k|v GEMV pairs only with the norm inside), one rope.
      if (rows === 1 && method !== 'monarch' && ropeEpilogue()) expect(dispatches).toBe(3);
      else if (rows === 1 && method === 'monarch' && ropeEpilogue()) expect(dispatches).toBe(5);
      else expect(dispatches).toBeGreaterThan(3);
    });

    // GPT-2's c_attn in block low-rank form: one layer's outputs split into q, k and v — by the
    // expansion itself for decoding rows on the subgroup GEMV (two dispatches), by gathers elsewhere;
    // low-rank's second matmul always writes them split.
    it.for<['lowrank' | 'monarch' | 'blast', number]>([['blast', 1], ['monarch', 3], ['lowrank', 1], ['blast', 40], ['monarch', 33], ['lowrank', 40]])('%s layer split three ways (GPT-2\'s c_attn), rows=%i: q, k and v as the CPU splits them', async ([method, rows], { skip }) => {
      if (!gpu) return skip();
      const i = 48, width = 24, o = 3 * width, r = 16, b = { lowrank: 1, monarch: 4, blast: 6 }[method];
      const shape = { inFeatures: i, outFeatures: o, rank: r, blocks: b };
      const inner = ownRandom(r * i), outer = ownRandom(o * r), coupling = ownRandom(b * b * r), bias = ownRandom(o);
      const x = ownRandom(rows * i);
      let gpuDispatches = 0;
      const [g, c] = await both(async (be) => {
        const layer = method === 'lowrank'
          ? new LowRankLinear(be, be.uploadMatrix(inner, r, i, 'v'), be.uploadMatrix(outer, o, r, 'u'), be.upload(bias), i, o, r, rows)
          : new BlockLowRankLinear(be, method, be.uploadMatrix(inner, b * r, i / b, 'inner'), be.uploadMatrix(outer, o, r, 'outer'), method === 'blast' ? be.upload(coupling) : null, be.upload(bias), shape, rows);
        const group = new SplitOutputs(be, layer, width, 3, rows);
        const outs = [be.allocate(rows * width), be.allocate(rows * width), be.allocate(rows * width)];
        const xt = be.upload(x);
        const dispatches = await dispatchesOf(be, () => group.forward(outs, xt, rows));
        if (be === gpu) gpuDispatches = dispatches;
        return concat(...(await Promise.all(outs.map((out) => be.read(out, rows * width)))));
      });
      if (gpu.matmulRoundsActivations(rows) && gpu.gpu.features.subgroupMatrixF16) expectCloseToLargest(g, c);
      else expectClose(g, c, 1e-4);
      if (method === 'lowrank') return;
      if (gpu.gpu.features.subgroups && !gpu.matmulRoundsActivations(rows)) expect(gpuDispatches).toBe(2);
      else expect(gpuDispatches).toBeGreaterThan(4); // the gathers
    });

    it.for<[number, number, number]>([[1, 48, 13], [1, 40, 1], [2, 48, 13], [1, 4104, 37], [40, 136, 19]])('matmulSwiglu rows=%i in=%i width=%i: silu(gate) ⊙ up of RMSNorm(x) (one dispatch for one row where the adapter has subgroups)', async ([rows, inFeatures, width], { skip }) => {
      if (!gpu) return skip();
      const x = random(rows * inFeatures, 2), norm = random(inFeatures), w = random(2 * width * inFeatures, 0.3), bias = random(2 * width);
      let fusedDispatches = 0;
      let fused = true;
      const [g, c] = await both(async (be) => {
        const out = be.allocate(rows * width), up = be.allocate(rows * width);
        const xt = be.upload(x), wt = be.uploadMatrix(w, 2 * width, inFeatures, 'gateUp'), bt = be.upload(bias), nt = be.upload(norm);
        let gated = false;
        const dispatches = await dispatchesOf(be, () => {
          gated = be.matmulSwiglu(out, up, xt, wt, bt, rows, inFeatures, width, { weight: nt, eps: 1e-5 });
        });
        if (be === gpu) {
          fusedDispatches = dispatches;
          fused = gated;
        } else expect(gated).toBe(true);
        if (gated) return be.read(out, rows * width);
        // Not gated: out holds the gate and up the up projection, for the consumer to gate.
        const gateValues = await be.read(out, rows * width), upValues = await be.read(up, rows * width);
        return gateValues.map((v, i) => (v / (1 + Math.exp(-v))) * upValues[i]);
      });
      if (gpu.matmulRoundsActivations(rows)) expectCloseToLargest(g, c); // tensor cores: x in f16
      else expectClose(g, c, Math.max(1e-4, inFeatures * 6e-8));
      const one = rows === 1 && inFeatures % 8 === 0 && gpu.gpu.features.subgroups;
      expect(fused).toBe(one);
      // Fused, one dispatch; otherwise the matmul alone (the norm first where it does not fuse it).
      if (one) expect(fusedDispatches).toBe(1);
      else expect(fusedDispatches).toBeGreaterThanOrEqual(1);
    });

    it('a norm weight of ones (folded into the weights): the one-row normed GEMVs take their pipelines that do not load it, as the CPU makes it', async ({ skip }) => {
      if (!gpu || !gpu.gpu.features.subgroups) return skip();
      const inFeatures = 4104, width = 37;
      const x = ownRandom(inFeatures, 2), w = ownRandom(2 * width * inFeatures, 0.3), bias = ownRandom(2 * width);
      const record = async (be: Backend) => {
        const norm = { weight: be.upload(new Float32Array(inFeatures).fill(1)), eps: 1e-5 };
        const xt = be.upload(x), wt = be.uploadMatrix(w, 2 * width, inFeatures, 'w'), bt = be.upload(bias);
        const plain = be.allocate(2 * width), out = be.allocate(width), up = be.allocate(width);
        be.matmul(plain, xt, wt, bt, 1, inFeatures, 2 * width, false, norm);
        expect(be.matmulSwiglu(out, up, xt, wt, bt, 1, inFeatures, width, norm)).toBe(true);
        return concat(await be.read(plain, 2 * width), await be.read(out, width));
      };
      const [g, c] = await both(record);
      expectClose(g, c, Math.max(1e-4, inFeatures * 6e-8));
      // Those pipelines made every value: left out, nothing is written.
      gpu.setSkippedKernels(/Unscaled$/);
      try {
        expect((await record(gpu)).every((v) => v === 0)).toBe(true);
      } finally {
        gpu.setSkippedKernels(undefined);
      }
    });

    // Rows 40 and 64 take tensor cores where the adapter has them: x normalised straight into f16.
    it.for<[number, number]>([[1, 64], [3, 256], [1, 13], [6, 64], [1, 3000], [2, 4104], [20, 136], [16, 4104], [40, 136], [64, 4104], [40, 132]])('matmul of RMSNorm(x) rows=%i in=%i (fused into the subgroup GEMV where it can be)', async ([rows, inFeatures], { skip }) => {
      if (!gpu) return skip();
      const x = random(rows * inFeatures, 3), g = random(inFeatures), w = random(7 * inFeatures);
      const [gpuOut, cpuOut] = await both((be) => {
        const out = be.allocate(rows * 7);
        be.matmul(out, be.upload(x), be.uploadMatrix(w, 7, inFeatures, 'w'), null, rows, inFeatures, 7, false, { weight: be.upload(g), eps: 1e-5 });
        return be.read(out, rows * 7);
      });
      // Rows ≥ 32 against the largest output: tensor cores round x to f16; f32 sums of 4104 terms
      // over gates of ±6 cancel in places.
      if (rows >= 32) expectCloseToLargest(gpuOut, cpuOut, gpu.matmulRoundsActivations(rows) ? 2e-3 : 1e-5);
      else expectClose(gpuOut, cpuOut, 2e-5 * Math.max(1, Math.sqrt(inFeatures) / 8));
    });

    it.for<[number, number]>([[1, 64], [3, 256], [1, 13], [6, 64], [1, 3000], [2, 4104], [20, 136], [1, 4104], [40, 136], [64, 4104], [40, 132]])('matmul of SwiGLU silu(gate) ⊙ up rows=%i in=%i, with a residual', async ([rows, inFeatures], { skip }) => {
      if (!gpu) return skip();
      // Gates over ±6, where silu bends and saturates.
      const gate = random(rows * inFeatures, 6), up = random(rows * inFeatures), w = random(7 * inFeatures), residual = random(rows * 7);
      const [gpuOut, cpuOut] = await both((be) => {
        const out = writableCopy(be, residual);
        be.matmul(out, be.upload(gate), be.uploadMatrix(w, 7, inFeatures, 'w'), null, rows, inFeatures, 7, true, { up: be.upload(up) });
        return be.read(out, rows * 7);
      });
      // Rows ≥ 32 against the largest output: tensor cores round x to f16; f32 sums of 4104 terms
      // over gates of ±6 cancel in places.
      if (rows >= 32) expectCloseToLargest(gpuOut, cpuOut, gpu.matmulRoundsActivations(rows) ? 2e-3 : 1e-5);
      else expectClose(gpuOut, cpuOut, 2e-5 * Math.max(1, Math.sqrt(inFeatures) / 8));
    });

    it.for<[number, number]>([[1, 64], [1, 768], [1, 3000], [1, 13], [3, 256], [20, 136], [40, 136], [40, 132]])('matmul and matmulSplit of LayerNorm(x) rows=%i in=%i, x off centre (inside the one-row subgroup GEMV where it can be)', async ([rows, inFeatures], { skip }) => {
      if (!gpu) return skip();
      // x = 3 + N(0, 1) per value: the mean matters, and the fused kernel's mean and variance from
      // one pass (E[x²] − mean²) meet the CPU's two passes.
      // (Their own random stream, as the cases above.)
      const x = ownRandom(rows * inFeatures).map((v) => v + 3), w = ownRandom(10 * inFeatures), bias = ownRandom(10), g = ownRandom(inFeatures), e = ownRandom(inFeatures), residual = ownRandom(rows * 10);
      const [gpuOut, cpuOut] = await both(async (be) => {
        const norm = { weight: be.upload(g), bias: be.upload(e), eps: 1e-5 };
        const weight = be.uploadMatrix(w, 10, inFeatures, 'w');
        const out = writableCopy(be, residual);
        be.matmul(out, be.upload(x), weight, be.upload(bias), rows, inFeatures, 10, true, norm);
        const outs = [be.allocate(rows * 3), be.allocate(rows * 3), be.allocate(rows * 4)];
        be.matmulSplit(outs, be.upload(x), weight, be.upload(bias), rows, inFeatures, [3, 3, 4], norm);
        return concat(await be.read(out, rows * 10), ...(await Promise.all(outs.map((o, i) => be.read(o, rows * (i < 2 ? 3 : 4))))));
      });
      // The CPU side against LayerNorm then the matmul in float64 (same f16 weights).
      const direct = new Float32Array(2 * rows * 10);
      for (let r = 0; r < rows; r++) {
        const row = Array.from(x.subarray(r * inFeatures, (r + 1) * inFeatures));
        const mean = row.reduce((a, v) => a + v, 0) / inFeatures;
        const variance = row.reduce((a, v) => a + (v - mean) ** 2, 0) / inFeatures;
        const normed = row.map((v, k) => ((v - mean) / Math.sqrt(variance + 1e-5)) * g[k] + e[k]);
        for (let o = 0; o < 10; o++) {
          const y = normed.reduce((a, v, k) => a + v * halfToFloat(floatToHalf(w[o * inFeatures + k])), 0) + bias[o];
          direct[r * 10 + o] = residual[r * 10 + o] + y;
          // matmulSplit's outputs: rows × 3, rows × 3, rows × 4, one after another.
          const [part, width, start] = o < 3 ? [0, 3, 0] : o < 6 ? [1, 3, 3] : [2, 4, 6];
          direct[rows * 10 + part * rows * 3 + r * width + (o - start)] = y;
        }
      }
      expectClose(cpuOut, direct, 1e-4);
      if (gpu.matmulRoundsActivations(rows)) expectCloseToLargest(gpuOut, cpuOut);
      else expectClose(gpuOut, cpuOut, 1e-4);
    });

    it('a one-row matmul of LayerNorm(x) wider than the LayerNorm GEMV takes (GPT-2\'s LM head) runs the norm first, as the CPU makes it', async ({ skip }) => {
      if (!gpu) return skip();
      const inFeatures = 72;
      for (const outFeatures of [10, LAYER_NORM_GEMV_MAX_OUT + 3]) {
        const x = ownRandom(inFeatures).map((v) => v + 3), w = ownRandom(outFeatures * inFeatures), g = ownRandom(inFeatures), e = ownRandom(inFeatures);
        let dispatches = 0;
        const [gpuOut, cpuOut] = await both(async (be) => {
          const norm = { weight: be.upload(g), bias: be.upload(e), eps: 1e-5 };
          const weight = be.uploadMatrix(w, outFeatures, inFeatures, 'w');
          const xt = be.upload(x);
          const out = be.allocate(outFeatures);
          const recorded = await dispatchesOf(be, () => be.matmul(out, xt, weight, null, 1, inFeatures, outFeatures, false, norm));
          if (be === gpu) dispatches = recorded;
          return be.read(out, outFeatures);
        });
        expectClose(gpuOut, cpuOut, 1e-4);
        // Inside the GEMV (one dispatch) up to the limit, where the adapter has the subgroup GEMV; the norm's own pass and a GEMV past it.
        const fused = gpu.gpu.features.subgroups && outFeatures <= LAYER_NORM_GEMV_MAX_OUT;
        expect(dispatches, `${outFeatures} outputs`).toBe(fused ? 1 : 2);
      }
    });

    it.for<[number, number]>([[1, 64], [3, 256], [1, 13], [6, 64], [1, 3000], [2, 4104], [20, 136], [40, 136], [64, 4104], [40, 132], [33, 13]])('matmul with GELU on its outputs rows=%i in=%i (in the matmul\'s epilogue), with bias, and with a residual added after it', async ([rows, inFeatures], { skip }) => {
      if (!gpu) return skip();
      const x = ownRandom(rows * inFeatures), w = ownRandom(9 * inFeatures), bias = ownRandom(9), residual = ownRandom(rows * 9);
      const [g, c] = await both(async (be) => {
        const weight = be.uploadMatrix(w, 9, inFeatures, 'w');
        const out = be.allocate(rows * 9);
        be.matmul(out, be.upload(x), weight, be.upload(bias), rows, inFeatures, 9, false, undefined, 'gelu');
        const sum = writableCopy(be, residual);
        be.matmul(sum, be.upload(x), weight, null, rows, inFeatures, 9, true, undefined, 'gelu');
        return concat(await be.read(out, rows * 9), await be.read(sum, rows * 9));
      });
      // The CPU side against gelu(x · Wᵀ + b) in float64 from the same f16 weights.
      const direct = new Float32Array(2 * rows * 9);
      for (let r = 0; r < rows; r++) {
        for (let o = 0; o < 9; o++) {
          let dot = 0;
          for (let k = 0; k < inFeatures; k++) dot += x[r * inFeatures + k] * halfToFloat(floatToHalf(w[o * inFeatures + k]));
          const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
          direct[r * 9 + o] = gelu(dot + bias[o]);
          direct[(rows + r) * 9 + o] = residual[r * 9 + o] + gelu(dot);
        }
      }
      expectCloseToLargest(c, direct, 1e-5);
      if (gpu.matmulRoundsActivations(rows)) expectCloseToLargest(g, c);
      else expectClose(g, c, 2e-5 * Math.max(1, Math.sqrt(inFeatures) / 8));
    });

    it.for<['lowrank' | 'monarch' | 'blast', BlockShape, number]>([
      ['blast', { inFeatures: 96, outFeatures: 48, rank: 24, blocks: 4 }, 1], // the blocked subgroup GEMV's epilogue
      ['monarch', { inFeatures: 64, outFeatures: 48, rank: 16, blocks: 4 }, 3],
      ['blast', { inFeatures: 96, outFeatures: 40, rank: 24, blocks: 4 }, 1], // odd outputs per block: a GELU pass after
      ['blast', { inFeatures: 27, outFeatures: 15, rank: 5, blocks: 3 }, 2],
      ['blast', { inFeatures: 128, outFeatures: 48, rank: 40, blocks: 16 }, 40], // tensor cores where the adapter has them
      ['lowrank', { inFeatures: 40, outFeatures: 33, rank: 6, blocks: 1 }, 3],
      ['lowrank', { inFeatures: 64, outFeatures: 48, rank: 16, blocks: 1 }, 1],
    ])('%s layer %o over %i rows with GELU on its outputs (GPT-2\'s c_fc) gives its forward then gelu', async ([method, shape, rows], { skip }) => {
      if (!gpu) return skip();
      const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
      const inner = ownRandom(b * r * (i / b)), outer = ownRandom(o * r), coupling = ownRandom(b * b * r), bias = ownRandom(o), x = ownRandom(rows * i);
      const [g, c] = await both(async (be) => {
        const layer = method === 'lowrank'
          ? new LowRankLinear(be, be.uploadMatrix(inner, r, i, 'v'), be.uploadMatrix(outer, o, r, 'u'), be.upload(bias), i, o, r, rows)
          : new BlockLowRankLinear(be, method, be.uploadMatrix(inner, b * r, i / b, 'inner'), be.uploadMatrix(outer, o, r, 'outer'), method === 'blast' ? be.upload(coupling) : null, be.upload(bias), shape, rows);
        const fused = be.allocate(rows * o), apart = be.allocate(rows * o);
        layer.forward(fused, be.upload(x), rows, undefined, 'gelu');
        layer.forward(apart, be.upload(x), rows);
        be.gelu(apart, apart, rows * o);
        const [a, f] = [await be.read(apart, rows * o), await be.read(fused, rows * o)];
        // One backend's fused GELU against its own separate pass: the same sums, the same rounding.
        expectClose(f, a, 1e-6);
        return f;
      });
      if (gpu.matmulRoundsActivations(rows) && gpu.gpu.features.subgroupMatrixF16) expectCloseToLargest(g, c);
      else expectClose(g, c, 2e-5 * Math.max(1, Math.sqrt(i + b * r) / 8));
    });

    it.for<['lowrank' | 'monarch' | 'blast', BlockShape, number]>([
      ['blast', { inFeatures: 96, outFeatures: 48, rank: 24, blocks: 6 }, 1], // inside BLAST's one-row projection (8 channels a workgroup)
      ['blast', { inFeatures: 128, outFeatures: 48, rank: 40, blocks: 16 }, 1], // 4 channels, a ragged last workgroup
      ['blast', { inFeatures: 160, outFeatures: 40, rank: 8, blocks: 20 }, 1], // 2 channels: a LayerNorm pass first
      ['blast', { inFeatures: 96, outFeatures: 48, rank: 24, blocks: 6 }, 3],
      ['monarch', { inFeatures: 64, outFeatures: 48, rank: 16, blocks: 4 }, 1],
      ['lowrank', { inFeatures: 64, outFeatures: 48, rank: 16, blocks: 1 }, 1], // inside the first matmul's GEMV
    ])('%s layer %o over %i rows of LayerNorm(x), x off centre (GPT-2\'s ln_1 before c_attn), as the CPU makes it', async ([method, shape, rows], { skip }) => {
      if (!gpu) return skip();
      const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
      const inner = ownRandom(b * r * (i / b)), outer = ownRandom(o * r), coupling = ownRandom(b * b * r), bias = ownRandom(o);
      const x = ownRandom(rows * i).map((v) => 2 * v + 3), g = ownRandom(i), e = ownRandom(i);
      let dispatches = 0;
      const [gpuOut, cpuOut] = await both(async (be) => {
        const layer = method === 'lowrank'
          ? new LowRankLinear(be, be.uploadMatrix(inner, r, i, 'v'), be.uploadMatrix(outer, o, r, 'u'), be.upload(bias), i, o, r, rows)
          : new BlockLowRankLinear(be, method, be.uploadMatrix(inner, b * r, i / b, 'inner'), be.uploadMatrix(outer, o, r, 'outer'), method === 'blast' ? be.upload(coupling) : null, be.upload(bias), shape, rows);
        const out = be.allocate(rows * o);
        layer.forward(out, be.upload(x), rows, { weight: be.upload(g), bias: be.upload(e), eps: 1e-5 });
        const result = await be.read(out, rows * o);
        if (be === gpu) dispatches = gpu.lastStep.dispatches;
        return result;
      });
      // The norm inside the layer's first dispatch where a kernel takes it (a pass of its own elsewhere).
      const inside = rows === 1 && gpu.gpu.features.subgroups && (method === 'lowrank' || (method === 'blast' && b !== 20));
      expect(dispatches).toBe(inside ? 2 : 3);
      // The CPU side against LayerNorm applied first, then the same layer on the CPU.
      const normed = new Float32Array(rows * i);
      for (let row = 0; row < rows; row++) {
        const values = x.subarray(row * i, (row + 1) * i);
        const mean = values.reduce((a, v) => a + v, 0) / i;
        const variance = values.reduce((a, v) => a + (v - mean) ** 2, 0) / i;
        values.forEach((v, k) => { normed[row * i + k] = ((v - mean) / Math.sqrt(variance + 1e-5)) * g[k] + e[k]; });
      }
      const c: Backend = cpu;
      const layer = method === 'lowrank'
        ? new LowRankLinear(c, c.uploadMatrix(inner, r, i, 'v'), c.uploadMatrix(outer, o, r, 'u'), c.upload(bias), i, o, r, rows)
        : new BlockLowRankLinear(c, method, c.uploadMatrix(inner, b * r, i / b, 'inner'), c.uploadMatrix(outer, o, r, 'outer'), method === 'blast' ? c.upload(coupling) : null, c.upload(bias), shape, rows);
      const apart = c.allocate(rows * o);
      layer.forward(apart, c.upload(normed), rows);
      expectClose(cpuOut, await cpu.read(apart, rows * o), 1e-4);
      expectClose(gpuOut, cpuOut, 1e-4);
    });

    it.for<[number]>([[1], [3], [9]])('LowRankLinear rows=%i: two matmuls through its rank-wide intermediate, with bias and residual, and of a gated input', async ([rows], { skip }) => {
      if (!gpu) return skip();
      const v = random(6 * 40), u = random(33 * 6), bias = random(33), x = random(rows * 40), residual = random(rows * 33), up = random(rows * 40);
      const [g, c] = await both(async (be) => {
        const layer = new LowRankLinear(be, be.uploadMatrix(v, 6, 40, 'v'), be.uploadMatrix(u, 33, 6, 'u'), be.upload(bias), 40, 33, 6, 9);
        const out = be.allocate(rows * 33);
        layer.forward(out, be.upload(x), rows);
        const sum = be.allocate(rows * 33);
        be.add(sum, be.upload(residual), be.upload(new Float32Array(rows * 33)), rows * 33);
        layer.forwardAdd(sum, be.upload(x), rows);
        // And of a SwiGLU's silu(x) ⊙ up (the low-rank layer's first matmul gates its input).
        const gated = writableCopy(be, residual);
        layer.forwardAdd(gated, be.upload(x), rows, { up: be.upload(up) });
        return concat(await be.read(out, rows * 33), await be.read(sum, rows * 33), await be.read(gated, rows * 33));
      });
      expectClose(g, c);
    });

    // Low-rank q|k|v or gate|up stacked: one matmul writing every layer's x·Vᵀ one after another
    // (matmulStacked; the subgroup GEMV with the norm inside for one row, batched GEMV, tiled GEMM
    // and tensor cores from 32 rows), then one stacked expansion; against the same layers apart.
    it.for<[number, number, number, number, number]>([[1, 64, 40, 16, 3], [3, 64, 40, 16, 2], [1, 13, 6, 3, 3], [9, 40, 33, 8, 3], [40, 64, 48, 24, 2], [40, 64, 48, 1040, 2]])('stacked low-rank layers rows=%i %i→%i rank %i, %i deep: each layer\'s own output, from RMSNorm(x)', async ([rows, i, o, r, layers], { skip }) => {
      if (!gpu) return skip();
      const v = random(layers * r * i), u = random(layers * o * r), x = random(rows * i), norm = random(i);
      const tensorCores = gpu.matmulRoundsActivations(rows) && gpu.gpu.features.subgroupMatrixF16;
      const [g, c] = await both((be) => stackedOutputs(be, new StackedLowRankLinears(be, be.uploadMatrix(v, layers * r, i, 'v'), be.uploadMatrix(u, layers * o, r, 'u'), i, o, r, layers, rows), x, norm, rows, o, layers));
      if (tensorCores) expectCloseToLargest(g, c);
      // Two sums of i and r terms, in another order: over a rank of 1040 an output near zero may
      // differ relatively by more, so such sums are measured against the largest output.
      else if (r > 256) expectCloseToLargest(g, c, 2e-5);
      else expectClose(g, c, 5e-5 * Math.max(1, Math.sqrt(i + r) / 8));
      // The layers one by one on the CPU give the same (the stacking is only a layout).
      const apart: Float32Array[] = [];
      for (let layer = 0; layer < layers; layer++) {
        const one = new LowRankLinear(cpu, cpu.uploadMatrix(v.subarray(layer * r * i, (layer + 1) * r * i), r, i), cpu.uploadMatrix(u.subarray(layer * o * r, (layer + 1) * o * r), o, r), null, i, o, r, rows);
        const out = cpu.allocate(rows * o);
        one.forward(out, cpu.upload(x), rows, { weight: cpu.upload(norm), eps: 1e-5 });
        apart.push(await cpu.read(out, rows * o));
      }
      expectClose(c, concat(...apart), 1e-6);
    });

    it.for<['monarch' | 'blast', BlockShape, number]>([
      ['monarch', { inFeatures: 15, outFeatures: 21, rank: 9, blocks: 3 }, 1],
      ['monarch', { inFeatures: 64, outFeatures: 40, rank: 16, blocks: 4 }, 5],
      ['blast', { inFeatures: 27, outFeatures: 15, rank: 5, blocks: 3 }, 2],
      ['blast', { inFeatures: 32, outFeatures: 48, rank: 70, blocks: 16 }, 1],
      ['blast', { inFeatures: 18, outFeatures: 6, rank: 3, blocks: 1 }, 9],
      // Shapes the subgroup kernels take (in/b and rank multiples of 8): batches of 1, 4 and 16
      // rows, channel groups with a ragged last one, odd outputs per block, more than 16 blocks.
      ['monarch', { inFeatures: 64, outFeatures: 36, rank: 24, blocks: 4 }, 20],
      ['blast', { inFeatures: 96, outFeatures: 40, rank: 24, blocks: 4 }, 3],
      ['blast', { inFeatures: 128, outFeatures: 48, rank: 40, blocks: 16 }, 17],
      ['blast', { inFeatures: 48, outFeatures: 30, rank: 16, blocks: 6 }, 1],
      ['blast', { inFeatures: 160, outFeatures: 40, rank: 8, blocks: 20 }, 2],
      // A rank not a multiple of 4: Monarch's quads of rows then span two blocks of x (no shared loads).
      ['monarch', { inFeatures: 32, outFeatures: 40, rank: 18, blocks: 2 }, 2],
      // One row (the gated pipeline's): each quad in one block of x, or not.
      ['monarch', { inFeatures: 64, outFeatures: 40, rank: 32, blocks: 4 }, 1],
      ['monarch', { inFeatures: 32, outFeatures: 40, rank: 18, blocks: 2 }, 1],
      ['blast', { inFeatures: 160, outFeatures: 40, rank: 8, blocks: 20 }, 1],
      // Step 3 on the blocked subgroup GEMV (even outputs per block), Monarch's strided outputs too.
      ['monarch', { inFeatures: 64, outFeatures: 32, rank: 32, blocks: 4 }, 3],
      ['monarch', { inFeatures: 64, outFeatures: 48, rank: 16, blocks: 4 }, 17],
      ['blast', { inFeatures: 96, outFeatures: 48, rank: 24, blocks: 4 }, 1],
      ['blast', { inFeatures: 96, outFeatures: 48, rank: 24, blocks: 4 }, 5],
      ['monarch', { inFeatures: 64, outFeatures: 40, rank: 32, blocks: 4 }, 3],
      // Past the subgroup kernel's 32 BLAST blocks: the portable kernel takes any number.
      ['blast', { inFeatures: 320, outFeatures: 80, rank: 8, blocks: 40 }, 2],
    ])('%s layer %o over %i rows: blockProject and blockExpand, with bias, norm and residual', async ([method, shape, rows], { skip }) => {
      if (!gpu) return skip();
      const { inFeatures: i, rank: r, blocks: b } = shape;
      const [g, c] = await blockLayerBoth(method, shape, rows, true);
      // Sums over in/b inputs, b blocks (couplings of scale 1) and r channels in another order.
      expectClose(g, c, 2e-5 * Math.max(1, Math.sqrt(i + b * r) / 8));
    });

    it.for<['monarch' | 'blast', BlockShape, number]>([
      ['monarch', { inFeatures: 64, outFeatures: 36, rank: 24, blocks: 4 }, 40],
      ['blast', { inFeatures: 128, outFeatures: 48, rank: 40, blocks: 16 }, 130],
      ['blast', { inFeatures: 96, outFeatures: 40, rank: 200, blocks: 4 }, 33],
      ['monarch', { inFeatures: 256, outFeatures: 520, rank: 136, blocks: 8 }, 64],
      ['blast', { inFeatures: 160, outFeatures: 40, rank: 8, blocks: 20 }, 32],
      // A rank that is not a multiple of 8: z stays f32 between the coupling and step 3 (f16 above).
      ['blast', { inFeatures: 96, outFeatures: 40, rank: 36, blocks: 4 }, 48],
      // Step 3 over a rank of 1032 (17 steps of K) in 2 workgroups: K split in two, then summed.
      ['blast', { inFeatures: 64, outFeatures: 40, rank: 1032, blocks: 2 }, 40],
      ['monarch', { inFeatures: 64, outFeatures: 48, rank: 1040, blocks: 2 }, 40], // strided outputs, split K
    ])('%s layer %o over %i rows on tensor cores (one GEMM per block in one dispatch) where the adapter has subgroup matrices', async ([method, shape, rows], { skip }) => {
      if (!gpu?.gpu.features.subgroupMatrixF16) return skip();
      const [g, c] = await blockLayerBoth(method, shape, rows, false);
      expectCloseToLargest(g, c);
    });

    // Stacked layers (q|k|v, gate|up): one project and one expand dispatch for all on the subgroup
    // path, a dispatch per layer elsewhere (tensor cores from 32 rows, the portable kernels, and
    // the block_gemv expansion for odd outputs per block).
    it.for<['monarch' | 'blast', BlockShape, number, number]>([
      ['blast', { inFeatures: 96, outFeatures: 40, rank: 24, blocks: 4 }, 3, 1],
      ['blast', { inFeatures: 96, outFeatures: 48, rank: 24, blocks: 4 }, 3, 1],
      ['monarch', { inFeatures: 64, outFeatures: 32, rank: 32, blocks: 4 }, 2, 5],
      ['monarch', { inFeatures: 64, outFeatures: 40, rank: 32, blocks: 4 }, 2, 5],
      ['blast', { inFeatures: 128, outFeatures: 48, rank: 40, blocks: 16 }, 2, 17],
      ['monarch', { inFeatures: 64, outFeatures: 36, rank: 24, blocks: 4 }, 3, 2],
      ['blast', { inFeatures: 96, outFeatures: 40, rank: 24, blocks: 4 }, 3, 40],
      ['monarch', { inFeatures: 64, outFeatures: 40, rank: 32, blocks: 4 }, 2, 33],
    ])('%s layers %o stacked %i deep over %i rows give each layer\'s own outputs', async ([method, shape, layers, rows], { skip }) => {
      if (!gpu) return skip();
      const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
      const inner = random(layers * b * r * (i / b)), outer = random(layers * o * r), coupling = random(layers * b * b * r);
      const x = random(rows * i), norm = random(i);
      // x and z go to f16 where tensor cores take the rows (as in the tensor-core layer test).
      const tensorCores = gpu.matmulRoundsActivations(rows) && gpu.gpu.features.subgroupMatrixF16;
      const [g, c] = await both((be) => stackedOutputs(be, new StackedBlockLinears(be, method, be.uploadMatrix(inner, layers * b * r, i / b, 'inner'), be.uploadMatrix(outer, layers * o, r, 'outer'),
        method === 'blast' ? be.upload(coupling) : null, shape, layers, rows), x, norm, rows, o, layers));
      if (tensorCores) expectCloseToLargest(g, c);
      else expectClose(g, c, 2e-5 * Math.max(1, Math.sqrt(i + b * r) / 8));
    });

    it('gatherRows from an f16 matrix and from an f32 tensor', async ({ skip }) => {
      if (!gpu) return skip();
      const table = random(11 * 13);
      const indices = Int32Array.of(10, 0, 3, 3);
      const [g, c] = await both(async (be) => {
        const ids = be.allocateIndices(4);
        be.uploadIndices(ids, indices);
        const fromMatrix = be.allocate(4 * 13), fromVector = be.allocate(4 * 13);
        be.gatherRows(fromMatrix, be.uploadMatrix(table, 11, 13, 'table'), ids, 4, 13);
        be.gatherRows(fromVector, be.upload(table), ids, 4, 13);
        return concat(await be.read(fromMatrix, 52), await be.read(fromVector, 52));
      });
      expect(Array.from(g)).toEqual(Array.from(c));
    });

    it.for<[number, number]>([[1, 5], [3, 300], [2, 1000], [2, 4096], [1, 7]])('rmsNorm and layerNorm rows=%i width=%i', async ([rows, width], { skip }) => {
      if (!gpu) return skip();
      const x = random(rows * width, 3), w = random(width), b = random(width);
      const [g, c] = await both(async (be) => {
        const rms = be.allocate(rows * width), ln = be.allocate(rows * width);
        const xt = be.upload(x), wt = be.upload(w);
        be.rmsNorm(rms, xt, wt, rows, width, 1e-5);
        be.layerNorm(ln, xt, wt, be.upload(b), rows, width, 1e-5);
        return concat(await be.read(rms, rows * width), await be.read(ln, rows * width));
      });
      expectClose(g, c);
    });

    it('add, swiglu and gelu, out of place and in place, over more than one grid row', async ({ skip }) => {
      if (!gpu) return skip();
      const n = 70_001;
      const a = random(n, 4), b = random(n, 4);
      const [g, c] = await both(async (be) => {
        const at = be.upload(a), bt = be.upload(b);
        const sum = be.allocate(n), silu = be.allocate(n), gelu = be.allocate(n), inPlace = be.allocate(n);
        be.add(sum, at, bt, n);
        be.swiglu(silu, at, bt, n);
        be.gelu(gelu, at, n);
        be.add(inPlace, at, bt, n); // inPlace = a + b
        be.swiglu(inPlace, inPlace, bt, n); // in place: silu(a + b) · b
        be.gelu(inPlace, inPlace, n);
        return concat(await be.read(sum, n), await be.read(silu, n), await be.read(gelu, n), await be.read(inPlace, n));
      });
      expectClose(g, c, 2e-5);
    });

    it('rope on q-shaped and k-shaped rows at scattered positions', async ({ skip }) => {
      if (!gpu) return skip();
      const rows = 3, heads = 5, kvHeads = 3, headDim = 10;
      const inv = Float32Array.from({ length: headDim / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / headDim));
      const { cos, sin } = ropeTables(inv, 50);
      const q = random(rows * heads * headDim), k = random(rows * kvHeads * headDim);
      const [g, c] = await both(async (be) => {
        const positions = be.allocateIndices(rows);
        be.uploadIndices(positions, Int32Array.of(0, 17, 49));
        const qt = writableCopy(be, q), kt = writableCopy(be, k);
        be.rope(qt, kt, positions, be.upload(concat(cos, sin)), rows, heads, kvHeads, headDim);
        return concat(await be.read(qt, q.length), await be.read(kt, k.length));
      });
      expectClose(g, c);
    });

    it.for(ATTENTION_CASES)('writeKV + causal GQA attention $heads/$kvHeads heads, head_dim $headDim (vec4 kernel when a multiple of 4, one wide workgroup or split over the cache, blocks of rows for prefill, tensor cores for long prefills), $length positions, $rows rows, paged', async (c, { skip }) => {
      if (!gpu) return skip();
      await attentionCase(c);
    });

    it('rope storing k and v into the paged cache in the same dispatch, read back through attention', async ({ skip }) => {
      if (!gpu) return skip();
      const rows = 4, heads = 4, kvHeads = 2, headDim = 12;
      const inv = Float32Array.from({ length: headDim / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / headDim));
      const { cos, sin } = ropeTables(inv, 40);
      const q = random(rows * heads * headDim), k = random(rows * kvHeads * headDim), v = random(rows * kvHeads * headDim);
      const earlierK = random(17 * kvHeads * headDim), earlierV = random(17 * kvHeads * headDim);
      const layout = pagedLayout([21], 16);
      const [g, c] = await both(async (be) => {
        const positions = be.allocateIndices(rows);
        be.uploadIndices(positions, Int32Array.of(17, 18, 19, 20));
        // Positions 0..16 hold other keys and values, written the separate way.
        const before = be.allocateIndices(17);
        be.uploadIndices(before, Int32Array.from({ length: 17 }, (_, i) => i));
        const cache = be.createKVCache({ layers: 2, kvHeads, headDim, blocks: layout.blocks, blockSize: 16, sequences: 1, vocabSize: 1 });
        be.writeKV(cache, 1, be.upload(earlierK), be.upload(earlierV), before, uploadPages(be, layout.pages(new Array(17).fill(0))), 17);
        const qt = be.allocate(q.length), kt = be.allocate(k.length);
        be.add(qt, be.upload(q), be.upload(new Float32Array(q.length)), q.length);
        be.add(kt, be.upload(k), be.upload(new Float32Array(k.length)), k.length);
        const pages = uploadPages(be, layout.pages([0, 0, 0, 0]));
        be.rope(qt, kt, positions, be.upload(concat(cos, sin)), rows, heads, kvHeads, headDim, { cache, layer: 1, v: be.upload(v), pages });
        const out = be.allocate(q.length);
        be.attention(out, qt, cache, 1, positions, pages, 0, rows, { heads, kvHeads, headDim, scale: 0.3 }, 21, true);
        const result = concat(await be.read(out, q.length), await be.read(kt, k.length));
        cache.release();
        return result;
      });
      expectClose(g, c);
    });

    it('randomMatrix makes the same values as the CPU backend, on the GPU', async ({ skip }) => {
      if (!gpu) return skip();
      const [g, c] = await both(async (be) => {
        const ids = be.allocateIndices(3);
        be.uploadIndices(ids, Int32Array.of(0, 6, 12));
        const rows = be.allocate(3 * 21);
        be.gatherRows(rows, be.randomMatrix(13, 21, 0.5, 1234, 'random'), ids, 3, 21);
        return be.read(rows, 3 * 21);
      });
      expectClose(g, c, 1e-3);
      const mean = c.reduce((s, v) => s + v, 0) / c.length;
      expect(Math.abs(mean)).toBeLessThan(0.25);
      expect(new Set(c).size).toBeGreaterThan(50);
    });

    it('zeroRows zeroes a random matrix\'s rows after its fill, before the next kernel reads it', async ({ skip }) => {
      if (!gpu) return skip();
      const [g, c] = await both(async (be) => {
        const ids = be.allocateIndices(13);
        be.uploadIndices(ids, Int32Array.from({ length: 13 }, (_, i) => i));
        const matrix = be.randomMatrix(13, 21, 0.5, 99, 'random');
        be.zeroRows(matrix, 21, 3, 5);
        const rows = be.allocate(13 * 21);
        be.gatherRows(rows, matrix, ids, 13, 21);
        return be.read(rows, 13 * 21);
      });
      expectClose(g, c, 1e-3);
      expect(Array.from(g.subarray(3 * 21, 8 * 21)).every((v) => v === 0)).toBe(true);
      expect(Array.from(g.subarray(0, 3 * 21)).concat(Array.from(g.subarray(8 * 21))).every((v) => v !== 0)).toBe(true);
    });

    it.for<[number, number]>([[13, 21], [5, 4104]])('scaleColumns multiplies a random %i×%i matrix\'s columns by a vector (a folded norm weight), as the CPU does', async ([rows, columns], { skip }) => {
      if (!gpu) return skip();
      const scale = ownRandom(columns).map((v) => 1 + 0.5 * v);
      const gathered = async (be: Backend, scaled: boolean) => {
        const ids = be.allocateIndices(rows);
        be.uploadIndices(ids, Int32Array.from({ length: rows }, (_, i) => i));
        const matrix = be.randomMatrix(rows, columns, 0.5, 77, 'random');
        if (scaled) be.scaleColumns(matrix, columns, be.upload(scale));
        const out = be.allocate(rows * columns);
        be.gatherRows(out, matrix, ids, rows, columns);
        return be.read(out, rows * columns);
      };
      const [g, c] = await both((be) => gathered(be, true));
      expectClose(g, c, 1e-3);
      // Against the unscaled matrix times the scale in float64, rounded to f16 as stored.
      const before = await gathered(gpu, false);
      expectClose(g, before.map((v, i) => halfToFloat(floatToHalf(v * scale[i % columns]))), 1e-3);
    });

    it.for<[number]>([[1], [7], [50257], [128256]])('argmax over %i values, lowest index on ties, in rows', async ([count], { skip }) => {
      if (!gpu) return skip();
      // Three rows of logits (rows of an odd count are not 16-byte aligned); the last two are taken.
      const values = random(3 * count);
      const top = Math.floor(count / 3);
      values[2 * count + top] = 100;
      if (count > 3) values[3 * count - 1] = 100; // a tie later on: the lower index wins
      values[count] = 200; // row 1's maximum, not row 2's
      const [g, c] = await both(async (be) => {
        const out = be.allocateIndices(3);
        be.uploadIndices(out, Int32Array.of(-5, -5, -5));
        be.argmax(out, be.upload(values), 1, 2, count); // rows 1 and 2, one dispatch
        return Float32Array.from(await be.readIndices(out, 3));
      });
      expect(Array.from(g)).toEqual(Array.from(c));
      expect(Array.from(g)).toEqual([-5, 0, top]);
    });

    // The sampling kernel against the CPU sampler, draw for draw. Sums of probabilities differ in
    // rounding (f32 on the GPU, f64 on the CPU): a draw within 1e-4 of a boundary between two
    // neighbouring candidates may fall either side, and then either is right.
    const samplingCases: [string, Omit<SampleParams, 'draw'>][] = [
      ['greedy with a repetition penalty', { ...GREEDY, repetitionPenalty: 1.5 }],
      ['temperature 1, nothing cut', { ...GREEDY, temperature: 1 }],
      ['temperature 0.7, top-k 40', { ...GREEDY, temperature: 0.7, topK: 40 }],
      ['top-p 0.9', { ...GREEDY, temperature: 1.3, topP: 0.9 }],
      ['min-p 0.1', { ...GREEDY, temperature: 1, minP: 0.1 }],
      ['top-k 5, top-p 0.8, min-p 0.05 and a penalty', { ...GREEDY, temperature: 0.9, topK: 5, topP: 0.8, minP: 0.05, repetitionPenalty: 1.3 }],
      ['greedy with presence and frequency penalties', { ...GREEDY, presencePenalty: 0.75, frequencyPenalty: 0.5 }],
      // Penalties exact in f32, so ties stay ties on both sides (a fused multiply-add may round otherwise).
      ['top-p 0.95 with all three penalties', { ...GREEDY, temperature: 1, topP: 0.95, repetitionPenalty: 1.25, presencePenalty: -0.5, frequencyPenalty: 1.5 }],
      // Top-k cuts at the top logit (between equal ones, with ties), so top-p's search starts and
      // ends at one key.
      ['top-k 1, top-p 0.9', { ...GREEDY, temperature: 1, topK: 1, topP: 0.9 }],
      ['top-k 2, top-p 0.3, temperature 0.1', { ...GREEDY, temperature: 0.1, topK: 2, topP: 0.3 }],
    ];
    it.for<[number, boolean]>([[1, false], [7, false], [300, true], [1000, false], [50257, false], [128256, true]])('sample over %i logits (ties: %s) gives the CPU sampler\'s tokens and flags', async ([count, ties], { skip }) => {
      if (!gpu) return skip();
      const draws = count > 10000 ? 3 : 12;
      // With ties, many logits are equal: the order between them is by id, and cuts fall inside them.
      const values = random(count, 3).map((v) => (ties ? Math.round(v * 2) / 2 : v));
      // Token counts: prompt tokens (1), output tokens (2 per time), both; in row 1 of two.
      const stride = flagStride(count);
      const flags = new Int32Array(2 * stride);
      for (let i = 0; i < count; i++) flags[stride + i] = i % 5 === 0 ? 1 : i % 7 === 0 ? 2 * (1 + (i % 3)) : i % 11 === 0 ? 5 : 0;
      for (const [label, options] of samplingCases) {
        for (let d = 0; d < draws; d++) {
          const params: SampleParams = { ...options, draw: Math.fround((d + 0.5 + rng.next() * 0.5) / (draws + 1)) };
          // The case is row 1 of two (an odd count leaves the row unaligned), sampled in one call
          // with row 0: greedy over other logits, its token counts (row 0, none yet) bound.
          const other = random(count);
          const run = async (be: Backend) => {
            const out = be.allocateIndices(2);
            const flagTensor = be.allocateIndices(2 * stride);
            be.uploadIndices(flagTensor, flags);
            be.sample(out, be.upload(concat(other, values)), count, [{ row: 0, params: { ...GREEDY, draw: 0 }, flagsRow: 0 }, { row: 1, params, flagsRow: 1 }], flagTensor);
            const ids = await be.readIndices(out, 2);
            return { id: ids[1], other: ids[0], flags: (await be.readIndices(flagTensor, 2 * stride)).subarray(stride, stride + count) };
          };
          const g = await run(gpu);
          const c = await run(cpu);
          expect(g.other, label).toBe(c.other);
          expect(g.flags[g.id], label).toBe(flags[stride + g.id] + 2);
          if (g.id === c.id) {
            expect(Array.from(g.flags), label).toEqual(Array.from(c.flags));
            continue;
          }
          // Only a draw on a boundary between two neighbouring candidates may differ.
          const penalised = values.map((v, i) => {
            const held = flags[stride + i];
            const repeated = held && options.repetitionPenalty !== 1 ? (v > 0 ? v / options.repetitionPenalty : v * options.repetitionPenalty) : v;
            return held >= 2 ? repeated - options.presencePenalty - options.frequencyPenalty * (held >> 1) : repeated;
          });
          const { ids, probs } = candidateDistribution(penalised, options);
          const at = (id: number) => ids.indexOf(id);
          expect(Math.abs(at(g.id) - at(c.id)), `${label}: GPU ${g.id}, CPU ${c.id}`).toBe(1);
          const boundary = probs.slice(0, Math.max(at(g.id), at(c.id))).reduce((a, b) => a + b, 0);
          expect(Math.abs(params.draw - boundary), label).toBeLessThan(1e-4);
        }
      }
    });

    it.for<[number, number, number]>([[1, 1, 0], [3, 7, 5], [2, 300, 20], [4, 50261, 5], [2, 4099, 20], [33, 130, 3]])('logprobs rows=%i count=%i top=%i: the next token\'s (given or sampled) and the best alternatives, the lower id first on ties', async ([rows, count, top], { skip }) => {
      if (!gpu) return skip();
      const logits = random(rows * count, 4);
      for (let r = 0; r < rows; r++) {
        // Ties: the row's best value again at a later and an earlier id, and a repeated runner-up.
        const row = logits.subarray(r * count, (r + 1) * count);
        const best = row.reduce((b, v, i) => (v > row[b] ? i : b), 0);
        if (count > 4) {
          row[(best + 3) % count] = row[best];
          row[(best + count - 2) % count] = row[best];
          row[(best + 1) % count] = row[best] - 0.5;
          row[(best + 5) % count] = row[best] - 0.5;
        }
      }
      const next = Int32Array.from({ length: rows }, (_, r) => (r % 2 === 0 ? -1 : (r * 7919) % count));
      const sampledIds = Int32Array.from({ length: rows }, (_, r) => (r * 104729 + 3) % count);
      const stride = logprobStride(top);
      const [g, c] = await both(async (be) => {
        const out = be.allocate(rows * stride);
        const nextTensor = be.allocateIndices(rows);
        const sampledTensor = be.allocateIndices(rows);
        be.uploadIndices(nextTensor, next);
        be.uploadIndices(sampledTensor, sampledIds);
        be.logprobs(out, be.upload(logits), count, rows, nextTensor, sampledTensor, top);
        return be.read(out, rows * stride);
      });
      for (let r = 0; r < rows; r++) {
        for (let k = 0; k < stride; k++) {
          const at = r * stride + k;
          // Ids (even places: the next token, then the alternatives) exactly; log-probabilities to f32 accuracy (sums of `count` exponentials).
          if (k % 2 === 0) expect(g[at], `row ${r} place ${k / 2}`).toBe(c[at]);
          else expect(Math.abs(g[at] - c[at]), `row ${r} value ${k}`).toBeLessThan(2e-5 * Math.max(1, Math.abs(c[at])));
        }
      }
      // The CPU oracle against float64 by hand for one row: log-probability of the sampled token.
      const row0 = Array.from(logits.subarray(0, count));
      const max = Math.max(...row0);
      const lse = max + Math.log(row0.reduce((sum, v) => sum + Math.exp(v - max), 0));
      expect(c[0]).toBe(sampledIds[0]);
      expect(c[1]).toBeCloseTo(row0[sampledIds[0]] - lse, 5);
      // Given next tokens come back as given.
      for (let r = 1; r < rows; r += 2) expect(g[r * stride]).toBe(next[r]);
      expect(() => gpu!.logprobs(gpu!.allocate(stride), gpu!.upload(logits), count, 1, gpu!.allocateIndices(1), gpu!.allocateIndices(1), 21)).toThrow(/alternatives/);
    });

    it('sample draws tokens with their probabilities', async ({ skip }) => {
      if (!gpu) return skip();
      const probs = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04];
      const logits = gpu.upload(Float32Array.from(probs, Math.log));
      const out = gpu.allocateIndices(1);
      const counts = new Array(probs.length).fill(0);
      const n = 400;
      for (let i = 0; i < n; i++) {
        gpu.sample(out, logits, probs.length, [{ row: 0, params: { ...GREEDY, temperature: 1, draw: (i + 0.5) / n }, flagsRow: 0 }], null);
        counts[(await gpu.readIndices(out, 1))[0]]++;
      }
      // Evenly spaced draws: each token's share is its probability, to within one draw.
      counts.forEach((c, i) => expect(Math.abs(c / n - probs[i])).toBeLessThanOrEqual(1 / n + 1e-9));
    });

    it('rejects weights outside f16 range, naming the tensor', ({ skip }) => {
      if (!gpu) return skip();
      expect(() => gpu!.uploadMatrix(Float32Array.of(1, 70000), 1, 2, 'model.layers.3.mlp.up_proj.weight'))
        .toThrow(/model.layers.3.mlp.up_proj.weight: value 70000 at \[0, 1\] is outside f16's range/);
    });
  });

  /**
   * The model in `directory` on `backend`: the logits after `text` (in chunks of 16 tokens), then
   * 12 greedy tokens after it, and the zeros its stacked groups were padded with.
   */
  async function promptAndGenerate(directory: string, text: string, backend: Backend) {
    const model = readModelDirectory(directory);
    const prompt = model.tokenizer.encode(text);
    const lm = loadModel(model, backend, { maxStepTokens: 16 });
    const generator = new Generator(lm, model.tokenizer, model.eosTokenIds);
    const cache = lm.createCache(prompt.length);
    let logits = new Float32Array(0);
    for (let start = 0; start < prompt.length; start += 16) logits = Float32Array.from(await lm.forward(cache, Int32Array.from(prompt.slice(start, start + 16)), start));
    cache.release();
    const result = await generator.generate({ promptIds: prompt, maxTokens: 12, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true });
    return { logits, ids: result.ids, padding: lm.padding };
  }

  // stories260K and the tiny GPT-2 with every projection in block low-rank form (as `blr compress`
  // writes it): the WebGPU backend runs them (two prefill chunks, then decode steps) as the CPU
  // backend does. GPT-2's c_attn is one block low-rank layer split into q, k and v.
  it.for([['stories260K', 'lowrank'], ['stories260K', 'monarch'], ['stories260K', 'blast'], ['gpt2-style', 'monarch'], ['gpt2-style', 'blast']] as const)('%s compressed to %s gives the CPU backend\'s logits and greedy tokens', async ([name, method], { skip }) => {
    if (!gpu) return skip();
    const directory = path.join(tempDirectory('blr-webgpu-'), `${name}-${method}`);
    const gpt2 = name === 'gpt2-style';
    await compressCheckpoint(gpt2 ? tinyModelDirectory(name) : DEFAULT_MODEL, directory, { method, blocks: 4, ratio: 0.6, projections: gpt2 ? [...GPT2_PROJECTIONS] : [...PROJECTIONS], iterations: 3 });
    const text = 'Once upon a time, a little dog found a big red ball in the park.';
    const onGpu = await promptAndGenerate(directory, text, gpu);
    const onCpu = await promptAndGenerate(directory, text, cpuLikeGpu());
    expect(maxRelativeError(onGpu.logits, onCpu.logits)).toBeLessThan(modelTolerance());
    expect(onGpu.ids).toEqual(onCpu.ids);
  });

  // Llama-3.2-1B's layout (ANCHORS §1) on a tiny GQA model: q and o compressed, k and v dense, gate
  // at a lower rank than up and down. On the GPU q rotates in its expansion and k|v in their matmul,
  // and gate|up load as one group padded to up's rank (Backend.stacksPaddedRanks); the CPU keeps
  // them apart and ropes in one dispatch of its own.
  it.for(['blast', 'lowrank'] as const)('llama3-style compressed to %s as Llama-3.2-1B is (gate at a lower rank) gives the CPU backend\'s logits and greedy tokens', async (method, { skip }) => {
    if (!gpu) return skip();
    const directory = path.join(tempDirectory('blr-webgpu-'), `llama3-1b-layout-${method}`);
    await compressCheckpoint(tinyModelDirectory('llama3-style'), directory, {
      method, blocks: 4, projections: ['q', 'o', 'gate', 'up', 'down'], rank: { q: 16, o: 16, gate: 16, up: 24, down: 24 }, iterations: 3,
    });
    const text = 'def add(a, b):\n    return a + b  # a sum of two numbers, and some more text to fill a chunk';
    const onGpu = await promptAndGenerate(directory, text, gpu);
    const onCpu = await promptAndGenerate(directory, text, cpuLikeGpu());
    expect(onGpu.padding).toBe(2 * 8 * (64 + 96 + (method === 'blast' ? 16 : 0)));
    expect(onCpu.padding).toBe(0);
    expect(maxRelativeError(onGpu.logits, onCpu.logits)).toBeLessThan(modelTolerance());
    expect(onGpu.ids).toEqual(onCpu.ids);
  });

  const SAMPLING = { ...GREEDY, temperature: 0.8, topK: 30, topP: 0.9, minP: 0.02, repetitionPenalty: 1.2, seed: 7 };
  describe.each(['llama2-style', 'llama3-style', 'gpt2-style', 'stories260K'])('%s on WebGPU', (name) => {
    it('gives the CPU backend\'s greedy tokens, logits and seeded samples (same f16 weights)', async ({ skip }) => {
      if (!gpu) return skip();
      const expected = reference(name);
      const directory = readModelDirectory(name === 'stories260K' ? DEFAULT_MODEL : tinyModelDirectory(name));
      const generate = async (backend: Backend) => {
        const model = loadModel(directory, backend, { maxStepTokens: 16 }); // prompts take two or more chunks
        const cache = model.createCache(expected.prompt_ids.length);
        let logits: Float32Array = new Float32Array(0);
        for (let start = 0; start < expected.prompt_ids.length; start += 16) {
          logits = await model.forward(cache, Int32Array.from(expected.prompt_ids.slice(start, start + 16)), start);
        }
        cache.release();
        const generator = new Generator(model, directory.tokenizer, directory.eosTokenIds);
        const result = await generator.generate({ promptIds: expected.prompt_ids, maxTokens: expected.greedy_ids.length, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true });
        // Seeded sampling with every cut and a penalty, decoded pipelined (on the device for WebGPU).
        const sampled = await generator.generate({ promptIds: expected.prompt_ids, maxTokens: 20, sampling: SAMPLING, ignoreEos: true });
        return { logits, ids: result.ids, sampled: sampled.ids };
      };
      const onGpu = await generate(gpu);
      const onCpu = await generate(cpuLikeGpu());
      expect(onGpu.ids).toEqual(onCpu.ids);
      expect(onGpu.sampled).toEqual(onCpu.sampled);
      expect(new Set(onGpu.sampled).size).toBeGreaterThan(1);
      // The generator picked those greedy tokens on the GPU; the first agrees with the logits.
      expect(onGpu.ids[0]).toBe(Array.from(onGpu.logits.keys()).reduce((best, i) => (onGpu.logits[i] > onGpu.logits[best] ? i : best), 0));
      expect(maxRelativeError(onGpu.logits, onCpu.logits)).toBeLessThan(modelTolerance());
      // And against transformers' f32 logits, within what f16 weights allow.
      const top = expected.top_ids.map((id) => onGpu.logits[id]);
      expect(maxRelativeError(top, expected.top_logits)).toBeLessThan(2e-2);
    });
  });
});

// The KV cache in f32 with every other feature (`--kv-cache f32`): the variants above keep it in f16
// (all features) or run without subgroups and subgroup matrices (portable), so the f32 cache's
// subgroup reductions and tensor-core loads run only here.
describe('WebGPU with an f32 KV cache and every adapter feature', () => {
  let opened: WebGpuBackend | undefined;
  beforeAll(async () => {
    const shared = (await gpuForTests()).backend;
    if (!shared) return;
    const { WebGpuBackend } = await import('../kernels/webgpu/backend.ts');
    opened = await WebGpuBackend.create({ allowSoftware: true, kvPrecision: 'f32' });
    gpu = opened;
  });
  afterAll(() => {
    opened?.gpu.device.destroy();
    gpu = undefined;
  });

  it('keeps keys and values in f32', ({ skip }) => {
    if (!gpu) return skip();
    expect(gpu.kvPrecision).toBe('f32');
    expect(kvLayerBytes(gpu)).toBe(2 * 64 * 3 * 16 * 4);
  });

  it.for(ATTENTION_CASES)('writeKV + attention $heads/$kvHeads heads, head_dim $headDim, $length positions, $rows rows', async (c, { skip }) => {
    if (!gpu) return skip();
    await attentionCase(c);
  });
});

// An adapter with subgroups but only WebGPU's default 16 KB of workgroup memory: every kernel it
// gets must fit (the batch-16 subgroup GEMV's sums are sized by the adapter's smallest subgroup).
describe('WebGPU with subgroups and the default 16 KB of workgroup memory', () => {
  it('compiles every kernel and runs the batched subgroup GEMV as the CPU does', async ({ skip }) => {
    const shared = (await gpuForTests()).backend;
    if (!shared?.gpu.features.subgroups) return skip();
    const { WebGpuBackend } = await import('../kernels/webgpu/backend.ts');
    const small = await WebGpuBackend.create({ allowSoftware: true, workgroupStorage: DEFAULT_WORKGROUP_STORAGE });
    expect(small.gpu.device.limits.maxComputeWorkgroupStorageSize).toBe(DEFAULT_WORKGROUP_STORAGE);
    const [rows, inFeatures, outFeatures] = [16, 264, 13];
    const x = random(rows * inFeatures), w = random(outFeatures * inFeatures);
    const run = async (be: Backend) => {
      const out = be.allocate(rows * outFeatures);
      be.matmul(out, be.upload(x), be.uploadMatrix(w, outFeatures, inFeatures, 'w'), null, rows, inFeatures, outFeatures, false);
      return be.read(out, rows * outFeatures);
    };
    expectClose(await run(small), await run(cpu), 2e-5 * Math.sqrt(inFeatures) / 8);
    small.gpu.device.destroy();
  });
});

// Timeline mode (bench/e2e.ts --timeline): each compute pass's begin and end on the GPU, in order.
describe('WebGPU timeline mode', () => {
  it('times each submitted pass, in order, and starts afresh after each take', async ({ skip }) => {
    const shared = (await gpuForTests()).backend;
    if (!shared?.gpu.features.timestampQuery) return skip();
    const { WebGpuBackend } = await import('../kernels/webgpu/backend.ts');
    const timed = await WebGpuBackend.create({ allowSoftware: true, timeline: true });
    const [rows, inFeatures, outFeatures] = [1, 264, 37];
    const x = random(rows * inFeatures), w = random(outFeatures * inFeatures);
    const weight = timed.uploadMatrix(w, outFeatures, inFeatures, 'w');
    const step = async () => {
      const out = timed.allocate(rows * outFeatures);
      timed.matmul(out, timed.upload(x), weight, null, rows, inFeatures, outFeatures, false);
      return timed.read(out, rows * outFeatures);
    };
    await step();
    await timed.takeTimeline();
    const results = [await step(), await step(), await step()];
    const passes = await timed.takeTimeline();
    expect(passes).toHaveLength(3);
    passes.forEach(([begin, end], i) => {
      expect(end).toBeGreaterThanOrEqual(begin);
      if (i > 0) expect(begin).toBeGreaterThanOrEqual(passes[i - 1][1]);
    });
    expect(await timed.takeTimeline()).toEqual([]);
    // Timing changes nothing computed.
    const oracle: Backend = cpu;
    const out = oracle.allocate(rows * outFeatures);
    oracle.matmul(out, oracle.upload(x), oracle.uploadMatrix(w, outFeatures, inFeatures, 'w'), null, rows, inFeatures, outFeatures, false);
    expectClose(results[2], await oracle.read(out, rows * outFeatures), 2e-5 * Math.sqrt(inFeatures));
    await expect(WebGpuBackend.create({ allowSoftware: true, timeline: true, profile: true })).rejects.toThrow(/pick one/);
    timed.gpu.device.destroy();
  });
});

// Benchmarks' in-place measurement (bench/e2e.ts --skip): matching kernels are left out, and counted.
describe('WebGPU skipped kernels', () => {
  it('leaves out the dispatches of matching kernels until told otherwise', async ({ skip }) => {
    const be = (await gpuForTests()).backend;
    if (!be) return skip();
    const [inFeatures, outFeatures] = [264, 37];
    const x = be.upload(random(inFeatures)), w = be.uploadMatrix(random(outFeatures * inFeatures), outFeatures, inFeatures, 'w');
    const out = writableCopy(be, new Float32Array(outFeatures).fill(7));
    await be.read(out, outFeatures);
    be.setSkippedKernels(/^(gemv|gemm)/);
    try {
      be.matmul(out, x, w, null, 1, inFeatures, outFeatures, false);
      expect(Array.from(await be.read(out, outFeatures))).toEqual(new Array(outFeatures).fill(7));
      expect(be.lastStep.dispatches).toBe(1);
    } finally {
      be.setSkippedKernels(undefined);
    }
    be.matmul(out, x, w, null, 1, inFeatures, outFeatures, false);
    expect((await be.read(out, outFeatures)).some((v) => v !== 7)).toBe(true);
  });
});

// The backend reuses dispatch k's bind group from the submit before when kernel and buffers match.
describe('WebGPU bind groups of the step before', () => {
  it('reuses them for the same buffers only', async ({ skip }) => {
    const be = (await gpuForTests()).backend;
    if (!be) return skip();
    const [inFeatures, outFeatures] = [72, 9];
    const w = random(outFeatures * inFeatures);
    const weight = be.uploadMatrix(w, outFeatures, inFeatures, 'w');
    const oracle: Backend = cpu;
    const oracleWeight = oracle.uploadMatrix(w, outFeatures, inFeatures, 'w');
    const inputs = [random(inFeatures), random(inFeatures), random(inFeatures)];
    const onGpu = inputs.map((x) => be.upload(x));
    // The same kernel as dispatch 0 of each submit, with the input (and output) changing, then repeating.
    for (const i of [0, 1, 0, 2, 2, 1]) {
      const out = be.allocate(outFeatures);
      be.matmul(out, onGpu[i], weight, null, 1, inFeatures, outFeatures, false);
      const expected = oracle.allocate(outFeatures);
      oracle.matmul(expected, oracle.upload(inputs[i]), oracleWeight, null, 1, inFeatures, outFeatures, false);
      expectClose(await be.read(out, outFeatures), await oracle.read(expected, outFeatures), 2e-5 * Math.sqrt(inFeatures));
    }
  });
});

// Models call submitIfIdle between layers: a step recorded while nothing runs goes out in parts, so
// the GPU starts while the CPU records the rest; one recorded behind a running step stays whole.
describe('WebGPU submitIfIdle', () => {
  it('submits 16 or more waiting dispatches only while no read is in flight, and the values are the same', async ({ skip }) => {
    const be = (await gpuForTests()).backend;
    if (!be) return skip();
    const n = 37;
    const a = random(n);
    const step = be.upload(a);
    const out = writableCopy(be, new Float32Array(n));
    await be.read(out, n);
    let adds = 0;
    const record = (count: number) => {
      for (let i = 0; i < count; i++) be.add(out, out, step, n);
      adds += count;
    };
    const expected = () => Float32Array.from(a, (v) => v * adds);
    // Idle: 20 dispatches go out at once, the 3 after them with the read.
    record(20);
    be.submitIfIdle();
    record(3);
    expectClose(await be.read(out, n), expected(), 1e-5 * adds);
    expect(be.lastStep).toEqual({ dispatches: 23, submits: 2 });
    // Fewer than 16 waiting: nothing yet.
    record(15);
    be.submitIfIdle();
    expectClose(await be.read(out, n), expected(), 1e-5 * adds);
    expect(be.lastStep).toEqual({ dispatches: 15, submits: 1 });
    // Behind a read in flight (a pipelined step): the next step stays one submit.
    record(4);
    const first = be.read(out, n);
    record(20);
    be.submitIfIdle();
    const second = be.read(out, n);
    expect(be.lastStep).toEqual({ dispatches: 20, submits: 1 });
    await first;
    expectClose(await second, expected(), 1e-5 * adds);
  });
  it('splits a model\'s prefill while the GPU is idle, never a decode step, and gives the same logits', async ({ skip }) => {
    const be = (await gpuForTests()).backend;
    if (!be) return skip();
    // stories260K: five layers, enough dispatches before the last for a decode step to be split if it could be.
    const model = loadModel(readModelDirectory(DEFAULT_MODEL), be, { maxStepTokens: 16 });
    const cache = model.createCache(32);
    const prompt = Int32Array.from({ length: 16 }, (_, i) => (7 * i + 3) % model.config.vocabSize);
    const split = await model.forward(cache, prompt, 0);
    expect(be.lastStep.submits).toBeGreaterThan(1);
    // A decode step with nothing running: one submit.
    await model.forwardSample(cache, Int32Array.of(5), 16, { ...GREEDY, draw: 0 });
    expect(be.lastStep.submits).toBe(1);
    cache.release();
    // The same prefill recorded behind a read in flight goes out whole, with the same logits.
    const again = model.createCache(32);
    const pending = be.read(be.allocate(1), 1);
    const whole = model.forward(again, prompt, 0);
    expect(be.lastStep.submits).toBe(1);
    await pending;
    expect(Array.from(await whole)).toEqual(Array.from(split));
    again.release();
    model.dispose();
  });
});
