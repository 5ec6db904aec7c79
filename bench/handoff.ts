// Two dependent matrix-vector products in one dispatch instead of two: y = W1 · x, then
// out = W2 · y, where the second product's workgroups wait for y inside the dispatch.
//
// Every dispatch that writes what an earlier one wrote costs a Dawn pipeline barrier (~2.2 µs on an
// H200, bench/dispatch-cost.ts) plus the ramp and tail of a wave of workgroups, and a decode step is
// a chain of them. WGSL has no grid-wide barrier and its atomics are relaxed (no ordering between
// two locations), so a "y is ready" flag would not say that y's values are visible. What this
// measures instead needs only what WGSL guarantees for one location:
//   - Tagged values. Each y value is stored whole by one atomicStore, with its lowest mantissa bit
//     replaced by the dispatch's parity (1 ulp of f32). A reader spins on atomicLoad (atomicOr(…, 0)
//     after params.rmw_after loads) until the bit matches; a location's own stores are seen in
//     order, so a matching bit is this dispatch's value.
//   - Tickets, not workgroup ids. Each workgroup takes its index from an atomic counter as it starts
//     (the last one resets it), so every producer of y started before any workgroup that waits for
//     y: nothing waits on a workgroup that has not started, whatever order the hardware launches in.
// Checked against float64 on the CPU, and a chain of pairs fused against the same chain as two
// dispatches each (bit for bit: a stale read would differ), with no wait timed out. Timed: a chain
// of `--pairs` dependent pairs in one pass, fused against two dispatches a pair, each half alone,
// and the second half reading y with plain loads (what the atomics cost).
// --wait each: every invocation waits for the values it reads; lead: one invocation a workgroup
// waits for the last value first (on an H200 that one location's contention made 4096² pairs 4x
// slower). --consumer-rows: output rows a second-half workgroup makes (4 as the first half's).
//
//   npx tsx bench/handoff.ts [--shapes 4096x4096x4096,4096x1024x4096,2048x2048x2048] [--pairs 64]
//     [--rounds 7] [--copies 8] [--wait each,lead] [--consumer-rows 4,8]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openGpu } from '../kernels/webgpu/gpu.ts';
import { halfToFloat } from '../weights/dtypes.ts';
import { medianPassUs, type PassDispatch, runPass } from './timing.ts';

const { values } = parseArgs({ options: {
  shapes: { type: 'string', default: '4096x4096x4096,4096x1024x4096,2048x2048x2048' },
  'consumer-rows': { type: 'string', default: '4' },
  wait: { type: 'string', default: 'each' },
  pairs: { type: 'string', default: '64' }, rounds: { type: 'string', default: '7' },
  copies: { type: 'string', default: '8' },
  out: { type: 'string', default: 'bench/out/handoff.json' },
}, strict: true });
const gpu = await openGpu({ allowSoftware: true });
const device = gpu.device;
console.log(`device: ${gpu.description}`);
if (!gpu.features.subgroups || !gpu.features.shaderF16) throw new Error('needs subgroups and shader-f16');

