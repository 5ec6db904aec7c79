// Block low-rank layers on the CPU, step by step as ../shared/ANCHORS.md §1 defines them, with
// float64 sums: the references their GPU kernels are tested against. And each method's dense
// equivalent (toDense), written from the layer's formula rather than by running the steps, so
// that tests of BLR(x) against toDense() · x compare two independent computations.
//
// Shapes: x is rows × i (row-major), y is rows × o; b blocks, rank r.
//   low-rank: V (r, i), U (o, r)                         y = (x Vᵀ) Uᵀ
//   Monarch:  w1 (b, r, i/b), w2 (b, o/b, r)             block matmul, permutation, block matmul
//   BLAST:    U (b, o/b, r), V (b, r, i/b), S (b, b, r)  y_a = Σ_c U_a diag(s_ac) V_c x_c
import type { BlockShape } from '../backend.ts';

/** Sizes (inFeatures, outFeatures, rank, blocks: 1 for low-rank), as the backends take them. */
export type BlrShape = BlockShape;

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

/**
 * Steps 1 and 2 of a Monarch or BLAST layer: z (b × rows × r) for each output block a —
 *   BLAST (coupling s, (b, b, r)): z_a = Σ_c s_ac ⊙ (x_c · factor_cᵀ)
 *   Monarch (coupling null):     z_a[:, q] = (x_j · factor_jᵀ)[:, channel], (j, channel) = monarchSource(q, a)
 * factor: (b, r, i/b). Sums in float64.
 */
export function blockProject(z: Float32Array, x: ArrayLike<number>, factor: ArrayLike<number>, coupling: ArrayLike<number> | null, rows: number, shape: BlrShape): void {
  const { inFeatures: i, rank: r, blocks: b } = shape;
  const ib = i / b;
  const t = Array.from({ length: b }, (_, j) => {
    const tj = new Float64Array(rows * r);
    multiplyTransposed(tj, x, j * ib, i, factor, j * r * ib, rows, ib, r);
    return tj;
  });
  for (let a = 0; a < b; a++) {
    for (let n = 0; n < rows; n++) {
      for (let q = 0; q < r; q++) {
        let value = 0;
        if (coupling) {
          for (let c = 0; c < b; c++) value += coupling[(a * b + c) * r + q] * t[c][n * r + q];
        } else {
          const source = monarchSource(q, a, r, b);
          value = t[source.block][n * r + source.channel];
        }
        z[(a * rows + n) * r + q] = value;
      }
    }
  }
}

/**
 * Step 3: y[:, feature(a, p)] (+)= z_a · factor_aᵀ (+ bias), factor (b, o/b, r); the feature of
 * output p of block a is a·(o/b) + p (BLAST: contiguous blocks) or p·b + a (Monarch: strided).
 */
export function blockExpand(
  y: Float32Array, z: ArrayLike<number>, factor: ArrayLike<number>, bias: ArrayLike<number> | null, rows: number, shape: BlrShape,
  strided: boolean, accumulate: boolean,
): void {
  const { outFeatures: o, rank: r, blocks: b } = shape;
  const ob = o / b;
  const ya = new Float64Array(rows * ob);
  for (let a = 0; a < b; a++) {
    multiplyTransposed(ya, z, a * rows * r, r, factor, a * ob * r, rows, r, ob);
    for (let n = 0; n < rows; n++) {
      for (let p = 0; p < ob; p++) {
        const feature = strided ? p * b + a : a * ob + p;
        const value = ya[n * ob + p] + (bias ? bias[feature] : 0);
        y[n * o + feature] = accumulate ? y[n * o + feature] + value : value;
      }
    }
  }
}

/** y = layer(x), step by step (see the header), in float64, rounded to f32 between steps. */
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
  const z = new Float32Array(b * rows * r);
  if (factors.method === 'monarch') {
    blockProject(z, x, factors.w1, null, rows, shape);
    blockExpand(y, z, factors.w2, null, rows, shape, true, false);
  } else {
    blockProject(z, x, factors.v, factors.s, rows, shape);
    blockExpand(y, z, factors.u, null, rows, shape, false, false);
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

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/**
 * A BLAST layer stored with different output and input block counts (the authors' format allows
 * blast_num_blocks [b_out, b_in]: U (b_out, o/b_out, r), V (b_in, r, i/b_in), S (b_out, b_in, r)) as
 * the same matrix on b = lcm(b_out, b_in) blocks each way: output block a' is rows of output block
 * a'·b_out/b, input block c' columns of input block c'·b_in/b, and the pair's coupling is theirs.
 * U's values stay as they are (the rows of its blocks, in order, are the same); V's blocks are cut
 * into b/b_in pieces of columns; S is repeated. Exact: W is unchanged. Undefined when b does not
 * divide the layer's shape.
 */
export function blastOnSquareBlocks(
  v: Float32Array, s: Float32Array, shape: { inFeatures: number; outFeatures: number; rank: number; blocksOut: number; blocksIn: number },
): { v: Float32Array; s: Float32Array; blocks: number } | undefined {
  const { inFeatures: i, outFeatures: o, rank: r, blocksOut, blocksIn } = shape;
  const b = (blocksOut * blocksIn) / gcd(blocksOut, blocksIn);
  if (i % b !== 0 || o % b !== 0) return undefined;
  const outPieces = b / blocksOut;
  const inPieces = b / blocksIn;
  const ib = i / b;
  const ibIn = i / blocksIn;
  const squareV = new Float32Array(v.length);
  for (let c = 0; c < b; c++) {
    const source = Math.floor(c / inPieces);
    const column = (c % inPieces) * ib;
    for (let k = 0; k < r; k++) squareV.set(v.subarray((source * r + k) * ibIn + column, (source * r + k) * ibIn + column + ib), (c * r + k) * ib);
  }
  const squareS = new Float32Array(b * b * r);
  for (let a = 0; a < b; a++) {
    for (let c = 0; c < b; c++) {
      const from = (Math.floor(a / outPieces) * blocksIn + Math.floor(c / inPieces)) * r;
      squareS.set(s.subarray(from, from + r), (a * b + c) * r);
    }
  }
  return { v: squareV, s: squareS, blocks: b };
}
