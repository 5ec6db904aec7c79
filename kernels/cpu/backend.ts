// The CPU backend: every op runs at once on Float32Arrays (see ops.ts); `read` just copies.
import os from 'node:os';
import { checkLogprobsTop, flagStride, type AttentionShape, type Backend, type BlockShape, type IndexTensor, type InputNorm, type InputTransform, isInputNorm, isLayerNorm, type KVCache, type KVCacheShape, type KVPrecision, type KVPages, type KVStore, type OutputActivation, type OutputRope, ropeOutputs, type SampleRow, type Tensor } from '../backend.ts';
import { floatToHalf, halfToFloat } from '../../weights/dtypes.ts';
import * as blr from './blr.ts';
import * as ops from './ops.ts';
import { logprobRows } from './logprobs.ts';
import { sampleToken } from './sample.ts';

class CpuTensor implements Tensor {
  constructor(readonly data: Float32Array) {}
  get elements(): number {
    return this.data.length;
  }
}

class CpuIndexTensor implements IndexTensor {
  constructor(readonly data: Int32Array) {}
  get elements(): number {
    return this.data.length;
  }
}

class CpuKVCache implements KVCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly blocks: number;
  readonly blockSize: number;
  readonly sequences: number;
  readonly flagStride: number;
  readonly tokenFlags: CpuIndexTensor;
  constructor(shape: KVCacheShape) {
    ({ layers: this.layers, kvHeads: this.kvHeads, headDim: this.headDim, blocks: this.blocks, blockSize: this.blockSize, sequences: this.sequences } = shape);
    this.flagStride = flagStride(shape.vocabSize);
    this.tokenFlags = new CpuIndexTensor(new Int32Array(shape.sequences * this.flagStride));
    const perLayer = shape.kvHeads * shape.blocks * shape.blockSize * shape.headDim;
    this.keys = Array.from({ length: shape.layers }, () => new Float32Array(perLayer));
    this.values = Array.from({ length: shape.layers }, () => new Float32Array(perLayer));
  }

  release(): void {} // the garbage collector takes it
}

function data(t: Tensor): Float32Array {
  if (!(t instanceof CpuTensor)) throw new TypeError('CPU backend was given a tensor from another backend');
  return t.data;
}

function indices(t: IndexTensor): Int32Array {
  if (!(t instanceof CpuIndexTensor)) throw new TypeError('CPU backend was given an index tensor from another backend');
  return t.data;
}

function cache(c: KVCache): CpuKVCache {
  if (!(c instanceof CpuKVCache)) throw new TypeError('CPU backend was given a KV cache from another backend');
  return c;
}

export interface CpuBackendOptions {
  /**
   * 'f16' rounds every matrix to f16 as it is uploaded, as the WebGPU backend stores them: the
   * exact oracle for GPU results. Default 'f32'.
   */
  matrixPrecision?: 'f32' | 'f16';
  /** Backend.stacksPaddedRanks (false unless set: tests load the GPU's padded groups with it). */
  stacksPaddedRanks?: boolean;
  /**
   * Backend.kvPrecision. 'f16' rounds every stored key and value to f16 (kept in Float32Arrays), as
   * the WebGPU backend stores them: the exact oracle for a GPU's f16 cache. Default 'f32'.
   */
  kvPrecision?: KVPrecision;
}

export class CpuBackend implements Backend {
  readonly name = 'cpu' as const;
  readonly leavesNativeGarbage = false;
  readonly stacksPaddedRanks: boolean;
  readonly kvPrecision: KVPrecision;
  readonly description: string;
  private readonly attentionScratch = { scores: new Float32Array(0), slots: new Int32Array(0) };
  private normScratch = new Float32Array(0);
  private kvScratch = new Float32Array(0);
  private readonly roundToHalf: boolean;

