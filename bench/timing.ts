// Timing a recorded GPU operation from the host, for the benchmarks.

/** Wall time per call of `record` (which records one operation), over enough calls for ≥ 20 ms: the median of five. */
export async function timePerCallUs(record: () => void, sync: () => Promise<unknown>): Promise<number> {
  record();
  await sync();
  let calls = 4;
  for (;;) {
    const start = performance.now();
    for (let i = 0; i < calls; i++) record();
    await sync();
    const ms = performance.now() - start;
    if (ms >= 20 || calls >= 4096) {
      const samples: number[] = [];
      for (let repeat = 0; repeat < 5; repeat++) {
        const t0 = performance.now();
        for (let i = 0; i < calls; i++) record();
        await sync();
        samples.push(((performance.now() - t0) * 1000) / calls);
      }
      samples.sort((a, b) => a - b);
      return samples[2];
    }
    calls *= 4;
  }
}
