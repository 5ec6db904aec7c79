// One interface for every linear layer; the checkpoint decides which implementation a projection
// gets, and the model never asks.
import { type Backend, type BlockShape, type IndexTensor, type InputNorm, type InputTransform, isLayerNorm, type OutputActivation, type OutputRope, ropeOutputs, type Tensor } from '../kernels/backend.ts';

export type LinearMethod = 'dense' | 'lowrank' | 'monarch' | 'blast';

export interface LinearLayer {
  readonly method: LinearMethod;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly parameters: number;
  /**
   * out (rows × outFeatures) = layer(x (rows × inFeatures)), or layer(RMSNorm(x) · norm weight), or
   * layer(silu(x) ⊙ up) (`input`: kernels/backend.ts InputTransform); with `activation`, each
   * output through it (GPT-2's c_fc and its GELU), in the layer's last step where the backend can.
   */
  forward(out: Tensor, x: Tensor, rows: number, input?: InputTransform, activation?: OutputActivation): void;
  /** out += layer(x) (or of x transformed, as forward): a residual connection, fused into the layer's last step where it can be. */
  forwardAdd(out: Tensor, x: Tensor, rows: number, input?: InputTransform): void;
  /** Whether forward normalises its input (InputNorm) inside its own first dispatch at this many rows (Backend.normsInside). */
  normsInside(rows: number): boolean;
  /**
   * forward with the output features split evenly over `outs` (SplitOutputs: GPT-2's c_attn into q,
   * k, v) where the layer's last step can write them so (true); otherwise the whole output into
   * `whole` (false), for the caller to split. Absent where it never can.
   */
  forwardSplit?(outs: Tensor[], whole: Tensor, x: Tensor, rows: number, input?: InputTransform): boolean;
  /**
   * forward of q alone, or of k and v, with `rope` (its `parts` says which), rotated (and k, v
   * stored) in the layer's last dispatch where the backend can: true; false where it wrote `out`
   * as forward does, for the caller to rotate. Absent where it never can. (SeparateLinears.)
   */
  forwardRope?(out: Tensor, x: Tensor, rows: number, inputNorm: InputNorm | undefined, rope: OutputRope): boolean;
}

/** y = x Wᵀ + b with W stored (outFeatures × inFeatures). */
export class DenseLinear implements LinearLayer {
  readonly method = 'dense' as const;
  readonly parameters: number;

  constructor(
    private readonly backend: Backend,
    private readonly weight: Tensor,
    private readonly bias: Tensor | null,
    readonly inFeatures: number,
    readonly outFeatures: number,
  ) {
    if (weight.elements < inFeatures * outFeatures) {
      throw new RangeError(`dense weight has ${weight.elements} values, ${outFeatures}×${inFeatures} needs ${inFeatures * outFeatures}`);
    }
    this.parameters = inFeatures * outFeatures + (bias ? outFeatures : 0);
  }

  forward(out: Tensor, x: Tensor, rows: number, input?: InputTransform, activation?: OutputActivation): void {
    this.backend.matmul(out, x, this.weight, this.bias, rows, this.inFeatures, this.outFeatures, false, input, activation);
  }

  forwardAdd(out: Tensor, x: Tensor, rows: number, input?: InputTransform): void {
    this.backend.matmul(out, x, this.weight, this.bias, rows, this.inFeatures, this.outFeatures, true, input);
  }

  normsInside(rows: number): boolean {
    return this.backend.normsInside('matmul', rows, this.inFeatures);
  }
}

/**
 * The intermediate that block low-rank layers write between their two steps, shared by every
 * layer of a model (they run one after another): layers reserve their size when built, and the
 * first forward allocates the largest once.
 */
export class SharedScratch {
  private reserved = 0;
  private tensor: Tensor | undefined;

  constructor(private readonly backend: Backend) {}

  reserve(elements: number): void {
    this.reserved = Math.max(this.reserved, elements);
  }

  get(elements: number): Tensor {
    this.reserve(elements);
    if (!this.tensor || this.tensor.elements < this.reserved) this.tensor = this.backend.allocate(this.reserved);
    return this.tensor;
  }
}

/**
 * y = (x Vᵀ) Uᵀ + b with V (rank × inFeatures) and U (outFeatures × rank): two matmuls through a
 * rows × rank intermediate (in `scratch`, for up to `maxRows` rows). A fused norm goes into the
 * first matmul, bias and residual into the second.
 */
