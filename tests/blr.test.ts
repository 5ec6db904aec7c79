// Block low-rank layers (kernels/cpu/blr.ts): each method's step-by-step forward pass against its
// dense equivalent (toDense, written from the formula) times x in float64, on awkward sizes; and
// the structure ANCHORS §1 states for each.
import { describe, expect, it } from 'vitest';
import { Rng } from '../engine/rng.ts';
import { CpuBackend } from '../kernels/cpu/backend.ts';
import * as ops from '../kernels/cpu/ops.ts';
import { blrForward, blrParameters, blrToDense, checkBlrFactors, monarchSource, type BlrFactors, type BlrShape } from '../kernels/cpu/blr.ts';
import { parseModelConfig } from '../models/config.ts';
import { BlockLowRankLinear, LowRankLinear, SharedScratch } from '../models/linear.ts';
import { configLayers, DEVICES, layerCost, rooflinePoint } from '../models/roofline.ts';
import { maxRelativeError } from './helpers.ts';

const rng = new Rng(99);
const random = (n: number) => Float32Array.from({ length: n }, () => rng.normal());

function denseForward(w: Float32Array, x: Float32Array, rows: number, inFeatures: number, outFeatures: number): Float64Array {
  const y = new Float64Array(rows * outFeatures);
  for (let n = 0; n < rows; n++) {
    for (let o = 0; o < outFeatures; o++) {
      let sum = 0;
      for (let i = 0; i < inFeatures; i++) sum += x[n * inFeatures + i] * w[o * inFeatures + i];
      y[n * outFeatures + o] = sum;
    }
  }
  return y;
}

function randomFactors(method: BlrFactors['method'], shape: BlrShape): BlrFactors {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  if (method === 'lowrank') return { method, v: random(r * i), u: random(o * r) };
  if (method === 'monarch') return { method, w1: random(r * i), w2: random(o * r) };
  return { method, u: random(o * r), v: random(r * i), s: random(b * b * r) };
}

/** The numerical rank of a (rows × cols) matrix of f32 values: Gram–Schmidt on its rows, in float64. */
function numericalRank(matrix: Float64Array, rows: number, cols: number): number {
  const basis: Float64Array[] = [];
  for (let row = 0; row < rows; row++) {
    const v = Float64Array.from(matrix.subarray(row * cols, (row + 1) * cols));
    const norm0 = Math.hypot(...v);
    for (const e of basis) {
      let dot = 0;
      for (let c = 0; c < cols; c++) dot += v[c] * e[c];
      for (let c = 0; c < cols; c++) v[c] -= dot * e[c];
    }
    const norm = Math.hypot(...v);
    // What f32 rounding leaves of a dependent row is ~1e-7 of it; an independent row keeps far more.
    if (norm > 1e-4 * norm0) basis.push(v.map((value) => value / norm));
  }
  return basis.length;
}