const ROWS = 4; // output rows a workgroup
const THREADS = 256;
const MAX_K = 4096;
const sourceFor = (rows2: number, lead: boolean) => `
enable subgroups;
diagnostic(off, subgroup_uniformity);
struct Params { k1: u32, r1: u32, r2: u32, groups1: u32, total: u32, parity: u32, mode: u32, rmw_after: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w1: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> w2: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> y: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> counter: array<atomic<u32>>;
var<workgroup> xs: array<f32, ${MAX_K}>;
var<workgroup> ticket: u32;
var<workgroup> sums: array<f32, ${Math.max(ROWS, rows2) * 64}>;

// A waiting read of y[i]: atomic loads, and after params.rmw_after of them read-modify-writes.
// Lavapipe's compiler lifts a relaxed load out of the loop, so that the value never changes (1024
// there); a read-modify-write it must repeat. On a GPU many waiting invocations' writes would
// contend with the producers' stores (2^20 there: never, in practice).
fn wait_read(i: u32, spins: u32) -> u32 {
  if (spins < params.rmw_after) {
    return atomicLoad(&y[i]);
  }
  return atomicOr(&y[i], 0u);
}

// mode 0: fused (tickets); 1: the first product alone; 2: the second alone.
@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) size: u32) {
  if (lid == 0u) {
    if (params.mode == 0u) {
      let t = atomicAdd(&counter[0], 1u);
      if (t == params.total - 1u) {
        atomicStore(&counter[0], 0u);
      }
      ticket = t;
    } else {
      ticket = wid.x + select(0u, params.groups1, params.mode == 2u);
    }
  }
  let id = workgroupUniformLoad(&ticket);
  var k: u32;
  var rows: u32;
  var first: u32;
  if (id < params.groups1) {
    k = params.k1;
    rows = params.r1;
    first = id * ${ROWS}u;
    for (var i = lid; i < k; i += ${THREADS}u) {
      xs[i] = x[i];
    }
  } else {
    k = params.r1;
    rows = params.r2;
    first = (id - params.groups1) * ${rows2}u;
    ${lead ? `// One invocation waits for the last value (its producer took the last ticket) before the
    // others read: one stream of read-modify-writes a workgroup instead of one per invocation.
    if (lid == 0u && params.mode == 0u) {
      var spins = 0u;
      while ((wait_read(k - 1u, spins) & 1u) != params.parity && spins < 4000000u) {
        spins++;
      }
    }
    workgroupBarrier();` : ''}
    for (var i = lid; i < k; i += ${THREADS}u) {
      // (Two dispatches: the barrier between them made y visible. Fused: wait for this dispatch's
      // value, a bounded wait so that a broken assumption shows as a wrong result, not a hang.)
      var bits = atomicLoad(&y[i]);
      var spins = 0u;
      while (params.mode == 0u && (bits & 1u) != params.parity && spins < 4000000u) {
        bits = wait_read(i, spins);
        spins++;
      }
      if (spins == 4000000u) {
        atomicAdd(&counter[1], 1u);
      }
      xs[i] = bitcast<f32>(bits);
    }
  }
  workgroupBarrier();
  let chunks = k / 8u;
  let per = select(${rows2}u, ${ROWS}u, id < params.groups1);
  var acc: array<f32, ${Math.max(ROWS, rows2)}>;
  for (var c = lid; c < chunks; c += ${THREADS}u) {
    let lo = vec4<f32>(xs[8u * c], xs[8u * c + 1u], xs[8u * c + 2u], xs[8u * c + 3u]);
    let hi = vec4<f32>(xs[8u * c + 4u], xs[8u * c + 5u], xs[8u * c + 6u], xs[8u * c + 7u]);
    for (var j = 0u; j < per; j++) {
      let row = min(first + j, rows - 1u);
      var p: vec4<u32>;
      if (id < params.groups1) { p = w1[row * chunks + c]; } else { p = w2[row * chunks + c]; }
      acc[j] += dot(vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y)), lo)
        + dot(vec4<f32>(unpack2x16float(p.z), unpack2x16float(p.w)), hi);
    }
  }
  for (var j = 0u; j < per; j++) {
    let s = subgroupAdd(acc[j]);
    if (lane == 0u) {
      sums[(lid / size) * per + j] = s;
    }
  }
  workgroupBarrier();
  if (lid < per && first + lid < rows) {
    var total = 0.0;
    for (var g = 0u; g < ${THREADS}u / size; g++) {
      total += sums[g * per + lid];
    }
    if (id < params.groups1) {
      atomicStore(&y[first + lid], (bitcast<u32>(total) & ~1u) | params.parity);
    } else {
      out[first + lid] = total;
    }
  }
}
`;
// Fills f16 weights with a hash of their index, in [-scale, scale).
const fillSource = `
@group(0) @binding(0) var<uniform> fill: vec4<u32>;
@group(0) @binding(1) var<storage, read_write> filled: array<u32>;
fn halfOf(i: u32) -> f32 {
  var h = i * 747796405u + 2891336453u + fill.y * 2654435761u;
  h = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
  h = (h >> 22u) ^ h;
  return (f32(h & 0xffffu) / 32768.0 - 1.0) * bitcast<f32>(fill.z);
}
@compute @workgroup_size(256)
fn fillWeights(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  for (var i = g.x; i < fill.x; i += n.x * 256u) {
    filled[i] = pack2x16float(vec2<f32>(halfOf(2u * i), halfOf(2u * i + 1u)));
  }
}
`;
let pipeline!: GPUComputePipeline;
// The same kernel with y as plain u32s (no atomics): to time the second product alone with plain
// loads of y, against the atomic loads the fused kernel needs.
const plainSource = (code: string) => code.replace('y: array<atomic<u32>>', 'y: array<u32>')
  .replace(/atomicLoad\(&y\[i\]\)/g, 'y[i]').replace(/atomicOr\(&y\[([^\]]+)\], 0u\)/g, 'y[$1]')
  .replace(/atomicStore\(&y\[first \+ lid\], (.*)\);/, 'y[first + lid] = $1;');
