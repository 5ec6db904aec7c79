// Block low-rank layers on the CPU, step by step as ../shared/ANCHORS.md §1 defines them, with
// float64 sums: the references their GPU kernels are tested against. And each method's dense
// equivalent (toDense), written from the layer's formula rather than by running the steps, so
// that tests of BLR(x) against toDense() · x compare two independent computations.
//
// Shapes: x is rows × i (row-major), y is rows × o; b blocks, rank r.
//   low-rank: V (r, i), U (o, r)                         y = (x Vᵀ) Uᵀ
//   Monarch:  w1 (b, r, i/b), w2 (b, o/b, r)             block matmul, permutation, block matmul
//   BLAST:    U (b, o/b, r), V (b, r, i/b), S (b, b, r)  y_a = Σ_c U_a diag(s_ac) V_c x_c

export interface BlrShape {
  inFeatures: number;
  outFeatures: number;
  rank: number;
  /** 1 for low-rank. */
  blocks: number;
}

export interface LowRankFactors {
  method: 'lowrank';
  /** (r, i) */
  v: Float32Array;
  /** (o, r) */
  u: Float32Array;
}

export interface MonarchFactors {
  method: 'monarch';
  /** (b, r, i/b): block j maps its i/b inputs to r channels. */
  w1: Float32Array;
  /** (b, o/b, r): block ℓ maps r permuted channels to o/b outputs. */
  w2: Float32Array;
}

export interface BlastFactors {
  method: 'blast';
  /** (b, o/b, r) */
  u: Float32Array;
  /** (b, r, i/b) */
  v: Float32Array;
  /** (b, b, r): s[a][c] couples input block c to output block a. */
  s: Float32Array;
}

export type BlrFactors = LowRankFactors | MonarchFactors | BlastFactors;

/** Checks that the shape is valid for its method and that every factor has the right size. */
export function checkBlrFactors(factors: BlrFactors, shape: BlrShape): void {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  const fail = (what: string) => {
    throw new RangeError(`${factors.method} layer ${i}→${o}, rank ${r}, ${b} blocks: ${what}`);
  };
  if (![i, o, r, b].every((n) => Number.isInteger(n) && n > 0)) fail('sizes must be positive integers');
  const expect = (name: string, array: Float32Array, size: number) => {
    if (array.length !== size) fail(`${name} has ${array.length} values, expected ${size}`);
  };
  if (factors.method === 'lowrank') {
    if (b !== 1) fail('low-rank has one block');
    expect('V', factors.v, r * i);
    expect('U', factors.u, o * r);
    return;
  }
  if (i % b !== 0 || o % b !== 0) fail('in and out features must be multiples of the blocks');
  if (factors.method === 'monarch') {
    if (r % b !== 0) fail('the rank must be a multiple of the blocks (each output block reads r/b channels of every input block)');
    expect('w1', factors.w1, r * i);
    expect('w2', factors.w2, o * r);
    return;
  }
  expect('U', factors.u, o * r);
  expect('V', factors.v, r * i);
  expect('S', factors.s, b * b * r);
}

/** out (rows × n) = a (rows × k, row stride aStride, from aOffset) · Bᵀ, B (n × k) at bOffset. */
function multiplyTransposed(
  out: Float64Array, a: ArrayLike<number>, aOffset: number, aStride: number, b: ArrayLike<number>, bOffset: number,
  rows: number, k: number, n: number,
): void {
  for (let row = 0; row < rows; row++) {
    for (let col = 0; col < n; col++) {
      let sum = 0;
      for (let t = 0; t < k; t++) sum += a[aOffset + row * aStride + t] * b[bOffset + col * k + t];
      out[row * n + col] = sum;
    }
  }
}

/** The Monarch permutation: the input block and channel that output block ℓ's channel q reads. */
export function monarchSource(q: number, block: number, rank: number, blocks: number): { block: number; channel: number } {
  const flat = q * blocks + block;
  return { block: Math.floor(flat / rank), channel: flat % rank };
}

