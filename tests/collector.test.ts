import { describe, expect, it } from 'vitest';
import { BusyCollector, fullCollection } from '../engine/collector.ts';

describe('BusyCollector', () => {
  it('collects once per everyMs of busy time, and once the engine has stayed idle idleDelayMs after work', async () => {
    let runs = 0;
    const collector = new BusyCollector(() => runs++, 100, 0.05, 20);
    collector.idle(); // idle with no work since: nothing to collect
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(runs).toBe(0);
    collector.busy(0);
    collector.busy(50);
    expect(runs).toBe(0);
    collector.busy(120);
    expect(runs).toBe(1);
    collector.busy(130); // the interval restarts after a collection
    expect(runs).toBe(1);
    // Work that comes back within the delay cancels the idle collection.
    collector.idle();
    collector.busy(140);
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(runs).toBe(1);
    collector.idle();
    collector.idle();
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(runs).toBe(2);
    collector.idle(); // nothing new since
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(runs).toBe(2);
    expect(collector.stats.collections).toBe(2);
  });

  it('does nothing without a collection function', () => {
    const collector = new BusyCollector(null, 1);
    collector.busy(0);
    collector.busy(10);
    collector.idle();
    expect(collector.stats.collections).toBe(0);
  });

  it('obtains a full collection that frees unreachable objects, without --expose-gc leaking into globals', async () => {
    const gc = fullCollection();
    expect(gc).toBeTypeOf('function');
    let target: object | null = { payload: new Array(1000).fill(1) };
    const ref = new WeakRef(target);
    target = null;
    // WeakRef targets stay alive until the current job ends.
    await new Promise((resolve) => setTimeout(resolve, 0));
    gc!();
    expect(ref.deref()).toBeUndefined();
  });
});

describe('BusyCollector pace', () => {
  it('spaces collections so they take at most maxShare of the time', () => {
    let clock = 0;
    const realNow = performance.now.bind(performance);
    // A collection that takes 40 ms of (fake) time.
    const collector = new BusyCollector(() => (clock += 40), 100, 0.05);
    performance.now = () => clock;
    try {
      collector.busy();
      clock = 100;
      collector.busy();
      expect(collector.stats.collections).toBe(1);
      // 40 ms at 5% → one collection per 800 ms of busy time from now on.
      clock += 700;
      collector.busy();
      expect(collector.stats.collections).toBe(1);
      clock += 100;
      collector.busy();
      expect(collector.stats.collections).toBe(2);
      expect(collector.stats.ms).toBe(80);
    } finally {
      performance.now = realNow;
    }
  });
});