let plainPipeline!: GPUComputePipeline;
const fillPipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: fillSource }), entryPoint: 'fillWeights' } });

const S = GPUBufferUsage.STORAGE;
const buffer = (bytes: number, usage = S) => device.createBuffer({ size: Math.max(16, bytes), usage });
function uniform(words: number[]): GPUBuffer {
  const b = buffer(32, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
  device.queue.writeBuffer(b, 0, Uint32Array.from(words));
  return b;
}
function weights(rows: number, k: number, seed: number): GPUBuffer {
  const b = buffer(rows * k * 2, S | GPUBufferUsage.COPY_SRC);
  const scale = new Float32Array([1 / Math.sqrt(k)]);
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(fillPipeline);
  pass.setBindGroup(0, device.createBindGroup({ layout: fillPipeline.getBindGroupLayout(0), entries: [
    { binding: 0, resource: { buffer: uniform([rows * k / 2, seed, new Uint32Array(scale.buffer)[0], 0]) } }, { binding: 1, resource: { buffer: b } }] }));
  pass.dispatchWorkgroups(1024);
  pass.end();
  device.queue.submit([encoder.finish()]);
  return b;
}
async function read(b: GPUBuffer, bytes: number): Promise<Uint32Array> {
  const staging = buffer(bytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(b, 0, staging, 0, bytes);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return out;
}

type Dispatch = PassDispatch;
const run = (dispatches: Dispatch[], kernel = pipeline) => runPass(device, dispatches, kernel);
const median = (dispatches: Dispatch[], rounds: number, kernel = pipeline) => medianPassUs(device, dispatches, kernel, rounds);

const pairs = 2 * Math.ceil(Number(values.pairs) / 2); // even: each timed round starts from the parity the last one left
const rounds = Number(values.rounds);
const copies = Number(values.copies);
const results: Record<string, unknown>[] = [];
console.log('\n| k → r1 → r2 | wait | rows a waiting workgroup | check | µs a pair: fused | two dispatches | first alone | second alone | second, plain loads | saved a pair |');
console.log('| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const wait of values.wait.split(','))
for (const rows2 of values['consumer-rows'].split(',').map(Number))
for (const shape of values.shapes.split(',')) {
  pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: sourceFor(rows2, wait === 'lead') }), entryPoint: 'main' } });
  plainPipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: plainSource(sourceFor(rows2, wait === 'lead')) }), entryPoint: 'main' } });
  const [k1, r1, r2] = shape.split('x').map(Number);
  if (k1 > MAX_K || r1 > MAX_K || k1 % 8 || r1 % 8 || r2 !== k1) throw new Error(`shape ${shape}: k and r1 multiples of 8, ≤ ${MAX_K}, r2 = k (chained)`);
  const groups1 = Math.ceil(r1 / ROWS);
  const groups2 = Math.ceil(r2 / rows2);
  const w1s = Array.from({ length: copies }, (_, i) => weights(r1, k1, 2 * i + 1));
  const w2s = Array.from({ length: copies }, (_, i) => weights(r2, r1, 2 * i + 2));
  const xs = [buffer(k1 * 4, S | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC), buffer(k1 * 4, S | GPUBufferUsage.COPY_SRC)];
  const x0 = Float32Array.from({ length: k1 }, (_, i) => Math.sin(i * 0.37) + 0.5);
  device.queue.writeBuffer(xs[0], 0, x0);
  const y = buffer(r1 * 4, S | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST);
  const counter = buffer(16, S | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC);
  const paramsFor = (parity: number, mode: number) => uniform([k1, r1, r2, groups1, groups1 + groups2, parity, mode, gpu.isSoftware ? 1024 : 2 ** 20]);
  const uniforms = [0, 1].map((parity) => [0, 1, 2].map((mode) => paramsFor(parity, mode)));
  const group = (i: number, mode: number, kernel = pipeline) => device.createBindGroup({ layout: kernel.getBindGroupLayout(0), entries:
    [uniforms[i % 2][mode], xs[i % 2], w1s[i % copies], w2s[i % copies], y, xs[(i + 1) % 2], counter].map((b, binding) => ({ binding, resource: { buffer: b } })) });
  // Pair i reads xs[i % 2] and writes xs[(i + 1) % 2]: a chain.
  const fused = (n: number): Dispatch[] => Array.from({ length: n }, (_, i) => ({ group: group(i, 0), workgroups: groups1 + groups2 }));
  const split = (n: number): Dispatch[] => Array.from({ length: n }, (_, i) => [{ group: group(i, 1), workgroups: groups1 }, { group: group(i, 2), workgroups: groups2 }]).flat();

  // Check 1: one fused pair against float64.
  device.queue.writeBuffer(y, 0, new Uint32Array(r1).fill(1)); // parity 1 everywhere: stale for pair 0
  await run(fused(1));
  const [w1Bits, w2Bits, yBits, outBits] = await Promise.all([read(w1s[0], r1 * k1 * 2), read(w2s[0], r2 * r1 * 2), read(y, r1 * 4), read(xs[1], r2 * 4)]);
  const w1h = new Uint16Array(w1Bits.buffer), w2h = new Uint16Array(w2Bits.buffer);
  const yRef = Array.from({ length: r1 }, (_, r) => { let s = 0; for (let c = 0; c < k1; c++) s += halfToFloat(w1h[r * k1 + c]) * Math.fround(x0[c]); return s; });
  const yGot = new Float32Array(yBits.buffer);
  const outGot = new Float32Array(outBits.buffer);
  let worst = 0;
  for (let r = 0; r < r2; r++) {
    let s = 0;
    for (let c = 0; c < r1; c++) s += halfToFloat(w2h[r * r1 + c]) * yGot[c];
    worst = Math.max(worst, Math.abs(s - outGot[r]) / (1e-3 + Math.abs(s)));
  }
  for (let r = 0; r < r1; r++) worst = Math.max(worst, Math.abs(yRef[r] - yGot[r]) / (1e-3 + Math.abs(yRef[r])));
  // Check 2: a chain of pairs fused and as two dispatches each, from the same x: bit for bit.
  const chain = async (dispatches: Dispatch[]) => {
    device.queue.writeBuffer(xs[0], 0, x0);
    device.queue.writeBuffer(y, 0, new Uint32Array(r1).fill(1));
    await run(dispatches);
    return read(xs[pairs % 2], r2 * 4);
  };
  const a = await chain(fused(pairs));
  const b = await chain(split(pairs));
  const same = a.every((v, i) => v === b[i]);
  const timeouts = (await read(counter, 8))[1];
  const ok = worst < 1e-3 && same && timeouts === 0;

  const tFused = await median(fused(pairs), rounds);
  const tSplit = await median(split(pairs), rounds);
  const firsts = Array.from({ length: pairs }, (_, i) => ({ group: group(i, 1), workgroups: groups1 }));
  const seconds = Array.from({ length: pairs }, (_, i) => ({ group: group(i, 2), workgroups: groups2 }));
  const tFirst = await median(firsts, rounds);
  const tSecond = await median(seconds, rounds);
  const tSecondPlain = await median(Array.from({ length: pairs }, (_, i) => ({ group: group(i, 2, plainPipeline), workgroups: groups2 })), rounds, plainPipeline);
  const row = { shape, wait, rows2, timeouts, worstRelativeError: worst, chainsIdentical: same, usFused: tFused / pairs, usTwoDispatches: tSplit / pairs, usFirst: tFirst / pairs, usSecond: tSecond / pairs, usSecondPlain: tSecondPlain / pairs };
  results.push(row);
  console.log(`| ${k1} → ${r1} → ${r2} | ${wait} | ${rows2} | ${ok ? 'ok' : `FAILED (error ${worst.toExponential(1)}, chains ${same ? 'equal' : 'differ'}, ${timeouts} waits timed out)`} | ${row.usFused.toFixed(1)} | ${row.usTwoDispatches.toFixed(1)} | ${row.usFirst.toFixed(1)} | ${row.usSecond.toFixed(1)} | ${row.usSecondPlain.toFixed(1)} | ${(row.usTwoDispatches - row.usFused).toFixed(1)} |`);
  for (const buf of [...w1s, ...w2s, ...xs, y, counter]) buf.destroy();
  if (!ok) process.exitCode = 1;
}
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), device: gpu.description, pairs, rounds, copies, results }, null, 2) + '\n');
process.exit(process.exitCode ?? 0);
