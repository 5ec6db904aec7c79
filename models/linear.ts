// One interface for every linear layer; the checkpoint decides which implementation a projection
// gets, and the model never asks.
import type { Backend, InputNorm, Tensor } from '../kernels/backend.ts';

export type LinearMethod = 'dense' | 'lowrank';

export interface LinearLayer {
  readonly method: LinearMethod;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly parameters: number;
  /** out (rows × outFeatures) = layer(x (rows × inFeatures)), or layer(RMSNorm(x) · norm weight). */
  forward(out: Tensor, x: Tensor, rows: number, inputNorm?: InputNorm): void;
  /** out += layer(x): a residual connection, fused into the layer's last step where it can be. */
  forwardAdd(out: Tensor, x: Tensor, rows: number): void;
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

  forward(out: Tensor, x: Tensor, rows: number, inputNorm?: InputNorm): void {
    this.backend.matmul(out, x, this.weight, this.bias, rows, this.inFeatures, this.outFeatures, false, inputNorm);
  }

  forwardAdd(out: Tensor, x: Tensor, rows: number): void {
    this.backend.matmul(out, x, this.weight, this.bias, rows, this.inFeatures, this.outFeatures, true);
  }
}

/**
 * y = (x Vᵀ) Uᵀ + b with V (rank × inFeatures) and U (outFeatures × rank): two matmuls through a
 * rows × rank intermediate allocated once for up to `maxRows` rows. A fused norm goes into the
 * first matmul, bias and residual into the second.
 */
export class LowRankLinear implements LinearLayer {
  readonly method = 'lowrank' as const;
  readonly parameters: number;
  private readonly intermediate: Tensor;

  constructor(
    private readonly backend: Backend,
    private readonly v: Tensor,
    private readonly u: Tensor,
    private readonly bias: Tensor | null,
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly rank: number,
    private readonly maxRows: number,
  ) {
    if (v.elements < rank * inFeatures || u.elements < outFeatures * rank) {
      throw new RangeError(`low-rank factors of ${v.elements} and ${u.elements} values; ${inFeatures}→${outFeatures} at rank ${rank} needs ${rank * inFeatures} and ${outFeatures * rank}`);
    }
    this.parameters = rank * (inFeatures + outFeatures) + (bias ? outFeatures : 0);
    this.intermediate = backend.allocate(maxRows * rank);
  }

  private project(x: Tensor, rows: number, inputNorm?: InputNorm): void {
    if (rows > this.maxRows) throw new RangeError(`low-rank layer sized for ${this.maxRows} rows, given ${rows}`);
    this.backend.matmul(this.intermediate, x, this.v, null, rows, this.inFeatures, this.rank, false, inputNorm);
  }

  forward(out: Tensor, x: Tensor, rows: number, inputNorm?: InputNorm): void {
    this.project(x, rows, inputNorm);
    this.backend.matmul(out, this.intermediate, this.u, this.bias, rows, this.rank, this.outFeatures);
  }

  forwardAdd(out: Tensor, x: Tensor, rows: number): void {
    this.project(x, rows);
    this.backend.matmul(out, this.intermediate, this.u, this.bias, rows, this.rank, this.outFeatures, true);
  }
}

/**
 * Several dense projections of the same input (q, k, v; gate, up) kept as one matrix of
 * concatenated rows, so one matmul writes every projection's tensor.
 */
export class ConcatenatedLinear {
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

  /** outs[i] (rows × widths[i]) = projection i of x, or of RMSNorm(x) · norm weight. */
  forward(outs: Tensor[], x: Tensor, rows: number, inputNorm?: InputNorm): void {
    this.backend.matmulSplit(outs, x, this.weight, this.bias, rows, this.inFeatures, this.widths, inputNorm);
  }
}