  constructor(options: CpuBackendOptions = {}) {
    this.roundToHalf = options.matrixPrecision === 'f16';
    this.stacksPaddedRanks = options.stacksPaddedRanks ?? false;
    this.kvPrecision = options.kvPrecision ?? 'f32';
    this.description = `CPU (${os.cpus()[0]?.model?.trim() ?? 'unknown'}, TypeScript ${this.roundToHalf ? 'f16-rounded weights, f32 math' : 'f32 kernels'}, one thread)`;
  }

  upload(values: Float32Array): Tensor {
    return new CpuTensor(values);
  }

  uploadMatrix(values: Float32Array, rows: number, columns: number): Tensor {
    if (values.length !== rows * columns) throw new RangeError(`matrix has ${values.length} values, ${rows}×${columns} needs ${rows * columns}`);
    return new CpuTensor(this.roundToHalf ? values.map((v) => halfToFloat(floatToHalf(v))) : values);
  }

  randomMatrix(rows: number, columns: number, scale: number, seed: number): Tensor {
    return this.uploadMatrix(ops.randomNormalMatrix(rows, columns, scale, seed), rows, columns);
  }

  scaleColumns(matrix: Tensor, columns: number, scale: Tensor): void {
    const values = data(matrix);
    const factors = data(scale);
    if (values.length % columns !== 0 || factors.length !== columns) throw new RangeError(`scaleColumns: a ${values.length}-value matrix of ${columns} columns by ${factors.length} scales`);
    ops.scaleColumns(values, factors);
    if (this.roundToHalf) for (let i = 0; i < values.length; i++) values[i] = halfToFloat(floatToHalf(values[i]));
  }

  zeroRows(matrix: Tensor, columns: number, first: number, count: number): void {
    const values = data(matrix);
    if ((first + count) * columns > values.length) throw new RangeError(`rows ${first}..${first + count - 1} of ${columns} columns lie past a matrix of ${values.length} values`);
    values.fill(0, first * columns, (first + count) * columns);
  }

  allocate(elements: number): Tensor {
    return new CpuTensor(new Float32Array(elements));
  }

  allocateIndices(elements: number): IndexTensor {
    return new CpuIndexTensor(new Int32Array(elements));
  }

  uploadIndices(target: IndexTensor, values: Int32Array, offset = 0): void {
    indices(target).set(values, offset);
  }

  createKVCache(shape: KVCacheShape): KVCache {
    return new CpuKVCache(shape);
  }

  gatherRows(out: Tensor, table: Tensor, rowIndices: IndexTensor, rows: number, width: number): void {
    ops.gatherRows(data(out), data(table), indices(rowIndices), rows, width);
  }

  rmsNorm(out: Tensor, x: Tensor, weight: Tensor, rows: number, width: number, eps: number): void {
    ops.rmsNorm(data(out), data(x), data(weight), rows, width, eps);
  }

  layerNorm(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor, rows: number, width: number, eps: number): void {
    ops.layerNorm(data(out), data(x), data(weight), data(bias), rows, width, eps);
  }

  /** x, or x normalised (RMSNorm, or LayerNorm with a bias) or gated, in a scratch buffer kept for the purpose. */
  private input(x: Tensor, rows: number, inFeatures: number, transform?: InputTransform): Float32Array {
    if (!transform) return data(x);
    if (this.normScratch.length < rows * inFeatures) this.normScratch = new Float32Array(rows * inFeatures);
    if (isLayerNorm(transform)) ops.layerNorm(this.normScratch, data(x), data(transform.weight), data(transform.bias), rows, inFeatures, transform.eps);
    else if (isInputNorm(transform)) ops.rmsNorm(this.normScratch, data(x), data(transform.weight), rows, inFeatures, transform.eps);
    else ops.swiglu(this.normScratch, data(x), data(transform.up), rows * inFeatures);
    return this.normScratch;
  }

  /** Never: a norm here is a pass over x whatever runs it, so a group normalises once for all. */
  normsInside(): boolean {
    return false;
  }

