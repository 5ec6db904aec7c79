// The boundary between models and compute. A model's forward pass is a sequence of these ops on
// opaque tensors. The CPU backend runs each op as it is called; a GPU backend records them into one
// command encoder and submits at `read`, so the model code is the same for both.
//
// Conventions: tensors are row-major f32, except matrices from uploadMatrix, which a GPU backend
// keeps in f16; `rows` is the number of tokens in the step; a linear weight is
// (outFeatures × inFeatures), y = x Wᵀ + b. An op's output never aliases its inputs, except where
// an op says so (add, swiglu and gelu may write over their first input).

export interface Tensor {
  /** Capacity in elements. */
  readonly elements: number;
}

/**
 * Keys and values of every layer in a paged pool: `blocks` blocks of `blockSize` positions, shared
 * by up to `sequences` sequences, each of which owns a list of blocks (its block table; position t
 * of a sequence lives in block table[t / blockSize] at offset t % blockSize). Beside it, a row of
 * token counts per sequence slot (`tokenFlags`, sequences × flagStride): for token t, 1 if the
 * prompt holds it plus 2 × the times the output does (the penalties read them; `sample` adds 2 to
 * the pick).
 */
export interface KVCache {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly blocks: number;
  readonly blockSize: number;
  readonly sequences: number;
  /** Entries per sequence row of tokenFlags (the vocabulary rounded up to whole vec4s). */
  readonly flagStride: number;
  readonly tokenFlags: IndexTensor;
  /** Gives the memory back to the backend's pool; the cache must not be used afterwards. */
  release(): void;
}

/** Entries per sequence row of KVCache.tokenFlags: the vocabulary rounded up to whole vec4s. */
export function flagStride(vocabSize: number): number {
  return Math.ceil(vocabSize / 4) * 4;
}

/** The most alternatives a logprobs row holds (OpenAI's top_logprobs maximum). */
export const MAX_TOP_LOGPROBS = 20;

/** Values per row of the logprobs op's output: the next token's id and log-probability, then (id, log-probability) × top. */
export function logprobStride(top: number): number {
  return 2 + 2 * top;
}

/** Refuses a logprobs op's `top` outside 0..MAX_TOP_LOGPROBS (and the `count` tokens a row has). */
export function checkLogprobsTop(top: number, count = Infinity): void {
  if (!(Number.isInteger(top) && top >= 0 && top <= MAX_TOP_LOGPROBS && top <= count)) {
    throw new RangeError(`logprobs take 0 to ${Math.min(MAX_TOP_LOGPROBS, count)} alternatives, not ${top}`);
  }
}

export interface KVCacheShape {
  layers: number;
  kvHeads: number;
  headDim: number;
  blocks: number;
  blockSize: number;
  sequences: number;
  vocabSize: number;
}

/**
 * Where a step's rows keep their keys and values: an index tensor whose entry r (for each row r of
 * the step) is the offset, in this same tensor, of the block table of the row's sequence; the
 * tables follow the row entries. Position t of row r is slot pages[pages[r] + t / blockSize] ·
 * blockSize + t % blockSize of the cache.
 */
export type KVPages = IndexTensor;

/** Where rope also stores k (rotated) and v: a layer of the cache, at the rows' pages. */
export interface KVStore {
  cache: KVCache;
  layer: number;
  v: Tensor;
  pages: KVPages;
}

/** One sampling step's choices (see kernels/cpu/sample.ts for the reference). */
export interface SampleParams {
  /** 0 picks the largest (after the repetition penalty). */
  temperature: number;
  /** 0 keeps every token. */
  topK: number;
  /** 1 keeps every token. */
  topP: number;
  /** 0 keeps every token. */
  minP: number;
  /** 1: none; > 1 discourages flagged tokens (transformers' rule). */
  repetitionPenalty: number;
  /** OpenAI's presence penalty: subtracted from tokens the output holds; 0: none. */
  presencePenalty: number;
  /** OpenAI's frequency penalty: subtracted once per time the output holds a token; 0: none. */
  frequencyPenalty: number;
  /** This step's uniform draw in [0, 1), a float32 value (the seeded generator lives on the CPU). */
  draw: number;
}

/** Whether a step's parameters read the sequence's token counts. */
export function usesTokenCounts(params: Pick<SampleParams, 'repetitionPenalty' | 'presencePenalty' | 'frequencyPenalty'>): boolean {
  return params.repetitionPenalty !== 1 || params.presencePenalty !== 0 || params.frequencyPenalty !== 0;
}

