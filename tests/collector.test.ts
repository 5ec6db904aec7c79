import { describe, expect, it } from 'vitest';
import { BusyCollector, fullCollection } from '../engine/collector.ts';
import { nativeMemory } from '../engine/native.ts';

describe('BusyCollector', () => {
  it('collects once per everyMs of busy time, and once the engine has stayed idle idleDelayMs after work', async () => {
    let runs = 0;
    const releases: number[] = [];
    const collector = new BusyCollector(() => runs++, { release: () => releases.push(runs), minEveryMs: 100, idleDelayMs: 20 });
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
    // Released once, after the collection that followed idleness.
    expect(releases).toEqual([2]);
    expect(collector.stats.releases).toBe(1);
  });

  it('does nothing without a collection function', () => {
    const collector = new BusyCollector(null, { minEveryMs: 1 });
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
    const collector = new BusyCollector(() => (clock += 40), { minEveryMs: 100, maxShare: 0.05 });
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

describe('native memory helper (engine/native/memory.c)', () => {
  it('hands the pages malloc freed back to the system: resident memory falls, what is in use stays', async ({ skip }) => {
    const helper = nativeMemory();
    // npm's postinstall builds it where there is a C compiler (.ci/run checks that it did).
    if (!helper) return skip();
    const gc = fullCollection()!;
    const mb = 2 ** 20;
    // 190 MB of 64 KB buffers from malloc's arena, one in 20 kept: the free ones cannot all come back from its top.
    let all: Buffer[] | null = [];
    const kept: Buffer[] = [];
    for (let i = 0; i < 3000; i++) {
      const buffer = Buffer.allocUnsafeSlow(64 * 1024).fill(i);
      all.push(buffer);
      if (i % 20 === 19) kept.push(buffer);
    }
    const allocated = helper.stats();
    all = null;
    // V8 frees the buffers' memory on a background thread after the collection that finds them dead.
    for (let attempt = 0; attempt < 100; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      gc();
      if (allocated && helper.stats()!.inUseBytes < allocated.inUseBytes - 150 * mb) break;
    }
    const freed = helper.stats();
    const before = process.memoryUsage.rss();
    expect(helper.trim()).toBe(true);
    const after = process.memoryUsage.rss();
    expect(before - after).toBeGreaterThan(100 * mb);
    if (freed) {
      expect(freed.freeBytes).toBeGreaterThan(150 * mb);
      expect(Math.abs(helper.stats()!.inUseBytes - freed.inUseBytes)).toBeLessThan(mb);
    }
    expect(kept.every((buffer, i) => buffer[0] === ((20 * i + 19) & 255))).toBe(true);
  });
});
