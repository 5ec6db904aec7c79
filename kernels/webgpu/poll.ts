// How often Dawn's Node binding polls for finished GPU work while JavaScript waits on it.
//
// While a mapAsync or onSubmittedWorkDone promise is pending, the binding (AsyncRunner) calls the
// global setImmediate with a new native function on every turn of the event loop, each running
// Dawn's ProcessEvents. A decode step that waits ~2 ms for the GPU turns the loop a thousand times
// or more, and every one of those functions carries a finalizer, so V8 moves them to the old
// generation: a full mark-compact ran every ~0.4 s and held the thread for 12–26 ms, longer than
// the GPU's queued work, and the GPU sat idle for 26–58 ms each time (Llama-2-7B on an H200: 5–13%
// of its decode; bench/RESULTS.md, fifteenth session).
//
// installPollThrottle wraps the global setImmediate (the binding looks it up on every call). A
// native callback (the binding's poll) is scheduled as before for the first SPIN_MS of a wait, so a
// short wait ends as soon as it would have; later ones first sleep SLEEP_MS (Atomics.wait), so a
// long wait makes tens of polls instead of thousands. A wait ends when no native callback has come
// for GAP_MS (JavaScript ran meanwhile: a step being recorded). Every other callback passes through
// untouched. (A bound function prints as native code too, so one of those is paced alike while the
// binding polls: at most ~70 µs later.)

/** The first part of a wait polled at full speed (ms). */
export const SPIN_MS = 0.1;
/** What each later poll sleeps first (ms; Linux adds its timer slack, ~50 µs). */
export const SLEEP_MS = 0.02;
/** A pause in polling longer than this starts a new wait (ms). */
export const GAP_MS = 0.2;

/** When to sleep before a poll: the policy, apart from the clock, for tests. */
export class PollThrottle {
  private waitStart = -Infinity;
  private lastPoll = -Infinity;

  /** Milliseconds to sleep before a poll made at `now` (ms). */
  delayBefore(now: number): number {
    if (now - this.lastPoll > GAP_MS) this.waitStart = now;
    this.lastPoll = now;
    return now - this.waitStart < SPIN_MS ? 0 : SLEEP_MS;
  }
}

const INSTALLED = Symbol.for('blr.pollThrottle');
/** How V8 prints a native (or bound) function's body; a suffix test costs nothing for long sources. */
const NATIVE_BODY = '{ [native code] }';
const sleepCell = new Int32Array(new SharedArrayBuffer(4));
/** Blocks the thread for `ms` milliseconds. */
function blockFor(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

/**
 * `schedule` (a setImmediate) with native callbacks throttled: each is scheduled as a callback that
 * first sleeps for what `throttle` says, then runs it. Other callbacks go to `schedule` as they are.
 */
export function throttleNativeCallbacks(schedule: typeof setImmediate, throttle = new PollThrottle(), sleep: (ms: number) => void = blockFor, now = () => performance.now()): typeof setImmediate {
  const wrapped = function setImmediate<A extends unknown[]>(callback: (...args: A) => void, ...args: A): NodeJS.Immediate {
    if (typeof callback !== 'function' || !Function.prototype.toString.call(callback).endsWith(NATIVE_BODY)) return schedule(callback, ...args);
    const delay = throttle.delayBefore(now());
    if (delay === 0) return schedule(callback, ...args);
    return schedule(() => {
      sleep(delay);
      callback(...args);
    });
  };
  // Node's own properties (util.promisify's custom form) stay on it.
  Object.defineProperties(wrapped, Object.getOwnPropertyDescriptors(schedule));
  return wrapped as typeof setImmediate;
}

/** Wraps globalThis.setImmediate once per process (see the top of this file). */
export function installPollThrottle(): void {
  const current = globalThis.setImmediate as typeof setImmediate & { [INSTALLED]?: true };
  if (current[INSTALLED]) return;
  const wrapped = throttleNativeCallbacks(current);
  Object.defineProperty(wrapped, INSTALLED, { value: true });
  globalThis.setImmediate = wrapped;
}
