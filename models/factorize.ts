// Dense → block low-rank factorisations (`blr compress`) (../shared/ANCHORS.md §1), in float64 on the CPU
// (factorize_gpu.ts does them in f32 on the GPU):
//   low-rank: truncated SVD, √S on both factors;
//   Monarch: per sub-block truncated SVD (rank r/b) of the row-permuted matrix, paired with the
//     channels the Monarch permutation routes through that block;
//   BLAST: alternating preconditioned gradient descent on ‖A − Â‖²_F (A normalised by its std),
//     each factor's step preconditioned by (GᵀG + εI)⁻¹ of the other factors' Gram matrix,
//     ε = 0.1·‖A − Â‖ (normalised), step 1.0 decayed linearly to 0, from a low-rank start.
// Truncated SVDs are randomised (range finder with power iterations, oversampled), exact for
// matrices of the requested rank.
import { monarchSource, type BlrFactors, type BlrShape, type MonarchFactors } from '../kernels/cpu/blr.ts';
import { choleskySolve } from '../kernels/cpu/linalg.ts';
import { randomNormalMatrix } from '../kernels/cpu/ops.ts';

type Matrix = { rows: number; cols: number; data: Float64Array<ArrayBufferLike> };

function matrix(rows: number, cols: number, data: Float64Array<ArrayBufferLike> = new Float64Array(rows * cols)): Matrix {
  return { rows, cols, data };
}

/** C = A · B (A: m × k, B: k × n), or Aᵀ · B / A · Bᵀ with the flags. */
function multiply(a: Matrix, b: Matrix, transposeA = false, transposeB = false): Matrix {
  const m = transposeA ? a.cols : a.rows;
  const k = transposeA ? a.rows : a.cols;
  const n = transposeB ? b.rows : b.cols;
  const c = matrix(m, n);
  for (let i = 0; i < m; i++) {
    for (let t = 0; t < k; t++) {
      const av = transposeA ? a.data[t * a.cols + i] : a.data[i * a.cols + t];
      if (av === 0) continue;
      for (let j = 0; j < n; j++) c.data[i * n + j] += av * (transposeB ? b.data[j * b.cols + t] : b.data[t * b.cols + j]);
    }
  }
  return c;
}

/** Orthonormal columns spanning A's columns (modified Gram–Schmidt, twice; dependent columns dropped). */
function orthonormalColumns(a: Matrix): Matrix {
  const columns: Float64Array[] = [];
  for (let j = 0; j < a.cols; j++) {
    const v = new Float64Array(a.rows);
    for (let i = 0; i < a.rows; i++) v[i] = a.data[i * a.cols + j];
    const norm0 = Math.hypot(...v);
    for (let pass = 0; pass < 2; pass++) {
      for (const q of columns) {
        let dot = 0;
        for (let i = 0; i < a.rows; i++) dot += q[i] * v[i];
        for (let i = 0; i < a.rows; i++) v[i] -= dot * q[i];
      }
    }
    const norm = Math.hypot(...v);
    if (norm > 1e-10 * Math.max(norm0, 1e-300)) columns.push(v.map((x) => x / norm));
  }
  const q = matrix(a.rows, columns.length);
  columns.forEach((col, j) => col.forEach((x, i) => { q.data[i * q.cols + j] = x; }));
  return q;
}

/** Eigen-decomposition of a symmetric matrix (cyclic Jacobi): eigenvalues descending, eigenvectors as columns. */
function symmetricEigen(s: Matrix): { values: Float64Array; vectors: Matrix } {
  const n = s.rows;
  const a = Float64Array.from(s.data);
  const v = matrix(n, n);
  for (let i = 0; i < n; i++) v.data[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    let diagonal = 0;
    for (let p = 0; p < n; p++) {
      diagonal += a[p * n + p] ** 2;
      for (let q = p + 1; q < n; q++) off += a[p * n + q] ** 2;
    }
    if (off <= 1e-30 * diagonal || off === 0) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const sn = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - sn * akq;
          a[k * n + q] = sn * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - sn * aqk;
          a[q * n + k] = sn * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v.data[k * n + p], vkq = v.data[k * n + q];
          v.data[k * n + p] = c * vkp - sn * vkq;
          v.data[k * n + q] = sn * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => a[y * n + y] - a[x * n + x]);
  const values = Float64Array.from(order, (i) => a[i * n + i]);
  const vectors = matrix(n, n);
  order.forEach((from, to) => { for (let k = 0; k < n; k++) vectors.data[k * n + to] = v.data[k * n + from]; });
  return { values, vectors };
}

