// What the engine sees of a model, and the pieces Llama and GPT-2 share: shape-checked weight
// reads and the final norm + LM head on the last row of a step.
import type { Backend, IndexTensor, KVCache, SampleParams, Tensor } from '../kernels/backend.ts';
import { CheckpointError, type TensorSource } from '../weights/safetensors.ts';
import { compressedLayer, type ModelConfig } from './config.ts';
import { BlockLowRankLinear, ConcatenatedLinear, DenseLinear, LowRankLinear, SeparateLinears, SharedScratch, SplitOutputs, StackedBlockLinears, type LinearGroup, type LinearLayer } from './linear.ts';

/**
 * A step's input when it is the token the previous step sampled: it stays on the device, so the
 * step can be submitted before that token is read back (pipelined decoding).
 */
export const PREVIOUS_SAMPLE = Symbol('the previous step\'s sampled token');
export type StepTokens = Int32Array | typeof PREVIOUS_SAMPLE;

export interface CausalLM {
  readonly config: ModelConfig;
  readonly backend: Backend;
  /** The most tokens one forward call accepts; longer prompts are fed in chunks. */
  readonly maxStepTokens: number;
  readonly parameters: number;
  createCache(capacity: number): KVCache;
  /**
   * Runs `tokens` at positions startPosition.. of the sequence whose keys and values `cache`
   * holds, appends theirs, and returns the logits (vocabSize) of the last token.
   */
  forward(cache: KVCache, tokens: Int32Array, startPosition: number): Promise<Float32Array>;
  /** The same step when its logits are not needed (a prompt chunk before the last): submitted, nothing read. */
  prefill(cache: KVCache, tokens: Int32Array, startPosition: number): void;
  /**
   * The same step, then the next token sampled where the logits are; resolves to its id (the only
   * thing read back). With a repetition penalty, the cache's token flags say which tokens the
   * sequence holds. The next step may be started before this one's promise settles.
   */
  forwardSample(cache: KVCache, tokens: StepTokens, startPosition: number, params: SampleParams): Promise<number>;
  dispose(): void;
}

/** What Llama and GPT-2 share around their forward pass: the step's outputs and the cache. */
export abstract class DecoderModel implements CausalLM {
  abstract readonly config: ModelConfig;
  abstract readonly backend: Backend;
  abstract readonly maxStepTokens: number;
  abstract readonly parameters: number;
  protected abstract readonly buffers: StepBuffers;

  /** Records the forward pass of one step, up to the last token's logits in buffers.logits. */
  protected abstract record(cache: KVCache, tokens: StepTokens, startPosition: number): void;

  createCache(capacity: number): KVCache {
    return createSequenceCache(this.backend, this.config, capacity);
  }

  async forward(cache: KVCache, tokens: Int32Array, startPosition: number): Promise<Float32Array> {
    this.record(cache, tokens, startPosition);
    return this.backend.read(this.buffers.logits, this.config.vocabSize);
  }

  prefill(cache: KVCache, tokens: Int32Array, startPosition: number): void {
    this.record(cache, tokens, startPosition);
    this.backend.flush();
  }

  forwardSample(cache: KVCache, tokens: StepTokens, startPosition: number, params: SampleParams): Promise<number> {
    this.record(cache, tokens, startPosition);
    const flags = params.repetitionPenalty !== 1 ? cache.tokenFlags : null;
    this.backend.sample(this.buffers.sampled, this.buffers.logits, this.config.vocabSize, params, flags);
    // Submitted here, synchronously: a step recorded after this call runs after this one.
    const read = this.backend.readIndices(this.buffers.sampled, 1);
    return read.then((ids) => ids[0]);
  }

  dispose(): void {}
}

/** A tensor source that can make a matrix directly on the device (random weights for benchmarks). */
export interface DeviceTensorSource extends TensorSource {
  /** The named matrix, or with `rows`, a matrix of that many rows like it (concatenated projections). */
  createMatrix(backend: Backend, name: string, rows?: number): Tensor;
}

function makesMatricesOnDevice(source: TensorSource): source is DeviceTensorSource {
  return typeof (source as Partial<DeviceTensorSource>).createMatrix === 'function';
}

/** Reads named tensors from a checkpoint, checking each against the shape the config implies. */
export class WeightReader {
  parameters = 0;
  private loadedBytes = 0;
  /** The intermediate every block low-rank layer of the model writes, one buffer for all. */
  private readonly scratch: SharedScratch;
  /** The normalised input of every group of separate projections, one buffer for all. */
  private readonly normed: SharedScratch;
  /** The joined outputs of every split layer (SplitOutputs), one buffer for all. */
  private readonly split: SharedScratch;
  private readonly totalBytes: number;