describe('block low-rank layers on the CPU', () => {
  const cases: [BlrFactors['method'], BlrShape, number][] = [
    ['lowrank', { inFeatures: 13, outFeatures: 11, rank: 7, blocks: 1 }, 5],
    ['lowrank', { inFeatures: 1, outFeatures: 3, rank: 2, blocks: 1 }, 1],
    ['monarch', { inFeatures: 24, outFeatures: 36, rank: 8, blocks: 4 }, 3],
    ['monarch', { inFeatures: 15, outFeatures: 9, rank: 6, blocks: 3 }, 7],
    ['monarch', { inFeatures: 10, outFeatures: 14, rank: 2, blocks: 2 }, 1],
    ['blast', { inFeatures: 27, outFeatures: 15, rank: 5, blocks: 3 }, 4],
    ['blast', { inFeatures: 32, outFeatures: 48, rank: 7, blocks: 16 }, 2],
    ['blast', { inFeatures: 9, outFeatures: 6, rank: 4, blocks: 1 }, 3],
  ];

  it.for(cases)('%s %o: forward == x · toDense()ᵀ over %i rows', ([method, shape, rows]) => {
    const factors = randomFactors(method, shape);
    const x = random(rows * shape.inFeatures);
    const y = blrForward(factors, shape, x, rows);
    const expected = denseForward(blrToDense(factors, shape), x, rows, shape.inFeatures, shape.outFeatures);
    expect(maxRelativeError(y, expected)).toBeLessThan(1e-5);
  });

  it('Monarch: after its row permutation, block (ℓ, j) of the dense matrix has rank r/b', () => {
    const shape = { inFeatures: 24, outFeatures: 32, rank: 8, blocks: 4 };
    const w = blrToDense(randomFactors('monarch', shape), shape);
    const ib = 6, ob = 8;
    for (let l = 0; l < 4; l++) {
      for (let j = 0; j < 4; j++) {
        // Output block ℓ holds the features s·b + ℓ.
        const block = new Float64Array(ob * ib);
        for (let s = 0; s < ob; s++) for (let m = 0; m < ib; m++) block[s * ib + m] = w[(s * 4 + l) * 24 + j * ib + m];
        expect(numericalRank(block, ob, ib)).toBe(2);
      }
    }
  });

  it('Monarch permutation: output block ℓ reads r/b channels from every input block, each channel once', () => {
    const rank = 12, blocks = 4;
    const reads = new Map<string, number>();
    for (let l = 0; l < blocks; l++) {
      const perBlock = new Array(blocks).fill(0);
      for (let q = 0; q < rank; q++) {
        const source = monarchSource(q, l, rank, blocks);
        perBlock[source.block]++;
        const key = `${source.block}/${source.channel}`;
        reads.set(key, (reads.get(key) ?? 0) + 1);
      }
      expect(perBlock).toEqual(new Array(blocks).fill(rank / blocks));
    }
    expect(reads.size).toBe(rank * blocks);
    expect([...reads.values()].every((n) => n === 1)).toBe(true);
  });

  it('BLAST with one block is low-rank with the coupling folded into U', () => {
    const shape = { inFeatures: 10, outFeatures: 7, rank: 3, blocks: 1 };
    const blast = randomFactors('blast', shape) as Extract<BlrFactors, { method: 'blast' }>;
    const u = blast.u.map((value, k) => value * blast.s[k % 3]);
    const x = random(4 * 10);
    expect(maxRelativeError(blrForward(blast, shape, x, 4), blrForward({ method: 'lowrank', v: blast.v, u }, shape, x, 4))).toBeLessThan(1e-6);
  });

  it('BLAST: block (a, c) of the dense matrix is U_a diag(s_ac) V_c, of rank r', () => {
    const shape = { inFeatures: 18, outFeatures: 12, rank: 2, blocks: 3 };
    const w = blrToDense(randomFactors('blast', shape), shape);
    for (let a = 0; a < 3; a++) {
      for (let c = 0; c < 3; c++) {
        const block = new Float64Array(4 * 6);
        for (let p = 0; p < 4; p++) for (let m = 0; m < 6; m++) block[p * 6 + m] = w[(a * 4 + p) * 18 + c * 6 + m];
        expect(numericalRank(block, 4, 6)).toBe(2);
      }
    }
  });

  it('counts parameters as ANCHORS §1 does', () => {
    const shape = { inFeatures: 4096, outFeatures: 4096, rank: 1024, blocks: 16 };
    expect(blrParameters(shape, 'blast')).toBe(1024 * (4096 + 4096 + 256));
    expect(blrParameters(shape, 'monarch')).toBe(1024 * 8192);
    expect(blrParameters({ ...shape, blocks: 1 }, 'lowrank')).toBe(1024 * 8192);
  });

  it('rejects inconsistent shapes with a message that says what is wrong', () => {
    const shape = { inFeatures: 24, outFeatures: 36, rank: 6, blocks: 4 };
    expect(() => checkBlrFactors(randomFactors('monarch', shape), shape)).toThrow(/rank must be a multiple of the blocks/);
    expect(() => checkBlrFactors(randomFactors('blast', { ...shape, inFeatures: 26 }), { ...shape, inFeatures: 26 })).toThrow(/multiples of the blocks/);
    const good = { inFeatures: 24, outFeatures: 36, rank: 8, blocks: 4 };
    const factors = randomFactors('blast', good) as Extract<BlrFactors, { method: 'blast' }>;
    expect(() => checkBlrFactors({ ...factors, s: factors.s.subarray(1) }, good)).toThrow(/S has 127 values, expected 128/);
    expect(() => checkBlrFactors(randomFactors('lowrank', { ...good, blocks: 1 }), good)).toThrow(/low-rank has one block/);
  });
});

