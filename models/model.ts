// What the engine sees of a model, and the pieces Llama and GPT-2 share: shape-checked weight
// reads and the final norm + LM head on the last row of a step.
import { checkLogprobsTop, logprobStride, MAX_TOP_LOGPROBS, usesTokenCounts, type Backend, type IndexTensor, type KVCache, type SampleParams, type SampleRow, type Tensor } from '../kernels/backend.ts';
import { blastOnSquareBlocks } from '../kernels/cpu/blr.ts';
import { scaleColumns } from '../kernels/cpu/ops.ts';
import { CheckpointError, type TensorSource } from '../weights/safetensors.ts';
import { compressedLayer, type ModelConfig } from './config.ts';
import { BlockLowRankLinear, ConcatenatedLinear, DenseLinear, LowRankLinear, SeparateLinears, SharedScratch, SplitOutputs, StackedBlockLinears, StackedLowRankLinears, type LinearGroup, type LinearLayer } from './linear.ts';

/**
 * A step's input when it is the token the previous step sampled: it stays on the device, so the
 * step can be submitted before that token is read back (pipelined decoding).
 */
export const PREVIOUS_SAMPLE = Symbol('the previous step\'s sampled token');
export type StepTokens = Int32Array | typeof PREVIOUS_SAMPLE;

/**
 * A sequence's place in a KV cache: its slot (its row of the cache's token counts, < the cache's
 * sequences) and its block table (position t lives in block blockTable[t / blockSize]).
 */
export interface SequenceSlot {
  readonly slot: number;
  readonly blockTable: ArrayLike<number>;
}

/** One sequence's part of a forward step. */
export interface StepEntry {
  sequence: SequenceSlot;
  /** Its tokens this step (a prompt chunk, or one token when decoding), at startPosition... */
  tokens: StepTokens;
  startPosition: number;
  /** Draw the next token after the last one, with these choices. */
  sample?: SampleParams;
  /** Read back the last token's logits. */
  logits?: boolean;
  /**
   * Read back the logits after every token of the entry (a prompt's logprobs), not only the last:
   * the entry takes tokens.length output rows of the step, the last one sampled when `sample` is set.
   */
  rowLogits?: boolean;
  /**
   * Log-probabilities instead of logits, computed where the logits are (backend `logprobs`): for
   * each of the entry's output rows, its next token's and the `top` most likely tokens'. The next
   * token is the sampled one for a sampled row, else nextTokens[row of the entry] (a prompt's
   * following tokens; negative: none, its value is meaningless).
   */
  logprobs?: { top: number; nextTokens?: ArrayLike<number> };
}

/**
 * What a step gives back for its outputs, in order: one for each entry with `sample` or `logits`,
 * tokens.length for an entry with `rowLogits`.
 */
export interface StepResult {
  /** Sampled ids (-1 for an output that only wanted logits). */
  ids: Int32Array;
  /** (outputs × vocabSize) logits, when some entry asked for them. */
  logits: Float32Array | null;
  /**
   * When some entry asked for logprobs: logprobStride(top) values per output (kernels/backend.ts
   * `logprobs`), `top` the most any entry asked for.
   */
  logprobs: { top: number; values: Float32Array } | null;
}

/** A KV cache holding one sequence in blocks 0, 1, ... (the single-sequence API below). */
export interface SequenceCache {
  readonly cache: KVCache;
  readonly sequence: SequenceSlot;
  /** Positions it holds. */
  readonly capacity: number;
  release(): void;
}

export interface CausalLM {
  readonly config: ModelConfig;
  readonly backend: Backend;
  /** The most tokens (rows) one step holds; longer prompts are fed in chunks. */
  readonly maxStepTokens: number;
  /** The most sequences one step holds (each sampled, read or fed a prompt chunk). */
  readonly maxSequences: number;
  /** Positions per block of the paged KV cache. */
  readonly blockSize: number;
  readonly parameters: number;
  /** Zero values held beside the parameters (stacked groups of different ranks padded to one: WeightReader.padding). */
  readonly padding: number;
  /** A paged KV cache of `blocks` blocks for up to `sequences` sequences at once. */
  createKVCache(blocks: number, sequences: number): KVCache;
  /**
   * One forward step over several sequences (continuous batching): runs each entry's tokens at its
   * positions, appends their keys and values to the cache through the entry's block table, then
   * samples or reads back the entries that ask. Recorded and submitted synchronously: a step started
   * after this call runs after this one, so the next may be started before this promise settles.
   * Tokens may be PREVIOUS_SAMPLE only when every entry's are and the entries are the previous
   * step's output entries, in order (each then takes the token sampled for it).
   */
  step(cache: KVCache, entries: StepEntry[]): Promise<StepResult>;

