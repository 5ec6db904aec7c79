// The block low-rank decode projection (wgsl/block_gemv.wgsl, steps 1–2 of Monarch and BLAST) at
// Llama-2-7B's shapes as a model dispatches them (4096 inputs, 16 blocks: q alone, q|k|v and
// gate|up stacked with the RMSNorm inside, down at 11008 inputs), one token, in variants of its
// workgroup shape, each timed as 64 dispatches back to back in one compute pass (GPU timestamps
// around the pass; factor copies used in turn, more than L2 together, each with its own coupling),
// so the per-dispatch cost shows without the per-pass overhead of `--profile` modes. Values are
// arbitrary (timing only). Prints µs per call and GB/s of factor read.
//
//   npx tsx bench/blr-project-sweep.ts [--base FILE]   (--base: another block_gemv.wgsl, timed first as "base")
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { openGpu } from '../kernels/webgpu/gpu.ts';
import { wgsl } from '../kernels/webgpu/wgsl_source.ts';

const { values: opts } = parseArgs({ options: { base: { type: 'string' } } });
const gpu = await openGpu({ allowSoftware: true });
const device = gpu.device;
const CALLS = 64;
const mk = (bytes: number) => device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
const fill = (buf: GPUBuffer, n: number) => { const a = new Uint32Array(n); for (let k = 0; k < n; k++) a[k] = 0x3c003c00 ^ (k * 2654435761 & 0x03ff03ff); device.queue.writeBuffer(buf, 0, a); };
const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
const resolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });

/** µs per call, the median of five passes of CALLS dispatches (bind groups, one per factor copy, in turn). */
async function timeCalls(pipeline: GPUComputePipeline, bindGroups: GPUBindGroup[], groups: number): Promise<number> {
  const results: number[] = [];
  for (let rep = 0; rep < 5; rep++) {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
    pass.setPipeline(pipeline);
    for (let k = 0; k < CALLS; k++) { pass.setBindGroup(0, bindGroups[k % bindGroups.length]); pass.dispatchWorkgroups(groups, 1); }
    pass.end();
    enc.resolveQuerySet(qs, 0, 2, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    results.push(Number(t[1] - t[0]) / 1000 / CALLS);
  }
  return results.sort((a, c) => a - c)[2];
}

interface Shape { label: string; i: number; r: number; b: number; layers: number; normed: boolean }
const shapes: Shape[] = [
  { label: 'q', i: 4096, r: 1024, b: 16, layers: 1, normed: false },
  { label: 'q normed', i: 4096, r: 1024, b: 16, layers: 1, normed: true },
  { label: 'q|k|v', i: 4096, r: 1024, b: 16, layers: 3, normed: false },
  { label: 'q|k|v normed', i: 4096, r: 1024, b: 16, layers: 3, normed: true },
  { label: 'gate|up normed', i: 4096, r: 1488, b: 16, layers: 2, normed: true },
  { label: 'down', i: 11008, r: 1488, b: 16, layers: 1, normed: false },
];

interface Variant { label: string; source: string; channels: (b: number) => number; monarch?: boolean; constants: Record<string, number>; flags?: number }
const current = wgsl('block_gemv.wgsl');
const variants: Variant[] = [];
if (opts.base) variants.push({ label: 'base, 2 channels', source: readFileSync(opts.base, 'utf8'), channels: () => 2, constants: {} });
for (const channels of [2, 4]) variants.push({ label: `${channels} channels`, source: current, channels: () => channels, constants: {} });
variants.push({ label: '4 channels, x shared by a quad', source: current, channels: () => 4, constants: {}, flags: 4 });
variants.push({ label: 'monarch (no coupling), 32 rows', source: current, channels: () => 0, monarch: true, constants: {} });
variants.push({ label: 'monarch (no coupling), 32 rows, x shared by a quad', source: current, channels: () => 0, monarch: true, constants: {}, flags: 4 });

for (const shape of shapes) {
  const { i, r, b, layers } = shape;
  const width = i / b;
  const rowsW = b * r;
  const bytes = layers * rowsW * width * 2;
  const copies = Math.ceil(160e6 / bytes) + 1;
  const ws = Array.from({ length: copies }, () => { const w = mk(bytes); fill(w, bytes / 4); return w; });
  const ss = Array.from({ length: copies }, () => { const s = mk(layers * b * b * r * 4); device.queue.writeBuffer(s, 0, new Float32Array(layers * b * b * r).fill(0.25)); return s; });
  const x = mk(i * 4); device.queue.writeBuffer(x, 0, new Float32Array(i).fill(0.5));
  const z = mk(layers * b * r * 4);
  const norm = mk(i * 4); device.queue.writeBuffer(norm, 0, new Float32Array(i).fill(1));
  for (const v of variants) {
    const channels = v.channels(b);
    const groupRows = v.monarch ? 32 : channels * b;
    if (groupRows > 64 || (v.label.startsWith('base') && groupRows > 32)) continue;
    const groups = v.monarch ? Math.ceil(rowsW / groupRows) : Math.ceil(r / channels);
    const normed = shape.normed && !v.monarch;
    const module = device.createShaderModule({ code: v.source });
    const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
    if (errors.length) { console.log(v.label, 'compile error', errors.map((e) => e.message).join('; ')); continue; }
    const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main',
      constants: { BATCH: 1, ...(normed ? { NORMED: 1, NORM_SUBGROUPS: 64 } : {}), ...v.constants } } });
    const u = device.createBuffer({ size: 64, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    // params: rows, width, factor_rows, w_stride, rank, blocks, mode, flags, group_rows, channels,
    // per_block, x_stride, layer_groups, layer, norm_eps (0: the normed pipeline divides by rms(x) alone).
    device.queue.writeBuffer(u, 0, new Uint32Array([1, width, rowsW, width / 8, r, b, v.monarch ? 1 : 0, v.flags ?? 0, groupRows, channels, 0, i, groups, 0, 0, 0]));
    const bindGroups = ws.map((w, copy) => device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [
      { binding: 0, resource: { buffer: u } }, { binding: 1, resource: { buffer: x } }, { binding: 2, resource: { buffer: w } },
      { binding: 3, resource: { buffer: ss[copy] } }, { binding: 4, resource: { buffer: z } }, { binding: 5, resource: { buffer: norm } }] }));
    const us = await timeCalls(pipeline, bindGroups, layers * groups);
    console.log(`${shape.label} (${(bytes / 1e6).toFixed(1)} MB), ${v.label}${normed ? ', normed' : ''}: ${us.toFixed(2)} µs per call, ${(bytes / us / 1e3).toFixed(0)} GB/s`);
  }
  for (const buf of [...ws, ...ss, x, z, norm]) buf.destroy();
}

