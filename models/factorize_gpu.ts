// Dense → BLAST on the GPU (`blr compress --method blast` where a GPU is there): the same
// alternating preconditioned gradient descent as models/factorize.ts compressBlast, in f32 on
// kernels/webgpu/linalg.ts. Per iteration, with A the weight normalised by its std and
// R = A − Â the residual (recomputed after each factor moves):
//   ε = 0.1 ‖R‖;
//   U_a += step · (Σ_c R_ac V_cᵀ diag(s_ac)) (Σ_c diag(s_ac) V_c V_cᵀ diag(s_ac) + εI)⁻¹;
//   V_c += step · (Σ_a diag(s_ac) U_aᵀ U_a diag(s_ac) + εI)⁻¹ Σ_a diag(s_ac) U_aᵀ R_ac;
//   s_ac += step · ((U_aᵀU_a) ∘ (V_cV_cᵀ) + εI)⁻¹ diag(U_aᵀ R_ac V_cᵀ);
// step = 1 − iteration / iterations. The low-rank start is the CPU's too (the top r singular
// components, √S on both sides), reached another way (no eigenproblem on the CPU): alternating
// least squares at rank r + 10 from a random V (power iterations, as the SVD's range finder
// oversamples), the singular components of that product by one-sided Jacobi, the top r kept.
// Low-rank compression (compressLowRankGpu) is that start alone.
// Memory: the weight twice (A and R), the factors twice (values and gradients), 2b + chunk·b
// r × r Gram matrices; the couplings' b² systems are solved a chunk of output blocks at a time.
import type { BlastFactors, BlrShape, LowRankFactors, MonarchFactors } from '../kernels/cpu/blr.ts';
import { randomNormalMatrix } from '../kernels/cpu/ops.ts';
import { PANEL, STATS, type GpuArray, type GpuLinalg, type Step, type View } from '../kernels/webgpu/linalg.ts';
import { frobeniusNorm, monarchFromBlocks, standardDeviation } from './factorize.ts';

/** Alternating least-squares rounds of the low-rank start. */
const START_ROUNDS = 8;
/** One-sided Jacobi sweeps that turn the start into its singular components. */
const JACOBI_SWEEPS = 10;
/** Extra components the start works with before keeping the top r. */
const OVERSAMPLE = 10;
/** Bytes of coupling Gram matrices solved at once by default (the chunk of output blocks is sized to fit). */
const COUPLING_BYTES = 1 << 30;
/** The error history is read back (for progress) every this many iterations (each iteration is one submit). */
const ITERATIONS_PER_READ = 10;

export interface GpuBlastResult {
  factors: BlastFactors;
  /** ‖A − Â‖ / ‖A‖, from the final residual on the GPU. */
  error: number;
  /** Wall time of the phases: normalising and uploading, the low-rank start, the iterations (with reading the factors back). */
  seconds: { prepare: number; start: number; iterations: number };
}

