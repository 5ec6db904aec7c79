// The GPU's linear-algebra kernels for compression (kernels/webgpu/linalg.ts) against their float64
// references (kernels/cpu/linalg.ts), on random inputs of sizes that are not multiples of the tiles.
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../engine/rng.ts';
import { blrToDense } from '../kernels/cpu/blr.ts';
import { choleskySolve, stridedGemm } from '../kernels/cpu/linalg.ts';
import { GpuLinalg, PANEL, STATS, type View } from '../kernels/webgpu/linalg.ts';
import { compressBlast, compressLowRank, compressMonarch, relativeError } from '../models/factorize.ts';
import { compressBlastGpu, compressLowRankGpu, compressMonarchGpu } from '../models/factorize_gpu.ts';
import { gpuForTests } from './gpu.ts';

const rng = new Rng(4242);
const random = (n: number) => Float32Array.from({ length: n }, () => rng.normal());

function maxError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let worst = 0, scale = 0;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return worst / Math.max(scale, 1e-30);
}

/** A random SPD matrix: G Gᵀ / n + shift I. */
function spd(n: number, shift: number): Float64Array {
  const g = random(n * n);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let sum = 0;
    for (let k = 0; k < n; k++) sum += g[i * n + k] * g[j * n + k];
    a[i * n + j] = sum / n + (i === j ? shift : 0);
  }
  return a;
}

