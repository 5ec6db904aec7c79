// Timing a recorded GPU operation from the host, for the benchmarks.

/** Calls recorded between submits while timing: the GPU runs one batch while the next is recorded. */
const CALLS_PER_SUBMIT = 16;

/**
 * Wall time per call of `record` (which records one operation), over enough calls for ≥ 20 ms:
 * the median of five. `flush` (the backend's: submit without waiting) goes after every
 * CALLS_PER_SUBMIT calls, so recording overlaps execution as it does in a decode loop and the time
 * is the larger of the two, as PyTorch's asynchronous launches give it.
 */
export async function timePerCallUs(record: () => void, sync: () => Promise<unknown>, flush: () => void = () => {}): Promise<number> {
  const run = async (calls: number) => {
    for (let i = 0; i < calls; i++) {
      record();
      if (i % CALLS_PER_SUBMIT === CALLS_PER_SUBMIT - 1) flush();
    }
    await sync();
  };
  await run(1);
  let calls = 4;
  for (;;) {
    const start = performance.now();
    await run(calls);
    const ms = performance.now() - start;
    if (ms >= 20 || calls >= 4096) {
      const samples: number[] = [];
      for (let repeat = 0; repeat < 5; repeat++) {
        const t0 = performance.now();
        await run(calls);
        samples.push(((performance.now() - t0) * 1000) / calls);
      }
      samples.sort((a, b) => a - b);
      return samples[2];
    }
    calls *= 4;
  }
}