export class LowRankLinear implements LinearLayer {
  readonly method = 'lowrank' as const;
  readonly parameters: number;
  /** forwardSplit's output widths, made once. */
  private splitWidths: number[] | undefined;
  /** forwardRope's expansion: the layer as a block low-rank one of one block, made once. */
  private expandShape: BlockShape | undefined;

  constructor(
    private readonly backend: Backend,
    private readonly v: Tensor,
    private readonly u: Tensor,
    private readonly bias: Tensor | null,
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly rank: number,
    private readonly maxRows: number,
    private readonly scratch = new SharedScratch(backend),
  ) {
    if (v.elements < rank * inFeatures || u.elements < outFeatures * rank) {
      throw new RangeError(`low-rank factors of ${v.elements} and ${u.elements} values; ${inFeatures}→${outFeatures} at rank ${rank} needs ${rank * inFeatures} and ${outFeatures * rank}`);
    }
    this.parameters = rank * (inFeatures + outFeatures) + (bias ? outFeatures : 0);
    scratch.reserve(maxRows * rank);
  }

  private project(x: Tensor, rows: number, input?: InputTransform): Tensor {
    if (rows > this.maxRows) throw new RangeError(`low-rank layer sized for ${this.maxRows} rows, given ${rows}`);
    const intermediate = this.scratch.get(this.maxRows * this.rank);
    this.backend.matmul(intermediate, x, this.v, null, rows, this.inFeatures, this.rank, false, input);
    return intermediate;
  }

  forward(out: Tensor, x: Tensor, rows: number, input?: InputTransform, activation?: OutputActivation): void {
    const intermediate = this.project(x, rows, input);
    this.backend.matmul(out, intermediate, this.u, this.bias, rows, this.rank, this.outFeatures, false, undefined, activation);
  }

  forwardAdd(out: Tensor, x: Tensor, rows: number, input?: InputTransform): void {
    const intermediate = this.project(x, rows, input);
    this.backend.matmul(out, intermediate, this.u, this.bias, rows, this.rank, this.outFeatures, true);
  }

  /** The second step as a block low-rank expansion of one block (which takes RoPE in its epilogue) where the backend can. */
  forwardRope(out: Tensor, x: Tensor, rows: number, inputNorm: InputNorm | undefined, rope: OutputRope): boolean {
    const intermediate = this.project(x, rows, inputNorm);
    this.expandShape ??= { inFeatures: this.inFeatures, outFeatures: this.outFeatures, rank: this.rank, blocks: 1 };
    if (!this.bias && this.backend.blockExpandRope?.([out], intermediate, this.u, rows, this.expandShape, false, rope)) return true;
    this.backend.matmul(out, intermediate, this.u, this.bias, rows, this.rank, this.outFeatures);
    return false;
  }

  /** Always split: the second matmul writes several outputs as any matmulSplit does. */
  forwardSplit(outs: Tensor[], _whole: Tensor, x: Tensor, rows: number, input?: InputTransform): boolean {
    const intermediate = this.project(x, rows, input);
    if (this.splitWidths?.length !== outs.length) this.splitWidths = new Array(outs.length).fill(this.outFeatures / outs.length);
    this.backend.matmulSplit(outs, intermediate, this.u, this.bias, rows, this.rank, this.splitWidths);
    return true;
  }

  normsInside(rows: number): boolean {
    return this.backend.normsInside('matmul', rows, this.inFeatures);
  }
}

/** Refuses Monarch or BLAST factors (of `layers` stacked layers) that do not fit their shape. */
function checkBlockFactors(method: 'monarch' | 'blast', inner: Tensor, outer: Tensor, coupling: Tensor | null, shape: BlockShape, layers: number): void {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  const what = layers > 1 ? `${layers} stacked ${method} layers` : `${method} layer`;
  if (i % b !== 0 || o % b !== 0 || (method === 'monarch' && r % b !== 0)) {
    throw new RangeError(`${what} ${i}→${o} with ${b} blocks of rank ${r}: features${method === 'monarch' ? ' and rank' : ''} must be multiples of the blocks`);
  }
  if ((method === 'blast') !== (coupling !== null)) throw new RangeError(`${what}: a coupling S is ${method === 'blast' ? 'required' : 'not used'}`);
  if (inner.elements < layers * r * i || outer.elements < layers * o * r || (coupling && coupling.elements < layers * b * b * r)) {
    throw new RangeError(`${what} ${i}→${o}, ${b} blocks of rank ${r}: factors of ${inner.elements}, ${outer.elements}${coupling ? ` and ${coupling.elements}` : ''} values are too small`);
  }
}

