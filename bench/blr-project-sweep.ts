// The block low-rank decode projection (wgsl/block_gemv.wgsl, steps 1–2 of Monarch and BLAST) at
// Llama-2-7B's q shape (4096 inputs, 16 blocks, rank 1024: 8 MB of f16 factor), one token, in
// variants of its workgroup shape, each timed as 64 dispatches back to back in one compute pass
// (GPU timestamps around the pass; factor copies used in turn, 64 MB, more than L2), so the
// per-dispatch cost shows without the per-pass overhead of `--profile` modes. Values are
// arbitrary (timing only). Prints µs per call and GB/s of factor read.
//
//   npx tsx bench/blr-project-sweep.ts
import { openGpu } from '../kernels/webgpu/gpu.ts';
import { wgsl } from '../kernels/webgpu/wgsl_source.ts';
const gpu = await openGpu({ allowSoftware: true });
const device = gpu.device;
const CALLS = 64, COPIES = 8;
const [i, r, b] = [4096, 1024, 16];
const width = i / b;
const rowsW = b * r;
const mk = (bytes: number, usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST) => device.createBuffer({ size: bytes, usage });
const fill = (buf: GPUBuffer, n: number) => { const a = new Uint32Array(n); for (let k = 0; k < n; k++) a[k] = 0x3c003c00 ^ (k * 2654435761 & 0x03ff03ff); device.queue.writeBuffer(buf, 0, a); };
const ws = Array.from({ length: COPIES }, () => { const w = mk(rowsW * width * 2); fill(w, rowsW * width / 2); return w; });
const x = mk(b * r * 4); device.queue.writeBuffer(x, 0, new Float32Array(b * r).fill(0.5));
// Couplings: one per factor copy, so that (as in a model, where every layer has its own) they come from memory, not L2.
const ss = Array.from({ length: COPIES }, () => { const s = mk(b * b * r * 4); device.queue.writeBuffer(s, 0, new Float32Array(b * b * r).fill(0.25)); return s; });
const z = mk(b * r * 4);
const norm = mk(i * 4); // the NORMED pipeline's norm weight
device.queue.writeBuffer(norm, 0, new Float32Array(i).fill(1));
const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
const resolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
async function time(label: string, source: string, params: number[], groups: number, constants: Record<string, number> = {}) {
  const module = device.createShaderModule({ code: source });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length) { console.log(label, 'compile error', errors.map((e) => e.message).join('; ')); return; }
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main', constants: { BATCH: 1, ...constants } } });
  const u = device.createBuffer({ size: 64, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(u, 0, new Uint32Array([...params, 0, 0, 0, 0].slice(0, 16)));
  const groupsB = ws.map((w, copy) => device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [
    { binding: 0, resource: { buffer: u } }, { binding: 1, resource: { buffer: x } }, { binding: 2, resource: { buffer: w } },
    { binding: 3, resource: { buffer: ss[copy] } }, { binding: 4, resource: { buffer: z } }, { binding: 5, resource: { buffer: norm } }] }));
  const results: number[] = [];
  for (let rep = 0; rep < 4; rep++) {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
    pass.setPipeline(pipeline);
    for (let k = 0; k < CALLS; k++) { pass.setBindGroup(0, groupsB[k % COPIES]); pass.dispatchWorkgroups(groups, 1); }
    pass.end();
    enc.resolveQuerySet(qs, 0, 2, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    results.push(Number(t[1] - t[0]) / 1000 / CALLS);
  }
  results.sort((a, c) => a - c);
  const bytes = rowsW * width * 2;
  console.log(`${label}: ${results[1].toFixed(2)} µs per call, ${(bytes / results[1] / 1e3).toFixed(0)} GB/s`);
}
const base = wgsl('block_gemv.wgsl');
const wStride = width / 8;
// params: rows, width, factor_rows, w_stride, rank, blocks, mode, flags, group_rows, channels,
// per_block, x_stride, then layer_groups (all of the grid: one layer), layer 0 and norm_eps.
// (norm_eps, the last word, is left 0: the normed pipeline then divides by rms(x) alone.)
const run = (label: string, source: string, params: number[], groups: number, constants: Record<string, number> = {}) => time(label, source, [...params, groups, 0], groups, constants);
for (const groupRows of [16, 32, 64]) {
  const src = base.replace('const MAX_GROUP_ROWS: u32 = 32u;', `const MAX_GROUP_ROWS: u32 = ${Math.max(32, groupRows)}u;`);
  await run(`monarch group ${groupRows}`, src, [1, width, rowsW, wStride, r, b, 1, 0, groupRows, 0, 0, i], Math.ceil(rowsW / groupRows));
}
for (const channels of [1, 2, 4]) {
  const src = base.replace('const MAX_GROUP_ROWS: u32 = 32u;', `const MAX_GROUP_ROWS: u32 = ${Math.max(32, channels * b)}u;`);
  await run(`blast channels ${channels}`, src, [1, width, rowsW, wStride, r, b, 0, 0, channels * b, channels, 0, i], Math.ceil(r / channels));
}
// BLAST with each channel's coupling contiguous (S stored (rank, b, b) instead of (b, b, rank)):
// a workgroup's coupling tile is then one run of memory instead of b² runs of `channels` floats.
const channelMajor = base.replace(
  `      let q = group * params.channels + t % params.channels;
      s_tile[t] = select(0.0, aux[s_layer + (t / params.channels) * params.rank + q], q < params.rank);`,
  `      let pairs = params.blocks * params.blocks;
      let q = group * params.channels + t / pairs;
      s_tile[(t % pairs) * params.channels + t / pairs] = select(0.0, aux[s_layer + q * pairs + t % pairs], q < params.rank);`);