  constructor(
    readonly source: TensorSource,
    readonly backend: Backend,
    private readonly onProgress?: (loadedBytes: number, totalBytes: number) => void,
    /** Block low-rank projections: the checkpoint's config, and the rows a step may hold (their scratch). */
    private readonly compressed?: { config: ModelConfig; maxRows: number },
  ) {
    this.totalBytes = source.names().reduce((sum, name) => sum + source.info(name).byteLength, 0);
    this.scratch = new SharedScratch(backend);
    this.normed = new SharedScratch(backend);
    this.split = new SharedScratch(backend);
  }

  has(name: string): boolean {
    return this.source.has(name);
  }

  /** Whether the checkpoint stores module `prefix` in block low-rank form. */
  isCompressed(prefix: string): boolean {
    return this.compressed !== undefined && compressedLayer(this.compressed.config, prefix) !== undefined;
  }

  /** `layer`'s outputs as `widths.length` projections of equal width (SplitOutputs). */
  splitOutputs(layer: LinearLayer, widths: number[]): LinearGroup {
    if (widths.some((w) => w !== widths[0])) throw new CheckpointError(`${this.source.location}: a block low-rank layer splits into projections of one width only, not ${widths.join(', ')}`);
    return new SplitOutputs(this.backend, layer, widths[0], widths.length, this.compressed?.maxRows ?? 1, this.split);
  }

  private checkShape(name: string, shape: number[]): void {
    if (!this.source.has(name)) throw new CheckpointError(`${this.source.location}: missing tensor "${name}" (expected shape [${shape}])`);
    const info = this.source.info(name);
    if (info.shape.join(',') !== shape.join(',')) {
      throw new CheckpointError(`${info.file}: tensor "${name}" has shape [${info.shape}] but the config implies [${shape}]`);
    }
  }

  read(name: string, shape: number[]): Float32Array {
    this.checkShape(name, shape);
    const info = this.source.info(name);
    const values = this.source.readFloat32(name);
    this.parameters += values.length;
    this.loadedBytes += info.byteLength;
    this.onProgress?.(this.loadedBytes, this.totalBytes);
    return values;
  }

  /** A vector (norm weight, bias) in f32, or a matrix in the backend's matrix format. */
  upload(name: string, shape: number[]): Tensor {
    if (shape.length === 2 && makesMatricesOnDevice(this.source)) {
      this.checkShape(name, shape);
      this.parameters += shape[0] * shape[1];
      return this.source.createMatrix(this.backend, name);
    }
    const values = this.read(name, shape);
    return shape.length === 2 ? this.backend.uploadMatrix(values, shape[0], shape[1], name) : this.backend.upload(values);
  }

  /**
   * Projections of one input (`prefixes`): as one matrix of their concatenated rows when all are
   * dense (one matmul then computes all of them), else one layer each.
   */
  linearGroup(prefixes: string[], inFeatures: number, widths: number[], withBias: boolean): LinearGroup {
    const stacked = this.stackedBlocks(prefixes, inFeatures, widths, withBias);
    if (stacked) return stacked;
    if (prefixes.some((p) => this.compressed && compressedLayer(this.compressed.config, p))) {
      const layers = prefixes.map((p, i) => this.linear(p, inFeatures, widths[i], withBias));
      return new SeparateLinears(this.backend, layers, inFeatures, this.compressed!.maxRows, this.normed);
    }
    return this.linearConcat(prefixes, inFeatures, widths, withBias);
  }

  /**
   * Monarch or BLAST projections of one input that share their method, shape, rank and blocks
   * (and have no bias), stacked into one group (StackedBlockLinears); undefined otherwise.
   */
  private stackedBlocks(prefixes: string[], inFeatures: number, widths: number[], withBias: boolean): StackedBlockLinears | undefined {
    if (!this.compressed || withBias || prefixes.length < 2 || prefixes.length > 3 || widths.some((w) => w !== widths[0])) return undefined;
    const specs = prefixes.map((p) => compressedLayer(this.compressed!.config, p));
    const first = specs[0];
    if (!first || first.method === 'lowrank' || specs.some((s) => !s || s.method !== first.method || s.rank !== first.rank || s.blocks !== first.blocks)) return undefined;
    const { method, rank: r, blocks: b } = first;
    const o = widths[0];
    if (inFeatures % b !== 0 || o % b !== 0 || (method === 'monarch' && r % b !== 0)) return undefined; // linear() explains
    const L = prefixes.length;
    // Each layer's factor, checked against its shape, then all of them as one matrix of their rows.
    const stack = (suffix: string, shape: number[], columns: number): Tensor => {
      const names = prefixes.map((p) => `${p}.${suffix}`);
      const rows = (L * shape.reduce((a, c) => a * c, 1)) / columns;
      if (makesMatricesOnDevice(this.source)) {
        names.forEach((name) => this.checkShape(name, shape));
        this.parameters += rows * columns;
        return this.source.createMatrix(this.backend, names[0], rows);
      }
      return this.backend.uploadMatrix(concatenate(names.map((name) => this.read(name, shape))), rows, columns, `${names.join('+')}`);
    };
    const shape = { inFeatures, outFeatures: o, rank: r, blocks: b };
    const maxRows = this.compressed.maxRows;
    if (method === 'monarch') {
      return new StackedBlockLinears(this.backend, method, stack('W1', [b, r, inFeatures / b], inFeatures / b), stack('W2', [b, o / b, r], r), null, shape, L, maxRows, this.scratch);
    }
    const inner = stack('C', [b, r, inFeatures / b], inFeatures / b);
    const outer = stack('B', [b, o / b, r], r);
    const coupling = this.backend.upload(concatenate(prefixes.map((p) => this.read(`${p}.D`, [b, b, r]))));
    return new StackedBlockLinears(this.backend, method, inner, outer, coupling, shape, L, maxRows, this.scratch);
  }