const gpu = await gpuForTests();
describe.skipIf(!gpu.backend)(`GPU linear algebra for compression${gpu.backend ? '' : ` (skipped: ${gpu.reason})`}`, () => {
  let linalg: GpuLinalg;
  beforeAll(async () => {
    linalg = await GpuLinalg.create(gpu.backend!.gpu);
  });

  it.each([
    ['plain', 37, 70, 19, false, false],
    ['A transposed', 65, 3, 130, true, false],
    ['B transposed', 1, 129, 17, false, true],
    ['both transposed', 66, 67, 33, true, true],
  ] as const)('GEMM %s (%i × %i, k %i) against float64', async (_name, m, n, k, transA, transB) => {
    const a = random(m * k), b = random(k * n), c0 = random(m * n);
    const aView = transA ? { row: 1, col: m } : { row: k, col: 1 };
    const bView = transB ? { row: 1, col: k } : { row: n, col: 1 };
    const expected = Float64Array.from(c0);
    stridedGemm({ m, n, k }, { data: expected, view: { row: n, col: 1 } }, { data: a, view: aView }, { data: b, view: bView }, { alpha: -0.5, beta: 2 });
    const c = linalg.upload(c0);
    await linalg.run([linalg.gemm({ m, n, k }, { array: c, row: n, col: 1 }, { array: linalg.upload(a), ...aView }, { array: linalg.upload(b), ...bView }, { alpha: -0.5, beta: 2 })]);
    expect(maxError(await linalg.read(c), expected)).toBeLessThan(1e-5);
  });

  it('GEMM over a two-level batch of strided blocks, with scales on both operands (BLAST\'s residual and gradients)', async () => {
    // b × b blocks of an (o × i) matrix; U (o × r), V (r × i), s (b, b, r).
    const b = 3, ob = 21, ib = 13, r = 7, o = b * ob, i = b * ib;
    const u = random(o * r), v = random(r * i), s = random(b * b * r), target = random(o * i);
    const gu = linalg.upload(u), gv = linalg.upload(v), gs = linalg.upload(s);
    // Residual: R_ac = A_ac − (U_a ∘ s_ac) V_c, z = (a, c).
    const residual = Float64Array.from(target);
    const dims = { m: ob, n: ib, k: r, batch: b * b, zInner: b };
    const cView = { off: 0, outer: ob * i, inner: ib, row: i, col: 1 };
    const aView = { outer: ob * r, inner: 0, row: r, col: 1 };
    const bView = { outer: 0, inner: ib, row: i, col: 1 };
    const scaleA = { outer: b * r, inner: r, perK: 1 };
    stridedGemm(dims, { data: residual, view: cView }, { data: u, view: aView }, { data: v, view: bView }, { alpha: -1, beta: 1, scales: s, scaleA });
    const gr = linalg.upload(target);
    await linalg.run([linalg.gemm(dims, { array: gr, ...cView }, { array: gu, ...aView }, { array: gv, ...bView }, { alpha: -1, beta: 1, scaleA: { array: gs, ...scaleA } })]);
    expect(maxError(await linalg.read(gr), residual)).toBeLessThan(1e-5);
    // U's gradient: G_a(p, k) = Σ_kk R(a·ob + p, kk) · s[a, ⌊kk / ib⌋, k] · V(k, kk), z = a.
    const gradU = new Float64Array(o * r);
    const uDims = { m: ob, n: r, k: i, batch: b };
    const ua = { inner: ob * i, row: i, col: 1 }, ub = { row: 1, col: i }, uc = { inner: ob * r, row: r, col: 1 };
    const scaleB = { inner: b * r, kBlock: ib, perKBlock: r, perMN: 1 };
    stridedGemm(uDims, { data: gradU, view: uc }, { data: residual, view: ua }, { data: v, view: ub }, { scales: s, scaleB });
    const gg = linalg.zeros(o * r);
    await linalg.run([linalg.gemm(uDims, { array: gg, ...uc }, { array: gr, ...ua }, { array: gv, ...ub }, { scaleB: { array: gs, ...scaleB } })]);
    expect(maxError(await linalg.read(gg), gradU)).toBeLessThan(1e-5);
  });

  // Past one group of four panels (130), and past two with a ragged third (9 panels and 13 columns).
  it.each([[1, 1, 1], [5, 3, 2], [PANEL, 4, 3], [PANEL + 1, 70, 2], [3 * PANEL + 7, 9, 4], [130, 1, 5], [9 * PANEL + 13, 3, 2]])('Cholesky solve: n %i, %i right-hand sides, %i systems', async (n, cols, count) => {
    const systems = Array.from({ length: count }, () => spd(n, 0.5));
    const rhs = random(count * n * cols);
    const matrices = linalg.upload(Float32Array.from(systems.flatMap((a) => [...a])));
    const inverses = linalg.zeros(count * Math.ceil(n / PANEL) * PANEL * PANEL);
    // The right-hand sides stored transposed (cols × n per system), as the U step stores them.
    const y = new Float32Array(count * n * cols);
    for (let z = 0; z < count; z++) for (let row = 0; row < n; row++) for (let c = 0; c < cols; c++) y[z * n * cols + c * n + row] = rhs[z * n * cols + row * cols + c];
    const gy = linalg.upload(y);
    const view: View = { array: gy, inner: n * cols, row: 1, col: n };
    await linalg.run([...linalg.cholesky(matrices, inverses, n, count), ...linalg.solve(matrices, inverses, n, count, view, cols)]);
    const solved = await linalg.read(gy);
    for (let z = 0; z < count; z++) {
      const expected = choleskySolve(systems[z], n, rhs.subarray(z * n * cols, (z + 1) * n * cols), cols);
      const actual = new Float64Array(n * cols);
      for (let row = 0; row < n; row++) for (let c = 0; c < cols; c++) actual[row * cols + c] = solved[z * n * cols + c * n + row];
      expect(maxError(actual, expected)).toBeLessThan(2e-4);
    }
  });

  it('sums of squares, ε and the iteration history; gram with ε on the diagonal; axpy with the step; diagonal dot products; balance', async () => {
    const x = random(5000);
    const stats = linalg.zeros(STATS.history + 4);
    linalg.write(stats, Float32Array.of(1), STATS.one);
    const gx = linalg.upload(x);
    const partials = linalg.partials();
    await linalg.run([...linalg.sumSquares(gx, 4999, partials, stats, { slot: STATS.errorSquared, factor: 0.1, record: true, off: 1 }), linalg.advance(stats, 4)]);
    const read = await linalg.read(stats);
    const squares = x.slice(1).reduce((sum, value) => sum + value * value, 0);
    expect(read[STATS.errorSquared]).toBeCloseTo(squares, 1);
    expect(read[STATS.epsilon]).toBeCloseTo(0.1 * Math.sqrt(squares), 4);
    expect(read[STATS.history]).toBeCloseTo(squares, 1);
    expect(read[STATS.iteration]).toBe(1);
    expect(read[STATS.step]).toBeCloseTo(0.75, 6);

    // Mode 1: out_a = Σ_c diag(s_ac) X_c diag(s_ac) + ε I.
    const r = 5, b = 3;
    const grams = random(b * r * r), s = random(b * b * r);
    const out = linalg.zeros(b * r * r);
    await linalg.run([linalg.gram(1, out, linalg.upload(grams), linalg.upload(s), stats, { r, count: b, blocks: b, epsFactor: 1 })]);
    const got = await linalg.read(out);
    for (let a = 0; a < b; a++) for (let k = 0; k < r; k++) for (let l = 0; l < r; l++) {
      let expected = 0;
      for (let c = 0; c < b; c++) expected += s[(a * b + c) * r + k] * s[(a * b + c) * r + l] * grams[c * r * r + k * r + l];
      if (k === l) expected += read[STATS.epsilon];
      expect(got[a * r * r + k * r + l]).toBeCloseTo(expected, 3);
    }

    const y = random(300);
    const gy = linalg.upload(y);
    await linalg.run([linalg.axpy(gy, gx, stats, 290, { xOff: 7, outOff: 5, factor: 2 })]);
    const axpy = await linalg.read(gy);
    expect(axpy[4]).toBe(y[4]);
    expect(axpy[5 + 100]).toBeCloseTo(y[105] + 2 * 0.75 * x[107], 5);
    expect(axpy[295]).toBe(y[295]);

    // out[z · r + k] = Σ_q X(z)(k, q) · Y(z mod 2)(k, q), rows of X 11 apart, of Y 13 apart.
    const dx = random(4 * r * 11), dy = random(2 * r * 13);
    const dots = linalg.zeros(4 * r);
    await linalg.run([linalg.diagDot(dots, linalg.upload(dx), linalg.upload(dy), { r, batch: 4, blocks: 2, count: 10, xBatch: r * 11, xRow: 11, yBatch: r * 13, yRow: 13 })]);
    const gotDots = await linalg.read(dots);
    for (let z = 0; z < 4; z++) for (let k = 0; k < r; k++) {
      let expected = 0;
      for (let q = 0; q < 10; q++) expected += dx[z * r * 11 + k * 11 + q] * dy[(z % 2) * r * 13 + k * 13 + q];
      expect(gotDots[z * r + k]).toBeCloseTo(expected, 4);
    }

    const u = random(9 * r), v = random(r * 6).map((value) => 10 * value);
    const gu = linalg.upload(u), gv = linalg.upload(v);
    await linalg.run([linalg.balance(gu, gv, 9, r, 6)]);
    const [bu, bv] = [await linalg.read(gu), await linalg.read(gv)];
    for (let k = 0; k < r; k++) {
      const norm = (values: ArrayLike<number>, at: (t: number) => number, count: number) => Math.hypot(...Array.from({ length: count }, (_, t) => values[at(t)]));
      expect(norm(bu, (t) => t * r + k, 9)).toBeCloseTo(norm(bv, (t) => k * 6 + t, 6), 3);
      expect(bu[k] * bv[k * 6]).toBeCloseTo(u[k] * v[k * 6], 3);
    }
  });
});

