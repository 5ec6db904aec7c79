// float64 references for the GPU's linear-algebra kernels (kernels/webgpu/linalg.ts): the strided
// batched GEMM with its load scales, and solving symmetric positive definite systems.

/** Where element (z, row, col) of a strided view lies (kernels/webgpu/linalg.ts View says how). */
export interface StridedView {
  off?: number;
  outer?: number;
  inner?: number;
  row: number;
  col: number;
}

/** Where the scale of a GEMM operand's element lies (kernels/webgpu/linalg.ts ScaleView says how). */
export interface StridedScale {
  off?: number;
  outer?: number;
  inner?: number;
  kBlock?: number;
  perKBlock?: number;
  perK?: number;
  perMN?: number;
}

function batchOffset(z: number, zInner: number, v: { off?: number; outer?: number; inner?: number }): number {
  return (v.off ?? 0) + Math.floor(z / zInner) * (v.outer ?? 0) + (z % zInner) * (v.inner ?? 0);
}

function scaleAt(s: StridedScale, base: number, k: number, mn: number): number {
  return base + Math.floor(k / (s.kBlock ?? 1)) * (s.perKBlock ?? 0) + k * (s.perK ?? 0) + mn * (s.perMN ?? 0);
}

/** c[z](m, n) = alpha · Σ_k a·sa · b·sb + beta · c, in float64 (c updated in place). */
export function stridedGemm(dims: { m: number; n: number; k: number; batch?: number; zInner?: number },
  c: { data: Float64Array | Float32Array; view: StridedView }, a: { data: ArrayLike<number>; view: StridedView }, b: { data: ArrayLike<number>; view: StridedView },
  options: { alpha?: number; beta?: number; scales?: ArrayLike<number>; scaleA?: StridedScale; scaleB?: StridedScale } = {}): void {
  const batch = dims.batch ?? 1;
  const zInner = dims.zInner ?? batch;
  const alpha = options.alpha ?? 1;
  const beta = options.beta ?? 0;
  for (let z = 0; z < batch; z++) {
    const aBase = batchOffset(z, zInner, a.view), bBase = batchOffset(z, zInner, b.view), cBase = batchOffset(z, zInner, c.view);
    const saBase = options.scaleA ? batchOffset(z, zInner, options.scaleA) : 0;
    const sbBase = options.scaleB ? batchOffset(z, zInner, options.scaleB) : 0;
    for (let m = 0; m < dims.m; m++) {
      for (let n = 0; n < dims.n; n++) {
        let sum = 0;
        for (let k = 0; k < dims.k; k++) {
          let x = a.data[aBase + m * a.view.row + k * a.view.col];
          if (options.scaleA) x *= options.scales![scaleAt(options.scaleA, saBase, k, m)];
          let y = b.data[bBase + k * b.view.row + n * b.view.col];
          if (options.scaleB) y *= options.scales![scaleAt(options.scaleB, sbBase, k, n)];
          sum += x * y;
        }
        const index = cBase + m * c.view.row + n * c.view.col;
        c.data[index] = alpha * sum + (beta === 0 ? 0 : beta * c.data[index]);
      }
    }
  }
}

/**
 * Solves A X = Y for symmetric positive definite A (n × n, lower triangle read) by Cholesky, in
 * float64; Y is n × cols row-major, the result likewise.
 */
export function choleskySolve(a: ArrayLike<number>, n: number, y: ArrayLike<number>, cols: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = a[i * n + j];
      for (let k = 0; k < j; k++) sum -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = i === j ? Math.sqrt(Math.max(sum, 1e-300)) : sum / l[j * n + j];
    }
  }
  const x = Float64Array.from(y);
  for (let c = 0; c < cols; c++) {
    for (let i = 0; i < n; i++) {
      let sum = x[i * cols + c];
      for (let k = 0; k < i; k++) sum -= l[i * n + k] * x[k * cols + c];
      x[i * cols + c] = sum / l[i * n + i];
    }
    for (let i = n - 1; i >= 0; i--) {
      let sum = x[i * cols + c];
      for (let k = i + 1; k < n; k++) sum -= l[k * n + i] * x[k * cols + c];
      x[i * cols + c] = sum / l[i * n + i];
    }
  }
  return x;
}