  /** A cache for one sequence of up to `capacity` positions. */
  createCache(capacity: number): SequenceCache;
  /** One sequence's step: runs `tokens` at startPosition.. and returns the last token's logits (vocabSize). */
  forward(cache: SequenceCache, tokens: Int32Array, startPosition: number): Promise<Float32Array>;
  /** The same step when its logits are not needed (a prompt chunk before the last): submitted, nothing read. */
  prefill(cache: SequenceCache, tokens: Int32Array, startPosition: number): void;
  /**
   * The same step, then the next token sampled where the logits are; resolves to its id (the only
   * thing read back). With penalties, the cache's token counts say which tokens the sequence holds.
   * The next step may be started before this one's promise settles.
   */
  forwardSample(cache: SequenceCache, tokens: StepTokens, startPosition: number, params: SampleParams): Promise<number>;
  dispose(): void;
}

/** Positions per block of the KV cache: small enough that a sequence wastes little of its last block. */
export const KV_BLOCK_SIZE = 16;

/** What Llama and GPT-2 share around their forward pass: the step's outputs and the cache. */
export abstract class DecoderModel implements CausalLM {
  abstract readonly config: ModelConfig;
  abstract readonly backend: Backend;
  abstract readonly maxStepTokens: number;
  abstract readonly maxSequences: number;
  abstract readonly parameters: number;
  abstract readonly padding: number;
  readonly blockSize = KV_BLOCK_SIZE;
  protected abstract readonly buffers: StepBuffers;

  /** Records the forward pass of one step, up to the output rows' logits in buffers.logits. */
  protected abstract record(cache: KVCache, step: StepPlan): void;

  /**
   * Between two layers of `step`: a step that carries prompt tokens (rows that give no output: a
   * prefill) may start on the GPU while the rest of it is recorded (Backend.submitIfIdle). A decode
   * step, every row of which is an output, stays one submit.
   */
  protected betweenLayers(step: StepPlan): void {
    if (step.rows > step.outputs.length) this.backend.submitIfIdle();
  }

  createKVCache(blocks: number, sequences: number): KVCache {
    const { layers, kvHeads, headDim, vocabSize } = this.config;
    return this.backend.createKVCache({ layers, kvHeads, headDim, blocks, blockSize: this.blockSize, sequences, vocabSize });
  }

  step(cache: KVCache, entries: StepEntry[]): Promise<StepResult> {
    const plan = this.buffers.indices.set(cache, entries);
    this.record(cache, plan);
    const vocab = this.config.vocabSize;
    const outputs = plan.outputs;
    let sampling = false;
    // Runs of greedy outputs without penalties take one argmax dispatch each; the others one sample
    // dispatch for those with penalties (they read the token counts) and one for those without.
    const greedy = (entry: StepEntry) => entry.sample !== undefined && entry.sample.temperature === 0 && !usesTokenCounts(entry.sample);
    const counted: SampleRow[] = [];
    const uncounted: SampleRow[] = [];
    for (let k = 0; k < outputs.length; k++) {
      const entry = outputs[k];
      if (!entry.sample) continue;
      sampling = true;
      if (greedy(entry)) {
        let end = k + 1;
        while (end < outputs.length && greedy(outputs[end])) end++;
        this.backend.argmax(this.buffers.sampled, this.buffers.logits, k, end - k, vocab);
        k = end - 1;
        continue;
      }
      (usesTokenCounts(entry.sample) ? counted : uncounted).push({ row: k, params: entry.sample, flagsRow: entry.sequence.slot });
    }
    this.backend.sample(this.buffers.sampled, this.buffers.logits, vocab, counted, cache.tokenFlags);
    this.backend.sample(this.buffers.sampled, this.buffers.logits, vocab, uncounted, null);
    if (outputs.length === 0) {
      this.backend.flush();
      return Promise.resolve({ ids: new Int32Array(0), logits: null, logprobs: null });
    }
    let top = -1;
    for (const entry of outputs) if (entry.logprobs) top = Math.max(top, entry.logprobs.top);
    // The logprobs op covers every output row and writes each row's next token (the sampled one for
    // a sampled row) with it: a step that asks for logprobs reads those alone, not the ids as well.
    if (top >= 0) this.backend.logprobs(this.buffers.logprobs, this.buffers.logits, vocab, outputs.length, this.buffers.indices.nextTokens, this.buffers.sampled, top);
    // The reads are submitted here, synchronously: a step recorded after this call runs after this one.
    const logits = outputs.some((e) => e.logits) ? this.backend.read(this.buffers.logits, outputs.length * vocab) : Promise.resolve(null);
    const stride = logprobStride(top);
    const logprobs = top >= 0 ? this.backend.read(this.buffers.logprobs, outputs.length * stride).then((values) => ({ top, values })) : Promise.resolve(null);
    const ids = sampling && top < 0 ? this.backend.readIndices(this.buffers.sampled, outputs.length) : Promise.resolve(null);
    return Promise.all([ids, logits, logprobs]).then(([sampled, values, probabilities]) => {
      const result = new Int32Array(outputs.length);
      outputs.forEach((entry, k) => {
        if (!entry.sample) result[k] = -1;
        else result[k] = sampled ? sampled[k] : Math.round(probabilities!.values[k * stride]);
      });
      return { ids: result, logits: values, logprobs: probabilities };
    });
  }