  matmul(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, outFeatures: number, accumulate = false, input?: InputTransform, activation?: OutputActivation): void {
    const values = this.input(x, rows, inFeatures, input);
    activated(data(out), rows * outFeatures, accumulate, activation, (target, add) => ops.matmul(target, values, data(weight), bias ? data(bias) : null, rows, inFeatures, outFeatures, add));
  }

  matmulSplit(outs: Tensor[], x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, widths: number[], inputNorm?: InputNorm, rope?: OutputRope): void {
    const w = data(weight), b = bias ? data(bias) : null;
    const input = this.input(x, rows, inFeatures, inputNorm);
    let first = 0;
    widths.forEach((width, i) => {
      // Each projection's rows of the concatenated matrix, as views: nothing is copied.
      ops.matmul(data(outs[i]), input, w.subarray(first * inFeatures, (first + width) * inFeatures),
        b ? b.subarray(first, first + width) : null, rows, inFeatures, width);
      first += width;
    });
    if (rope) ropeOutputs(this, outs, rows, rope);
  }

  matmulSwiglu(out: Tensor, up: Tensor, x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, width: number, inputNorm?: InputNorm): boolean {
    this.matmulSplit([out, up], x, weight, bias, rows, inFeatures, [width, width], inputNorm);
    this.swiglu(out, out, up, rows * width);
    return true;
  }

  matmulStacked(out: Tensor, x: Tensor, weight: Tensor, rows: number, inFeatures: number, widths: number[], inputNorm?: InputNorm): void {
    const w = data(weight), target = data(out);
    const input = this.input(x, rows, inFeatures, inputNorm);
    let first = 0;
    widths.forEach((width) => {
      ops.matmul(target.subarray(first * rows, (first + width) * rows), input, w.subarray(first * inFeatures, (first + width) * inFeatures), null, rows, inFeatures, width);
      first += width;
    });
  }

  blockProject(z: Tensor, x: Tensor, factor: Tensor, coupling: Tensor | null, rows: number, shape: BlockShape, input?: InputTransform): void {
    const { inFeatures: i, rank: r, blocks: b } = shape;
    const values = this.input(x, rows, i, input);
    for (let layer = 0; layer < (shape.layers ?? 1); layer++) {
      blr.blockProject(data(z).subarray(layer * b * rows * r), values, data(factor).subarray(layer * r * i),
        coupling ? data(coupling).subarray(layer * b * b * r) : null, rows, shape);
    }
  }

  blockExpand(out: Tensor | Tensor[], z: Tensor, factor: Tensor, bias: Tensor | null, rows: number, shape: BlockShape, strided: boolean, accumulate = false, rope?: OutputRope, activation?: OutputActivation): void {
    const { outFeatures: o, rank: r, blocks: b } = shape;
    const outs = Array.isArray(out) ? out : [out];
    if (outs.length !== (shape.layers ?? 1)) throw new RangeError(`blockExpand writes one output per stacked layer: ${shape.layers ?? 1} layers, ${outs.length} outputs`);
    outs.forEach((target, layer) => activated(data(target), rows * o, accumulate, activation, (into, add) => blr.blockExpand(into, data(z).subarray(layer * b * rows * r),
      data(factor).subarray(layer * o * r), bias ? data(bias) : null, rows, shape, strided, add)));
    if (rope) ropeOutputs(this, outs, rows, rope);
  }

  add(out: Tensor, a: Tensor, b: Tensor, elements: number): void {
    ops.add(data(out), data(a), data(b), elements);
  }

  swiglu(out: Tensor, gate: Tensor, up: Tensor, elements: number): void {
    ops.swiglu(data(out), data(gate), data(up), elements);
  }

  gelu(out: Tensor, x: Tensor, elements: number): void {
    ops.gelu(data(out), data(x), elements);
  }

