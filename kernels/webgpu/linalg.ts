// f32 linear algebra on the GPU for factorising weights (`blr compress`, models/factorize_gpu.ts):
// batched strided GEMM (wgsl/linalg_gemm.wgsl), batched Cholesky factorisation and solves
// (wgsl/cholesky.wgsl), and the small kernels around them (wgsl/linalg_misc.wgsl).
//
// Work is built as steps (a pipeline, its bind group and workgroup counts, or a buffer copy), each
// with its parameters in its own uniform buffer: a loop that repeats the same work (gradient
// descent) builds its steps once and records them again each iteration; nothing is created per
// iteration. Values that change between iterations (error, ε, step size) live in a stats buffer
// on the GPU (linalg_misc.wgsl).
import type { StridedScale, StridedView } from '../cpu/linalg.ts';
import { DeviceErrors, GpuError, Profiler } from './backend.ts';
import { openGpu, type Gpu } from './gpu.ts';
import { wgsl } from './wgsl_source.ts';

/** A buffer larger than the device binds at once: the work can go to the CPU instead. */
export class GpuCapacityError extends GpuError {
  constructor(message: string) {
    super(message);
    this.name = 'GpuCapacityError';
  }
}

/** A GPU buffer of f32 values. */
export interface GpuArray {
  readonly buffer: GPUBuffer;
  readonly length: number;
}

/**
 * A strided view of a batch of matrices in `array`: element (z, row, col) at
 * off + ⌊z / zInner⌋ · outer + (z mod zInner) · inner + row · row + col · col (GEMM), or
 * off + z · inner + … where a kernel has one batch index.
 */
export interface View extends StridedView {
  array: GpuArray;
}

/**
 * Scales applied to a GEMM operand's elements as they are loaded: the value at
 * off + ⌊z / zInner⌋ · outer + (z mod zInner) · inner + ⌊k / kBlock⌋ · perKBlock + k · perK + (m or n) · perMN.
 */
export interface ScaleView extends StridedScale {
  array: GpuArray;
}

export type Step =
  | { kind: 'dispatch'; entry: string; pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; workgroups: [number, number, number] }
  | { kind: 'copy'; from: GPUBuffer; fromOffset: number; to: GPUBuffer; toOffset: number; bytes: number };

/** Cholesky panel width (cholesky.wgsl NB). */
export const PANEL = 32;
/** Panels whose trailing update is made at once (cholesky's look-ahead within a group). */
const PANEL_GROUP = 4;
/** stats slots (linalg_misc.wgsl): error², ε, iteration, step size; a constant 1; history from HISTORY on. */
export const STATS = { errorSquared: 0, epsilon: 1, iteration: 2, step: 3, one: 7, history: 8 } as const;
const GEMM_PARAM_WORDS = 40;
const CHOLESKY_PARAM_WORDS = 24;
const MISC_PARAM_WORDS = 20;
/** cholesky.wgsl update's output tile. */
const TILE = 64;
const SUM_WORKGROUPS = 1024;

type Entry = 'gemm' | 'panel' | 'diag_solve' | 'update' | 'sum_squares' | 'finish' | 'advance' | 'gram' | 'axpy' | 'diag_dot' | 'balance' | 'jacobi_round';

/** Writes named u32/f32 fields into a parameter block. */
class ParamWords {
  readonly words: Uint32Array;
  private readonly floats: Float32Array;
  constructor(length: number) {
    this.words = new Uint32Array(length);
    this.floats = new Float32Array(this.words.buffer);
  }
  u(index: number, value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`parameter ${index}: ${value} is not a u32 (a view reaches outside 4 G elements?)`);
    this.words[index] = value;
    return this;
  }
  f(index: number, value: number): this {
    this.floats[index] = value;
    return this;
  }
}

export class GpuLinalg {
  readonly device: GPUDevice;
  private readonly pipelines = new Map<Entry, GPUComputePipeline>();
  private readonly errors: DeviceErrors;
  /** Bound where a kernel declares a buffer this use of it does not touch. */
  private readonly dummy: GpuArray;
  private profiler: Profiler | undefined;
  /** linalg_gemm.wgsl's output tile (another kernel's with `create`'s gemmSource). */
  private gemmTile = 64;

  private constructor(readonly gpu: Gpu) {
    this.device = gpu.device;
    this.errors = new DeviceErrors(this.device);
    this.dummy = this.zeros(4);
  }