  createCache(capacity: number): SequenceCache {
    const positions = Math.min(capacity, this.config.maxPositions);
    const blocks = Math.max(1, Math.ceil(positions / this.blockSize));
    const cache = this.createKVCache(blocks, 1);
    return { cache, sequence: { slot: 0, blockTable: Int32Array.from({ length: blocks }, (_, i) => i) }, capacity: positions, release: () => cache.release() };
  }

  async forward(cache: SequenceCache, tokens: Int32Array, startPosition: number): Promise<Float32Array> {
    const result = await this.step(cache.cache, [{ sequence: cache.sequence, tokens, startPosition, logits: true }]);
    return result.logits!;
  }

  prefill(cache: SequenceCache, tokens: Int32Array, startPosition: number): void {
    void this.step(cache.cache, [{ sequence: cache.sequence, tokens, startPosition }]);
  }

  forwardSample(cache: SequenceCache, tokens: StepTokens, startPosition: number, params: SampleParams): Promise<number> {
    return this.step(cache.cache, [{ sequence: cache.sequence, tokens, startPosition, sample: params }]).then((result) => result.ids[0]);
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
  /** Zero values stored beyond the checkpoint's parameters: stacked groups padded to one rank (stackedBlocks). */
  padding = 0;
  private loadedBytes = 0;
  /** The intermediate every block low-rank layer of the model writes, one buffer for all. */
  private readonly scratch: SharedScratch;
  /** The normalised input of every group of separate projections, one buffer for all. */
  private readonly normed: SharedScratch;
  /** The joined outputs of every split layer (SplitOutputs), one buffer for all. */
  private readonly split: SharedScratch;
  private readonly totalBytes: number;
  /** Norm weights of ones, one per width (normedGroup). */
  private readonly unitVectors = new Map<number, Tensor>();

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

  /**
   * A norm's weight and the projections of one input that read the norm (linearGroup's), with the
   * weight folded into the projections where all of them are dense: W · (x̂ ⊙ g) = (W · diag(g)) · x̂,
   * so their columns are scaled by g and the norm gets a weight of ones (one per width, shared),
   * which a GPU's normed GEMV need not load (kernels/webgpu/backend.ts Unscaled pipelines). Block
   * low-rank projections keep the weight.
   */
  normedGroup(normName: string, prefixes: string[], inFeatures: number, widths: number[], withBias: boolean): { norm: Tensor; group: LinearGroup } {
    if (prefixes.some((p) => this.isCompressed(p))) return { norm: this.upload(normName, [inFeatures]), group: this.linearGroup(prefixes, inFeatures, widths, withBias) };
    const g = this.read(normName, [inFeatures]);
    return { norm: this.ones(inFeatures), group: this.linearConcat(prefixes, inFeatures, widths, withBias, g) };
  }

  /** A norm's weight and the one projection that reads it (an LM head), folded as normedGroup folds. */
  normedLinear(normName: string, prefix: string, inFeatures: number, outFeatures: number, withBias: boolean): { norm: Tensor; layer: LinearLayer } {
    if (this.isCompressed(prefix)) return { norm: this.upload(normName, [inFeatures]), layer: this.linear(prefix, inFeatures, outFeatures, withBias) };
    const weight = this.denseWeights([prefix], inFeatures, [outFeatures], this.read(normName, [inFeatures]));
    return { norm: this.ones(inFeatures), layer: new DenseLinear(this.backend, weight, withBias ? this.upload(`${prefix}.bias`, [outFeatures]) : null, inFeatures, outFeatures) };
  }

  private ones(width: number): Tensor {
    let t = this.unitVectors.get(width);
    if (!t) this.unitVectors.set(width, (t = this.backend.upload(new Float32Array(width).fill(1))));
    return t;
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
   * dense (one matmul then computes all of them), else one layer each — dense neighbours still
   * one matrix.
   */
  linearGroup(prefixes: string[], inFeatures: number, widths: number[], withBias: boolean): LinearGroup {
    const stacked = this.stackedBlocks(prefixes, inFeatures, widths, withBias);
    if (stacked) return stacked;
    const compressed = (p: string) => this.isCompressed(p);
    if (!prefixes.some(compressed)) return this.linearConcat(prefixes, inFeatures, widths, withBias);
    const members: (LinearLayer | ConcatenatedLinear)[] = [];
    for (let i = 0; i < prefixes.length;) {
      let end = i + 1;
      while (!compressed(prefixes[i]) && end < prefixes.length && !compressed(prefixes[end])) end++;
      members.push(end - i > 1 ? this.linearConcat(prefixes.slice(i, end), inFeatures, widths.slice(i, end), withBias) : this.linear(prefixes[i], inFeatures, widths[i], withBias));
      i = end;
    }
    return new SeparateLinears(this.backend, members, inFeatures, this.compressed!.maxRows, this.normed);
  }

  /**
   * Block low-rank projections of one input that share their method, shape and blocks (and have no
   * bias), stacked into one group (StackedBlockLinears; StackedLowRankLinears for low-rank);
   * undefined otherwise. Low-rank and BLAST members of different ranks stack too where the backend
   * wants it (Backend.stacksPaddedRanks) and the padding stays within PADDED_RANKS_LIMIT: each is
   * padded to the largest rank with channels that contribute nothing (zero rows of V, zero columns
   * of U, zero coupling), which leaves every output as it was. (Monarch's permutation depends on
   * the rank: its members stack at one rank only.)
   */
  private stackedBlocks(prefixes: string[], inFeatures: number, widths: number[], withBias: boolean): StackedBlockLinears | StackedLowRankLinears | undefined {
    if (!this.compressed || withBias || prefixes.length < 2 || prefixes.length > 3 || widths.some((w) => w !== widths[0])) return undefined;
    const specs = prefixes.map((p) => compressedLayer(this.compressed!.config, p));
    const first = specs[0];
    if (!first || specs.some((s) => !s || s.method !== first.method || s.blocks !== first.blocks || s.inputBlocks !== undefined)) return undefined;
    const { method, blocks: b } = first;
    const ranks = specs.map((s) => s!.rank);
    const r = Math.max(...ranks);
    const L = prefixes.length;
    if (ranks.some((rank) => rank !== r)) {
      if (method === 'monarch' || !this.backend.stacksPaddedRanks) return undefined;
      if (L * r > PADDED_RANKS_LIMIT * ranks.reduce((a, c) => a + c, 0)) return undefined;
    }
    const o = widths[0];
    if (inFeatures % b !== 0 || o % b !== 0 || (method === 'monarch' && r % b !== 0)) return undefined; // linear() explains
    // Each layer's factor, checked against its shape at its own rank (`shapeAt`, whose `axis` is the
    // rank), padded with zeros along that axis to rank r, then all of them as one matrix of their rows.
    const template = prefixes[ranks.indexOf(r)];
    const stack = (suffix: string, shapeAt: (rank: number) => number[], axis: number): Tensor => {
      const full = shapeAt(r);
      const columns = full[full.length - 1];
      const rows = (L * full.reduce((a, c) => a * c, 1)) / columns;
      if (makesMatricesOnDevice(this.source)) {
        prefixes.forEach((p, m) => this.checkShape(`${p}.${suffix}`, shapeAt(ranks[m])));
        this.parameters += ranks.reduce((sum, rank) => sum + shapeAt(rank).reduce((a, c) => a * c, 1), 0);
        const matrix = this.source.createMatrix(this.backend, `${template}.${suffix}`, rows);
        // A random factor's padding: the channels past a member's rank are made zero through its V
        // (low-rank; a row each) or its coupling (BLAST, read below), so they add nothing.
        if (method === 'lowrank' && suffix === 'V') {
          ranks.forEach((rank, m) => { if (rank < r) this.backend.zeroRows(matrix, columns, m * r + rank, r - rank); });
        }
        return matrix;
      }
      const values = prefixes.map((p, m) => padAxis(this.read(`${p}.${suffix}`, shapeAt(ranks[m])), shapeAt(ranks[m]), axis, r));
      return this.backend.uploadMatrix(concatenate(values), rows, columns, `${prefixes.map((p) => `${p}.${suffix}`).join('+')}`);
    };
    this.padding += ranks.reduce((sum, rank) => sum + (r - rank) * (method === 'blast' ? inFeatures + o + b * b : inFeatures + o), 0);
    const shape = { inFeatures, outFeatures: o, rank: r, blocks: b };
    const maxRows = this.compressed.maxRows;
    if (method === 'lowrank') {
      return new StackedLowRankLinears(this.backend, stack('V', (k) => [k, inFeatures], 0), stack('U', (k) => [o, k], 1), inFeatures, o, r, L, maxRows, this.scratch);
    }
    if (method === 'monarch') {
      return new StackedBlockLinears(this.backend, method, stack('W1', (k) => [b, k, inFeatures / b], 1), stack('W2', (k) => [b, o / b, k], 2), null, shape, L, maxRows, this.scratch);
    }
    const inner = stack('C', (k) => [b, k, inFeatures / b], 1);
    const outer = stack('B', (k) => [b, o / b, k], 2);
    const coupling = this.backend.upload(concatenate(prefixes.map((p, m) => padAxis(this.read(`${p}.D`, [b, b, ranks[m]]), [b, b, ranks[m]], 2, r))));
    return new StackedBlockLinears(this.backend, method, inner, outer, coupling, shape, L, maxRows, this.scratch);
  }

  /**
   * Projections of one input (`prefixes`, each (width × inFeatures)) as one matrix of their
   * concatenated rows: one matmul then computes all of them.
   */
  linearConcat(prefixes: string[], inFeatures: number, widths: number[], withBias: boolean, columnScale?: Float32Array): ConcatenatedLinear {
    const weight = this.denseWeights(prefixes, inFeatures, widths, columnScale);
    const bias = withBias ? this.backend.upload(concatenate(prefixes.map((p, i) => this.read(`${p}.bias`, [widths[i]])))) : null;
    return new ConcatenatedLinear(this.backend, weight, bias, inFeatures, widths);
  }

  /** The `.weight` rows of `prefixes` as one matrix, with column c times columnScale[c] where given. */
  private denseWeights(prefixes: string[], inFeatures: number, widths: number[], columnScale?: Float32Array): Tensor {
    const total = widths.reduce((a, b) => a + b, 0);
    if (makesMatricesOnDevice(this.source)) {
      prefixes.forEach((p, i) => this.checkShape(`${p}.weight`, [widths[i], inFeatures]));
      this.parameters += total * inFeatures;
      const weight = this.source.createMatrix(this.backend, `${prefixes[0]}.weight`, total);
      if (columnScale) this.backend.scaleColumns(weight, inFeatures, this.backend.upload(columnScale));
      return weight;
    }
    const values = concatenate(prefixes.map((p, i) => this.read(`${p}.weight`, [widths[i], inFeatures])));
    if (columnScale) scaleColumns(values, columnScale);
    const name = `${prefixes.join('+')}.weight`;
    return this.backend.uploadMatrix(values, total, inFeatures, columnScale ? `${name} (times its input norm's weight)` : name);
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
    if (spec.inputBlocks !== undefined) return this.rectangularBlast(prefix, inFeatures, outFeatures, spec.rank, spec.blocks, spec.inputBlocks, bias());
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

  /**
   * BLAST with different output and input block counts (the authors' blast_num_blocks [b_out, b_in]):
   * `.B` (b_out, out/b_out, r), `.C` (b_in, r, in/b_in), `.D` (b_out, b_in, r), run as the same
   * matrix on lcm(b_out, b_in) blocks each way (kernels/cpu/blr.ts blastOnSquareBlocks).
   */
  private rectangularBlast(prefix: string, inFeatures: number, outFeatures: number, r: number, blocksOut: number, blocksIn: number, bias: Tensor | null): LinearLayer {
    const where = `${this.source.location}: ${prefix} is BLAST with ${blocksOut} output and ${blocksIn} input blocks`;
    if (makesMatricesOnDevice(this.source)) throw new CheckpointError(`${where}: random models take one block count`);
    if (outFeatures % blocksOut !== 0 || inFeatures % blocksIn !== 0) throw new CheckpointError(`${where}, which do not divide its ${inFeatures}→${outFeatures} shape`);
    const u = this.read(`${prefix}.B`, [blocksOut, outFeatures / blocksOut, r]);
    const v = this.read(`${prefix}.C`, [blocksIn, r, inFeatures / blocksIn]);
    const coupling = this.read(`${prefix}.D`, [blocksOut, blocksIn, r]);
    const square = blastOnSquareBlocks(v, coupling, { inFeatures, outFeatures, rank: r, blocksOut, blocksIn });
    if (!square) throw new CheckpointError(`${where}; it runs on their least common multiple of blocks each way, which does not divide its ${inFeatures}→${outFeatures} shape`);
    const b = square.blocks;
    const shape = { inFeatures, outFeatures, rank: r, blocks: b };
    return new BlockLowRankLinear(
      this.backend, 'blast', this.backend.uploadMatrix(square.v, b * r, inFeatures / b, `${prefix}.C`), this.backend.uploadMatrix(u, outFeatures, r, `${prefix}.B`),
      this.backend.upload(square.s), bias, shape, this.compressed!.maxRows, this.scratch,
    );
  }
}

/**
 * Everything one forward step writes, allocated once for up to `rows` tokens and `outputs` output
 * entries: the step's indices and the activations of a pre-norm decoder block, plus the output
 * rows' path to the logits.
 */
export class StepBuffers {
  readonly indices: StepIndices;
  readonly hidden: Tensor;
  readonly q: Tensor;
  readonly k: Tensor;
  readonly v: Tensor;
  readonly attended: Tensor;
  /** A hidden-sized scratch row block (GPT-2's position embeddings before they join the stream). */
  readonly projected: Tensor;
  /** MLP intermediates (rows × intermediateSize): gate and up for SwiGLU, just the first for GELU. */
  readonly mlp: Tensor;
  readonly mlpUp: Tensor;
  /** The output rows' hidden states (the LM head normalises them as it reads them) and logits (outputs × vocabSize). */
  readonly lastHidden: Tensor;
  readonly logits: Tensor;
  /** The sampled tokens, one per output entry, picked on the device; the next step can read its ids from here. */
  readonly sampled: IndexTensor;
  /** The outputs' log-probabilities when asked (backend `logprobs`, up to MAX_TOP_LOGPROBS alternatives). */
  readonly logprobs: Tensor;

  constructor(backend: Backend, config: ModelConfig, readonly rows: number, readonly outputs: number, options: { gatedMlp: boolean }) {
    const { hiddenSize: H, intermediateSize: I, heads, kvHeads, headDim, vocabSize } = config;
    this.sampled = backend.allocateIndices(outputs);
    this.indices = new StepIndices(backend, config, rows, outputs, this.sampled);
    this.hidden = backend.allocate(rows * H);
    this.q = backend.allocate(rows * heads * headDim);
    this.k = backend.allocate(rows * kvHeads * headDim);
    this.v = backend.allocate(rows * kvHeads * headDim);
    this.attended = backend.allocate(rows * heads * headDim);
    this.projected = backend.allocate(rows * H);
    this.mlp = backend.allocate(rows * I);
    this.mlpUp = options.gatedMlp ? backend.allocate(rows * I) : this.mlp;
    this.lastHidden = backend.allocate(outputs * H);
    this.logits = backend.allocate(outputs * vocabSize);
    this.logprobs = backend.allocate(outputs * logprobStride(MAX_TOP_LOGPROBS));
  }
}

/** Rows of a step that attention takes in one call: single-token rows together, a prompt chunk alone. */
export interface AttentionSegment {
  firstRow: number;
  rows: number;
  /** 1 + the largest position of its rows. */
  length: number;
  /** Whether the rows are one sequence's (a prompt chunk, or one row), not a batch of decoding rows. */
  oneSequence: boolean;
}

/** A step as the forward pass records it (StepIndices.set). */
export interface StepPlan {
  rows: number;
  /** Token ids of the rows (the uploaded ones, or the previous step's samples). */
  tokenIds: IndexTensor;
  positions: IndexTensor;
  pages: IndexTensor;
  /** The last row of each output entry, in order. */
  outputRows: IndexTensor;
  outputs: StepEntry[];
  segments: AttentionSegment[];
}

/**
 * Per-step index tensors: token ids, positions and pages (backend.ts KVPages) of each row, and the
 * rows whose logits we want. A step fed PREVIOUS_SAMPLE gathers its tokens from `sampled`, on the device.
 */
export class StepIndices {
  readonly tokens: IndexTensor;
  readonly positions: IndexTensor;
  readonly pages: IndexTensor;
  readonly outputRows: IndexTensor;
  /** Each output's next token for the logprobs op (-1: the one sampled for it). */
  readonly nextTokens: IndexTensor;
  private readonly tokenValues: Int32Array;
  private readonly positionValues: Int32Array;
  private readonly pageValues: Int32Array;
  private readonly outputRowValues: Int32Array;
  private readonly nextTokenValues: Int32Array;
  private readonly vocabSize: number;

  constructor(private readonly backend: Backend, config: ModelConfig, private readonly maxRows: number, private readonly maxOutputs: number, private readonly sampled: IndexTensor) {
    this.tokens = backend.allocateIndices(maxRows);
    this.positions = backend.allocateIndices(maxRows);
    // The row entries, then a table per sequence of the step (at most maxOutputs of them), each at
    // most the model's context long.
    const blocksPerSequence = Math.ceil(config.maxPositions / KV_BLOCK_SIZE);
    const pageEntries = maxRows + maxOutputs * blocksPerSequence;
    this.pages = backend.allocateIndices(pageEntries);
    this.outputRows = backend.allocateIndices(maxOutputs);
    this.tokenValues = new Int32Array(maxRows);
    this.positionValues = new Int32Array(maxRows);
    this.pageValues = new Int32Array(pageEntries);
    this.outputRowValues = new Int32Array(maxOutputs);
    this.nextTokens = backend.allocateIndices(maxOutputs);
    this.nextTokenValues = new Int32Array(maxOutputs);
    this.vocabSize = config.vocabSize;
  }

  /** Checks the step against the cache and uploads its indices. */
  set(cache: KVCache, entries: StepEntry[]): StepPlan {
    if (entries.length === 0) throw new RangeError('a step needs at least one sequence');
    if (entries.length > this.maxOutputs) throw new RangeError(`a step holds at most ${this.maxOutputs} sequences, got ${entries.length}`);
    const previous = entries.filter((e) => e.tokens === PREVIOUS_SAMPLE).length;
    if (previous !== 0 && previous !== entries.length) throw new RangeError('a step takes the previous samples as the tokens of every sequence or of none');
    if (previous !== 0 && entries.some((e) => !e.sample && !e.logits && !e.logprobs)) throw new RangeError('a step fed the previous samples must sample or read every sequence');
    const outputs: StepEntry[] = [];
    let logprobs = false;
    // `entryRow`: which of the entry's rows this output is (its next token for logprobs).
    const output = (entry: StepEntry, row: number, entryRow: number) => {
      if (outputs.length === this.maxOutputs) throw new RangeError(`a step reads at most ${this.maxOutputs} rows of logits`);
      this.outputRowValues[outputs.length] = row;
      // Every output's next token, whoever asked for logprobs: a sampled row's (-1: the sample) is
      // how the step's ids come back when it reads logprobs. Without a next token (or logprobs) a
      // row's value is not wanted: any valid id will do.
      let next = entry.sample ? -1 : 0;
      if (entry.logprobs) {
        const { top, nextTokens } = entry.logprobs;
        checkLogprobsTop(top, this.vocabSize);
        if (!entry.sample) next = Math.max(0, nextTokens?.[entryRow] ?? 0);
        if (next >= this.vocabSize) throw new RangeError(`next token ${next} is outside the vocabulary of ${this.vocabSize}`);
        logprobs = true;
      }
      this.nextTokenValues[outputs.length] = next;
      outputs.push(entry);
    };
    const rows = entries.reduce((n, e) => n + (e.tokens === PREVIOUS_SAMPLE ? 1 : e.tokens.length), 0);
    if (rows > this.maxRows) throw new RangeError(`a step takes at most ${this.maxRows} tokens, got ${rows}`);

    const B = cache.blockSize;
    let row = 0;
    // The tables follow the step's row entries.
    let tableAt = rows;
    const segments: AttentionSegment[] = [];
    let lastSingle = false;
    for (const entry of entries) {
      const count = entry.tokens === PREVIOUS_SAMPLE ? 1 : entry.tokens.length;
      const { slot, blockTable } = entry.sequence;
      if (count === 0) throw new RangeError('a sequence in a step has no tokens');
      if (!(Number.isInteger(slot) && slot >= 0 && slot < cache.sequences)) throw new RangeError(`sequence slot ${slot} is outside the cache's ${cache.sequences}`);
      const end = entry.startPosition + count;
      const blocks = Math.ceil(end / B);
      if (entry.startPosition < 0 || blocks > blockTable.length) {
        throw new RangeError(`positions ${entry.startPosition}..${end - 1} do not fit the sequence's ${blockTable.length} KV blocks of ${B}`);
      }
      if (tableAt + blocks > this.pageValues.length) throw new RangeError('the step\'s block tables are longer than the model\'s context');
      for (let i = 0; i < blocks; i++) {
        const block = blockTable[i];
        if (!(Number.isInteger(block) && block >= 0 && block < cache.blocks)) throw new RangeError(`KV block ${block} is outside the cache's ${cache.blocks}`);
        this.pageValues[tableAt + i] = block;
      }
      for (let i = 0; i < count; i++) {
        if (entry.tokens !== PREVIOUS_SAMPLE) this.tokenValues[row + i] = entry.tokens[i];
        this.positionValues[row + i] = entry.startPosition + i;
        this.pageValues[row + i] = tableAt;
      }
      // Single-token rows (decoding) share one attention call; a prompt chunk gets its own.
      const last = segments[segments.length - 1];
      if (count === 1 && last && lastSingle) {
        last.rows++;
        last.length = Math.max(last.length, end);
        last.oneSequence = false;
      } else {
        segments.push({ firstRow: row, rows: count, length: end, oneSequence: true });
      }
      lastSingle = count === 1;
      // Rows before the last that want their logits (or logprobs) are outputs that sample nothing.
      const rowOutput = { ...entry, logits: entry.logits || !entry.logprobs };
      if (entry.rowLogits) for (let i = 0; i < count - 1; i++) output({ ...rowOutput, sample: undefined }, row + i, i);
      if (entry.sample || entry.logits || entry.logprobs || entry.rowLogits) output(entry.rowLogits ? rowOutput : entry, row + count - 1, count - 1);
      tableAt += blocks;
      row += count;
    }
    if (previous === 0) this.backend.uploadIndices(this.tokens, this.tokenValues.subarray(0, rows));
    this.backend.uploadIndices(this.positions, this.positionValues.subarray(0, rows));
    this.backend.uploadIndices(this.pages, this.pageValues.subarray(0, tableAt));
    if (outputs.length > 0) this.backend.uploadIndices(this.outputRows, this.outputRowValues.subarray(0, outputs.length));
    if (logprobs) this.backend.uploadIndices(this.nextTokens, this.nextTokenValues.subarray(0, outputs.length));
    return { rows, tokenIds: previous ? this.sampled : this.tokens, positions: this.positions, pages: this.pages, outputRows: this.outputRows, outputs, segments };
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

/**
 * How much larger than its members a stacked group of different ranks may be once padded (the
 * padded group's channels over theirs). Llama-3.2-1B's gate (512) and up (768) come to 1.2: ~5 MB
 * more a layer to stream (~1.4 µs at an H200's 3.8 TB/s) for two dispatches fewer (each ~2.7 µs of
 * GPU barrier and ~7 µs of CPU to record: bench/RESULTS.md).
 */
const PADDED_RANKS_LIMIT = 1.25;

/** `values` of `shape`, with dimension `axis` zero-padded at its end to `size`. */
function padAxis(values: Float32Array, shape: number[], axis: number, size: number): Float32Array {
  if (shape[axis] === size) return values;
  const outer = shape.slice(0, axis).reduce((a, c) => a * c, 1);
  const inner = shape.slice(axis + 1).reduce((a, c) => a * c, 1);
  const out = new Float32Array(outer * size * inner);
  for (let i = 0; i < outer; i++) out.set(values.subarray(i * shape[axis] * inner, (i + 1) * shape[axis] * inner), i * size * inner);
  return out;
}