/** y = layer(x), step by step (see the header), in float64, rounded to f32 at the end. */
export function blrForward(factors: BlrFactors, shape: BlrShape, x: Float32Array, rows: number): Float32Array {
  checkBlrFactors(factors, shape);
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  const y = new Float32Array(rows * o);
  if (factors.method === 'lowrank') {
    const t = new Float64Array(rows * r);
    multiplyTransposed(t, x, 0, i, factors.v, 0, rows, i, r);
    const out = new Float64Array(rows * o);
    multiplyTransposed(out, t, 0, r, factors.u, 0, rows, r, o);
    y.set(out);
    return y;
  }
  const ib = i / b;
  const ob = o / b;
  // Step 1 (both methods): per input block j, t_j = x_j · (factor j)ᵀ → (b, rows, r).
  const inner = factors.method === 'monarch' ? factors.w1 : factors.v;
  const t = Array.from({ length: b }, (_, j) => {
    const tj = new Float64Array(rows * r);
    multiplyTransposed(tj, x, j * ib, i, inner, j * r * ib, rows, ib, r);
    return tj;
  });
  const outer = factors.method === 'monarch' ? factors.w2 : factors.u;
  const z = new Float64Array(rows * r);
  const ya = new Float64Array(rows * ob);
  for (let a = 0; a < b; a++) {
    // Step 2: the r channels output block a reads.
    for (let n = 0; n < rows; n++) {
      for (let q = 0; q < r; q++) {
        if (factors.method === 'monarch') {
          const source = monarchSource(q, a, r, b);
          z[n * r + q] = t[source.block][n * r + source.channel];
        } else {
          let sum = 0;
          for (let c = 0; c < b; c++) sum += factors.s[(a * b + c) * r + q] * t[c][n * r + q];
          z[n * r + q] = sum;
        }
      }
    }
    // Step 3: y_a = z · (factor a)ᵀ. Monarch's outputs are strided (feature s·b + a); BLAST's contiguous.
    multiplyTransposed(ya, z, 0, r, outer, a * ob * r, rows, r, ob);
    for (let n = 0; n < rows; n++) {
      for (let s = 0; s < ob; s++) {
        const feature = factors.method === 'monarch' ? s * b + a : a * ob + s;
        y[n * o + feature] = ya[n * ob + s];
      }
    }
  }
  return y;
}

/** The dense W (o × i) with layer(x) = x · Wᵀ, from the method's formula. */
export function blrToDense(factors: BlrFactors, shape: BlrShape): Float32Array {
  checkBlrFactors(factors, shape);
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  const w = new Float32Array(o * i);
  if (factors.method === 'lowrank') {
    // W = U V
    for (let row = 0; row < o; row++) {
      for (let col = 0; col < i; col++) {
        let sum = 0;
        for (let k = 0; k < r; k++) sum += factors.u[row * r + k] * factors.v[k * i + col];
        w[row * i + col] = sum;
      }
    }
    return w;
  }
  const ib = i / b;
  const ob = o / b;
  if (factors.method === 'blast') {
    // W[a·ob + p, c·ib + m] = Σ_k U[a][p][k] · s[a][c][k] · V[c][k][m]
    for (let a = 0; a < b; a++) {
      for (let p = 0; p < ob; p++) {
        for (let c = 0; c < b; c++) {
          for (let m = 0; m < ib; m++) {
            let sum = 0;
            for (let k = 0; k < r; k++) sum += factors.u[(a * ob + p) * r + k] * factors.s[(a * b + c) * r + k] * factors.v[(c * r + k) * ib + m];
            w[(a * ob + p) * i + c * ib + m] = sum;
          }
        }
      }
    }
    return w;
  }
  // Monarch: W[s·b + ℓ, j·ib + m] = Σ over the r/b channels q of block ℓ that come from input
  // block j: w2[ℓ][s][q] · w1[j][channel(q)][m]. Block (ℓ, j) of the row-permuted W has rank r/b.
  const sums = new Float64Array(o * i);
  for (let l = 0; l < b; l++) {
    for (let q = 0; q < r; q++) {
      const { block: j, channel } = monarchSource(q, l, r, b);
      for (let s = 0; s < ob; s++) {
        const weight = factors.w2[(l * ob + s) * r + q];
        const row = (s * b + l) * i + j * ib;
        for (let m = 0; m < ib; m++) sums[row + m] += weight * factors.w1[(j * r + channel) * ib + m];
      }
    }
  }
  w.set(sums);
  return w;
}

/** Parameters of the factors (what the checkpoint stores). */
export function blrParameters(shape: BlrShape, method: BlrFactors['method']): number {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  return method === 'blast' ? r * (i + o + b * b) : r * (i + o);
}
