// Pieces bench/gemm-sweep.ts and bench/gemm-ablate.ts share: the tensor-core GEMM's parameters and
// buffers, and timing a pass of repeated dispatches from the host.

/** matmul_common.wgsl's Params (15 words), padded to 16 bytes; flags bits 8–15: the split count (gemm_combine.wgsl). */
const PARAM_BYTES = 64;

export function gemmParams(device: GPUDevice, rows: number, inFeatures: number, outFeatures: number, wStride: number, splits = 1): GPUBuffer {
  const buffer = device.createBuffer({ size: PARAM_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buffer, 0, Uint32Array.of(rows, inFeatures, outFeatures, wStride, splits << 8, outFeatures, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
  return buffer;
}

export function storageBuffer(device: GPUDevice, bytes: number): GPUBuffer {
  return device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
}

/**
 * µs per call of `record` (which records call i into the pass): `calls` calls in one pass and one
 * submit, after a warm-up; the median of `repeats` such runs.
 */
export async function timeCallsUs(device: GPUDevice, record: (pass: GPUComputePassEncoder, call: number) => void, calls: number, repeats: number): Promise<number> {
  const run = async (n: number) => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (let i = 0; i < n; i++) record(pass, i);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  await run(Math.min(calls, 4));
  const samples: number[] = [];
  for (let repeat = 0; repeat < repeats; repeat++) {
    const t0 = performance.now();
    await run(calls);
    samples.push(((performance.now() - t0) * 1000) / calls);
  }
  return samples.sort((a, b) => a - b)[Math.floor(repeats / 2)];
}

/** Runs what `record` puts in one pass, then reads `out` back as f32. */
export async function runAndRead(device: GPUDevice, record: (pass: GPUComputePassEncoder) => void, out: GPUBuffer): Promise<Float32Array> {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  record(pass);
  pass.end();
  const read = device.createBuffer({ size: out.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  encoder.copyBufferToBuffer(out, 0, read, 0, out.size);
  device.queue.submit([encoder.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const got = new Float32Array(read.getMappedRange().slice(0));
  read.unmap();
  read.destroy();
  return got;
}