/** One row of a sample call: its logits row (and result entry), choices and token-count row. */
export interface SampleRow {
  row: number;
  params: SampleParams;
  flagsRow: number;
}

export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Softmax scale, usually 1/sqrt(headDim). */
  scale: number;
}

/** A matmul whose input is RMSNorm(x) · weight (the norm fused where a kernel can). */
/** A block low-rank layer's sizes: `blocks` blocks of inFeatures/blocks inputs and outFeatures/blocks outputs, rank `rank`. */
export interface BlockShape {
  inFeatures: number;
  outFeatures: number;
  rank: number;
  blocks: number;
  /**
   * Layers of this shape stacked (q|k|v, gate|up: projections of the same input), 1 when absent:
   * the factors hold each layer's rows in turn, the coupling each one's blocks × blocks × rank
   * values, z each one's blocks × rows × rank values.
   */
  layers?: number;
}

/**
 * RMSNorm(x) · weight per row; with `bias`, LayerNorm instead: (x − mean) / sqrt(var + eps) ·
 * weight + bias (GPT-2's ln_1, ln_2, ln_f ahead of the matmul that reads them).
 */
export interface InputNorm {
  weight: Tensor;
  eps: number;
  bias?: Tensor;
}

/**
 * SwiGLU made as a matmul reads its input (a gated MLP's down projection): x is the gate, and the
 * input is silu(x) ⊙ up (both rows × inFeatures).
 */
export interface InputGate {
  up: Tensor;
}

/**
 * RoPE on a q|k|v matmul's outputs (matmulSplit's `rope`): q and k rotated as `rope` rotates them,
 * and with `store`, the rotated k rows and the v rows put in that cache layer as writeKV puts them.
 * `parts` names outputs that are only q, or only k and v (separate projections of one input, as
 * Llama-3.2-1B's BLAST q beside its dense k|v); absent, they are q, k and v.
 */
export interface OutputRope {
  positions: IndexTensor;
  rotary: Tensor;
  heads: number;
  kvHeads: number;
  headDim: number;
  store?: { cache: KVCache; layer: number; pages: KVPages };
  parts?: 'q' | 'kv';
}

/**
 * What a matmul does to each result as it stores it, after the bias and before a residual add:
 * 'gelu' is GPT-2's gelu_new (tanh form), as `gelu` makes it. In the GPU's matmul epilogue where
 * the kernel has one, otherwise a pass after it.
 */
export type OutputActivation = 'gelu';

/** What a matmul does to x as it reads it: RMS-normalise it (InputNorm) or gate it (InputGate). */
export type InputTransform = InputNorm | InputGate;

export const isInputNorm = (input: InputTransform): input is InputNorm => 'weight' in input;
/** A LayerNorm (an InputNorm with a bias), which only kernels that say so take inside. */
export const isLayerNorm = (input: InputTransform | undefined): input is InputNorm & { bias: Tensor } => input !== undefined && isInputNorm(input) && input.bias !== undefined;

export type KVPrecision = 'f32' | 'f16';
export const KV_PRECISIONS: readonly KVPrecision[] = ['f32', 'f16'];

/** Bytes a KV cache takes per stored value. */
export const kvValueBytes = (precision: KVPrecision): number => (precision === 'f16' ? 2 : 4);

export interface Backend {
  readonly name: 'cpu' | 'webgpu';
  /** One line for people: the device and how it runs. */
  readonly description: string;
  /**
   * Whether each recorded step leaves JS objects holding native memory that only a full JS
   * collection frees (WebGPU's command encoders, passes and buffers): a long-running engine then
   * runs such collections itself (engine/collector.ts).
   */
  readonly leavesNativeGarbage: boolean;
  /**
   * Whether block low-rank projections of one input that differ only in rank (Llama-3.2-1B's gate
   * at 512 beside up at 768) are loaded as one stacked group, the lower ranks padded with zero
   * channels: fewer dispatches for a few more bytes, the trade a GPU wants (models/model.ts
   * stackedBlocks); a CPU would only do the padding's arithmetic.
   */
  readonly stacksPaddedRanks: boolean;
  /**
   * How the KV cache stores keys and values. 'f16' (the WebGPU backend's default where the device
   * has shader-f16) halves the cache's memory and the bytes attention reads; each stored value is
   * rounded to f16, and attention's arithmetic stays f32.
   */
  readonly kvPrecision: KVPrecision;

