// GEMV design sweep on WebGPU: workgroup size × weight rows per subgroup × subgroups splitting K ×
// steps of K whose loads are issued together (unrolled), on weights too big for L2 (four copies,
// rotated, so every call reads DRAM). Each variant's outputs are checked before it is timed.
// Prints GB/s against the copy ceiling for each variant; the winner shapes
// kernels/webgpu/wgsl/gemv_subgroup.wgsl.
//
//   npx tsx bench/gemv-sweep.ts [--shapes IN×OUT,...] [--out FILE]
// (--shapes: in → out pairs such as 1024x12288; default Llama-2-7B's and Llama-3.2-1B's layer shapes)
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { floatToHalf, halfToFloat } from '../weights/dtypes.ts';
import { openGpu } from '../kernels/webgpu/gpu.ts';
import { copyCeilingGBs } from './copy-ceiling.ts';

const { values } = parseArgs({ options: { out: { type: 'string', default: 'bench/out/gemv-sweep.json' }, shapes: { type: 'string' } }, strict: true });
const gpu = await openGpu({ allowSoftware: true });
const device = gpu.device;
if (!gpu.features.subgroups) throw new Error('the sweep needs the subgroups feature');
console.log(`device: ${gpu.description}`);

const KERNEL = `
enable subgroups;
diagnostic(off, subgroup_uniformity);
override WORKGROUP: u32 = 128u;
override ROWS: u32 = 4u;   // weight rows per subgroup
override SPLIT: u32 = 1u;  // subgroups sharing those rows, each on a slice of K
override UNROLL: u32 = 1u; // K steps whose loads are all issued before their sums (ROWS · UNROLL ≤ 32)
struct Params { in_features: u32, out_features: u32, w_stride: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
var<workgroup> partial: array<f32, 512>;
fn dot8(p: vec4<u32>, low: vec4<f32>, high: vec4<f32>) -> f32 {
  return dot(vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y)), low) + dot(vec4<f32>(unpack2x16float(p.z), unpack2x16float(p.w)), high);
}
@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sg_size: u32) {
  let subgroups = WORKGROUP / sg_size;
  let sg = lid / sg_size;
  let groups = subgroups / SPLIT;
  let group = sg / SPLIT;
  let part = sg % SPLIT;
  let first = (wid.x * groups + group) * ROWS;
  let last = params.out_features - 1u;
  let chunks = params.in_features / 8u;
  var acc: array<f32, 8>;
  let stride = sg_size * SPLIT;
  var c = part * sg_size + lane;
  // UNROLL steps of K at a time: their weight loads first, so that one step's loads do not wait on
  // the sums of the step before.
  for (; UNROLL > 1u && c + (UNROLL - 1u) * stride < chunks; c += UNROLL * stride) {
    var packed: array<vec4<u32>, 32>;
    for (var u = 0u; u < UNROLL; u++) {
      for (var j = 0u; j < ROWS; j++) {
        packed[u * ROWS + j] = w[min(first + j, last) * params.w_stride + c + u * stride];
      }
    }
    for (var u = 0u; u < UNROLL; u++) {
      let low = x[2u * (c + u * stride)];
      let high = x[2u * (c + u * stride) + 1u];
      for (var j = 0u; j < ROWS; j++) {
        acc[j] += dot8(packed[u * ROWS + j], low, high);
      }
    }
  }
  for (; c < chunks; c += stride) {
    let low = x[2u * c];
    let high = x[2u * c + 1u];
    for (var j = 0u; j < ROWS; j++) {
      acc[j] += dot8(w[min(first + j, last) * params.w_stride + c], low, high);
    }
  }
  for (var j = 0u; j < ROWS; j++) {
    let total = subgroupAdd(acc[j]);
    if (SPLIT == 1u) {
      if (lane == 0u && first + j < params.out_features) { out[first + j] = total; }
    } else if (lane == 0u) {
      partial[(group * SPLIT + part) * ROWS + j] = total;
    }
  }
  if (SPLIT > 1u) {
    workgroupBarrier();
    if (lid < groups * ROWS) {
      let g = lid / ROWS;
      let j = lid % ROWS;
      var sum = 0.0;
      for (var p = 0u; p < SPLIT; p++) { sum += partial[(g * SPLIT + p) * ROWS + j]; }
      let o = (wid.x * groups + g) * ROWS + j;
      if (o < params.out_features) { out[o] = sum; }
    }
  }
}`;

const copyGBs = await copyCeilingGBs(device);
console.log(`copy ceiling: ${copyGBs.toFixed(0)} GB/s`);
const module = device.createShaderModule({ code: KERNEL });
const info = await module.getCompilationInfo();
if (info.messages.some((m) => m.type === 'error')) throw new Error(info.messages.map((m) => m.message).join('\n'));

const shapes: [number, number][] = values.shapes
  ? values.shapes.split(',').map((pair) => {
    const [i, o] = pair.split('x').map(Number);
    if (!(i > 0 && o > 0 && i % 8 === 0)) throw new Error(`--shapes takes IN×OUT pairs with IN a multiple of 8, such as 1024x4096; got ${pair}`);
    return [i, o] as [number, number];
  })
  : process.env.BLR_SWEEP_QUICK ? [[256, 96]] : [[4096, 4096], [4096, 11008], [11008, 4096], [2048, 8192]];
