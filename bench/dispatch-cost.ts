// What a dispatch costs on its own: the fixed time each adds to a step, whether the next one
// depends on it (Dawn puts a barrier between them) or not. A decode step is ~260 dispatches
// (Llama-2-7B dense), so a few µs each is a large part of it.
//
// Each case records `calls` dispatches of a small kernel into one compute pass, submits once and
// waits; the cost per dispatch is (time for `calls` − time for 1) / (calls − 1), median of rounds.
//   - dependent: each dispatch reads what the one before wrote (ping-pong between two buffers).
//   - independent: each reads one shared input and writes its own buffer (Dawn still puts a barrier
//     before each: the buffer was written by the previous submit, and it tracks usage across them).
//   - read-only: a kernel with no writable binding (it stores nothing), so no barrier at all.
//   - dependent with the pipeline changed at every dispatch (a second pipeline of the same module,
//     or of a second module), as a decode step's kernels change from one dispatch to the next.
// For 1 workgroup (pure overhead) and for as many workgroups as the GPU has room for at once; and
// a stream of `--mb` MB through a copy kernel, in one dispatch against `--pieces` dependent ones.
//
//   npx tsx bench/dispatch-cost.ts [--calls 256] [--rounds 7] [--mb 32] [--pieces 4] [--out FILE]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openGpu } from '../kernels/webgpu/gpu.ts';
import { medianPassUs, type PassDispatch } from './timing.ts';

const { values } = parseArgs({ options: {
  calls: { type: 'string', default: '256' }, rounds: { type: 'string', default: '7' }, mb: { type: 'string', default: '32' },
  pieces: { type: 'string', default: '4' }, out: { type: 'string', default: 'bench/out/dispatch-cost.json' },
}, strict: true });
const calls = Number(values.calls);
const rounds = Number(values.rounds);
const gpu = await openGpu({ allowSoftware: true });
const device = gpu.device;
console.log(`device: ${gpu.description}`);

