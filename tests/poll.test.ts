import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { GAP_MS, installPollThrottle, PollThrottle, SLEEP_MS, SPIN_MS, throttleNativeCallbacks } from '../kernels/webgpu/poll.ts';

describe('PollThrottle', () => {
  it('spins for the start of a wait, then sleeps before each poll', () => {
    const t = new PollThrottle();
    const spun = [0, SPIN_MS * 0.5, SPIN_MS * 0.9].map((at) => t.delayBefore(10 + at));
    expect(spun).toEqual([0, 0, 0]);
    expect(t.delayBefore(10 + SPIN_MS * 1.1)).toBe(SLEEP_MS);
    expect(t.delayBefore(10 + SPIN_MS * 1.1 + GAP_MS * 0.9)).toBe(SLEEP_MS);
  });

  it('starts a new wait after a pause in polling longer than GAP_MS', () => {
    const t = new PollThrottle();
    for (let at = 0; at < 1; at += 0.05) t.delayBefore(at);
    expect(t.delayBefore(0.95 + GAP_MS * 0.5)).toBe(SLEEP_MS);
    const restart = 0.95 + GAP_MS * 0.5 + GAP_MS * 1.5;
    expect(t.delayBefore(restart)).toBe(0);
    expect(t.delayBefore(restart + SPIN_MS * 1.5)).toBe(SLEEP_MS);
  });
});

describe('throttleNativeCallbacks', () => {
  /** A fake clock and scheduler: what was scheduled, and every sleep. */
  function harness() {
    let clock = 0;
    const sleeps: number[] = [];
    const queue: (() => void)[] = [];
    const schedule = ((callback: (...args: unknown[]) => void, ...args: unknown[]) => {
      queue.push(() => callback(...args));
      return {} as NodeJS.Immediate;
    }) as typeof setImmediate;
    const wrapped = throttleNativeCallbacks(schedule, new PollThrottle(), (ms) => sleeps.push(ms), () => clock);
    const runAll = () => queue.splice(0).forEach((run) => run());
    return { wrapped, sleeps, runAll, advance: (ms: number) => (clock += ms) };
  }

  it('never delays a JavaScript callback, and passes its arguments', () => {
    const h = harness();
    const seen: unknown[][] = [];
    for (let i = 0; i < 50; i++) {
      h.wrapped((a: number, b: string) => seen.push([a, b]), i, 'x');
      h.advance(0.01);
    }
    h.runAll();
    expect(seen).toHaveLength(50);
    expect(seen[49]).toEqual([49, 'x']);
    expect(h.sleeps).toEqual([]);
  });

  it('lets a native callback sleep SLEEP_MS once a wait has lasted SPIN_MS, and still runs it with its arguments', () => {
    const h = harness();
    const seen: number[] = [];
    const poll = ((n: number) => seen.push(n)).bind(null); // a bound function prints as native code
    for (let i = 0; i < 30; i++) {
      h.wrapped(poll, i);
      h.advance(0.01);
    }
    h.runAll();
    expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => i));
    const spinning = Math.ceil(SPIN_MS / 0.01);
    expect(h.sleeps.length).toBeGreaterThanOrEqual(30 - spinning - 1);
    expect(h.sleeps.length).toBeLessThanOrEqual(30 - spinning + 1);
    expect(new Set(h.sleeps)).toEqual(new Set([SLEEP_MS]));
  });
});

describe('installPollThrottle', () => {
  it('wraps setImmediate once, keeping what Node hangs on it', async () => {
    const before = globalThis.setImmediate;
    installPollThrottle();
    const wrapped = globalThis.setImmediate;
    installPollThrottle();
    try {
      expect(globalThis.setImmediate).toBe(wrapped);
      expect(wrapped).not.toBe(before);
      expect(await promisify(setImmediate)('value')).toBe('value');
      const order: string[] = [];
      await new Promise<void>((resolve) => {
        setImmediate((tag: string) => order.push(tag), 'first');
        const cancelled = setImmediate(() => order.push('cancelled'));
        clearImmediate(cancelled);
        setImmediate(((tag: string) => {
          order.push(tag);
          resolve();
        }).bind(null), 'native');
      });
      expect(order).toEqual(['first', 'native']);
    } finally {
      globalThis.setImmediate = before;
    }
  });
});