describe.skipIf(!gpu.backend)(`BLAST compression on the GPU${gpu.backend ? '' : ` (skipped: ${gpu.reason})`}`, () => {
  let linalg: GpuLinalg;
  beforeAll(async () => {
    linalg = await GpuLinalg.create(gpu.backend!.gpu);
  });

  /** Weight, BLAST shape, and the CPU's factorisation of it. */
  function blastCase(seed: number, exact: boolean) {
    const local = new Rng(seed);
    const draw = (n: number) => Float32Array.from({ length: n }, () => local.normal());
    const shape = exact ? { inFeatures: 24, outFeatures: 36, rank: 4, blocks: 3 } : { inFeatures: 4 * 25, outFeatures: 4 * 23, rank: PANEL + 3, blocks: 4 };
    const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
    const weight = exact ? blrToDense({ method: 'blast', u: draw(o * r), v: draw(r * i), s: draw(b * b * r) }, shape) : draw(o * i);
    return { shape, weight };
  }

  it('takes the CPU\'s steps from the CPU\'s start: the same error at every iteration', async () => {
    const { shape, weight } = blastCase(2, false);
    let mean = 0;
    weight.forEach((x) => { mean += x / weight.length; });
    const std = Math.sqrt(weight.reduce((sum, x) => sum + (x - mean) ** 2, 0) / weight.length);
    const start = compressLowRank(Float32Array.from(weight, (x) => x / std), { ...shape, blocks: 1 }) as { u: Float32Array; v: Float32Array };
    const cpu: number[] = [], gpuErrors: number[] = [];
    compressBlast(weight, shape, { iterations: 30, onIteration: (_, e) => cpu.push(e) });
    // Coupling systems two output blocks at a time.
    const { error } = await compressBlastGpu(linalg, weight, shape, { iterations: 30, start, couplingBytes: 2 * shape.blocks * shape.rank ** 2 * 4, onIteration: (_, e) => gpuErrors.push(e) });
    expect(gpuErrors).toHaveLength(30);
    gpuErrors.forEach((e, t) => expect(Math.abs(e - cpu[t])).toBeLessThan(1e-4 * cpu[t]));
    expect(error).toBe(gpuErrors[29]);
  });

  it.each([[1, true], [5, true], [2, false], [3, false]] as const)('from its own start, ends where the CPU does (seed %i, BLAST matrix: %s)', async (seed, exact) => {
    const { shape, weight } = blastCase(seed, exact);
    const iterations = exact ? 300 : 40;
    const cpu: number[] = [], gpuErrors: number[] = [];
    const cpuError = relativeError(weight, blrToDense(compressBlast(weight, shape, { iterations, onIteration: (_, e) => cpu.push(e) }), shape));
    const { factors, error } = await compressBlastGpu(linalg, weight, shape, { iterations, onIteration: (_, e) => gpuErrors.push(e) });
    expect(relativeError(weight, blrToDense(factors, shape))).toBeCloseTo(error, 4);
    // The start (rank-r singular components) and the first step match closely; the end within a few percent.
    expect(Math.abs(gpuErrors[0] - cpu[0])).toBeLessThan(0.01 * cpu[0]);
    expect(Math.abs(error - cpuError)).toBeLessThan(0.05 * cpuError + 0.003);
    if (exact) expect(error).toBeLessThan(0.1 * cpu[0]);
  });
});

