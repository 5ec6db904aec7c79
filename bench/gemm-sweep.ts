// Tensor-core GEMM design sweep on WebGPU: tile shapes of kernels/webgpu/gemm_subgroup_matrix.ts
// (subgroups per workgroup × result matrices per subgroup × K depth × stages), each checked
// against a float64 CPU product on an awkward shape, then timed at prefill sizes (128 and 2048
// tokens) on the Llama shapes, with PyTorch's F.linear (bf16) from the same command. The winners
// become the backend's tiles.
//
//   npx tsx bench/gemm-sweep.ts [--no-torch] [--out FILE]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { floatToHalf, halfToFloat } from '../weights/dtypes.ts';
import { openGpu } from '../kernels/webgpu/gpu.ts';
import { gemmSubgroupMatrixSource, gemmTileColumns, gemmTileName, gemmTileRows, gemmTileWorkgroupBytes, type GemmInput, type GemmTile } from '../kernels/webgpu/gemm_subgroup_matrix.ts';
import { commonWgsl, composeWgsl } from '../kernels/webgpu/wgsl_source.ts';
import { gemmParams, runAndRead, storageBuffer, timeCallsUs } from './gemm-harness.ts';

const { values } = parseArgs({ options: { 'no-torch': { type: 'boolean' }, quick: { type: 'boolean' }, out: { type: 'string', default: 'bench/out/gemm-sweep.json' } }, strict: true });
const gpu = await openGpu({ allowSoftware: true });
const device = gpu.device;
if (!gpu.features.subgroupMatrixF16) throw new Error('the sweep needs f16 subgroup matrices (16 × 16 × 16)');
console.log(`device: ${gpu.description}`);

// --quick: the leaders of the full sweep.
const QUICK = ['128x128 (2x4 subgroups of 4x2) k64 s1', '128x128 (4x2 subgroups of 2x4) k64 s1', '128x128 (2x4 subgroups of 4x2) k32 s2',
  '64x128 (2x4 subgroups of 2x2) k64 s1', '128x256 (2x4 subgroups of 4x4) k32 s1', '256x128 (4x2 subgroups of 4x4) k32 s1'];
const tiles: GemmTile[] = [];
for (const [subgroupsM, subgroupsN] of [[2, 2], [4, 2], [2, 4], [4, 1], [1, 4]]) {
  for (const [blocksM, blocksN] of [[1, 2], [2, 2], [2, 4], [4, 2], [4, 4], [2, 8]]) {
    for (const depth of [32, 64]) {
      for (const stages of [2, 1] as const) {
        const tile = { subgroupsM, subgroupsN, blocksM, blocksN, depth, stages };
        const rows = gemmTileRows(tile);
        const columns = gemmTileColumns(tile);
        if (rows > 256 || columns > 256 || rows * columns > 128 * 256 || rows * columns < 64 * 32) continue;
        if (gemmTileWorkgroupBytes(tile) > device.limits.maxComputeWorkgroupStorageSize) continue;
        // Two stages when they fit; one only where two do not.
        if (stages === 1 && gemmTileWorkgroupBytes({ ...tile, stages: 2 }) <= device.limits.maxComputeWorkgroupStorageSize) continue;
        try {
          gemmSubgroupMatrixSource(tile, 'vec4');
        } catch {
          continue;
        }
        if (values.quick && !QUICK.includes(gemmTileName(tile))) continue;
        tiles.push(tile, { ...tile, loopK: true });
      }
    }
  }
}
console.log(`${tiles.length} tiles`);

const paramsBuffer = (rows: number, inFeatures: number, outFeatures: number, wStride: number, splits = 1) => gemmParams(device, rows, inFeatures, outFeatures, wStride, splits);
const storage = (bytes: number) => storageBuffer(device, bytes);

interface Built { tile: GemmTile; input: GemmInput; pipeline: GPUComputePipeline }
async function build(tile: GemmTile, input: GemmInput): Promise<Built | string> {
  const code = composeWgsl([...commonWgsl('matmul_common'), gemmSubgroupMatrixSource(tile, input)]);
  const module = device.createShaderModule({ code });
  const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
  if (errors.length) return errors.map((m) => `line ${m.lineNum}: ${m.message}`).join('; ');
  device.pushErrorScope('validation');
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } }).catch((e: Error) => e);
  const error = await device.popErrorScope();
  if (pipeline instanceof Error) return pipeline.message;
  if (error) return error.message;
  return { tile, input, pipeline };
}