/**
 * Monarch and BLAST (../shared/ANCHORS.md §1): `blockProject` makes each output block's rank-wide
 * input z (b × rows × r, in `scratch`, for up to `maxRows` rows) from x and the inner factor
 * (Monarch w1 / BLAST V, (b·r) × (in/b)) — through the Monarch permutation, or mixed by BLAST's
 * coupling S (b × b × r) — then `blockExpand` multiplies it by the outer factor (Monarch w2 /
 * BLAST U, (b·out/b) × r), writing Monarch's outputs strided and BLAST's in contiguous blocks.
 */
export class BlockLowRankLinear implements LinearLayer {
  readonly parameters: number;
  readonly inFeatures: number;
  readonly outFeatures: number;

  constructor(
    private readonly backend: Backend,
    readonly method: 'monarch' | 'blast',
    private readonly inner: Tensor,
    private readonly outer: Tensor,
    private readonly coupling: Tensor | null,
    private readonly bias: Tensor | null,
    readonly shape: BlockShape,
    private readonly maxRows: number,
    private readonly scratch = new SharedScratch(backend),
  ) {
    checkBlockFactors(method, inner, outer, coupling, shape, 1);
    const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
    this.inFeatures = i;
    this.outFeatures = o;
    this.parameters = r * (i + o) + (coupling ? b * b * r : 0) + (bias ? o : 0);
    scratch.reserve(b * maxRows * r);
  }

  private project(x: Tensor, rows: number, input?: InputTransform): Tensor {
    if (rows > this.maxRows) throw new RangeError(`${this.method} layer sized for ${this.maxRows} rows, given ${rows}`);
    const z = this.scratch.get(this.shape.blocks * this.maxRows * this.shape.rank);
    this.backend.blockProject(z, x, this.inner, this.coupling, rows, this.shape, input);
    return z;
  }

  forward(out: Tensor, x: Tensor, rows: number, input?: InputTransform, activation?: OutputActivation): void {
    const z = this.project(x, rows, input);
    this.backend.blockExpand(out, z, this.outer, this.bias, rows, this.shape, this.method === 'monarch', false, undefined, activation);
  }

  forwardAdd(out: Tensor, x: Tensor, rows: number, input?: InputTransform): void {
    const z = this.project(x, rows, input);
    this.backend.blockExpand(out, z, this.outer, this.bias, rows, this.shape, this.method === 'monarch', true);
  }

  forwardRope(out: Tensor, x: Tensor, rows: number, inputNorm: InputNorm | undefined, rope: OutputRope): boolean {
    const z = this.project(x, rows, inputNorm);
    const strided = this.method === 'monarch';
    if (!this.bias && this.backend.blockExpandRope?.([out], z, this.outer, rows, this.shape, strided, rope)) return true;
    this.backend.blockExpand(out, z, this.outer, this.bias, rows, this.shape, strided);
    return false;
  }

  forwardSplit(outs: Tensor[], whole: Tensor, x: Tensor, rows: number, input?: InputTransform): boolean {
    const z = this.project(x, rows, input);
    if (this.backend.blockExpandSplit?.(outs, z, this.outer, this.bias, rows, this.shape, this.method === 'monarch')) return true;
    this.backend.blockExpand(whole, z, this.outer, this.bias, rows, this.shape, this.method === 'monarch');
    return false;
  }

  normsInside(rows: number): boolean {
    return this.backend.normsInside(this.method, rows, this.inFeatures, this.shape.blocks);
  }
}

/**
 * Monarch or BLAST projections of one input and one shape (q, k, v; gate, up) stacked: their
 * factors (and couplings) held one after another, so that on a GPU one dispatch makes every
 * layer's z and one more every layer's output (backend ops with shape.layers), fewer and larger
 * dispatches than a pair per projection.
 */