export async function compressBlastGpu(linalg: GpuLinalg, weight: ArrayLike<number>, shape: BlrShape,
  options: {
    iterations?: number;
    seed?: number;
    onIteration?: (iteration: number, error: number) => void;
    couplingBytes?: number;
    /** A low-rank start of the weight divided by its std (U: o × r, V: r × i), instead of the one made here. */
    start?: { u: Float32Array; v: Float32Array };
  } = {}): Promise<GpuBlastResult> {
  const began = performance.now();
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  const ib = i / b, ob = o / b;
  if (!Number.isInteger(ib) || !Number.isInteger(ob)) throw new RangeError(`BLAST with ${b} blocks needs features divisible by it (${i}→${o})`);
  const iterations = options.iterations ?? 300;
  const std = standardDeviation(weight);
  // A loop, not Float32Array.from with a function (which goes through the iterator protocol: seconds at these sizes).
  const normalised = new Float32Array(weight.length);
  for (let k = 0; k < weight.length; k++) normalised[k] = weight[k] / std;
  const norm = (frobeniusNorm(normalised) || 1);

  // Coupling systems per chunk: `chunk` output blocks × b input blocks.
  const chunk = Math.max(1, Math.min(b, Math.floor(Math.min(options.couplingBytes ?? COUPLING_BYTES, linalg.maxElements * 4) / (b * r * r * 4))));
  const work = new Workspace(linalg);
  try {
    const systemCount = Math.max(b, chunk * b);
    const a = work.upload(normalised), residual = work.zeros(o * i);
    const u = work.zeros(o * r), gradU = work.zeros(o * r);
    const v = work.zeros(r * i), gradV = work.zeros(r * i);
    const uu = work.zeros(b * r * r), vv = work.zeros(b * r * r);
    const systems = work.zeros(systemCount * r * r), inverses = work.zeros(systemCount * Math.ceil(r / PANEL) * PANEL * PANEL);
    const stats = work.stats(iterations + 1);
    const s = work.zeros(b * b * r), gradS = work.zeros(b * b * r);
    const products = work.zeros(chunk * b * r * ib);
    const partials = work.add(linalg.partials());
    linalg.write(s, new Float32Array(b * b * r).fill(1));
    await linalg.finish();
    const prepared = performance.now();
    const start = options.start ?? await lowRankStart(linalg, { view: { array: a, row: i, col: 1 }, batch: 1, zInner: 1, o, i }, r, options.seed ?? 0);
    linalg.write(u, start.u);
    linalg.write(v, start.v);
    const started = performance.now();

    // R = A − Â: R_ac = A_ac − (U_a ∘ s_ac) V_c over the b² block pairs.
    const residualSteps = (record: boolean, epsilon: boolean): Step[] => [
      linalg.copy(a, residual),
      linalg.gemm({ m: ob, n: ib, k: r, batch: b * b, zInner: b }, { array: residual, outer: ob * i, inner: ib, row: i, col: 1 },
        { array: u, outer: ob * r, row: r, col: 1 }, { array: v, inner: ib, row: i, col: 1 },
        { alpha: -1, beta: 1, scaleA: { array: s, outer: b * r, inner: r, perK: 1 } }),
      ...(record || epsilon ? linalg.sumSquares(residual, o * i, partials, stats, { slot: STATS.errorSquared, factor: 0.1, record }) : []),
    ];
    const epsilon = { epsSlot: STATS.epsilon, epsFactor: 1 };
    // V_c V_cᵀ (z = c), in vv: made here for the first iteration, then by each iteration's coupling
    // step (V does not move between that and the next U step).
    const vGrams = linalg.gemm({ m: r, n: r, k: ib, batch: b }, { array: vv, inner: r * r, row: r, col: 1 }, { array: v, inner: ib, row: i, col: 1 }, { array: v, inner: ib, row: 1, col: i });
    await linalg.run([vGrams]);
    const iteration: Step[] = [
      ...residualSteps(true, true),
      // U step. Gram_a from vv; gradient G_a = Σ_c R_ac V_cᵀ diag(s_ac) (z = a), solved in place as Gᵀ.
      linalg.gram(1, systems, vv, s, stats, { r, count: b, blocks: b, ...epsilon }),
      ...linalg.cholesky(systems, inverses, r, b),
      linalg.gemm({ m: ob, n: r, k: i, batch: b }, { array: gradU, inner: ob * r, row: r, col: 1 }, { array: residual, inner: ob * i, row: i, col: 1 },
        { array: v, row: 1, col: i }, { scaleB: { array: s, inner: b * r, kBlock: ib, perKBlock: r, perMN: 1 } }),
      ...linalg.solve(systems, inverses, r, b, { array: gradU, inner: ob * r, row: 1, col: r }, ob),
      linalg.axpy(u, gradU, stats, o * r),
      ...residualSteps(false, false),
      // V step. U_aᵀ U_a (z = a); Gram_c; gradient H_c = Σ_a diag(s_ac) U_aᵀ R_ac (z = c), laid out as V.
      linalg.gemm({ m: r, n: r, k: ob, batch: b }, { array: uu, inner: r * r, row: r, col: 1 }, { array: u, inner: ob * r, row: 1, col: r }, { array: u, inner: ob * r, row: r, col: 1 }),
      linalg.gram(2, systems, uu, s, stats, { r, count: b, blocks: b, ...epsilon }),
      ...linalg.cholesky(systems, inverses, r, b),
      linalg.gemm({ m: r, n: ib, k: o, batch: b }, { array: gradV, inner: ib, row: i, col: 1 }, { array: u, row: 1, col: r },
        { array: residual, inner: ib, row: i, col: 1 }, { scaleA: { array: s, inner: r, kBlock: ob, perKBlock: b * r, perMN: 1 } }),
      ...linalg.solve(systems, inverses, r, b, { array: gradV, inner: ib, row: i, col: 1 }, ib),
      linalg.axpy(v, gradV, stats, r * i),
      ...residualSteps(false, false),
      // Couplings: V_c V_cᵀ again (V moved); per chunk of output blocks a, the systems (U_aᵀU_a) ∘ (V_cV_cᵀ)
      // and right-hand sides diag(U_aᵀ R_ac V_cᵀ), as row sums of (U_aᵀ R_ac) ∘ V_c.
      vGrams,
    ];
    for (let a0 = 0; a0 < b; a0 += chunk) {
      const count = Math.min(chunk, b - a0) * b;
      iteration.push(
        linalg.gram(3, systems, uu, vv, stats, { r, count, blocks: b, xOff: a0 * r * r, yBatch: r * r, ...epsilon }),
        ...linalg.cholesky(systems, inverses, r, count),
        linalg.gemm({ m: r, n: ib, k: ob, batch: count, zInner: b }, { array: products, outer: b * r * ib, inner: r * ib, row: ib, col: 1 },
          { array: u, off: a0 * ob * r, outer: ob * r, row: 1, col: r }, { array: residual, off: a0 * ob * i, outer: ob * i, inner: ib, row: i, col: 1 }),
        linalg.diagDot(gradS, products, v, { r, batch: count, blocks: b, count: ib, xBatch: r * ib, xRow: ib, yBatch: ib, yRow: i, outOff: a0 * b * r }),
        ...linalg.solve(systems, inverses, r, count, { array: gradS, off: a0 * b * r, inner: r, row: 1, col: 1 }, 1),
      );
    }
    iteration.push(linalg.axpy(s, gradS, stats, b * b * r), linalg.advance(stats, iterations));

    let reported = 0;
    const report = async (upTo: number) => {
      if (!options.onIteration || upTo <= reported) return;
      const history = await linalg.read(stats, STATS.history + reported + 1, upTo - reported);
      history.forEach((squared, t) => options.onIteration!(reported + t, Math.sqrt(Math.max(squared, 0)) / norm));
      reported = upTo;
    };
    for (let t = 0; t < iterations; t++) {
      await linalg.run(iteration);
      // The error after iteration t is recorded at the start of t + 1 (or by the final residual).
      if ((t + 1) % ITERATIONS_PER_READ === 0) await report(t);
    }
    await linalg.run(residualSteps(true, false));
    await report(iterations);
    const [uOut, vOut, sOut, final] = await Promise.all([linalg.read(u), linalg.read(v), linalg.read(s), linalg.read(stats, STATS.history + iterations, 1)]);
    for (let e = 0; e < uOut.length; e++) uOut[e] *= std;
    // V (r × i) → BLAST's (b, r, i/b).
    const blocked = new Float32Array(r * i);
    for (let c = 0; c < b; c++) for (let k = 0; k < r; k++) blocked.set(vOut.subarray(k * i + c * ib, k * i + (c + 1) * ib), (c * r + k) * ib);
    const seconds = { prepare: (prepared - began) / 1000, start: (started - prepared) / 1000, iterations: (performance.now() - started) / 1000 };
    return { factors: { method: 'blast', u: uOut, v: blocked, s: sOut }, error: Math.sqrt(Math.max(final[0], 0)) / norm, seconds };
  } finally {
    work.destroy();
  }
}

