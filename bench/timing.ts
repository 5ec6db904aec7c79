// Timing a recorded GPU operation from the host, for the benchmarks.

/** The middle value of `samples` (the upper middle for an even count). */
export function median(samples: number[]): number {
  return [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)];
}

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

/** A dispatch of a benchmark's hand-recorded pass: its bind group, workgroups and (else the pass's) pipeline. */
export interface PassDispatch {
  group: GPUBindGroup;
  workgroups: number;
  kernel?: GPUComputePipeline;
}

/** Records `dispatches` into one compute pass, submits it and waits: wall µs from the submit. */
export async function runPass(device: GPUDevice, dispatches: PassDispatch[], kernel: GPUComputePipeline): Promise<number> {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  let current: GPUComputePipeline | undefined;
  for (const d of dispatches) {
    if ((d.kernel ?? kernel) !== current) {
      current = d.kernel ?? kernel;
      pass.setPipeline(current);
    }
    pass.setBindGroup(0, d.group);
    pass.dispatchWorkgroups(d.workgroups);
  }
  pass.end();
  const t0 = performance.now();
  device.queue.submit([encoder.finish()]);
  await device.queue.onSubmittedWorkDone();
  return (performance.now() - t0) * 1000;
}

/** The median of `rounds` runPass times, after two runs to warm up. */
export async function medianPassUs(device: GPUDevice, dispatches: PassDispatch[], kernel: GPUComputePipeline, rounds: number): Promise<number> {
  await runPass(device, dispatches, kernel);
  await runPass(device, dispatches, kernel);
  const samples: number[] = [];
  for (let i = 0; i < rounds; i++) samples.push(await runPass(device, dispatches, kernel));
  return samples.sort((a, b) => a - b)[Math.floor(rounds / 2)];
}
