// Full JS collections at a steady pace while a long-running engine is busy on WebGPU.
//
// Every step leaves a command encoder, a compute pass and a command buffer behind: JS wrappers of
// Dawn objects that hold native memory V8 does not count (recorded commands, per-dispatch resource
// usage lists, ~0.5 KB a dispatch). The wrappers outlive young-generation collections, so only a
// full collection frees them, and V8, seeing a small JS heap barely grow, runs one rarely.
// Measured on an H200 serving Llama-3.2-1B to 32 streams (bench/RESULTS.md, Serving): the main
// thread's malloc heap held up to ~170 MB more between V8's own full collections, and glibc kept
// those pages resident after the load. A full collection every half second of busy time kept that
// within ~20 MB and resident memory came back to its baseline, but a collection walks the whole JS
// heap (30-70 ms with a Llama 3 tokenizer in it), so the pace adapts: no more often than every
// MIN_EVERY_MS, and no more than MAX_SHARE of the time.
import v8 from 'node:v8';
import vm from 'node:vm';

export const MIN_EVERY_MS = 250;
export const MAX_SHARE = 0.05;
/** How long the engine stays idle after work before what the work left is collected (a request that comes sooner does not wait for a collection). */
export const IDLE_DELAY_MS = 1000;

/**
 * The full-collection function: node --expose-gc's, or one obtained by turning the flag on for a
 * moment (V8 installs `gc` in contexts made while it is on). Null where neither works.
 */
export function fullCollection(): (() => void) | null {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return () => exposed();
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as unknown;
    v8.setFlagsFromString('--no-expose-gc');
    // Node 20's gc() takes no options: any argument makes it a young-generation collection.
    return typeof gc === 'function' ? () => (gc as () => void)() : null;
  } catch {
    return null;
  }
}

export interface CollectorOptions {
  /** Called after the collection that follows idleness (the native helper's malloc_trim): hands what the work freed back to the system. */
  release?: (() => unknown) | null;
  minEveryMs?: number;
  maxShare?: number;
  idleDelayMs?: number;
}

export class BusyCollector {
  /** Collections run, the time they took, and releases after idleness, for benchmarks and /metrics. */
  readonly stats = { collections: 0, ms: 0, releases: 0 };
  private busySince: number | undefined;
  private everyMs: number;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly release: (() => unknown) | null;
  private readonly minEveryMs: number;
  private readonly maxShare: number;
  private readonly idleDelayMs: number;

  constructor(private readonly collect: (() => void) | null, options: CollectorOptions = {}) {
    this.release = options.release ?? null;
    this.minEveryMs = options.minEveryMs ?? MIN_EVERY_MS;
    this.maxShare = options.maxShare ?? MAX_SHARE;
    this.idleDelayMs = options.idleDelayMs ?? IDLE_DELAY_MS;
    this.everyMs = this.minEveryMs;
  }

  /** After submitting work: collects when the engine has been busy long enough since the last collection. */
  busy(now = performance.now()): void {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    }
    if (this.busySince === undefined) this.busySince = now;
    else if (now - this.busySince >= this.everyMs) this.run(now);
  }

  /** The engine has nothing left to do: once it has stayed so for idleDelayMs, collect what the work left. */
  idle(): void {
    if (this.busySince === undefined || this.idleTimer || !this.collect) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      this.run(performance.now());
      this.busySince = undefined;
      if (this.release) {
        this.release();
        this.stats.releases++;
      }
    }, this.idleDelayMs);
    this.idleTimer.unref();
  }

  /** Drops a pending idle collection (the engine is shutting down). */
  stop(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  private run(now: number): void {
    let spent = 0;
    if (this.collect) {
      const start = performance.now();
      this.collect();
      spent = performance.now() - start;
      this.stats.collections++;
      this.stats.ms += spent;
      this.everyMs = Math.max(this.minEveryMs, spent / this.maxShare);
    }
    this.busySince = now + spent;
  }
}