/** Low-rank factors of W (out × in), the rank-r singular components with √S on both sides, and the relative error. */
export async function compressLowRankGpu(linalg: GpuLinalg, weight: ArrayLike<number>, shape: BlrShape, seed = 0): Promise<{ factors: LowRankFactors; error: number }> {
  const { inFeatures: i, outFeatures: o, rank: r } = shape;
  const dense = new Float32Array(weight);
  const work = new Workspace(linalg);
  try {
    const a = work.upload(dense);
    const { u, v } = await lowRankStart(linalg, { view: { array: a, row: i, col: 1 }, batch: 1, zInner: 1, o, i }, r, seed);
    const stats = work.stats(0);
    const residual = work.zeros(o * i);
    await linalg.run([
      linalg.copy(a, residual),
      linalg.gemm({ m: o, n: i, k: r }, { array: residual, row: i, col: 1 }, { array: work.upload(u), row: r, col: 1 }, { array: work.upload(v), row: i, col: 1 }, { alpha: -1, beta: 1 }),
      ...linalg.sumSquares(residual, o * i, work.add(linalg.partials()), stats, { slot: STATS.errorSquared }),
    ]);
    const squared = await linalg.read(stats, STATS.errorSquared, 1);
    return { factors: { method: 'lowrank', u, v }, error: Math.sqrt(Math.max(squared[0], 0)) / (frobeniusNorm(dense) || 1) };
  } finally {
    work.destroy();
  }
}