/** Rank-k truncated SVD of A (m × n): U (m × k), singular values, V (n × k). */
export function truncatedSvd(a: Matrix, k: number, seed: number): { u: Matrix; s: Float64Array; v: Matrix } {
  const width = Math.min(a.cols, a.rows, k + 10);
  const omega = matrix(a.cols, width, Float64Array.from(randomNormalMatrix(a.cols, width, 1, seed)));
  let q = orthonormalColumns(multiply(a, omega));
  for (let iteration = 0; iteration < 4; iteration++) {
    q = orthonormalColumns(multiply(a, orthonormalColumns(multiply(a, q, true))));
  }
  const b = multiply(q, a, true); // l × n
  const { values, vectors } = symmetricEigen(multiply(b, b, false, true)); // B Bᵀ = W S² Wᵀ
  const rank = Math.min(k, values.length);
  const u = multiply(q, vectors); // m × l, columns in descending order
  const s = new Float64Array(k);
  const uk = matrix(a.rows, k);
  const vk = matrix(a.cols, k);
  for (let t = 0; t < rank; t++) {
    const sigma = Math.sqrt(Math.max(values[t], 0));
    s[t] = sigma;
    for (let i = 0; i < a.rows; i++) uk.data[i * k + t] = u.data[i * u.cols + t];
    if (sigma === 0) continue;
    // v_t = Bᵀ w_t / σ_t
    for (let j = 0; j < a.cols; j++) {
      let sum = 0;
      for (let l = 0; l < b.rows; l++) sum += b.data[l * b.cols + j] * vectors.data[l * vectors.cols + t];
      vk.data[j * k + t] = sum / sigma;
    }
  }
  return { u: uk, s, v: vk };
}

/** Relative Frobenius error ‖A − Â‖ / ‖A‖. */
export function relativeError(dense: ArrayLike<number>, approximation: ArrayLike<number>): number {
  let error = 0, norm = 0;
  for (let i = 0; i < dense.length; i++) {
    error += (dense[i] - approximation[i]) ** 2;
    norm += dense[i] ** 2;
  }
  return Math.sqrt(error / Math.max(norm, 1e-300));
}

/** Low-rank factors of W (out × in). */
export function compressLowRank(weight: ArrayLike<number>, shape: BlrShape, seed = 0): BlrFactors {
  const { inFeatures: i, outFeatures: o, rank: r } = shape;
  const { u, s, v } = truncatedSvd(matrix(o, i, Float64Array.from(weight)), r, seed);
  const uOut = new Float32Array(o * r);
  const vOut = new Float32Array(r * i);
  for (let t = 0; t < r; t++) {
    const root = Math.sqrt(s[t]);
    for (let row = 0; row < o; row++) uOut[row * r + t] = u.data[row * r + t] * root;
    for (let col = 0; col < i; col++) vOut[t * i + col] = v.data[col * r + t] * root;
  }
  return { method: 'lowrank', u: uOut, v: vOut };
}

/** Monarch factors of W (out × in): block (ℓ, j) of the row-permuted W gets a rank r/b SVD. */
export function compressMonarch(weight: ArrayLike<number>, shape: BlrShape, seed = 0): BlrFactors {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  const ib = i / b, ob = o / b, k = r / b;
  return monarchFromBlocks(shape, (l, j) => {
    const block = matrix(ob, ib);
    for (let s = 0; s < ob; s++) for (let m = 0; m < ib; m++) block.data[s * ib + m] = weight[(s * b + l) * i + j * ib + m];
    const svd = truncatedSvd(block, k, seed + l * b + j);
    const root = (t: number) => Math.sqrt(svd.s[t]);
    return { u: (s, t) => svd.u.data[s * k + t] * root(t), v: (t, m) => svd.v.data[m * k + t] * root(t) };
  });
}

/**
 * Monarch's factors from the rank-r/b factors of each block (ℓ, j) of the row-permuted W (block
 * (ℓ, j): rows s · b + ℓ, columns j · i/b + m), √S on both sides: u(s, t) (o/b × r/b) and
 * v(t, m) (r/b × i/b), components in descending order. Each pairs with the channels the Monarch
 * permutation routes from input block j to output block ℓ.
 */