describe.skipIf(!gpu.backend)(`low-rank compression on the GPU${gpu.backend ? '' : ` (skipped: ${gpu.reason})`}`, () => {
  it.each([[30, 20, 5], [70, 45, PANEL + 2]])('is the truncated SVD, as the CPU\'s (%i × %i, rank %i)', async (o, i, r) => {
    const linalg = await GpuLinalg.create(gpu.backend!.gpu);
    const shape = { inFeatures: i, outFeatures: o, rank: r, blocks: 1 };
    const w = random(o * i);
    const cpu = compressLowRank(w, shape);
    const { factors, error } = await compressLowRankGpu(linalg, w, shape);
    const cpuError = relativeError(w, blrToDense(cpu, shape));
    expect(relativeError(w, blrToDense(factors, shape))).toBeCloseTo(error, 4);
    expect(Math.abs(error - cpuError)).toBeLessThan(1e-3 * cpuError);
    // √S on both sides: ‖u_k‖ = ‖v_k‖ = √σ_k, as the CPU's; the same σ_k (components in any order).
    const norms = (f: { u: Float32Array; v: Float32Array }) => Array.from({ length: r }, (_, k) => {
      let uu = 0, vv = 0;
      for (let p = 0; p < o; p++) uu += f.u[p * r + k] ** 2;
      for (let q = 0; q < i; q++) vv += f.v[k * i + q] ** 2;
      expect(Math.sqrt(uu)).toBeCloseTo(Math.sqrt(vv), 2);
      return uu;
    }).sort((x, y) => y - x);
    const [gpuSigma, cpuSigma] = [norms(factors), norms(cpu as { u: Float32Array; v: Float32Array })];
    gpuSigma.forEach((sigma, k) => expect(Math.abs(sigma - cpuSigma[k])).toBeLessThan(1e-2 * cpuSigma[0]));
  });
});

describe.skipIf(!gpu.backend)(`Monarch compression on the GPU${gpu.backend ? '' : ` (skipped: ${gpu.reason})`}`, () => {
  it.each([[4, 24, 36, 8], [3, 33, 21, 9]])('is each block\'s truncated SVD, as the CPU\'s (%i blocks, %i → %i, rank %i)', async (b, i, o, r) => {
    const linalg = await GpuLinalg.create(gpu.backend!.gpu);
    const shape = { inFeatures: i, outFeatures: o, rank: r, blocks: b };
    const w = random(o * i);
    const cpuError = relativeError(w, blrToDense(compressMonarch(w, shape), shape));
    const { factors, error } = await compressMonarchGpu(linalg, w, shape);
    expect(relativeError(w, blrToDense(factors, shape))).toBeCloseTo(error, 4);
    expect(Math.abs(error - cpuError)).toBeLessThan(1e-3 * cpuError);
    // A matrix that is Monarch of that shape comes back, to f32 and the start's ridge (1e-5 of the Gram diagonals).
    const exact = blrToDense({ method: 'monarch', w1: random(r * i), w2: random(o * r) }, shape);
    const again = await compressMonarchGpu(linalg, exact, shape);
    expect(again.error).toBeLessThan(1e-3);
    expect(relativeError(exact, blrToDense(again.factors, shape))).toBeLessThan(1e-3);
  });
});
