// How fast WGSL can read memory, against the copy ceiling the other benchmarks use: a decode step
// only reads its weights (a GEMV writes a few KB), so the copy's read + write rate may sit below
// what a read-only stream reaches.
//
// Each variant reads `--mb` MiB a dispatch (`--buffers` buffers in turn, 4 unless told, so nothing stays in the L2; a chain of
// `--dispatches` in one pass, each behind a barrier as a decode step's are, since each can write) with
// 16-byte loads and folds them into one word, stored only if it equals a constant (which it almost
// never does; the store keeps the loads live). Variants:
//   - stride U: a grid-stride loop over the buffer, U loads issued before any is used
//     (i, i + T, … i + (U − 1)·T for T threads in the grid), `--groups` workgroups of 256;
//   - rows R×U: the GEMV's access pattern: each group of 32 invocations takes R whole rows of
//     `--row` bytes in turn, reading 512 contiguous bytes a load, U loads issued at once.
// The buffers hold zeros (as made): bench/gemm-ablate.ts found zero-filled and random buffers
// within ~5% on the H200. The copy kernel of bench/copy-ceiling.ts runs in the same process (its
// GB/s count reads and writes).
//
// `--buffers` many more than 4 spreads the reads over gigabytes, as a decode step's weights are (13.5 GB
// for Llama-2-7B), where 4 buffers of 32 MiB stay within 128 MiB: whether the footprint alone (address
// translation) slows a read. `--variants REGEX` keeps the variants whose names match.
//
//   npx tsx bench/read-ceiling.ts [--mb 256] [--dispatches 64] [--buffers 4] [--groups 1056,2112,4224,8448] [--row 8192]
//                                 [--variants REGEX] [--rounds 5] [--out FILE]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openGpu } from '../kernels/webgpu/gpu.ts';
import { copyCeilingGBs } from './copy-ceiling.ts';
import { medianPassUs, type PassDispatch } from './timing.ts';

const { values } = parseArgs({ options: {
  mb: { type: 'string', default: '256' }, dispatches: { type: 'string', default: '64' }, groups: { type: 'string', default: '1056,2112,4224,8448' },
  row: { type: 'string', default: '8192' }, rounds: { type: 'string', default: '5' }, buffers: { type: 'string', default: '4' },
  variants: { type: 'string', default: '' },
  out: { type: 'string', default: 'bench/out/read-ceiling.json' },
}, strict: true });
const gpu = await openGpu({ allowSoftware: true });
const device = gpu.device;
console.log(`device: ${gpu.description}`);
const bytes = Math.min(Number(values.mb) * 2 ** 20, device.limits.maxStorageBufferBindingSize & ~0xffff);
const rowBytes = Number(values.row);
if (!(rowBytes >= 512 && rowBytes % 16 === 0)) throw new Error(`--row takes bytes a row, a multiple of 16 from 512; got ${values.row}`);
const rounds = Number(values.rounds);
const bufferCount = Number(values.buffers);
if (!(Number.isInteger(bufferCount) && bufferCount >= 1)) throw new Error(`--buffers takes a count of buffers from 1; got ${values.buffers}`);
const variantFilter = new RegExp(values.variants);
const buffers = Array.from({ length: bufferCount }, () => device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE }));
const sink = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });

const header = `
@group(0) @binding(0) var<storage, read> a: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> sink: array<u32>;
fn fold(v: vec4<u32>) -> u32 { return v.x ^ v.y ^ v.z ^ v.w; }
fn keep(acc: u32) { if (acc == 0x9e3779b9u) { sink[0] = acc; } }`;

// U loads a thread in flight, grid-stride.
const strideSource = (unroll: number) => `${header}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let threads = n.x * 256u;
  let count = arrayLength(&a);
  var acc = 0u;
  var i = g.x;
  for (; i + ${unroll - 1}u * threads < count; i += ${unroll}u * threads) {
    ${Array.from({ length: unroll }, (_, u) => `let v${u} = a[i + ${u}u * threads];`).join('\n    ')}
    acc ^= ${Array.from({ length: unroll }, (_, u) => `fold(v${u})`).join(' ^ ')};
  }
  for (; i < count; i += threads) { acc ^= fold(a[i]); }
  keep(acc);
}`;