  rope(q: Tensor | null, k: Tensor | null, positions: IndexTensor, rotary: Tensor, rows: number, heads: number, kvHeads: number, headDim: number, store?: KVStore): void {
    const table = data(rotary);
    const cos = table.subarray(0, table.length / 2);
    const sin = table.subarray(table.length / 2);
    if (q) ops.rope(data(q), indices(positions), cos, sin, rows, heads, headDim);
    if (k) ops.rope(data(k), indices(positions), cos, sin, rows, kvHeads, headDim);
    if (store && k) this.writeKV(store.cache, store.layer, k, store.v, positions, store.pages, rows);
  }

  writeKV(kv: KVCache, layer: number, k: Tensor, v: Tensor, positions: IndexTensor, pages: KVPages, rows: number): void {
    const c = cache(kv);
    const n = rows * c.kvHeads * c.headDim;
    let keys = data(k), values = data(v);
    if (this.kvPrecision === 'f16') {
      // Rounded into scratch rows kept between calls (the caller's k and v stay as they are).
      if (this.kvScratch.length < 2 * n) this.kvScratch = new Float32Array(2 * n);
      keys = this.kvScratch.subarray(0, n);
      values = this.kvScratch.subarray(n, 2 * n);
      for (let i = 0; i < n; i++) {
        keys[i] = halfToFloat(floatToHalf(data(k)[i]));
        values[i] = halfToFloat(floatToHalf(data(v)[i]));
      }
    }
    ops.writeKV(c.keys[layer], c.values[layer], keys, values, indices(positions), indices(pages), rows, c.kvHeads, c.headDim, c.blockSize);
  }

  attention(out: Tensor, q: Tensor, kv: KVCache, layer: number, positions: IndexTensor, pages: KVPages, firstRow: number, rows: number, shape: AttentionShape): void {
    const c = cache(kv);
    ops.attention(data(out), data(q), c.keys[layer], c.values[layer], indices(positions), indices(pages), firstRow, rows,
      shape.heads, shape.kvHeads, shape.headDim, c.blockSize, shape.scale, this.attentionScratch);
  }

  argmax(out: IndexTensor, values: Tensor, firstRow: number, rows: number, count: number): void {
    for (let row = firstRow; row < firstRow + rows; row++) indices(out)[row] = ops.argmax(data(values).subarray(row * count, (row + 1) * count), count);
  }

  sample(out: IndexTensor, logits: Tensor, count: number, rows: SampleRow[], tokenFlags: IndexTensor | null): void {
    const stride = flagStride(count);
    for (const { row, params, flagsRow } of rows) {
      const flags = tokenFlags ? indices(tokenFlags).subarray(flagsRow * stride, (flagsRow + 1) * stride) : null;
      indices(out)[row] = sampleToken(data(logits).subarray(row * count, (row + 1) * count), count, params, flags);
    }
  }

  logprobs(out: Tensor, logits: Tensor, count: number, rows: number, nextTokens: IndexTensor, sampled: IndexTensor, top: number): void {
    checkLogprobsTop(top, count);
    logprobRows(data(out), data(logits), count, rows, indices(nextTokens), indices(sampled), top);
  }

  flush(): void {} // every op has already run
  submitIfIdle(): void {}

  async read(tensor: Tensor, elements: number): Promise<Float32Array> {
    return data(tensor).slice(0, elements);
  }

  async readIndices(tensor: IndexTensor, elements: number): Promise<Int32Array> {
    return indices(tensor).slice(0, elements);
  }

  dispose(): void {}
}

/**
 * Runs `write` (a matmul into its first argument, adding to it when its second says so) with
 * `activation` applied to each result before any residual add: into `out` when nothing is added,
 * else into a scratch that is activated and then added.
 */
function activated(out: Float32Array, elements: number, accumulate: boolean, activation: OutputActivation | undefined, write: (target: Float32Array, add: boolean) => void): void {
  if (!activation) return write(out, accumulate);
  const target = accumulate ? new Float32Array(elements) : out;
  write(target, false);
  ops.gelu(target, target, elements);
  if (accumulate) ops.add(out, out, target, elements);
}
