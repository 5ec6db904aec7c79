// BLAST's decode projection (steps 1 + 2, one row of x) with each subgroup owning whole channels:
// a prototype against the shipped kernel (wgsl/block_gemv.wgsl mode 0).
//
// The shipped kernel gives a workgroup 4 channels of all b blocks (64 rows); its subgroups take
// quads of rows, the products y meet in workgroup memory, and after a barrier 64 threads apply the
// coupling. Here a subgroup takes C channels of every block (b · C rows): every y it needs for
// its channels' coupling ends in its own lanes (subgroupAdd), so there is no workgroup memory, no
// barrier, and (NORMED) the subgroup has read all of x, so its sum of squares is whole too. Lane
// a < b then makes z[a] = Σ_c S[a][c][q] · y_c for its channels (S read into registers first).
// Needs a subgroup of at least b lanes. The source is written out per (b, C): no arrays indexed in
// loops (those ran 3x slower in block_gemv.wgsl on an H200).
//
// Checked against float64 on the CPU (awkward rank, stacked layers, normed and not), then timed at
// Llama-2-7B's decode shapes: 64 dispatches a pass, factor copies in turn (more than the L2), wall
// time from the submit (bench/timing.ts medianPassUs).
//
//   npx tsx bench/blast-subgroup.ts [--channels 1,2,4] [--rounds 7]
import { parseArgs } from 'node:util';
import { openGpu } from '../kernels/webgpu/gpu.ts';
import { composeWgsl, wgsl } from '../kernels/webgpu/wgsl_source.ts';
import { halfToFloat } from '../weights/dtypes.ts';
import { medianPassUs, type PassDispatch, runPass } from './timing.ts';

const { values } = parseArgs({ options: {
  channels: { type: 'string', default: '1,2,4' }, rounds: { type: 'string', default: '7' },
  shapes: { type: 'string', default: 'q,q|k|v normed,gate|up normed,down' },
}, strict: true });
const gpu = await openGpu({ allowSoftware: true });
const device = gpu.device;
console.log(`device: ${gpu.description}`);
const rounds = Number(values.rounds);

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
// The prototype for b blocks, C channels a subgroup, normed or not.
function sourceFor(b: number, C: number, normed: boolean): string {
  const ch = range(C);
  const bl = range(b);
  return `
enable subgroups;
diagnostic(off, subgroup_uniformity);
struct Params { width: u32, rank: u32, w_stride: u32, factor_rows: u32, channels_total: u32, x_stride: u32, norm_eps: f32, pad: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> s: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> norm_weight: array<vec4<f32>>;
fn dot8(p: vec4<u32>, lo: vec4<f32>, hi: vec4<f32>) -> f32 {
  return dot(vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y)), lo) + dot(vec4<f32>(unpack2x16float(p.z), unpack2x16float(p.w)), hi);
}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) size: u32) {
  // Channels first .. first + ${C - 1} of one layer (the rank a multiple of ${C}).
  let first = (wid.x * (256u / size) + lid / size) * ${C}u;
  if (first >= params.channels_total) {
    return;
  }
  let layer = first / params.rank;
  let q = first - layer * params.rank;
  // Lane a's coupling values S[layer][a][c][q + j], read before the factor.
  let a = min(lane, ${b - 1}u);
  let s_base = (layer * ${b * b}u + a * ${b}u) * params.rank + q;
  ${bl.map((c) => ch.map((j) => `let s${c}_${j} = s[s_base + ${c}u * params.rank + ${j}u];`).join(' ')).join('\n  ')}
  let w_base = (layer * params.factor_rows + q) * params.w_stride;
  let block_step = params.rank * params.w_stride;
  let x_block = params.width / 4u;
  ${bl.map((c) => ch.map((j) => `var acc${c}_${j} = 0.0;`).join(' ')).join('\n  ')}
  var squares = 0.0;
  let chunks = params.width / 8u;
  for (var k = lane; k < chunks; k += size) {
    ${bl.map((c) => ch.map((j) => `let p${c}_${j} = w[w_base + ${c}u * block_step + ${j}u * params.w_stride + k];`).join(' ')).join('\n    ')}
    ${bl.map((c) => `{
      var lo = x[${c}u * x_block + 2u * k];
      var hi = x[${c}u * x_block + 2u * k + 1u];
      ${normed ? `squares += dot(lo, lo) + dot(hi, hi);
      lo *= norm_weight[${c}u * x_block + 2u * k];
      hi *= norm_weight[${c}u * x_block + 2u * k + 1u];` : ''}
      ${ch.map((j) => `acc${c}_${j} += dot8(p${c}_${j}, lo, hi);`).join(' ')}
    }`).join('\n    ')}
  }
  var scale = 1.0;
  ${normed ? 'scale = inverseSqrt(subgroupAdd(squares) / f32(params.x_stride) + params.norm_eps);' : ''}
  ${bl.map((c) => ch.map((j) => `let y${c}_${j} = subgroupAdd(acc${c}_${j});`).join(' ')).join('\n  ')}
  ${ch.map((j) => `var z${j} = 0.0;`).join(' ')}
  ${bl.map((c) => ch.map((j) => `z${j} += s${c}_${j} * y${c}_${j};`).join(' ')).join('\n  ')}
  if (lane < ${b}u) {
    let at = (layer * ${b}u + lane) * params.rank + q;
    ${ch.map((j) => `out[at + ${j}u] = z${j} * scale;`).join(' ')}
  }
  // Subgroups of fewer than ${b} lanes: the other output blocks, their coupling read here.
  for (var a2 = lane + size; a2 < ${b}u; a2 += size) {
    let base2 = (layer * ${b * b}u + a2 * ${b}u) * params.rank + q;
    ${ch.map((j) => `var u${j} = 0.0;`).join(' ')}
    ${bl.map((c) => ch.map((j) => `u${j} += s[base2 + ${c}u * params.rank + ${j}u] * y${c}_${j};`).join(' ')).join('\n    ')}
    let at2 = (layer * ${b}u + a2) * params.rank + q;
    ${ch.map((j) => `out[at2 + ${j}u] = u${j} * scale;`).join(' ')}
  }
}`;
}