  /**
   * Compiles the kernels on an open GPU (its device may be shared with a WebGpuBackend).
   * `gemmSource`: another GEMM kernel with linalg_gemm.wgsl's bindings and parameters (benchmarks).
   */
  static async create(gpu: Gpu, gemmSource?: { code: string; tile: number }): Promise<GpuLinalg> {
    const linalg = new GpuLinalg(gpu);
    if (gemmSource) linalg.gemmTile = gemmSource.tile;
    const gemm = gemmSource?.code ?? wgsl('linalg_gemm.wgsl');
    const cholesky = wgsl('cholesky.wgsl');
    const misc = wgsl('linalg_misc.wgsl', 'workgroup_reduce');
    const sources: Record<Entry, string> = {
      gemm, panel: cholesky, diag_solve: cholesky, update: cholesky,
      sum_squares: misc, finish: misc, advance: misc, gram: misc, axpy: misc, diag_dot: misc, balance: misc, jacobi_round: misc,
    };
    const modules = new Map<string, GPUShaderModule>();
    linalg.device.pushErrorScope('validation');
    await Promise.all((Object.keys(sources) as Entry[]).map(async (entry) => {
      const source = sources[entry];
      let module = modules.get(source);
      if (!module) {
        module = linalg.device.createShaderModule({ code: source });
        modules.set(source, module);
      }
      linalg.pipelines.set(entry, await linalg.device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: entry === 'gemm' ? 'main' : entry } }));
    }));
    const error = await linalg.device.popErrorScope();
    if (error) throw new GpuError(`the linear-algebra kernels did not compile: ${error.message}`);
    return linalg;
  }

  /** Opens a GPU of its own (`allowSoftware`: lavapipe will do). */
  static async open(options: { allowSoftware: boolean }): Promise<GpuLinalg> {
    return GpuLinalg.create(await openGpu(options));
  }

  /**
   * Times every dispatch from now on (one compute pass each, waiting for the times after every
   * CAPACITY dispatches: slower overall); `takeProfile` returns the totals per kernel.
   */
  startProfile(): void {
    if (!this.gpu.features.timestampQuery) throw new GpuError('profiling needs the timestamp-query feature');
    this.profiler ??= new Profiler(this.device);
  }

  takeProfile(): Map<string, { calls: number; ms: number }> {
    if (!this.profiler) throw new GpuError('call startProfile() first');
    return this.profiler.take();
  }

  /** Gives the device back (one opened by `open`; not one shared with a backend still in use). */
  close(): void {
    this.device.destroy();
  }

  /** The largest buffer one binding may cover, in f32 values. */
  get maxElements(): number {
    return Math.floor(Math.min(this.device.limits.maxStorageBufferBindingSize, this.device.limits.maxBufferSize) / 4);
  }

  zeros(length: number): GpuArray {
    if (length > this.maxElements) throw new GpuCapacityError(`a buffer of ${length} f32 values is more than this GPU binds at once (${this.maxElements})`);
    const buffer = this.device.createBuffer({ size: Math.max(16, Math.ceil((length * 4) / 16) * 16), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    return { buffer, length };
  }

  upload(data: Float32Array): GpuArray {
    const array = this.zeros(data.length);
    this.write(array, data);
    return array;
  }

  write(array: GpuArray, data: Float32Array, offset = 0): void {
    if (offset + data.length > array.length) throw new RangeError(`writing ${data.length} values at ${offset} into ${array.length}`);
    this.device.queue.writeBuffer(array.buffer, offset * 4, data.buffer, data.byteOffset, data.byteLength);
  }

  async read(array: GpuArray, offset = 0, length = array.length - offset): Promise<Float32Array> {
    const bytes = length * 4;
    const staging = this.device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = this.device.createCommandEncoder();
    encoder.copyBufferToBuffer(array.buffer, offset * 4, staging, 0, bytes);
    this.device.queue.submit([encoder.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, bytes);
    } catch (error) {
      throw this.errors.readFailed(error);
    }
    const result = new Float32Array(staging.getMappedRange(0, bytes).slice(0));
    staging.unmap();
    staging.destroy();
    this.check();
    return result;
  }

  /** Throws what WebGPU reported since the last check. */
  check(): void {
    this.errors.check();
  }

  /**
   * Records steps into one command buffer and submits it (copies end and reopen the compute pass);
   * returns at once unless profiling.
   */
  async run(steps: Step[]): Promise<void> {
    if (this.profiler) {
      for (let at = 0; at < steps.length; at += Profiler.CAPACITY) {
        this.record(steps.slice(at, at + Profiler.CAPACITY), this.profiler);
        await this.profiler.collect();
      }
      return;
    }
    this.record(steps);
  }

  private record(steps: Step[], profiler?: Profiler): void {
    const encoder = this.device.createCommandEncoder();
    let pass: GPUComputePassEncoder | undefined;
    for (const step of steps) {
      if (step.kind === 'copy') {
        pass?.end();
        pass = undefined;
        encoder.copyBufferToBuffer(step.from, step.fromOffset, step.to, step.toOffset, step.bytes);
        continue;
      }
      if (profiler) {
        pass?.end();
        pass = encoder.beginComputePass({ timestampWrites: profiler.next(step.entry) });
      }
      pass ??= encoder.beginComputePass();
      pass.setPipeline(step.pipeline);
      pass.setBindGroup(0, step.bindGroup);
      pass.dispatchWorkgroups(...step.workgroups);
    }
    pass?.end();
    profiler?.resolve(encoder);
    this.device.queue.submit([encoder.finish()]);
  }

  /** Waits for submitted work, then throws what WebGPU reported. */
  async finish(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    this.check();
  }

  copy(from: GpuArray, to: GpuArray, length = from.length, fromOffset = 0, toOffset = 0): Step {
    if (fromOffset + length > from.length || toOffset + length > to.length) throw new RangeError('copy outside a buffer');
    return { kind: 'copy', from: from.buffer, fromOffset: fromOffset * 4, to: to.buffer, toOffset: toOffset * 4, bytes: length * 4 };
  }

  private step(entry: Entry, params: ParamWords, bindings: Record<number, GpuArray>, workgroups: [number, number, number]): Step {
    const uniform = this.device.createBuffer({ size: params.words.byteLength, usage: GPUBufferUsage.UNIFORM, mappedAtCreation: true });
    new Uint32Array(uniform.getMappedRange()).set(params.words);
    uniform.unmap();
    const pipeline = this.pipelines.get(entry)!;
    const bindGroup = this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: uniform } }, ...Object.entries(bindings).map(([binding, array]) => ({ binding: Number(binding), resource: { buffer: array.buffer } }))],
    });
    for (const size of workgroups) {
      if (size > this.device.limits.maxComputeWorkgroupsPerDimension) throw new GpuError(`${entry}: ${size} workgroups in one dimension (most: ${this.device.limits.maxComputeWorkgroupsPerDimension})`);
    }
    return { kind: 'dispatch', entry, pipeline, bindGroup, workgroups };
  }

  /**
   * c[z](m, n) = alpha · Σ_k a[z](m, k) · b[z](k, n) + beta · c[z](m, n) for z < batch, each
   * operand a strided view (two-level batch: ⌊z / zInner⌋ and z mod zInner), optional scales on
   * a's and b's elements (one scale array for both).
   */
  gemm(dims: { m: number; n: number; k: number; batch?: number; zInner?: number }, c: View, a: View, b: View,
    options: { alpha?: number; beta?: number; scaleA?: ScaleView; scaleB?: ScaleView } = {}): Step {
    const { m, n, k } = dims;
    const batch = dims.batch ?? 1;
    const { scaleA, scaleB } = options;
    if (scaleA && scaleB && scaleA.array !== scaleB.array) throw new RangeError('gemm: both scales must come from one array');
    let flags = (scaleA ? 1 : 0) | (scaleB ? 2 : 0);
    if (Math.abs(a.col) <= Math.abs(a.row)) flags |= 4;
    if (Math.abs(b.col) <= Math.abs(b.row)) flags |= 8;
    const p = new ParamWords(GEMM_PARAM_WORDS).u(0, m).u(1, n).u(2, k).u(3, dims.zInner ?? batch)
      .f(4, options.alpha ?? 1).f(5, options.beta ?? 0).u(6, flags);
    const view = (at: number, v: View) => p.u(at, v.off ?? 0).u(at + 1, v.outer ?? 0).u(at + 2, v.inner ?? 0).u(at + 3, v.row).u(at + 4, v.col);
    view(8, a);
    view(13, b);
    view(18, c);
    const scale = (at: number, s: ScaleView | undefined) => {
      if (!s) return p.u(at + 3, 1);
      return p.u(at, s.off ?? 0).u(at + 1, s.outer ?? 0).u(at + 2, s.inner ?? 0).u(at + 3, s.kBlock ?? 1).u(at + 4, s.perKBlock ?? 0).u(at + 5, s.perK ?? 0).u(at + 6, s.perMN ?? 0);
    };
    scale(23, scaleA);
    scale(30, scaleB);
    return this.step('gemm', p, { 1: a.array, 2: b.array, 3: c.array, 4: (scaleA ?? scaleB)?.array ?? this.dummy }, [Math.ceil(n / this.gemmTile), Math.ceil(m / this.gemmTile), batch]);
  }

  private choleskyParams(n: number, j0: number, w: number, flags: number): ParamWords {
    return new ParamWords(CHOLESKY_PARAM_WORDS).u(0, n).u(1, j0).u(2, w).u(3, flags);
  }

  /**
   * Factors `count` symmetric positive definite n × n matrices (lower triangles read, at the start
   * of `matrices`, n² apart) in place: L below the diagonal blocks, L_jj⁻¹ of each panel into
   * `inverses` (count · ⌈n / PANEL⌉ · PANEL² values).
   */
  cholesky(matrices: GpuArray, inverses: GpuArray, n: number, count: number): Step[] {
    const panels = Math.ceil(n / PANEL);
    if (count * n * n > matrices.length || count * panels * PANEL * PANEL > inverses.length) throw new RangeError('cholesky: matrices or inverses too small');
    const steps: Step[] = [];
    // C(r, c) = A(from + r, from + c) −= Σ_{t < width} L(from + r, k0 + t) L(from + c, k0 + t), lower part.
    const update = (from: number, rows: number, cols: number, k0: number, width: number): Step => {
      const u = this.choleskyParams(n, k0, width, 1 | 2 | 4 | 8 | 16).u(8, rows).u(9, cols);
      u.u(12, from * n + from).u(13, n * n).u(14, n).u(15, 1);
      u.u(16, from * n + k0).u(17, n * n).u(18, n).u(19, 1);
      u.u(20, from * n + k0).u(21, n * n).u(22, n).u(23, 1);
      return this.step('update', u, { 1: matrices, 2: this.dummy }, [Math.ceil(cols / TILE), Math.ceil(rows / TILE), count]);
    };
    // Panels in groups: each panel updates only the rest of its group's columns, and the columns
    // past the group take one update of the whole group's width (up to PANEL · PANEL_GROUP deep),
    // so the trailing matrix is read and written once per group instead of once per panel.
    for (let g0 = 0; g0 < panels; g0 += PANEL_GROUP) {
      const groupEnd = Math.min(n, (g0 + PANEL_GROUP) * PANEL);
      for (let panel = g0; panel < Math.min(panels, g0 + PANEL_GROUP); panel++) {
        const j0 = panel * PANEL;
        const w = Math.min(PANEL, n - j0);
        const t0 = j0 + w;
        const p = this.choleskyParams(n, j0, w, 0).u(5, n * n).u(6, panel * PANEL * PANEL).u(7, panels * PANEL * PANEL);
        steps.push(this.step('panel', p, { 1: matrices, 3: inverses }, [Math.max(1, Math.ceil((n - t0) / 256)), count, 1]));
        if (groupEnd > t0) steps.push(update(t0, n - t0, groupEnd - t0, j0, w));
      }
      if (n > groupEnd) steps.push(update(groupEnd, n - groupEnd, n - groupEnd, g0 * PANEL, groupEnd - g0 * PANEL));
    }
    return steps;
  }

  /**
   * Solves L Lᵀ X = Y for the factored matrices (after `cholesky`), Y overwritten by X (or by
   * L⁻¹ Y with `forwardOnly`): `cols` right-hand sides, matrix z's Y at rhs.off + z · rhs.inner,
   * element (row, col) + row · rhs.row + col · rhs.col.
   */
  solve(matrices: GpuArray, inverses: GpuArray, n: number, count: number, rhs: View, cols: number, options: { forwardOnly?: boolean } = {}): Step[] {
    const panels = Math.ceil(n / PANEL);
    const steps: Step[] = [];
    const y = rhs.off ?? 0;
    const batch = rhs.inner ?? 0;
    const diag = (panel: number, transposed: boolean) => {
      const j0 = panel * PANEL;
      const w = Math.min(PANEL, n - j0);
      const p = this.choleskyParams(n, j0, w, transposed ? 32 : 0).u(6, panel * PANEL * PANEL).u(7, panels * PANEL * PANEL).u(9, cols);
      p.u(12, y).u(13, batch).u(14, rhs.row).u(15, rhs.col);
      return this.step('diag_solve', p, { 1: rhs.array, 3: inverses }, [Math.ceil(cols / 256), count, 1]);
    };
    // Y's panel rows j0 .. j0 + w as Q(c, t) = Y(j0 + t, c).
    const qAlongT = Math.abs(rhs.row) <= Math.abs(rhs.col) ? 16 : 0;
    for (let panel = 0; panel < panels; panel++) {
      steps.push(diag(panel, false));
      const j0 = panel * PANEL;
      const w = Math.min(PANEL, n - j0);
      const t0 = j0 + w;
      if (t0 === n) continue;
      // Y(t0 + r, c) −= L(t0 + r, j0 + t) Y(j0 + t, c).
      const p = this.choleskyParams(n, j0, w, 4 | 8 | qAlongT).u(8, n - t0).u(9, cols);
      p.u(12, y + t0 * rhs.row).u(13, batch).u(14, rhs.row).u(15, rhs.col);
      p.u(16, t0 * n + j0).u(17, n * n).u(18, n).u(19, 1);
      p.u(20, y + j0 * rhs.row).u(21, batch).u(22, rhs.col).u(23, rhs.row);
      steps.push(this.step('update', p, { 1: rhs.array, 2: matrices }, [Math.ceil(cols / TILE), Math.ceil((n - t0) / TILE), count]));
    }
    for (let panel = options.forwardOnly ? -1 : panels - 1; panel >= 0; panel--) {
      steps.push(diag(panel, true));
      const j0 = panel * PANEL;
      const w = Math.min(PANEL, n - j0);
      if (j0 === 0) continue;
      // Y(r, c) −= L(j0 + t, r) Y(j0 + t, c) for r < j0.
      const p = this.choleskyParams(n, j0, w, 4 | qAlongT).u(8, j0).u(9, cols);
      p.u(12, y).u(13, batch).u(14, rhs.row).u(15, rhs.col);
      p.u(16, j0 * n).u(17, n * n).u(18, 1).u(19, n);
      p.u(20, y + j0 * rhs.row).u(21, batch).u(22, rhs.col).u(23, rhs.row);
      steps.push(this.step('update', p, { 1: rhs.array, 2: matrices }, [Math.ceil(cols / TILE), Math.ceil(j0 / TILE), count]));
    }
    return steps;
  }

  private miscParams(): ParamWords {
    return new ParamWords(MISC_PARAM_WORDS).u(5, 1);
  }

  /**
   * stats[slot] = Σ x², over x[off .. off + count), stats[slot + 1] = factor · √ of it; `record`
   * also stores it in the history at the current iteration. `partials`: SUM_WORKGROUPS values.
   */
  sumSquares(x: GpuArray, count: number, partials: GpuArray, stats: GpuArray, options: { slot: number; factor?: number; record?: boolean; off?: number }): Step[] {
    const groups = Math.min(SUM_WORKGROUPS, Math.max(1, Math.ceil(count / 256)));
    const first = this.miscParams().u(0, count).u(8, options.off ?? 0);
    const second = this.miscParams().u(0, groups).u(1, options.slot).f(2, options.factor ?? 0).u(3, options.record ? 1 : 0);
    return [
      this.step('sum_squares', first, { 1: x, 3: partials }, [groups, 1, 1]),
      this.step('finish', second, { 1: partials, 4: stats }, [1, 1, 1]),
    ];
  }

  /** A buffer for `sumSquares`' partial sums. */
  partials(): GpuArray {
    return this.zeros(SUM_WORKGROUPS);
  }

  /** stats' iteration + 1 and its step size 1 − iteration / iterations. */
  advance(stats: GpuArray, iterations: number): Step {
    return this.step('advance', this.miscParams().f(2, iterations), { 4: stats }, [1, 1, 1]);
  }

  /**
   * Gram matrices (linalg_misc.wgsl gram) into out: `count` of r × r. Mode 0 copies x's; 1 and 2
   * are BLAST's U and V steps (x: the other factor's b Gram matrices, y: the couplings s); 3 the
   * couplings' (x[⌊z / b⌋] ∘ y[z mod b]). The diagonal becomes diagScale · d + epsFactor · stats[epsSlot].
   */
  gram(mode: 0 | 1 | 2 | 3, out: GpuArray, x: GpuArray, y: GpuArray, stats: GpuArray, options: { r: number; count: number; blocks?: number; xOff?: number; xBatch?: number; yOff?: number; yBatch?: number; outOff?: number; diagScale?: number; epsSlot?: number; epsFactor?: number }): Step {
    const { r } = options;
    const p = this.miscParams().u(3, mode).u(4, r).u(5, options.blocks ?? 1).f(7, options.diagScale ?? 1)
      .u(8, options.xOff ?? 0).u(9, options.xBatch ?? r * r).u(10, options.yOff ?? 0).u(11, options.yBatch ?? r * r)
      .u(12, options.outOff ?? 0).u(13, r * r).u(14, options.epsSlot ?? STATS.epsilon).f(15, options.epsFactor ?? 0);
    return this.step('gram', p, { 1: x, 2: y === x ? this.dummy : y, 3: out, 4: stats }, [Math.ceil((r * r) / 256), options.count, 1]);
  }

  /** out[outOff + e] += factor · stats[slot] · x[xOff + e] for e < count. */
  axpy(out: GpuArray, x: GpuArray, stats: GpuArray, count: number, options: { slot?: number; factor?: number; xOff?: number; outOff?: number } = {}): Step {
    const p = this.miscParams().u(0, count).u(1, options.slot ?? STATS.step).f(2, options.factor ?? 1).u(8, options.xOff ?? 0).u(12, options.outOff ?? 0);
    return this.step('axpy', p, { 1: x, 3: out, 4: stats }, [Math.min(SUM_WORKGROUPS, Math.max(1, Math.ceil(count / 256))), 1, 1]);
  }

  /**
   * out[outOff + z · r + k] = Σ_{q < count} x[xOff + z · xBatch + k · xRow + q] · y[yOff + (z mod blocks) · yBatch + k · yRow + q]
   * for k < r, z < batch.
   */
  diagDot(out: GpuArray, x: GpuArray, y: GpuArray, options: { r: number; batch: number; count: number; blocks?: number; xOff?: number; xBatch: number; xRow: number; yOff?: number; yBatch: number; yRow: number; outOff?: number }): Step {
    const p = this.miscParams().u(0, options.count).u(4, options.r).u(5, options.blocks ?? options.batch).u(6, options.xRow)
      .u(8, options.xOff ?? 0).u(9, options.xBatch).u(10, options.yOff ?? 0).u(11, options.yBatch).u(12, options.outOff ?? 0).u(16, options.yRow);
    return this.step('diag_dot', p, { 1: x, 2: y, 3: out }, [options.r, options.batch, 1]);
  }

  /**
   * The rounds of one sweep of one-sided Jacobi on the rows of x (rows × cols), rotating the rows
   * of y (rows × yCols) alike (linalg_misc.wgsl jacobi_round), for `batch` such pairs stored one
   * after another. Repeat sweeps until x's rows are orthogonal.
   */
  jacobiSweep(x: GpuArray, y: GpuArray, rows: number, cols: number, yCols: number, batch = 1): Step[] {
    const even = rows + (rows % 2);
    return Array.from({ length: even - 1 }, (_, round) =>
      this.step('jacobi_round', this.miscParams().u(0, cols).u(1, round).u(4, rows).u(6, yCols), { 2: y, 3: x }, [even / 2, batch, 1]));
  }

  /**
   * Balances U (rows × r) and V (r × cols) component by component (equal norms, product
   * unchanged), for `batch` such pairs stored one after another.
   */
  balance(u: GpuArray, v: GpuArray, rows: number, r: number, cols: number, batch = 1): Step {
    const p = this.miscParams().u(0, rows).u(4, r).u(6, cols);
    return this.step('balance', p, { 2: v, 3: u }, [r, batch, 1]);
  }
}