// Step 3 (the expansion) at the 7B q|k|v stacked shape (3 × 4096 outputs from rank 1024, 16 blocks
// a layer: z as 48 blocks), two ways: wgsl/block_gemv.wgsl mode 2 (32 rows a workgroup, four at a
// time), and the blocked pipeline of wgsl/gemv_subgroup.wgsl the models use (4 outputs a
// workgroup, K split over 4 subgroups).
{
  const [o, r, b] = [3 * 4096, 1024, 48];
  const bytes = o * r * 2;
  const copies = Math.ceil(160e6 / bytes) + 1;
  const ws = Array.from({ length: copies }, () => { const w = mk(bytes); fill(w, bytes / 4); return w; });
  const z = mk(b * r * 4); device.queue.writeBuffer(z, 0, new Float32Array(b * r).fill(0.5));
  const out = mk(o * 4), spare1 = mk(o * 4), spare2 = mk(o * 4), dummy = mk(o * 4);
  const runs: [string, string, Record<string, number>, number[], number, GPUBuffer[]][] = [
    ['block_gemv mode 2', current, {}, [1, r, o, r / 8, r, b, 2, 0, 32, 0, o / b, 0, o / 32, 0, 0, 0], o / 32, [z, dummy, dummy, out, dummy]],
    ['gemv_subgroup blocked (the models\' step 3)', wgsl('gemv_subgroup.wgsl', 'matmul_common'), { BLOCKED: 1, ROWS_PER_GROUP: 2 }, [1, r, o, r / 8, 0, o, 0, 0, o / b, b, 0, 0, 0, 0, 0, 0], o / 4, [z, dummy, dummy, out, spare1, spare2, dummy]],
  ];
  for (const [label, source, constants, params, groups, buffers] of runs) {
    const module = device.createShaderModule({ code: source });
    const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main', constants: { BATCH: 1, ...constants } } });
    const u = device.createBuffer({ size: 64, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(u, 0, new Uint32Array(params));
    const bindGroups = ws.map((w) => device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [
      { binding: 0, resource: { buffer: u } }, ...buffers.map((buffer, k) => ({ binding: k + 1, resource: { buffer: k === 1 ? w : buffer } }))] }));
    const us = await timeCalls(pipeline, bindGroups, groups);
    console.log(`expansion q|k|v (${(bytes / 1e6).toFixed(1)} MB), ${label}: ${us.toFixed(2)} µs per call, ${(bytes / us / 1e3).toFixed(0)} GB/s`);
  }
}
process.exit(0);