  /** A read-only f32 tensor holding `data` (norm weights, biases, tables). */
  upload(data: Float32Array): Tensor;
  /**
   * A read-only (rows × columns) weight matrix: the operand of matmul and gatherRows. A GPU
   * backend stores it in f16 (rejecting values outside f16's range) and accumulates in f32.
   */
  uploadMatrix(data: Float32Array, rows: number, columns: number, name: string): Tensor;
  /**
   * A matrix of scale × standard-normal values made where the backend keeps its data (on the GPU
   * for WebGPU), for benchmarks at full model size without a checkpoint. Same seed, same values
   * on the same backend.
   */
  randomMatrix(rows: number, columns: number, scale: number, seed: number, name: string): Tensor;
  /**
   * Multiplies column c of a (rows × columns) matrix from uploadMatrix or randomMatrix by scale[c]
   * (a vector from upload): a norm weight folded into a random projection that reads the norm
   * (models/model.ts folds a checkpoint's before upload). A GPU backend rounds each product to f16.
   */
  scaleColumns(matrix: Tensor, columns: number, scale: Tensor): void;
  /** Sets rows first .. first + count - 1 of a (rows × columns) matrix from uploadMatrix or randomMatrix to zero (a random stacked factor's padding). */
  zeroRows(matrix: Tensor, columns: number, first: number, count: number): void;
  /** A scratch tensor, allocated once and reused every step. */
  allocate(elements: number): Tensor;
  createKVCache(shape: KVCacheShape): KVCache;
  /**
   * Token ids or positions for this step, written from entry `offset` on. On a GPU the values land
   * before any work not yet submitted runs: `flush` first if recorded work must see the old ones.
   */
  uploadIndices(target: IndexTensor, values: Int32Array, offset?: number): void;
  allocateIndices(elements: number): IndexTensor;