export class StackedBlockLinears implements LinearGroup {
  readonly parameters: number;
  private readonly shape: BlockShape;

  constructor(
    private readonly backend: Backend,
    readonly method: 'monarch' | 'blast',
    private readonly inner: Tensor,
    private readonly outer: Tensor,
    private readonly coupling: Tensor | null,
    shape: BlockShape,
    readonly layers: number,
    private readonly maxRows: number,
    private readonly scratch = new SharedScratch(backend),
  ) {
    if (layers < 1 || layers > 3) throw new RangeError(`1 to 3 stacked layers, not ${layers}`);
    checkBlockFactors(method, inner, outer, coupling, shape, layers);
    const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
    this.shape = { ...shape, layers };
    this.parameters = layers * (r * (i + o) + (coupling ? b * b * r : 0));
    scratch.reserve(layers * b * maxRows * r);
  }

  forward(outs: Tensor[], x: Tensor, rows: number, inputNorm?: InputNorm, rope?: OutputRope): void {
    if (rows > this.maxRows) throw new RangeError(`${this.method} layers sized for ${this.maxRows} rows, given ${rows}`);
    if (outs.length !== this.layers) throw new RangeError(`${this.layers} stacked layers write ${this.layers} outputs, given ${outs.length}`);
    const z = this.scratch.get(this.layers * this.shape.blocks * this.maxRows * this.shape.rank);
    this.backend.blockProject(z, x, this.inner, this.coupling, rows, this.shape, inputNorm);
    this.backend.blockExpand(outs, z, this.outer, null, rows, this.shape, this.method === 'monarch', false, rope);
  }
}

/**
 * Low-rank projections of one input and one shape (q, k, v; gate, up) stacked: their V factors
 * one matrix of concatenated rows (one matmul makes every layer's x·Vᵀ, each rows × rank, one
 * after another: matmulStacked), their U factors one after another (one stacked expansion, a
 * low-rank layer being a block low-rank layer of one block, writes every layer's output). Two
 * dispatches for the group on a GPU instead of two per projection, and the norm fused into the
 * first where the matmul can.
 */
export class StackedLowRankLinears implements LinearGroup {
  readonly method = 'lowrank' as const;
  readonly parameters: number;
  private readonly shape: BlockShape;
  private readonly widths: number[];

  constructor(
    private readonly backend: Backend,
    private readonly v: Tensor,
    private readonly u: Tensor,
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly rank: number,
    readonly layers: number,
    private readonly maxRows: number,
    private readonly scratch = new SharedScratch(backend),
  ) {
    if (layers < 1 || layers > 3) throw new RangeError(`1 to 3 stacked layers, not ${layers}`);
    if (v.elements < layers * rank * inFeatures || u.elements < layers * outFeatures * rank) {
      throw new RangeError(`${layers} stacked low-rank layers ${inFeatures}→${outFeatures} at rank ${rank}: factors of ${v.elements} and ${u.elements} values are too small`);
    }
    this.parameters = layers * rank * (inFeatures + outFeatures);
    this.shape = { inFeatures, outFeatures, rank, blocks: 1, layers };
    this.widths = new Array(layers).fill(rank);
    scratch.reserve(layers * maxRows * rank);
  }

  forward(outs: Tensor[], x: Tensor, rows: number, inputNorm?: InputNorm, rope?: OutputRope): void {
    if (rows > this.maxRows) throw new RangeError(`low-rank layers sized for ${this.maxRows} rows, given ${rows}`);
    if (outs.length !== this.layers) throw new RangeError(`${this.layers} stacked layers write ${this.layers} outputs, given ${outs.length}`);
    const z = this.scratch.get(this.layers * this.maxRows * this.rank);
    this.backend.matmulStacked(z, x, this.v, rows, this.inFeatures, this.widths, inputNorm);
    this.backend.blockExpand(outs, z, this.u, null, rows, this.shape, false, false, rope);
  }
}