/**
 * Monarch factors of W (out × in) and the relative error: the b² blocks of the row-permuted W
 * (block (ℓ, j): rows s · b + ℓ, columns j · i/b + m, read in place through a strided view) each
 * get the rank r/b start above, assembled as models/factorize.ts compressMonarch assembles its SVDs.
 */
export async function compressMonarchGpu(linalg: GpuLinalg, weight: ArrayLike<number>, shape: BlrShape, seed = 0): Promise<{ factors: MonarchFactors; error: number }> {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
  const ib = i / b, ob = o / b, k = r / b;
  if (!Number.isInteger(ib) || !Number.isInteger(ob) || !Number.isInteger(k)) throw new RangeError(`Monarch with ${b} blocks needs features and rank divisible by it (${i}→${o}, rank ${r})`);
  const dense = new Float32Array(weight);
  const work = new Workspace(linalg);
  try {
    const a = work.upload(dense);
    // z = ℓ · b + j.
    const view: View = { array: a, outer: i, inner: ib, row: b * i, col: 1 };
    const { u, v } = await lowRankStart(linalg, { view, batch: b * b, zInner: b, o: ob, i: ib }, k, seed);
    const factors = monarchFromBlocks(shape, (l, j) => {
      const z = l * b + j;
      return { u: (s, t) => u[(z * ob + s) * k + t], v: (t, m) => v[(z * k + t) * ib + m] };
    });
    // The error from each block's residual, A_z − U_z V_z, in place of A's copy.
    const stats = work.stats(0);
    const residual = work.zeros(o * i);
    await linalg.run([
      linalg.copy(a, residual),
      linalg.gemm({ m: ob, n: ib, k, batch: b * b, zInner: b }, { ...view, array: residual }, { array: work.upload(u), outer: b * ob * k, inner: ob * k, row: k, col: 1 },
        { array: work.upload(v), outer: b * k * ib, inner: k * ib, row: ib, col: 1 }, { alpha: -1, beta: 1 }),
      ...linalg.sumSquares(residual, o * i, work.add(linalg.partials()), stats, { slot: STATS.errorSquared }),
    ]);
    const squared = await linalg.read(stats, STATS.errorSquared, 1);
    return { factors, error: Math.sqrt(Math.max(squared[0], 0)) / (frobeniusNorm(dense) || 1) };
  } finally {
    work.destroy();
  }
}