const combineModule = device.createShaderModule({ code: composeWgsl([...commonWgsl('matmul_common'), fs.readFileSync('kernels/webgpu/wgsl/gemm_combine.wgsl', 'utf8')]) });
const combine = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: combineModule, entryPoint: 'main' } });
const spare = [storage(16), storage(16), storage(16)];

interface Binds { gemm: GPUBindGroup; combine: GPUBindGroup }
function bindGroups(built: Built, params: GPUBuffer, x: GPUBuffer, w: GPUBuffer, out: GPUBuffer, partials: GPUBuffer): Binds {
  const entries = (buffers: [number, GPUBuffer][]) => buffers.map(([binding, buffer]) => ({ binding, resource: { buffer } }));
  const epilogue: [number, GPUBuffer][] = [[0, params], [3, spare[0]], [4, out], [5, spare[1]], [6, spare[2]], [7, partials]];
  return {
    gemm: device.createBindGroup({ layout: built.pipeline.getBindGroupLayout(0), entries: entries([[1, x], [2, w], ...epilogue]) }),
    combine: device.createBindGroup({ layout: combine.getBindGroupLayout(0), entries: entries(epilogue) }),
  };
}

function dispatch(pass: GPUComputePassEncoder, built: Built, binds: Binds, rows: number, outFeatures: number, splits: number): void {
  pass.setPipeline(built.pipeline);
  pass.setBindGroup(0, binds.gemm);
  pass.dispatchWorkgroups(Math.ceil(outFeatures / gemmTileColumns(built.tile)), Math.ceil(rows / gemmTileRows(built.tile)), splits);
  if (splits > 1) {
    pass.setPipeline(combine);
    pass.setBindGroup(0, binds.combine);
    pass.dispatchWorkgroups(Math.ceil((rows * outFeatures) / 256));
  }
}

/** Largest error against float64 of f16-rounded inputs, relative to the largest |value|. */
async function check(built: Built, splits: number): Promise<number> {
  const rows = 150;
  const inFeatures = built.input === 'f32' ? 131 : 264;
  const outFeatures = 200;
  const stride = Math.ceil(inFeatures / 8) * 8;
  const xs = Float32Array.from({ length: rows * inFeatures }, (_, i) => halfToFloat(floatToHalf(Math.sin(i * 0.37) )));
  const halves = new Uint16Array(outFeatures * stride);
  const ws = new Float64Array(outFeatures * inFeatures);
  for (let o = 0; o < outFeatures; o++) {
    for (let k = 0; k < inFeatures; k++) {
      const h = floatToHalf(Math.cos((o * 31 + k * 7) * 0.11) / 8);
      halves[o * stride + k] = h;
      ws[o * inFeatures + k] = halfToFloat(h);
    }
  }
  const xData = built.input === 'f16' ? Uint16Array.from(xs, (v) => floatToHalf(v)) : xs;
  const x = storage(xData.byteLength);
  device.queue.writeBuffer(x, 0, xData);
  const w = storage(halves.byteLength);
  device.queue.writeBuffer(w, 0, halves);
  const out = storage(rows * outFeatures * 4);
  const partials = storage(splits * rows * outFeatures * 4);
  const params = paramsBuffer(rows, inFeatures, outFeatures, stride, splits);
  const got = await runAndRead(device, (pass) => dispatch(pass, built, bindGroups(built, params, x, w, out, partials), rows, outFeatures, splits), out);
  let worst = 0;
  let largest = 0;
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outFeatures; o++) {
      let sum = 0;
      for (let k = 0; k < inFeatures; k++) sum += xs[r * inFeatures + k] * ws[o * inFeatures + k];
      largest = Math.max(largest, Math.abs(sum));
      worst = Math.max(worst, Math.abs(sum - got[r * outFeatures + o]));
    }
  }
  for (const b of [x, w, out, partials, params]) b.destroy();
  return worst / largest;
}

const SHAPES: [number, number, number][] = [];
for (const rows of [128, 2048]) for (const [i, o] of [[4096, 4096], [4096, 11008], [11008, 4096], [2048, 8192]]) SHAPES.push([rows, i, o]);