const COPIES = 4;
const results: { in: number; out: number; workgroup: number; rows: number; split: number; unroll: number; us: number; gbs: number }[] = [];
for (const [inFeatures, outFeatures] of shapes) {
  const halves = new Uint16Array(outFeatures * inFeatures);
  for (let i = 0; i < halves.length; i++) halves[i] = floatToHalf((((i * 2654435761) >>> 0) / 4294967296 - 0.5) * 0.05);
  const weights = Array.from({ length: COPIES }, () => {
    const b = device.createBuffer({ size: halves.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(b, 0, halves.buffer, 0, halves.byteLength);
    return b;
  });
  const x = device.createBuffer({ size: inFeatures * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(x, 0, new Float32Array(inFeatures).fill(0.5));
  const out = device.createBuffer({ size: outFeatures * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const readback = device.createBuffer({ size: outFeatures * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  // Every variant's outputs are checked first: with x all 0.5, output o is half its row's sum.
  const expected = new Float64Array(outFeatures);
  for (let o = 0; o < outFeatures; o++) {
    let sum = 0;
    for (let k = 0; k < inFeatures; k++) sum += halfToFloat(halves[o * inFeatures + k]);
    expected[o] = 0.5 * sum;
  }
  const params = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(params, 0, Uint32Array.of(inFeatures, outFeatures, inFeatures / 8, 0));
  for (const workgroup of [64, 128, 256]) {
    for (const rows of [1, 2, 4, 8]) {
      for (const [split, unroll] of [1, 2, 4, 8].flatMap((sp) => [1, 2, 4].map((u) => [sp, u]))) {
        const subgroups = workgroup / 32;
        if (split > subgroups || rows * unroll > 32) continue;
        const pipeline = await device.createComputePipelineAsync({
          layout: 'auto', compute: { module, entryPoint: 'main', constants: { WORKGROUP: workgroup, ROWS: rows, SPLIT: split, UNROLL: unroll } },
        });
        const binds = weights.map((w) => device.createBindGroup({
          layout: pipeline.getBindGroupLayout(0),
          entries: [params, x, w, out].map((buffer, binding) => ({ binding, resource: { buffer } })),
        }));
        const rowsPerWorkgroup = (subgroups / split) * rows;
        const grid = Math.ceil(outFeatures / rowsPerWorkgroup);
        const run = async (n: number) => {
          const encoder = device.createCommandEncoder();
          const pass = encoder.beginComputePass();
          pass.setPipeline(pipeline);
          for (let i = 0; i < n; i++) {
            pass.setBindGroup(0, binds[i % COPIES]);
            pass.dispatchWorkgroups(grid);
          }
          pass.end();
          device.queue.submit([encoder.finish()]);
          await device.queue.onSubmittedWorkDone();
        };
        await run(8);
        const encoder = device.createCommandEncoder();
        encoder.copyBufferToBuffer(out, 0, readback, 0, outFeatures * 4);
        device.queue.submit([encoder.finish()]);
        await readback.mapAsync(GPUMapMode.READ);
        const got = new Float32Array(readback.getMappedRange().slice(0));
        readback.unmap();
        const worst = got.reduce((m, v, o) => Math.max(m, Math.abs(v - expected[o])), 0);
        if (!(worst <= 1e-3 * Math.sqrt(inFeatures))) {
          console.log(`(${workgroup}, ${rows}, ${split}, unroll ${unroll}): wrong outputs (off by ${worst}), not timed`);
          continue;
        }
        const samples: number[] = [];
        for (let repeat = 0; repeat < 3; repeat++) {
          const t0 = performance.now();
          await run(64);
          samples.push(((performance.now() - t0) * 1000) / 64);
        }
        const us = samples.sort((a, b) => a - b)[1];
        results.push({ in: inFeatures, out: outFeatures, workgroup, rows, split, unroll, us, gbs: halves.byteLength / us / 1e3 });
      }
    }
  }
  for (const b of [...weights, x, out, readback, params]) b.destroy();
  const best = results.filter((r) => r.in === inFeatures && r.out === outFeatures).sort((a, b) => a.us - b.us);
  console.log(`\n${inFeatures} → ${outFeatures}: best five of ${best.length} (weights rotated through ${COPIES} copies)`);
  console.log('| workgroup | rows/subgroup | K split | K steps unrolled | µs | GB/s | % of copy |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of best.slice(0, 5)) console.log(`| ${r.workgroup} | ${r.rows} | ${r.split} | ${r.unroll} | ${r.us.toFixed(1)} | ${r.gbs.toFixed(0)} | ${((100 * r.gbs) / copyGBs).toFixed(0)}% |`);
  const current = best.find((r) => r.workgroup === 256 && r.rows === 2 && r.split === 4 && r.unroll === 1);
  if (current) console.log(`the shape of wgsl/gemv_subgroup.wgsl (256, 2, 4): ${current.us.toFixed(1)} µs, ${((100 * current.gbs) / copyGBs).toFixed(0)}% of copy`);
}
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), device: gpu.description, copyGBs, results }, null, 2) + '\n');
console.log(`wrote ${values.out}`);