describe('LowRankLinear on the CPU backend', () => {
  it('forward (with bias, and of RMSNorm(x)) and forwardAdd match the float64 reference', async () => {
    const backend = new CpuBackend();
    const shape = { inFeatures: 19, outFeatures: 23, rank: 5, blocks: 1 };
    const factors = randomFactors('lowrank', shape) as Extract<BlrFactors, { method: 'lowrank' }>;
    const bias = random(23), residual = random(3 * 23), x = random(3 * 19), norm = random(19);
    const layer = new LowRankLinear(backend, backend.uploadMatrix(factors.v, 5, 19), backend.uploadMatrix(factors.u, 23, 5), backend.upload(bias), 19, 23, 5, 4);
    expect(layer.parameters).toBe(5 * (19 + 23) + 23);
    const withBias = (y: Float32Array, add?: Float32Array) => y.map((value, k) => value + bias[k % 23] + (add ? add[k] : 0));

    const out = backend.allocate(3 * 23);
    layer.forward(out, backend.upload(x), 3);
    expect(maxRelativeError(await backend.read(out, 3 * 23), withBias(blrForward(factors, shape, x, 3)))).toBeLessThan(1e-5);

    const normed = new Float32Array(3 * 19); // RMSNorm(x) · norm, as tests/ops.test.ts checks it against float64
    ops.rmsNorm(normed, x, norm, 3, 19, 1e-5);
    layer.forward(out, backend.upload(x), 3, { weight: backend.upload(norm), eps: 1e-5 });
    expect(maxRelativeError(await backend.read(out, 3 * 23), withBias(blrForward(factors, shape, normed, 3)))).toBeLessThan(1e-5);

    const accumulated = backend.upload(residual.slice()); // the CPU backend keeps the array it is given
    layer.forwardAdd(accumulated, backend.upload(x), 3);
    expect(maxRelativeError(await backend.read(accumulated, 3 * 23), withBias(blrForward(factors, shape, x, 3), residual))).toBeLessThan(1e-5);

    expect(() => layer.forward(out, backend.upload(random(5 * 19)), 5)).toThrow(/sized for 4 rows, given 5/);
  });
});

describe('BlockLowRankLinear (Monarch, BLAST) on the CPU backend', () => {
  it.for<['monarch' | 'blast', BlrShape]>([
    ['monarch', { inFeatures: 15, outFeatures: 21, rank: 9, blocks: 3 }],
    ['blast', { inFeatures: 27, outFeatures: 15, rank: 5, blocks: 3 }],
  ])('%s %o: forward (with bias, of RMSNorm(x)) and forwardAdd match the reference', async ([method, shape]) => {
    const backend = new CpuBackend();
    const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
    const factors = randomFactors(method, shape);
    const [inner, outer] = factors.method === 'monarch' ? [factors.w1, factors.w2] : factors.method === 'blast' ? [factors.v, factors.u] : [];
    const coupling = factors.method === 'blast' ? backend.upload(factors.s) : null;
    const bias = random(o), x = random(2 * i), norm = random(i), residual = random(2 * o);
    const layer = new BlockLowRankLinear(backend, method, backend.uploadMatrix(inner!, b * r, i / b), backend.uploadMatrix(outer!, o, r), coupling, backend.upload(bias), shape, 2);
    expect(layer.parameters).toBe(blrParameters(shape, method) + o);
    const expected = (input: Float32Array, add?: Float32Array) => blrForward(factors, shape, input, 2).map((value, k) => value + bias[k % o] + (add ? add[k] : 0));

    const out = backend.allocate(2 * o);
    layer.forward(out, backend.upload(x), 2);
    expect(maxRelativeError(await backend.read(out, 2 * o), expected(x))).toBeLessThan(1e-5);

    const normed = new Float32Array(2 * i);
    ops.rmsNorm(normed, x, norm, 2, i, 1e-6);
    layer.forward(out, backend.upload(x), 2, { weight: backend.upload(norm), eps: 1e-6 });
    expect(maxRelativeError(await backend.read(out, 2 * o), expected(normed))).toBeLessThan(1e-5);

    const accumulated = backend.upload(residual.slice()); // the CPU backend keeps the array it is given
    layer.forwardAdd(accumulated, backend.upload(x), 2);
    expect(maxRelativeError(await backend.read(accumulated, 2 * o), expected(x, residual))).toBeLessThan(1e-5);
  });

  it('refuses shapes its method cannot hold', () => {
    const backend = new CpuBackend();
    const m = backend.allocate(1000);
    expect(() => new BlockLowRankLinear(backend, 'monarch', m, m, null, null, { inFeatures: 12, outFeatures: 12, rank: 5, blocks: 3 }, 1)).toThrow(/rank must be multiples of the blocks/);
    expect(() => new BlockLowRankLinear(backend, 'blast', m, m, null, null, { inFeatures: 12, outFeatures: 12, rank: 5, blocks: 3 }, 1)).toThrow(/coupling S is required/);
    expect(() => new BlockLowRankLinear(backend, 'blast', m, backend.allocate(10), m, null, { inFeatures: 12, outFeatures: 12, rank: 5, blocks: 3 }, 1)).toThrow(/too small/);
  });
});