  /**
   * Projections of one input (`prefixes`, each (width × inFeatures)) as one matrix of their
   * concatenated rows: one matmul then computes all of them.
   */
  linearConcat(prefixes: string[], inFeatures: number, widths: number[], withBias: boolean): ConcatenatedLinear {
    const total = widths.reduce((a, b) => a + b, 0);
    const name = `${prefixes.join('+')}.weight`;
    let weight: Tensor;
    if (makesMatricesOnDevice(this.source)) {
      prefixes.forEach((p, i) => this.checkShape(`${p}.weight`, [widths[i], inFeatures]));
      this.parameters += total * inFeatures;
      weight = this.source.createMatrix(this.backend, `${prefixes[0]}.weight`, total);
    } else {
      weight = this.backend.uploadMatrix(concatenate(prefixes.map((p, i) => this.read(`${p}.weight`, [widths[i], inFeatures]))), total, inFeatures, name);
    }
    const bias = withBias ? this.backend.upload(concatenate(prefixes.map((p, i) => this.read(`${p}.bias`, [widths[i]])))) : null;
    return new ConcatenatedLinear(this.backend, weight, bias, inFeatures, widths);
  }

  /**
   * A linear layer: dense from `prefix.weight` (outFeatures × inFeatures), or in the block
   * low-rank form the config gives it — low-rank `prefix.U` (out, r) and `.V` (r, in); Monarch
   * `.W1` (b, r, in/b) and `.W2` (b, out/b, r); BLAST `.B` = U (b, out/b, r), `.C` = V (b, r, in/b)
   * and `.D` = S (b, b, r) — plus an optional `prefix.bias`.
   */
  linear(prefix: string, inFeatures: number, outFeatures: number, withBias: boolean): LinearLayer {
    const spec = this.compressed && compressedLayer(this.compressed.config, prefix);
    const bias = () => (withBias ? this.upload(`${prefix}.bias`, [outFeatures]) : null);
    if (!spec) return new DenseLinear(this.backend, this.upload(`${prefix}.weight`, [outFeatures, inFeatures]), bias(), inFeatures, outFeatures);
    const { method, rank: r, blocks: b } = spec;
    if (inFeatures % b !== 0 || outFeatures % b !== 0 || (method === 'monarch' && r % b !== 0)) {
      throw new CheckpointError(`${this.source.location}: ${prefix} is ${method} with ${b} blocks of rank ${r}, which does not divide its ${inFeatures}→${outFeatures} shape`);
    }
    const maxRows = this.compressed!.maxRows;
    const matrix = (name: string, shape: number[], rows: number, columns: number) => {
      const full = `${prefix}.${name}`;
      if (!makesMatricesOnDevice(this.source)) return this.backend.uploadMatrix(this.read(full, shape), rows, columns, full);
      this.checkShape(full, shape);
      this.parameters += rows * columns;
      return this.source.createMatrix(this.backend, full);
    };
    if (method === 'lowrank') {
      const v = matrix('V', [r, inFeatures], r, inFeatures);
      const u = matrix('U', [outFeatures, r], outFeatures, r);
      return new LowRankLinear(this.backend, v, u, bias(), inFeatures, outFeatures, r, maxRows, this.scratch);
    }
    const shape = { inFeatures, outFeatures, rank: r, blocks: b };
    if (method === 'monarch') {
      const w1 = matrix('W1', [b, r, inFeatures / b], b * r, inFeatures / b);
      const w2 = matrix('W2', [b, outFeatures / b, r], outFeatures, r);
      return new BlockLowRankLinear(this.backend, 'monarch', w1, w2, null, bias(), shape, maxRows, this.scratch);
    }
    const u = matrix('B', [b, outFeatures / b, r], outFeatures, r);
    const v = matrix('C', [b, r, inFeatures / b], b * r, inFeatures / b);
    const s = this.backend.upload(this.read(`${prefix}.D`, [b, b, r]));
    return new BlockLowRankLinear(this.backend, 'blast', v, u, s, bias(), shape, maxRows, this.scratch);
  }
}