interface Result { tile: string; splits: number; rows: number; in: number; out: number; us: number; tflops: number }
const results: Result[] = [];
const failures: string[] = [];
const built: Built[] = [];
for (const tile of tiles) {
  for (const input of ['vec4', 'f16', 'f32'] as const) {
    const b = await build(tile, input);
    if (typeof b === 'string') {
      failures.push(`${gemmTileName(tile)} x ${input}: ${b}`);
      continue;
    }
    const errors = [await check(b, 1), await check(b, 3)];
    if (!errors.every((e) => e < 2e-3)) {
      failures.push(`${gemmTileName(tile)} x ${input}: relative error ${errors.join(', split 3: ')}`);
      continue;
    }
    // Timed: x as vec4<f32> (what the engine passes), and as f16 with --quick.
    if (input === 'vec4' || (input === 'f16' && values.quick)) built.push(b);
  }
}
console.log(`${built.length} tiles built and correct; failures:\n${failures.join('\n') || '(none)'}`);

for (const [rows, inFeatures, outFeatures] of SHAPES) {
  const stride = inFeatures;
  const x = storage(rows * inFeatures * 4);
  const w = storage(outFeatures * stride * 2);
  const out = storage(rows * outFeatures * 4);
  const partials = storage(8 * rows * outFeatures * 4);
  for (const [b, splits] of built.flatMap((b) => (rows <= 512 ? [1, 2, 4, 8] : [1]).map((n) => [b, n] as const))) {
    const params = paramsBuffer(rows, inFeatures, outFeatures, stride, splits);
    const binds = bindGroups(b, params, x, w, out, partials);
    const us = await timeCallsUs(device, (pass) => dispatch(pass, b, binds, rows, outFeatures, splits), rows >= 1024 ? 10 : 40, 3);
    params.destroy();
    results.push({ tile: `${gemmTileName(b.tile)}${b.input === 'f16' ? ' x f16' : ''}${splits > 1 ? ` split ${splits}` : ''}`, splits, rows, in: inFeatures, out: outFeatures, us, tflops: (2 * rows * inFeatures * outFeatures) / us / 1e6 });
  }
  for (const buffer of [x, w, out, partials]) buffer.destroy();
}

let torch: { results: { rows: number; in: number; out: number; us: number }[] } | undefined;
if (!values['no-torch']) {
  const run = spawnSync('python3', [path.join('bench', 'torch_linear.py'), JSON.stringify(SHAPES)], { encoding: 'utf8' });
  if (run.status === 0) torch = JSON.parse(run.stdout.trim().split('\n').at(-1)!);
  else console.log(`(no PyTorch baseline: ${(run.stderr || run.error?.message || '').trim().split('\n').at(-1)})`);
}

for (const [rows, inFeatures, outFeatures] of SHAPES) {
  const torchUs = torch?.results.find((t) => t.rows === rows && t.in === inFeatures && t.out === outFeatures)?.us;
  const best = results.filter((r) => r.rows === rows && r.in === inFeatures && r.out === outFeatures).sort((a, b) => a.us - b.us);
  console.log(`\n${rows} × ${inFeatures} → ${outFeatures}${torchUs ? `: PyTorch bf16 ${torchUs.toFixed(1)} µs, ${((2 * rows * inFeatures * outFeatures) / torchUs / 1e6).toFixed(0)} TFLOP/s` : ''}`);
  console.log('| tile | µs | TFLOP/s | ours / PyTorch speed |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const r of best.slice(0, 6)) console.log(`| ${r.tile} | ${r.us.toFixed(1)} | ${r.tflops.toFixed(1)} | ${torchUs ? (torchUs / r.us).toFixed(2) : '–'} |`);
}
// Each tile's time summed over the shapes at each token count: the best all-rounders.
for (const rows of [128, 2048]) {
  const totals = new Map<string, number>();
  for (const r of results.filter((q) => q.rows === rows)) totals.set(r.tile, (totals.get(r.tile) ?? 0) + r.us);
  console.log(`\n${rows} tokens, total µs over the four shapes: ${[...totals].sort((a, b) => a[1] - b[1]).slice(0, 6).map(([t, us]) => `${t}: ${us.toFixed(0)}`).join('; ')}`);
}
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), device: gpu.description, torch, failures, results }, null, 2) + '\n');
console.log(`\nwrote ${values.out}`);
process.exit(0);