if (channelMajor === base) throw new Error('the coupling load was not found');
for (const channels of [2, 4]) {
  const src = channelMajor.replace('const MAX_GROUP_ROWS: u32 = 32u;', `const MAX_GROUP_ROWS: u32 = ${Math.max(32, channels * b)}u;`);
  await run(`blast channels ${channels}, coupling channel-major`, src, [1, width, rowsW, wStride, r, b, 0, 0, channels * b, channels, 0, i], Math.ceil(r / channels));
}
// Smaller workgroups (Monarch's fastest shape below): 128 threads, 16 or 32 factor rows.
for (const [channels, label, source] of [[1, 'coupling as stored', base], [1, 'coupling channel-major', channelMajor], [2, 'coupling channel-major', channelMajor]] as const) {
  const src = source.replace('const WORKGROUP: u32 = 256u;', 'const WORKGROUP: u32 = 128u;');
  await run(`blast channels ${channels}, 128 threads, ${label}`, src, [1, width, rowsW, wStride, r, b, 0, 0, channels * b, channels, 0, i], Math.ceil(r / channels));
}
// BLAST with the RMSNorm of its input inside (the NORMED pipeline the model's q|k|v and gate|up use).
await run('blast channels 2, normed', base, [1, width, rowsW, wStride, r, b, 0, 0, 2 * b, 2, 0, i], r / 2, { NORMED: 1, NORM_SUBGROUPS: 64 });
// Without the emit (stores): what the loads and sums alone cost.
await run('monarch, no stores', base.replace('emit(layer, first + k, rows[k], n, b, total[k]);', 'if (total[k] == 12345.0) { emit(layer, first + k, rows[k], n, b, total[k]); }'), [1, width, rowsW, wStride, r, b, 1, 0, 32, 0, 0, i], rowsW / 32);
await run('monarch, 1 workgroup of 64 threads per 8 rows', base.replace('const WORKGROUP: u32 = 256u;', 'const WORKGROUP: u32 = 64u;'), [1, width, rowsW, wStride, r, b, 1, 0, 8, 0, 0, i], rowsW / 8);
await run('monarch, 128 threads per 16 rows', base.replace('const WORKGROUP: u32 = 256u;', 'const WORKGROUP: u32 = 128u;'), [1, width, rowsW, wStride, r, b, 1, 0, 16, 0, 0, i], rowsW / 16);
// The expansion layout for comparison: 4096 rows of 1024 halves (same bytes), mode 2 on block_gemv.
await run('expand via block_gemv (4096 × 1024)', base, [1, 1024, 4096, 128, 1024, b, 2, 0, 32, 0, 256, 0], 4096 / 32);
process.exit(0);