/**
 * Everything one forward step writes, allocated once for up to `rows` tokens: the step's indices
 * and the activations of a pre-norm decoder block, plus the last row's path to the logits.
 */
export class StepBuffers {
  readonly indices: StepIndices;
  readonly hidden: Tensor;
  readonly normed: Tensor;
  readonly q: Tensor;
  readonly k: Tensor;
  readonly v: Tensor;
  readonly attended: Tensor;
  /** A hidden-sized scratch row block (GPT-2's position embeddings before they join the stream). */
  readonly projected: Tensor;
  /** MLP intermediates (rows × intermediateSize): gate and up for SwiGLU, just the first for GELU. */
  readonly mlp: Tensor;
  readonly mlpUp: Tensor;
  readonly lastHidden: Tensor;
  readonly lastNormed: Tensor;
  readonly logits: Tensor;
  /** The sampled token, picked on the device; the next decode step can read its id from here. */
  readonly sampled: IndexTensor;

  constructor(backend: Backend, config: ModelConfig, readonly rows: number, options: { gatedMlp: boolean }) {
    const { hiddenSize: H, intermediateSize: I, heads, kvHeads, headDim, vocabSize } = config;
    this.sampled = backend.allocateIndices(1);
    this.indices = new StepIndices(backend, rows, this.sampled);
    this.hidden = backend.allocate(rows * H);
    this.normed = backend.allocate(rows * H);
    this.q = backend.allocate(rows * heads * headDim);
    this.k = backend.allocate(rows * kvHeads * headDim);
    this.v = backend.allocate(rows * kvHeads * headDim);
    this.attended = backend.allocate(rows * heads * headDim);
    this.projected = backend.allocate(rows * H);
    this.mlp = backend.allocate(rows * I);
    this.mlpUp = options.gatedMlp ? backend.allocate(rows * I) : this.mlp;
    this.lastHidden = backend.allocate(H);
    this.lastNormed = backend.allocate(H);
    this.logits = backend.allocate(vocabSize);
  }
}

/** A KV cache for one sequence of up to `capacity` positions (never more than the model knows). */
export function createSequenceCache(backend: Backend, config: ModelConfig, capacity: number): KVCache {
  const { layers, kvHeads, headDim, maxPositions } = config;
  return backend.createKVCache({ layers, kvHeads, headDim, capacity: Math.min(capacity, maxPositions), vocabSize: config.vocabSize });
}

/**
 * Per-step index tensors: token ids and positions of each row, and the row whose logits we want.
 * A step fed PREVIOUS_SAMPLE gathers its token from `sampled`, on the device.
 */
export class StepIndices {
  readonly tokens: IndexTensor;
  readonly positions: IndexTensor;
  readonly lastRow: IndexTensor;
  private readonly positionValues: Int32Array;
  private readonly lastRowValue = new Int32Array(1);

  constructor(private readonly backend: Backend, maxRows: number, private readonly sampled: IndexTensor) {
    this.tokens = backend.allocateIndices(maxRows);
    this.positions = backend.allocateIndices(maxRows);
    this.lastRow = backend.allocateIndices(1);
    this.positionValues = new Int32Array(maxRows);
  }

  /** Uploads the step's indices; returns its rows and the index tensor holding its token ids. */
  set(tokens: StepTokens, startPosition: number, maxRows: number): { rows: number; tokenIds: IndexTensor } {
    const rows = tokens === PREVIOUS_SAMPLE ? 1 : tokens.length;
    if (rows === 0 || rows > maxRows) throw new RangeError(`a step takes 1..${maxRows} tokens, got ${rows}`);
    for (let r = 0; r < rows; r++) this.positionValues[r] = startPosition + r;
    if (tokens !== PREVIOUS_SAMPLE) this.backend.uploadIndices(this.tokens, tokens);
    this.backend.uploadIndices(this.positions, this.positionValues.subarray(0, rows));
    this.lastRowValue[0] = rows - 1;
    this.backend.uploadIndices(this.lastRow, this.lastRowValue);
    return { rows, tokenIds: tokens === PREVIOUS_SAMPLE ? this.sampled : this.tokens };
  }
}

export function checkCacheRoom(cache: KVCache, startPosition: number, tokens: StepTokens): void {
  const rows = tokens === PREVIOUS_SAMPLE ? 1 : tokens.length;
  if (startPosition < 0 || startPosition + rows > cache.capacity) {
    throw new RangeError(`positions ${startPosition}..${startPosition + rows - 1} do not fit the KV cache (capacity ${cache.capacity})`);
  }
}

export function concatenate(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