/** Several projections of the same input (q, k, v; gate, up), each written to its own tensor. */
export interface LinearGroup {
  readonly parameters: number;
  /**
   * outs[i] = projection i of x, or of RMSNorm(x) · norm weight; with `rope` (outs are q, k, v),
   * then rotated and stored in the KV cache as Backend.rope does it (in the matmul's dispatch where
   * the backend can).
   */
  forward(outs: Tensor[], x: Tensor, rows: number, inputNorm?: InputNorm, rope?: OutputRope): void;
  /**
   * Where a group of two (gate, up) can make a gated MLP's silu(gate) ⊙ up itself
   * (Backend.matmulSwiglu): true when out holds it; false when out holds the gate and `up` the up
   * projection, as forward([out, up]) writes them, for the down projection to gate as it reads.
   * Absent where SwiGLU always goes with the down projection.
   */
  forwardSwiglu?(out: Tensor, up: Tensor, x: Tensor, rows: number, inputNorm?: InputNorm): boolean;
}

/**
 * Projections of one input that cannot share one matrix (any of them in block low-rank form): one
 * layer each, or for dense neighbours (Llama-3.2-1B's k and v beside a BLAST q) one matrix of their
 * concatenated rows. A norm on their input goes into each member's own first dispatch where every
 * member does that at these rows (Backend.normsInside: on a GPU with subgroups, a dense matmul of
 * one row, a BLAST projection short of the tensor cores' rows), else runs
 * once into `normed` (shared by the model's groups, up to `maxRows` rows) for all of them.
 */
export class SeparateLinears implements LinearGroup {
  readonly parameters: number;

  constructor(
    private readonly backend: Backend,
    readonly members: (LinearLayer | ConcatenatedLinear)[],
    private readonly inFeatures: number,
    private readonly maxRows: number,
    private readonly normed = new SharedScratch(backend),
  ) {
    this.parameters = members.reduce((sum, member) => sum + member.parameters, 0);
    normed.reserve(maxRows * inFeatures);
  }

  forward(outs: Tensor[], x: Tensor, rows: number, inputNorm?: InputNorm, rope?: OutputRope): void {
    let input = x;
    let norm = inputNorm;
    if (inputNorm && (isLayerNorm(inputNorm) || !this.members.every((member) => member.normsInside(rows)))) {
      // (normsInside speaks of RMSNorm: a LayerNorm runs once for all.)
      input = this.normed.get(this.maxRows * this.inFeatures);
      if (isLayerNorm(inputNorm)) this.backend.layerNorm(input, x, inputNorm.weight, inputNorm.bias, rows, this.inFeatures, inputNorm.eps);
      else this.backend.rmsNorm(input, x, inputNorm.weight, rows, this.inFeatures, inputNorm.eps);
      norm = undefined;
    }
    // With RoPE (outs are q, k, v): a member that is q alone, or k|v, rotates its own outputs in
    // its last dispatch where it can; one rope dispatch then does whatever none of them did.
    let rotatedQ = false;
    let rotatedKV = false;
    let next = 0;
    for (const member of this.members) {
      const count = member instanceof ConcatenatedLinear ? member.widths.length : 1;
      const parts = !rope ? undefined : next === 0 && count === 1 ? 'q' : next === 1 && count === 2 ? 'kv' : undefined;
      if (rope && parts && member.forwardRope) {
        const partRope = { ...rope, parts } as const;
        const rotated = member instanceof ConcatenatedLinear ? member.forwardRope(outs.slice(next, next + count), input, rows, norm, partRope)
          : member.forwardRope(outs[next], input, rows, norm, partRope);
        if (rotated && parts === 'q') rotatedQ = true;
        if (rotated && parts === 'kv') rotatedKV = true;
      } else if (member instanceof ConcatenatedLinear) {
        member.forward(outs.slice(next, next + count), input, rows, norm);
      } else {
        member.forward(outs[next], input, rows, norm);
      }
      next += count;
    }
    if (!rope || (rotatedQ && rotatedKV)) return;
    if (rotatedQ) ropeOutputs(this.backend, outs.slice(1), rows, { ...rope, parts: 'kv' });
    else if (rotatedKV) ropeOutputs(this.backend, outs.slice(0, 1), rows, { ...rope, parts: 'q' });
    else ropeOutputs(this.backend, outs, rows, rope);
  }
}

/**
 * One layer whose output features are several projections side by side, each `width` wide (GPT-2's
 * c_attn in block low-rank form: q | k | v): where the layer's last step can, it writes each
 * projection's tensor itself (LinearLayer.forwardSplit: low-rank always, Monarch and BLAST on a GPU
 * for decoding rows); elsewhere it writes `scratch` (up to `maxRows` rows), and each projection's
 * columns go to its tensor by gatherRows — the scratch's rows of k · width values seen as k rows of
 * width each, projection i's being rows i, k + i, 2k + i, …
 */