// The GEMV's pattern: a workgroup of 8 groups of 32 invocations (a subgroup on NVIDIA); each takes
// R rows (one after another within the workgroup's block of 8·R rows) and reads each row 16 bytes an
// invocation, U loads in flight.
const rowsSource = (rows: number, unroll: number) => `${header}
const ROW_WORDS: u32 = ${rowBytes / 16}u;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let subgroup = lid / 32u;
  let lane = lid % 32u;
  var acc = 0u;
  for (var r = 0u; r < ${rows}u; r++) {
    let base = ((wid.x * 8u + subgroup) * ${rows}u + r) * ROW_WORDS;
    for (var c = lane; c < ROW_WORDS; c += ${32 * unroll}u) {
      ${Array.from({ length: unroll }, (_, u) => `let v${u} = a[base + min(c + ${32 * u}u, ROW_WORDS - 1u)];`).join('\n      ')}
      acc ^= ${Array.from({ length: unroll }, (_, u) => `fold(v${u})`).join(' ^ ')};
    }
  }
  keep(acc);
}`;

const layout = device.createBindGroupLayout({ entries: [
  { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
  { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
] });
const groupsFor = buffers.map((buffer) => device.createBindGroup({ layout, entries: [
  { binding: 0, resource: { buffer } }, { binding: 1, resource: { buffer: sink } },
] }));
const pipelineOf = (code: string) => device.createComputePipeline({
  layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
  compute: { module: device.createShaderModule({ code }), entryPoint: 'main' },
});

// Dispatches a pass: enough that the submit and the wait for the pass (~40 µs) spread thin.
const DISPATCHES = Number(values.dispatches);
/** µs a dispatch of `workgroups` workgroups of `kernel`, in a chain of DISPATCHES. */
async function usPerDispatch(kernel: GPUComputePipeline, workgroups: number): Promise<number> {
  const dispatches: PassDispatch[] = Array.from({ length: DISPATCHES }, (_, i) => ({ group: groupsFor[i % bufferCount], workgroups }));
  return (await medianPassUs(device, dispatches, kernel, rounds)) / DISPATCHES;
}

const copy = await copyCeilingGBs(device);
console.log(`copy ceiling (read + write): ${copy.toFixed(0)} GB/s; ${(bytes / 2 ** 20).toFixed(0)} MiB a dispatch, ${bufferCount} buffers in turn (${(bufferCount * bytes / 2 ** 30).toFixed(2)} GiB)`);
const results: { variant: string; workgroups: number; bytesRead: number; us: number; gbs: number }[] = [];
// `read`: the bytes a dispatch reads (the rows variants leave out rows past their last whole workgroup).
const report = (variant: string, workgroups: number, read: number, us: number) => {
  const rate = read / us / 1e3;
  results.push({ variant, workgroups, bytesRead: read, us, gbs: rate });
  console.log(`${variant.padEnd(14)} ${String(workgroups).padStart(6)} workgroups  ${us.toFixed(1).padStart(6)} µs a dispatch  ${rate.toFixed(0).padStart(5)} GB/s  ${(100 * rate / copy).toFixed(0)}% of copy`);
};
const groupCounts = values.groups.split(',').map(Number);
for (const unroll of [1, 2, 4, 8]) {
  if (!variantFilter.test(`stride ${unroll}`)) continue;
  const kernel = pipelineOf(strideSource(unroll));
  for (const workgroups of groupCounts) report(`stride ${unroll}`, workgroups, bytes, await usPerDispatch(kernel, workgroups));
}
const totalRows = bytes / rowBytes;
for (const rows of [1, 2, 4]) {
  for (const unroll of [1, 2, 4]) {
    if (rowBytes / 16 < 32 * unroll || !variantFilter.test(`rows ${rows}x${unroll}`)) continue;
    const workgroups = Math.floor(totalRows / (8 * rows));
    report(`rows ${rows}x${unroll}`, workgroups, workgroups * 8 * rows * rowBytes, await usPerDispatch(pipelineOf(rowsSource(rows, unroll)), workgroups));
  }
}
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ device: gpu.description, date: new Date().toISOString(), mibPerDispatch: bytes / 2 ** 20, buffers: bufferCount, dispatchesPerPass: DISPATCHES, rowBytes, copyGBs: copy, results }, null, 2));
console.log(`wrote ${values.out}`);
gpu.device.destroy();