/** GPU buffers made for one factorisation, destroyed together. */
class Workspace {
  private readonly arrays: GpuArray[] = [];
  constructor(private readonly linalg: GpuLinalg) {}

  add(array: GpuArray): GpuArray {
    this.arrays.push(array);
    return array;
  }

  zeros(length: number): GpuArray {
    return this.add(this.linalg.zeros(length));
  }

  upload(data: Float32Array): GpuArray {
    return this.add(this.linalg.upload(data));
  }

  /** The stats buffer (linalg_misc.wgsl): step size 1, the constant 1, room for `history` errors. */
  stats(history: number): GpuArray {
    const stats = this.zeros(STATS.history + history);
    const init = new Float32Array(STATS.history);
    init[STATS.step] = 1;
    init[STATS.one] = 1;
    this.linalg.write(stats, init);
    return stats;
  }

  destroy(): void {
    for (const array of this.arrays) array.buffer.destroy();
  }
}


/** `batch` matrices of o × i, matrix z of A at `view` (two-level: ⌊z / zInner⌋, z mod zInner). */
interface MatrixBatch {
  view: View;
  batch: number;
  zInner: number;
  o: number;
  i: number;
}

/**
 * The rank-r start A ≈ U V (U: o × r, V: r × i) with u_k = √σ_k · left singular vector k and
 * v_k = √σ_k · right singular vector k, the top r singular components in descending order, as the
 * CPU's truncated SVD gives; for each matrix of the batch (results one after another). Worked at
 * rank l = r + OVERSAMPLE (as the SVD's range finder oversamples): alternating least squares
 * U ← A Vᵀ (V Vᵀ)⁻¹, V ← (UᵀU)⁻¹ Uᵀ A (ridge-regularised) from a random V; then with UᵀU = L Lᵀ,
 * U = Q Lᵀ (Q orthonormal) and A ≈ Q (Lᵀ V), one-sided Jacobi makes the rows of Lᵀ V orthogonal
 * (rotations P: Lᵀ V = Pᵀ Σ Zᵀ), so A ≈ (Q Pᵀ) Σ Zᵀ; balancing the columns of Q Pᵀ (norm 1)
 * against the rows of Σ Zᵀ (norm σ_k) puts √σ_k on both, and the r components of largest σ_k are kept.
 */