const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const mk = (bytes: number) => device.createBuffer({ size: Math.max(16, bytes), usage: S });
function upload(data: ArrayBufferView): GPUBuffer {
  const b = mk(data.byteLength);
  device.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength);
  return b;
}
async function read(b: GPUBuffer, bytes: number): Promise<Float32Array> {
  const staging = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const e = device.createCommandEncoder();
  e.copyBufferToBuffer(b, 0, staging, 0, bytes);
  device.queue.submit([e.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return out;
}

// The shipped kernel, as the backend dispatches it for one row (BATCH 1, 4 channels, flags bit 2).
// One layout for both (binding 5, the norm weight, unused where not normed).
const layout = device.createPipelineLayout({ bindGroupLayouts: [device.createBindGroupLayout({ entries: [
  { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
  ...[1, 2, 3].map((binding) => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' as const } })),
  { binding: 4, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
  { binding: 5, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
] })] });
const shipped = (normed: boolean) => device.createComputePipeline({ layout, compute: {
  module: device.createShaderModule({ code: composeWgsl(['fn layer_norm_bias(index: u32) -> vec4<f32> {\n  return vec4<f32>(0.0);\n}', wgsl('block_gemv.wgsl')]) }), entryPoint: 'main',
  constants: { BATCH: 1, ...(normed ? { NORMED: 1, NORM_SUBGROUPS: 64 } : {}) } } });
const proto = (b: number, C: number, normed: boolean) => device.createComputePipeline({ layout, compute: {
  module: device.createShaderModule({ code: sourceFor(b, C, normed) }), entryPoint: 'main' } });

interface Case { i: number; r: number; b: number; layers: number; normed: boolean }
function uniformFor(kind: 'shipped' | 'proto', c: Case, C: number, eps: number): { buffer: GPUBuffer; groups: number } {
  const width = c.i / c.b;
  const u = device.createBuffer({ size: 64, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const words = new Uint32Array(16);
  const f = new Float32Array(words.buffer);
  let groups: number;
  if (kind === 'shipped') {
    const channels = 4;
    groups = Math.ceil(c.r / channels);
    // rows, width, factor_rows, w_stride, rank, blocks, mode, flags, group_rows, channels, per_block, x_stride, layer_groups, layer, norm_eps
    words.set([1, width, c.b * c.r, width / 8, c.r, c.b, 0, 4, channels * c.b, channels, 0, c.i, groups, 0]);
    f[14] = eps;
    groups *= c.layers;
  } else {
    // Enough workgroups for the largest subgroup size (fewer subgroups a workgroup); with smaller
    // ones the extra workgroups find no channel and return.
    const perGroup = (256 / (gpu.adapterInfo.subgroupMaxSize ?? 128)) * C;
    groups = Math.ceil((c.layers * c.r) / perGroup);
    words.set([width, c.r, width / 8, c.b * c.r, c.layers * c.r, c.i]);
    f[6] = eps;
  }
  device.queue.writeBuffer(u, 0, words);
  return { buffer: u, groups };
}
function bind(pipeline: GPUComputePipeline, u: GPUBuffer, x: GPUBuffer, w: GPUBuffer, s: GPUBuffer, out: GPUBuffer, norm: GPUBuffer): GPUBindGroup {
  return device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries:
    [u, x, w, s, out, norm].map((buffer, binding) => ({ binding, resource: { buffer } })) });
}

const channelCounts = values.channels.split(',').map(Number);
// Check: a small stacked case against float64.
{
  const c: Case = { i: 16 * 40, r: 36, b: 16, layers: 2, normed: true };
  const width = c.i / c.b;
  const halves = new Uint16Array(c.layers * c.b * c.r * width);
  const wf = new Float64Array(halves.length);
  for (let k = 0; k < halves.length; k++) {
    halves[k] = toHalf(Math.sin(k * 0.7) * 0.5);
    wf[k] = halfToFloat(halves[k]);
  }
  const xs = Float32Array.from({ length: c.i }, (_, k) => Math.cos(k * 0.3) + 0.2);
  const g = Float32Array.from({ length: c.i }, (_, k) => 1 + 0.5 * Math.sin(k));
  const sv = Float32Array.from({ length: c.layers * c.b * c.b * c.r }, (_, k) => Math.sin(k * 1.3));
  const eps = 1e-5;
  for (const normed of [false, true]) {
    let ss = 0;
    for (const v of xs) ss += v * v;
    const scale = normed ? 1 / Math.sqrt(ss / c.i + eps) : 1;
    const ref = new Float64Array(c.layers * c.b * c.r);
    for (let l = 0; l < c.layers; l++) for (let q = 0; q < c.r; q++) {
      const y = range(c.b).map((blk) => { let t = 0; for (let k = 0; k < width; k++) t += wf[((l * c.b + blk) * c.r + q) * width + k] * xs[blk * width + k] * (normed ? g[blk * width + k] : 1); return t; });
      for (let a = 0; a < c.b; a++) { let z = 0; for (let blk = 0; blk < c.b; blk++) z += sv[((l * c.b + a) * c.b + blk) * c.r + q] * y[blk]; ref[(l * c.b + a) * c.r + q] = z * scale; }
    }
    const [xb, wb, sb, gb] = [upload(xs), upload(halves), upload(sv), upload(g)];
    for (const C of channelCounts) {
      if (c.r % C) continue;
      const out = mk(ref.length * 4);
      const pipeline = proto(c.b, C, normed);
      const { buffer: u, groups } = uniformFor('proto', { ...c, normed }, C, eps);
      await runPass(device, [{ group: bind(pipeline, u, xb, wb, sb, out, gb), workgroups: groups }], pipeline);
      const got = await read(out, ref.length * 4);
      let worst = 0;
      for (let k = 0; k < ref.length; k++) worst = Math.max(worst, Math.abs(got[k] - ref[k]) / (1e-3 + Math.abs(ref[k])));
      console.log(`check b ${c.b}, rank ${c.r}, ${c.layers} layers, C ${C}${normed ? ', normed' : ''}: worst relative error ${worst.toExponential(1)} ${worst < 1e-3 ? 'ok' : 'FAILED'}`);
      if (worst >= 1e-3) process.exitCode = 1;
    }
  }
}

function toHalf(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign;
  const mant = (u >>> 13) & 0x3ff;
  return sign | (exp << 10) | mant;
}

// Timing at the 7B shapes.
const shapes: Record<string, Case> = {
  'q': { i: 4096, r: 1024, b: 16, layers: 1, normed: false },
  'q|k|v normed': { i: 4096, r: 1024, b: 16, layers: 3, normed: true },
  'gate|up normed': { i: 4096, r: 1488, b: 16, layers: 2, normed: true },
  'down': { i: 11008, r: 1488, b: 16, layers: 1, normed: false },
};
console.log('\n| shape | MB | shipped µs | ' + channelCounts.map((C) => `${C} channel${C > 1 ? 's' : ''} a subgroup µs`).join(' | ') + ' |');
console.log('| --- | ---: | ---: | ' + channelCounts.map(() => '---:').join(' | ') + ' |');
for (const label of values.shapes.split(',')) {
  const c = shapes[label];
  const width = c.i / c.b;
  const bytes = c.layers * c.b * c.r * width * 2;
  const copies = Math.ceil(160e6 / bytes) + 1;
  const pattern = new Uint32Array(4 << 20).map((_, k) => 0x3c003c00 ^ ((k * 2654435761) & 0x03ff03ff));
  const ws = range(copies).map(() => {
    const w = mk(bytes);
    for (let at = 0; at < bytes; at += pattern.byteLength) device.queue.writeBuffer(w, at, pattern, 0, Math.min(pattern.length, (bytes - at) / 4));
    return w;
  });
  const ss = range(copies).map(() => upload(new Float32Array(c.layers * c.b * c.b * c.r).fill(0.25)));
  const x = upload(new Float32Array(c.i).fill(0.5));
  const g = upload(new Float32Array(c.i).fill(1));
  const out = mk(c.layers * c.b * c.r * 4);
  const time = async (pipeline: GPUComputePipeline, u: GPUBuffer, groups: number) => {
    const dispatches: PassDispatch[] = range(64).map((k) => ({ group: bind(pipeline, u, x, ws[k % copies], ss[k % copies], out, g), workgroups: groups }));
    return (await medianPassUs(device, dispatches, pipeline, rounds)) / 64;
  };
  const base = uniformFor('shipped', c, 0, 1e-5);
  const cells = [await time(shipped(c.normed), base.buffer, base.groups)];
  for (const C of channelCounts) {
    const p = uniformFor('proto', c, C, 1e-5);
    cells.push(c.r % C ? NaN : await time(proto(c.b, C, c.normed), p.buffer, p.groups));
  }
  console.log(`| ${label} | ${(bytes / 1e6).toFixed(1)} | ${cells.map((v) => v.toFixed(2)).join(' | ')} |`);
  for (const buf of [...ws, ...ss, x, g, out]) buf.destroy();
}
process.exit(process.exitCode ?? 0);