  /** out[r] = table[indices[r]] for r < rows; rows of `width` elements. */
  gatherRows(out: Tensor, table: Tensor, indices: IndexTensor, rows: number, width: number): void;
  rmsNorm(out: Tensor, x: Tensor, weight: Tensor, rows: number, width: number, eps: number): void;
  layerNorm(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor, rows: number, width: number, eps: number): void;
  /**
   * out (rows × outFeatures) = x (rows × inFeatures) · weightᵀ + bias; with `accumulate`,
   * out += x · weightᵀ + bias instead (a residual connection in the matmul's epilogue); with
   * `input`, x is first RMS-normalised per row and scaled by the norm weight (InputNorm), or the
   * input is silu(x) ⊙ up (InputGate); with `activation`, each result goes through it first.
   */
  matmul(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, outFeatures: number, accumulate?: boolean, input?: InputTransform, activation?: OutputActivation): void;
  /**
   * Whether a projection of one kind over `rows` rows of `inFeatures` normalises its input (InputNorm)
   * inside its own dispatch — 'matmul' for matmul, matmulSplit and a low-rank layer's first step;
   * 'blast' or 'monarch' (with `blocks`) for blockProject — so that a group of separate projections
   * of one input hands each the norm instead of normalising it first in a dispatch of its own.
   */
  normsInside(kind: 'matmul' | 'blast' | 'monarch', rows: number, inFeatures: number, blocks?: number): boolean;
  /**
   * One matmul whose output features are split over up to three tensors: `weight` holds the
   * concatenated rows of several projections of the same input (q|k|v, gate|up), and outs[i]
   * receives rows × widths[i]. One dispatch on the GPU instead of one per projection. With `rope`
   * (outs are q, k, v), the result is then rotated and stored as `rope` does it: on the GPU in the
   * same dispatch where the kernel can (one row, on adapters with subgroups).
   */
  matmulSplit(outs: Tensor[], x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, widths: number[], inputNorm?: InputNorm, rope?: OutputRope): void;
  /**
   * A gated MLP's first half: `weight` holds the gate's rows then the up projection's (width each),
   * x RMS-normalised first with `inputNorm`. Returns true when out (rows × width) holds
   * silu(x · gateᵀ) ⊙ (x · upᵀ) — on the GPU one dispatch where the kernel can (one row, on adapters
   * with subgroups) — and false when it holds x · gateᵀ and `up` x · upᵀ, as matmulSplit writes
   * them, for the consumer to gate as it reads (InputGate: on tensor cores, as x goes to f16).
   */
  matmulSwiglu(out: Tensor, up: Tensor, x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, width: number, inputNorm?: InputNorm): boolean;
  /**
   * The same matmul (up to three projections, no bias) with its outputs one after another in one
   * tensor: projection i's rows × widths[i] values start after the earlier projections' (the
   * layout stacked block low-rank layers keep their intermediate in: low-rank's x·Vᵀ per layer).
   */
  matmulStacked(out: Tensor, x: Tensor, weight: Tensor, rows: number, inFeatures: number, widths: number[], inputNorm?: InputNorm): void;
  /**
   * Steps 1 and 2 of a Monarch or BLAST layer (kernels/cpu/blr.ts `blockProject`): z (blocks ×
   * rows × rank) from x (rows × inFeatures, or RMSNorm(x) · weight, or silu(x) ⊙ up, with `input`), the factor
   * ((blocks·rank) × (inFeatures / blocks), from uploadMatrix) and, for BLAST, the coupling
   * (blocks × blocks × rank, f32); a null coupling applies the Monarch permutation instead.
   */
  blockProject(z: Tensor, x: Tensor, factor: Tensor, coupling: Tensor | null, rows: number, shape: BlockShape, input?: InputTransform): void;
  /**
   * Step 3 (kernels/cpu/blr.ts `blockExpand`): out (rows × outFeatures) = each block's z_a ·
   * factor_aᵀ (factor: (blocks·outFeatures/blocks) × rank) + bias, output p of block a at
   * feature a·(outFeatures/blocks) + p, or p·blocks + a when `strided` (Monarch); `accumulate`
   * adds to out instead (a residual connection). Stacked layers (shape.layers > 1) write one tensor
   * each, `out` being that many (up to 3), without bias or residual; with `rope` (three stacked
   * layers: q, k, v), the outputs are then rotated and stored as matmulSplit's `rope` does it; with
   * `activation` (one layer, no `rope`), each result goes through it before any residual add.
   */
  blockExpand(out: Tensor | Tensor[], z: Tensor, factor: Tensor, bias: Tensor | null, rows: number, shape: BlockShape, strided: boolean, accumulate?: boolean, rope?: OutputRope, activation?: OutputActivation): void;
  /**
   * Step 3 of one layer (as blockExpand, no residual) with its output features split evenly over
   * `outs` (2 or 3: GPT-2's c_attn into q, k and v), written so by the expansion's own dispatch where
   * the backend can (true); false, with nothing recorded, where it cannot — the caller then expands
   * into one tensor and splits that. Absent where it never can.
   */
  blockExpandSplit?(outs: Tensor[], z: Tensor, factor: Tensor, bias: Tensor | null, rows: number, shape: BlockShape, strided: boolean): boolean;
  /**
   * matmulSplit with `rope` (no residual), the rotation and the cache store in the matmul's own
   * dispatch, where the backend can (true); false, with nothing recorded, where it cannot. Absent
   * where it never can.
   */
  matmulRope?(outs: Tensor[], x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, widths: number[], inputNorm: InputNorm | undefined, rope: OutputRope): boolean;
  /**
   * blockExpand of one layer or of stacked ones (no bias, no residual) with `rope`, in the
   * expansion's own dispatch, where the backend can (true); false, with nothing recorded, where it
   * cannot. Absent where it never can.
   */
  blockExpandRope?(outs: Tensor[], z: Tensor, factor: Tensor, rows: number, shape: BlockShape, strided: boolean, rope: OutputRope): boolean;
  /** out = a + b, elementwise over `elements`. */
  add(out: Tensor, a: Tensor, b: Tensor, elements: number): void;
  /** out = silu(gate) · up. */
  swiglu(out: Tensor, gate: Tensor, up: Tensor, elements: number): void;
  /** out = gelu(x), tanh approximation (GPT-2's gelu_new). */
  gelu(out: Tensor, x: Tensor, elements: number): void;
  /**
   * Rotates every head of q (rows × heads·headDim) and k (rows × kvHeads·headDim) in place
   * (rotate_half pairs i, i + headDim/2) by angle position · inverseFrequency[i]. `rotary` holds
   * the cosines (maxPositions × headDim/2), then as many sines. One dispatch for both on the GPU. With `store`, the rotated k
   * rows and the v rows then go into that cache layer as writeKV puts them (in the same dispatch).
   * A null q or k is left out (the other's projection rotated it already).
   */
  rope(q: Tensor | null, k: Tensor | null, positions: IndexTensor, rotary: Tensor, rows: number, heads: number, kvHeads: number, headDim: number, store?: KVStore): void;
  /** Stores rows of k and v (rows × kvHeads·headDim) at their positions in their pages of the cache's layer. */
  writeKV(cache: KVCache, layer: number, k: Tensor, v: Tensor, positions: IndexTensor, pages: KVPages, rows: number): void;
  /**
   * Causal attention for rows firstRow..firstRow+rows-1: row r (at positions[r]) attends to
   * positions 0..positions[r] of its sequence (its pages). q and out are (all rows) × heads·headDim;
   * query head h reads kv head h / (heads / kvHeads). `length` is 1 + the largest position of the
   * rows: a GPU splits long caches over workgroups by it. Rows of one call may belong to different
   * sequences (a batch of decoding rows); `oneSequence` says they are one sequence's (a prompt
   * chunk), and only then does a GPU share loaded keys between rows.
   */
  attention(out: Tensor, q: Tensor, cache: KVCache, layer: number, positions: IndexTensor, pages: KVPages, firstRow: number, rows: number, shape: AttentionShape, length: number, oneSequence: boolean): void;