export class SplitOutputs implements LinearGroup {
  readonly parameters: number;
  private readonly indices: IndexTensor[];

  constructor(
    private readonly backend: Backend,
    private readonly layer: LinearLayer,
    private readonly width: number,
    private readonly parts: number,
    private readonly maxRows: number,
    private readonly scratch = new SharedScratch(backend),
  ) {
    if (layer.outFeatures !== width * parts) throw new RangeError(`a layer of ${layer.outFeatures} outputs does not split into ${parts} of ${width}`);
    this.parameters = layer.parameters;
    scratch.reserve(maxRows * layer.outFeatures);
    this.indices = Array.from({ length: parts }, (_, i) => {
      const indices = backend.allocateIndices(maxRows);
      backend.uploadIndices(indices, Int32Array.from({ length: maxRows }, (_, r) => r * parts + i));
      return indices;
    });
  }

  forward(outs: Tensor[], x: Tensor, rows: number, inputNorm?: InputNorm, rope?: OutputRope): void {
    if (rows > this.maxRows) throw new RangeError(`split layer sized for ${this.maxRows} rows, given ${rows}`);
    const all = this.scratch.get(this.maxRows * this.layer.outFeatures);
    let split = false;
    if (this.layer.forwardSplit) split = this.layer.forwardSplit(outs, all, x, rows, inputNorm);
    else this.layer.forward(all, x, rows, inputNorm);
    if (!split) this.indices.forEach((indices, i) => this.backend.gatherRows(outs[i], all, indices, rows, this.width));
    if (rope) ropeOutputs(this.backend, outs, rows, rope);
  }
}

/**
 * Several dense projections of the same input (q, k, v; gate, up) kept as one matrix of
 * concatenated rows, so one matmul writes every projection's tensor.
 */
export class ConcatenatedLinear implements LinearGroup {
  readonly parameters: number;

  constructor(
    private readonly backend: Backend,
    private readonly weight: Tensor,
    private readonly bias: Tensor | null,
    readonly inFeatures: number,
    /** Output features of each projection, in the order of their rows. */
    readonly widths: number[],
  ) {
    const outFeatures = widths.reduce((a, b) => a + b, 0);
    if (weight.elements < inFeatures * outFeatures) {
      throw new RangeError(`concatenated weight has ${weight.elements} values, ${outFeatures}×${inFeatures} needs ${inFeatures * outFeatures}`);
    }
    this.parameters = inFeatures * outFeatures + (bias ? outFeatures : 0);
  }

  /** outs[i] (rows × widths[i]) = projection i of x, or of RMSNorm(x) · norm weight, rotated with `rope`. */
  forward(outs: Tensor[], x: Tensor, rows: number, inputNorm?: InputNorm, rope?: OutputRope): void {
    this.backend.matmulSplit(outs, x, this.weight, this.bias, rows, this.inFeatures, this.widths, inputNorm, rope);
  }

  /** forward with `rope` (outs are q, k|v or q|k|v: rope.parts) in the matmul's dispatch where the backend can (true); else plain, for the caller to rotate (false). */
  forwardRope(outs: Tensor[], x: Tensor, rows: number, inputNorm: InputNorm | undefined, rope: OutputRope): boolean {
    if (this.backend.matmulRope?.(outs, x, this.weight, this.bias, rows, this.inFeatures, this.widths, inputNorm, rope)) return true;
    this.backend.matmulSplit(outs, x, this.weight, this.bias, rows, this.inFeatures, this.widths, inputNorm);
    return false;
  }

  normsInside(rows: number): boolean {
    return this.backend.normsInside('matmul', rows, this.inFeatures);
  }

  forwardSwiglu(out: Tensor, up: Tensor, x: Tensor, rows: number, inputNorm?: InputNorm): boolean {
    if (this.widths.length !== 2 || this.widths[0] !== this.widths[1]) throw new RangeError(`SwiGLU takes two projections of one width, not ${this.widths.join(', ')}`);
    return this.backend.matmulSwiglu(out, up, x, this.weight, this.bias, rows, this.inFeatures, this.widths[0], inputNorm);
  }
}
