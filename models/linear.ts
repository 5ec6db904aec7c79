// One interface for every linear layer; the checkpoint decides which implementation a projection
// gets, and the model never asks.
import type { Backend, InputNorm, Tensor } from '../kernels/backend.ts';

export type LinearMethod = 'dense';

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