  /**
   * out[r] = the index of the largest of the `count` values of row r of `values` (lowest on ties),
   * for rows firstRow..firstRow+rows-1 (one dispatch on the GPU).
   */
  argmax(out: IndexTensor, values: Tensor, firstRow: number, rows: number, count: number): void;
  /**
   * For each of `rows`: out[row] = the next token drawn from row `row` of the logits (rows of
   * `count`; not modified) with its params. With `tokenFlags`, row `flagsRow` of them (rows of
   * flagStride(count)) gives the penalties and counts the drawn token. One dispatch on the GPU.
   */
  sample(out: IndexTensor, logits: Tensor, count: number, rows: SampleRow[], tokenFlags: IndexTensor | null): void;
  /**
   * Log-probabilities (log_softmax) from rows 0..rows-1 of `logits` (rows of `count`), so that only
   * these cross back: row r of `out` (logprobStride(top) values) holds token next[r] — nextTokens[r],
   * or sampled[r] where that is negative — (as a float, so a step reading these needs no other
   * readback for its sampled ids) and its log-probability, then the `top` (≤
   * MAX_TOP_LOGPROBS) most likely tokens as (id, log-probability) pairs, best first, the lower id
   * first on ties. One dispatch on the GPU (kernels/cpu/logprobs.ts is the reference).
   */
  logprobs(out: Tensor, logits: Tensor, count: number, rows: number, nextTokens: IndexTensor, sampled: IndexTensor, top: number): void;

  /** Starts running what was recorded, without waiting (index uploads after it see it done). */
  flush(): void;
  /**
   * A point in a step where what was recorded so far could start running: a GPU backend submits it
   * when no earlier step is still running, so the GPU works while the CPU records the rest; behind a
   * running step it does nothing. Models call it between the layers of a prefill
   * (DecoderModel.betweenLayers); a decode step is always one submit.
   */
  submitIfIdle(): void;
  /** Runs what was recorded and returns the first `elements` values of the tensor. */
  read(tensor: Tensor, elements: number): Promise<Float32Array>;
  /**
   * Runs what was recorded and returns the first `elements` values of the index tensor. The
   * next step may be recorded and submitted before the promise settles (pipelined decoding).
   */
  readIndices(tensor: IndexTensor, elements: number): Promise<Int32Array>;
  dispose(): void;
}

export interface IndexTensor {
  readonly elements: number;
}

/** `rope` applied to a q|k|v matmul's outputs (the unfused form of matmulSplit's `rope`): q, k, v; q alone; or k and v (rope.parts). */
export function ropeOutputs(backend: Backend, outs: Tensor[], rows: number, rope: OutputRope): void {
  const q = rope.parts === 'kv' ? null : outs[0];
  const k = rope.parts === 'q' ? null : outs[rope.parts === 'kv' ? 0 : 1];
  const store = rope.store && k ? { ...rope.store, v: outs[rope.parts === 'kv' ? 1 : 2] } : undefined;
  backend.rope(q, k, rope.positions, rope.rotary, rows, rope.heads, rope.kvHeads, rope.headDim, store);
}