export function monarchFromBlocks(shape: BlrShape, block: (l: number, j: number) => { u: (s: number, t: number) => number; v: (t: number, m: number) => number }): MonarchFactors {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  const ib = i / b, ob = o / b;
  const w1 = new Float32Array(r * i);
  const w2 = new Float32Array(o * r);
  for (let l = 0; l < b; l++) {
    // The channels of output block ℓ, grouped by the input block they come from.
    const channels = Array.from({ length: b }, () => [] as { q: number; channel: number }[]);
    for (let q = 0; q < r; q++) {
      const source = monarchSource(q, l, r, b);
      channels[source.block].push({ q, channel: source.channel });
    }
    for (let j = 0; j < b; j++) {
      const { u, v } = block(l, j);
      channels[j].forEach(({ q, channel }, t) => {
        for (let s = 0; s < ob; s++) w2[(l * ob + s) * r + q] = u(s, t);
        for (let m = 0; m < ib; m++) w1[(j * r + channel) * ib + m] = v(t, m);
      });
    }
  }
  return { method: 'monarch', w1, w2 };
}

/** Solves (G + εI) x = y for symmetric positive definite G (Cholesky), for each column of y. */
function solveRegularised(gram: Matrix, epsilon: number, y: Matrix): Matrix {
  const shifted = Float64Array.from(gram.data);
  for (let i = 0; i < gram.rows; i++) shifted[i * gram.rows + i] += epsilon;
  return matrix(y.rows, y.cols, choleskySolve(shifted, gram.rows, y.data, y.cols));
}

/** ‖values‖ (Frobenius, of a matrix's values). */
export function frobeniusNorm(values: ArrayLike<number>): number {
  let sum = 0;
  for (let k = 0; k < values.length; k++) sum += values[k] * values[k];
  return Math.sqrt(sum);
}

/** The standard deviation of a weight's values (1 for a constant weight): BLAST factorises W / std. */
export function standardDeviation(weight: ArrayLike<number>): number {
  let mean = 0;
  for (let k = 0; k < weight.length; k++) mean += weight[k];
  mean /= weight.length;
  let variance = 0;
  for (let k = 0; k < weight.length; k++) variance += (weight[k] - mean) ** 2;
  return Math.sqrt(variance / weight.length) || 1;
}

/**
 * BLAST factors of W (out × in) by alternating preconditioned gradient descent from a low-rank
 * start (U_a, V_c from the truncated SVD of W, s_ac = 1). `onIteration` sees each iteration's
 * relative error.
 */