// The copy kernel; `added` changes its code (a second shader module, for the switching cases).
// `shared` > 0 gives it a workgroup array of that many vec4s, which it passes its values through.
const copySource = (added: number, shared = 0) => `
struct Params { count: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
${shared > 0 ? `var<workgroup> stage: array<vec4<f32>, ${shared}>;` : ''}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  for (var i = id.x; i < params.count; i += groups.x * 256u) {
    ${shared > 0 ? `stage[(lid * 7u) % ${shared}u] = src[i];
    dst[i] = stage[(lid * 7u) % ${shared}u] + vec4<f32>(${added.toFixed(1)});` : `dst[i] = src[i] + vec4<f32>(${added.toFixed(1)});`}
  }
}`;
const copyLayout = device.createBindGroupLayout({ entries: [
  { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
  { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
  { binding: 2, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
] });
const copyPipeline = (module: GPUShaderModule) => device.createComputePipeline({ layout: device.createPipelineLayout({ bindGroupLayouts: [copyLayout] }), compute: { module, entryPoint: 'main' } });
const module = device.createShaderModule({ code: copySource(1) });
const pipeline = copyPipeline(module);
// The same module in a second pipeline, and a second module: dispatches alternating between
// pipelines, as a decode step's do (its kernels differ from one dispatch to the next).
const samePipelineTwice = copyPipeline(module);
const otherPipeline = copyPipeline(device.createShaderModule({ code: copySource(2) }));
const sharedPipeline = copyPipeline(device.createShaderModule({ code: copySource(1, 2048) }));
const readOnlyModule = device.createShaderModule({ code: `
struct Params { count: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
var<workgroup> sink: vec4<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < params.count) {
    sink = src[id.x];
  }
}` });
const readOnly = device.createComputePipeline({ layout: 'auto', compute: { module: readOnlyModule, entryPoint: 'main' } });

function buffer(bytes: number, usage = GPUBufferUsage.STORAGE): GPUBuffer {
  return device.createBuffer({ size: Math.max(16, bytes), usage });
}
function params(count: number): GPUBuffer {
  const b = buffer(16, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
  device.queue.writeBuffer(b, 0, Uint32Array.of(count, 0, 0, 0));
  return b;
}
function bind(p: GPUBuffer, src: GPUBuffer, dst: GPUBuffer): GPUBindGroup {
  return device.createBindGroup({ layout: copyLayout, entries: [p, src, dst].map((b, binding) => ({ binding, resource: { buffer: b } })) });
}

/** Wall time (µs) of one submit of these dispatches: the median of `rounds`, after two to warm up. */
const time = (dispatches: PassDispatch[], kernel = pipeline) => medianPassUs(device, dispatches, kernel, rounds);

interface Row { case: string; workgroups: number; usPerDispatch: number }
const rows: Row[] = [];
const smallCount = 256; // vec4s per dispatch: one workgroup's worth
for (const workgroups of [1, 264]) {
  const count = smallCount * workgroups;
  const p = params(count);
  const a = buffer(count * 16);
  const b = buffer(count * 16);
  const dependent = Array.from({ length: calls }, (_, i) => ({ group: i % 2 ? bind(p, b, a) : bind(p, a, b), workgroups }));
  const outs = Array.from({ length: calls }, () => buffer(count * 16));
  const independent = outs.map((o) => ({ group: bind(p, a, o), workgroups }));
  const readOnlyGroup = device.createBindGroup({ layout: readOnly.getBindGroupLayout(0), entries: [p, a].map((b, binding) => ({ binding, resource: { buffer: b } })) });
  const reads = Array.from({ length: calls }, () => ({ group: readOnlyGroup, workgroups }));
  const alternating = (second: GPUComputePipeline) => dependent.map((d, i) => ({ ...d, kernel: i % 2 ? second : pipeline }));
  for (const [name, list, kernel] of [['dependent', dependent, pipeline], ['dependent, two pipelines of one module in turn', alternating(samePipelineTwice), pipeline],
    ['dependent, two modules in turn', alternating(otherPipeline), pipeline],
    ['dependent, a module with 32 KB of workgroup memory in turn', alternating(sharedPipeline), pipeline], ['independent', independent, pipeline], ['read-only', reads, readOnly]] as const) {
    const one = await time(list.slice(0, 1), kernel);
    const all = await time(list, kernel);
    rows.push({ case: name, workgroups, usPerDispatch: (all - one) / (calls - 1) });
  }
  for (const o of [p, a, b, ...outs]) o.destroy();
}

// Streaming: `mb` MB copied by one dispatch, and by `pieces` dependent dispatches of a share each.
const mb = Number(values.mb);
const pieces = Number(values.pieces);
const vectors = (mb * 1024 * 1024) / 16;
const workgroups = 1056;
const src = buffer(vectors * 16);
const dst = buffer(vectors * 16);
const whole = bind(params(vectors), src, dst);
const streamRows: { case: string; us: number; gbPerS: number }[] = [];
// Each list repeats its copies 16 times (alternating direction) so the time is mostly streaming.
const copies = 16;
const single = Array.from({ length: copies }, (_, i) => ({ group: i % 2 ? bind(params(vectors), dst, src) : whole, workgroups }));
const pieceSize = vectors / pieces;
const pieceBuffers = Array.from({ length: pieces + 1 }, () => buffer(pieceSize * 16));
const split = Array.from({ length: copies * pieces }, (_, i) => ({ group: bind(params(pieceSize), pieceBuffers[i % pieces], pieceBuffers[(i % pieces) + 1]), workgroups: workgroups / pieces }));
const bytes = 2 * vectors * 16 * copies;
const splitAlternating = (second: GPUComputePipeline) => split.map((d, i) => ({ ...d, kernel: i % 2 ? second : pipeline }));
for (const [name, list] of [['one dispatch', single], [`${pieces} dependent dispatches`, split],
  [`${pieces} dependent dispatches, two modules in turn`, splitAlternating(otherPipeline)],
  [`${pieces} dependent dispatches, a module with 32 KB of workgroup memory in turn`, splitAlternating(sharedPipeline)]] as const) {
  const us = await time(list);
  streamRows.push({ case: `${mb} MB ${name}`, us: us / copies, gbPerS: bytes / us / 1e3 });
}

console.log(`\n${calls} dispatches in one pass (µs each, beyond the first):`);
console.log('| case | workgroups | µs a dispatch |');
console.log('| --- | ---: | ---: |');
for (const r of rows) console.log(`| ${r.case} | ${r.workgroups} | ${r.usPerDispatch.toFixed(2)} |`);
console.log('\n| stream (read + write) | µs | GB/s |');
console.log('| --- | ---: | ---: |');
for (const r of streamRows) console.log(`| ${r.case} | ${r.us.toFixed(1)} | ${r.gbPerS.toFixed(0)} |`);
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), device: gpu.description, calls, rounds, rows, stream: streamRows }, null, 2) + '\n');
process.exit(0);