async function lowRankStart(linalg: GpuLinalg, a: MatrixBatch, r: number, seed: number): Promise<{ u: Float32Array; v: Float32Array }> {
  const { o, i, batch, zInner } = a;
  const l = Math.max(r, Math.min(r + OVERSAMPLE, o, i));
  const work = new Workspace(linalg);
  // Matrix z of a buffer holding `batch` matrices of `size` one after another, for the two-level GEMM batch.
  const each = (array: GpuArray, size: number, row: number, col: number): View => ({ array, outer: zInner * size, inner: size, row, col });
  const dims = (m: number, n: number, k: number) => ({ m, n, k, batch, zInner });
  try {
    const stats = work.stats(1);
    const u = work.zeros(batch * o * l), gradU = work.zeros(batch * o * l);
    const v = work.upload(randomNormalMatrix(batch * l, i, 1, seed)), gradV = work.zeros(batch * l * i);
    const gram = work.zeros(batch * l * l), rotations = work.zeros(batch * l * l);
    const system = work.zeros(batch * l * l), inverses = work.zeros(batch * Math.ceil(l / PANEL) * PANEL * PANEL);
    const ridge = { diagScale: 1 + 1e-5, epsSlot: STATS.one, epsFactor: 1e-6 };
    // `gram` ← the Gram matrices of `of` (UᵀU or V Vᵀ) and their ridge-regularised Cholesky factors in `system`.
    const factorGram = (of: 'u' | 'v'): Step[] => [
      of === 'u'
        ? linalg.gemm(dims(l, l, o), each(gram, l * l, l, 1), each(u, o * l, 1, l), each(u, o * l, l, 1))
        : linalg.gemm(dims(l, l, i), each(gram, l * l, l, 1), each(v, l * i, i, 1), each(v, l * i, 1, i)),
      linalg.gram(0, system, gram, gram, stats, { r: l, count: batch, ...ridge }),
      ...linalg.cholesky(system, inverses, l, batch),
    ];
    const steps: Step[] = [];
    for (let round = 0; round < START_ROUNDS; round++) {
      steps.push(
        linalg.gemm(dims(o, l, i), each(u, o * l, l, 1), a.view, each(v, l * i, 1, i)),
        ...factorGram('v'),
        ...linalg.solve(system, inverses, l, batch, { array: u, inner: o * l, row: 1, col: l }, o),
        linalg.gemm(dims(l, i, o), each(v, l * i, i, 1), each(u, o * l, 1, l), a.view),
        ...factorGram('u'),
        ...linalg.solve(system, inverses, l, batch, { array: v, inner: l * i, row: i, col: 1 }, i),
      );
    }
    // Lᵀ V = L⁻¹ (UᵀU) V into gradV; Qᵀ = L⁻¹ Uᵀ in place of U.
    steps.push(
      ...factorGram('u'),
      linalg.gemm(dims(l, i, l), each(gradV, l * i, i, 1), each(gram, l * l, l, 1), each(v, l * i, i, 1)),
      ...linalg.solve(system, inverses, l, batch, { array: gradV, inner: l * i, row: i, col: 1 }, i, { forwardOnly: true }),
      ...linalg.solve(system, inverses, l, batch, { array: u, inner: o * l, row: 1, col: l }, o, { forwardOnly: true }),
    );
    await linalg.run(steps);
    const identity = new Float32Array(batch * l * l);
    for (let z = 0; z < batch; z++) for (let k = 0; k < l; k++) identity[(z * l + k) * l + k] = 1;
    linalg.write(rotations, identity);
    const sweep = linalg.jacobiSweep(gradV, rotations, l, i, l, batch);
    for (let t = 0; t < JACOBI_SWEEPS; t++) await linalg.run(sweep);
    const squaredNorms = work.zeros(batch * l);
    await linalg.run([
      linalg.gemm(dims(o, l, l), each(gradU, o * l, l, 1), each(u, o * l, l, 1), each(rotations, l * l, 1, l)),
      linalg.balance(gradU, gradV, o, l, i, batch),
      // ‖v_k‖² = σ_k after balancing (v_k · v_k, from a copy: one buffer may not fill a read and a writable binding).
      linalg.copy(gradV, v),
      linalg.diagDot(squaredNorms, gradV, v, { r: l, batch, count: i, xBatch: l * i, xRow: i, yBatch: l * i, yRow: i }),
    ]);
    const [sigma, uAll, vAll] = await Promise.all([linalg.read(squaredNorms), linalg.read(gradU), linalg.read(gradV)]);
    const uOut = new Float32Array(batch * o * r);
    const vOut = new Float32Array(batch * r * i);
    for (let z = 0; z < batch; z++) {
      const kept = Array.from({ length: l }, (_, k) => k).sort((x, y) => sigma[z * l + y] - sigma[z * l + x]).slice(0, r);
      kept.forEach((from, to) => {
        for (let p = 0; p < o; p++) uOut[(z * o + p) * r + to] = uAll[(z * o + p) * l + from];
        vOut.set(vAll.subarray((z * l + from) * i, (z * l + from + 1) * i), (z * r + to) * i);
      });
    }
    return { u: uOut, v: vOut };
  } finally {
    work.destroy();
  }
}