describe('roofline model (blr roofline)', () => {
  const layer = (method: 'lowrank' | 'monarch' | 'blast', blocks: number) => ({ name: 'q', inFeatures: 4096, outFeatures: 4096, count: 1, method, rank: 1024, blocks });

  it('counts bytes as passes over x, the factors, the intermediates and y, 2 bytes each', () => {
    const [i, o, r, b, N] = [4096, 4096, 1024, 16, 128];
    expect(layerCost(layer('blast', b), N, 'dense')).toEqual({ bytes: 2 * (N * i + i * o + N * o), flops: 2 * N * i * o });
    const blast = r * (i + o + b * b);
    expect(layerCost(layer('blast', b), N, 'fused')).toEqual({ bytes: 2 * (N * i + blast + 2 * b * N * r + N * o), flops: 2 * N * blast });
    expect(layerCost(layer('blast', b), N, 'pytorch').bytes).toBe(2 * (N * i + blast + 4 * b * N * r + N * o));
    expect(layerCost(layer('monarch', b), N, 'pytorch').bytes).toBe(2 * (N * i + r * (i + o) + 4 * b * N * r + 3 * N * o));
    expect(layerCost(layer('monarch', b), N, 'fused').bytes).toBe(2 * (N * i + r * (i + o) + 2 * b * N * r + N * o));
    expect(layerCost(layer('lowrank', 1), N, 'fused').bytes).toBe(2 * (N * i + r * (i + o) + N * o));
    expect(layerCost(layer('lowrank', 1), N, 'pytorch').bytes).toBe(2 * (N * i + r * (i + o) + 2 * N * r + N * o));
  });

  it('is memory-bound at one token and puts dense 4096² at 1024 tokens under the H200\'s compute roof', () => {
    const one = rooflinePoint(layer('blast', 16), 1, 'fused', DEVICES.h200);
    expect(one.bound).toBe('memory');
    expect(one.microseconds).toBeCloseTo(one.bytes / 4.8e12 * 1e6, 6); // 4.8 TB/s
    const dense = rooflinePoint(layer('blast', 16), 1024, 'dense', DEVICES.h200);
    expect(dense.bound).toBe('compute');
    expect(dense.microseconds).toBeCloseTo((2 * 1024 * 4096 * 4096) / 989.4e12 * 1e6, 6);
  });

  it('groups the block low-rank projections of a checkpoint by form, counting them', () => {
    const config = parseModelConfig({
      model_type: 'blast_llama', vocab_size: 10, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 3, num_attention_heads: 4,
      target_modules: ['q_proj', 'down_proj'], blast_rank: { q_proj: 8, down_proj: 16 }, blast_num_blocks: 4, indices: [0, 2],
    });
    expect(configLayers(config)).toEqual([
      { name: 'q_proj', inFeatures: 64, outFeatures: 64, count: 2, method: 'blast', rank: 8, blocks: 4 },
      { name: 'down_proj', inFeatures: 128, outFeatures: 64, count: 2, method: 'blast', rank: 16, blocks: 4 },
    ]);
  });
});

describe('SharedScratch', () => {
  it('gives every layer one buffer, as large as the largest reservation', () => {
    const backend = new CpuBackend();
    const scratch = new SharedScratch(backend);
    scratch.reserve(10);
    scratch.reserve(40);
    const first = scratch.get(10);
    expect(first.elements).toBe(40);
    expect(scratch.get(40)).toBe(first);
    expect(scratch.get(50).elements).toBe(50);
  });
});