export function compressBlast(weight: ArrayLike<number>, shape: BlrShape, options: { iterations?: number; seed?: number; onIteration?: (iteration: number, error: number) => void } = {}): BlrFactors {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  const ib = i / b, ob = o / b;
  const iterations = options.iterations ?? 300;
  const std = standardDeviation(weight);
  const a = new Float64Array(weight.length);
  for (let k = 0; k < weight.length; k++) a[k] = weight[k] / std;
  // Start: the rank-r SVD, √S on both sides, every coupling 1.
  const start = truncatedSvd(matrix(o, i, a), r, options.seed ?? 0);
  const u = Array.from({ length: b }, (_, blk) => matrix(ob, r, Float64Array.from({ length: ob * r }, (_, e) => start.u.data[(blk * ob + Math.floor(e / r)) * r + (e % r)] * Math.sqrt(start.s[e % r]))));
  const v = Array.from({ length: b }, (_, blk) => matrix(r, ib, Float64Array.from({ length: r * ib }, (_, e) => start.v.data[(blk * ib + (e % ib)) * r + Math.floor(e / ib)] * Math.sqrt(start.s[Math.floor(e / ib)]))));
  const s = Array.from({ length: b * b }, () => new Float64Array(r).fill(1));
  // Block (aa, c) of an o × i matrix (A or the residual R).
  const block = (m: Float64Array, aa: number, c: number): Matrix => {
    const out = matrix(ob, ib);
    for (let p = 0; p < ob; p++) for (let q = 0; q < ib; q++) out.data[p * ib + q] = m[(aa * ob + p) * i + c * ib + q];
    return out;
  };
  // R = A − Â, every block R_ac = A_ac − U_a diag(s_ac) V_c; made once after each factor moves.
  const residual = (): Float64Array => {
    const out = a.slice();
    for (let aa = 0; aa < b; aa++) {
      for (let c = 0; c < b; c++) {
        const sac = s[aa * b + c], ua = u[aa].data, vc = v[c].data;
        for (let p = 0; p < ob; p++) {
          const row = (aa * ob + p) * i + c * ib;
          for (let k = 0; k < r; k++) {
            const coefficient = ua[p * r + k] * sac[k];
            if (coefficient === 0) continue;
            for (let q = 0; q < ib; q++) out[row + q] -= coefficient * vc[k * ib + q];
          }
        }
      }
    }
    return out;
  };
  // diag(d) G diag(d), accumulated into `into` (a Gram matrix of scaled rows from the plain one).
  const addScaledGram = (into: Matrix, gram: Matrix, d: Float64Array) => {
    for (let k = 0; k < r; k++) for (let l = 0; l < r; l++) into.data[k * r + l] += d[k] * d[l] * gram.data[k * r + l];
  };
  const norm = frobeniusNorm(a);
  let res = residual();
  for (let iteration = 0; iteration < iterations; iteration++) {
    const step = 1 - iteration / iterations;
    const epsilon = 0.1 * frobeniusNorm(res);
    // U_a: against W_a = [diag(s_ac) V_c]_c (r × i).
    const vv = v.map((vc) => multiply(vc, vc, false, true));
    for (let aa = 0; aa < b; aa++) {
      const gram = matrix(r, r);
      let gradient = matrix(ob, r);
      for (let c = 0; c < b; c++) {
        const sv = matrix(r, ib, Float64Array.from(v[c].data, (x, e) => x * s[aa * b + c][Math.floor(e / ib)]));
        addScaledGram(gram, vv[c], s[aa * b + c]);
        const rg = multiply(block(res, aa, c), sv, false, true);
        gradient = matrix(ob, r, gradient.data.map((x, e) => x + rg.data[e]));
      }
      const update = solveRegularised(gram, epsilon, matrix(r, ob, transpose(gradient)));
      for (let p = 0; p < ob; p++) for (let k = 0; k < r; k++) u[aa].data[p * r + k] += step * update.data[k * ob + p];
    }
    res = residual();
    // V_c: against the stacked [U_a diag(s_ac)]_a (o × r).
    const uu = u.map((ua) => multiply(ua, ua, true));
    for (let c = 0; c < b; c++) {
      const gram = matrix(r, r);
      let gradient = matrix(r, ib);
      for (let aa = 0; aa < b; aa++) {
        const us = matrix(ob, r, Float64Array.from(u[aa].data, (x, e) => x * s[aa * b + c][e % r]));
        addScaledGram(gram, uu[aa], s[aa * b + c]);
        const rg = multiply(us, block(res, aa, c), true);
        gradient = matrix(r, ib, gradient.data.map((x, e) => x + rg.data[e]));
      }
      const update = solveRegularised(gram, epsilon, gradient);
      v[c].data.forEach((_, e) => { v[c].data[e] += step * update.data[e]; });
    }
    res = residual();
    // s_ac: Â_ac = Σ_k s_k u_k v_kᵀ, Gram (U_aᵀU_a) ∘ (V_c V_cᵀ) (U has not moved since uu).
    const vvMoved = v.map((vc) => multiply(vc, vc, false, true));
    for (let aa = 0; aa < b; aa++) {
      for (let c = 0; c < b; c++) {
        const gram = matrix(r, r, uu[aa].data.map((x, e) => x * vvMoved[c].data[e]));
        const ur = multiply(u[aa], block(res, aa, c), true); // r × ib
        const gradient = matrix(r, 1);
        for (let k = 0; k < r; k++) {
          let sum = 0;
          for (let q = 0; q < ib; q++) sum += ur.data[k * ib + q] * v[c].data[k * ib + q];
          gradient.data[k] = sum;
        }
        const update = solveRegularised(gram, epsilon, gradient);
        for (let k = 0; k < r; k++) s[aa * b + c][k] += step * update.data[k];
      }
    }
    res = residual();
    options.onIteration?.(iteration, frobeniusNorm(res) / norm);
  }
  // Undo the normalisation on U.
  const uOut = new Float32Array(o * r);
  u.forEach((m, aa) => m.data.forEach((x, e) => { uOut[aa * ob * r + e] = x * std; }));
  const vOut = new Float32Array(r * i);
  v.forEach((m, c) => m.data.forEach((x, e) => { vOut[c * r * ib + e] = x; }));
  const sOut = new Float32Array(b * b * r);
  s.forEach((values, index) => values.forEach((x, k) => { sOut[index * r + k] = x; }));
  return { method: 'blast', u: uOut, v: vOut, s: sOut };
}

function transpose(m: Matrix): Float64Array {
  const t = new Float64Array(m.rows * m.cols);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) t[j * m.rows + i] = m.data[i * m.cols + j];
  return t;
}
