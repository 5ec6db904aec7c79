// Block low-rank layers at the paper's configurations (../shared/ANCHORS.md §1) on this engine's
// backend: each method's layer (models/linear.ts) and our dense layer at N tokens, random weights,
// checked once against the float64 reference (kernels/cpu/blr.ts), then timed; with PyTorch's
// dense F.linear and its block low-rank layers (bench/torch_blr.py) from the same command when
// python3 with torch and a GPU is there. Weights stream from memory on both sides (copies used in
// turn, more bytes than L2 holds); our calls are submitted in batches while the next are recorded
// (bench/timing.ts), as PyTorch's launches run asynchronously. Prints a table, writes JSON.
//
//   npx tsx bench/blr-layers.ts [--quick] [--tokens 1,16,128,1024,2048] [--layers q/k/v/o,gate/up,up,mlp.c_fc]
//                               [--no-torch] [--backend webgpu|cpu] [--profile] [--out FILE]
// --profile (WebGPU) prints each kernel's GPU time per call instead (timestamp queries), ours and
// our dense layer's, and no table.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Rng } from '../engine/rng.ts';
import type { Backend } from '../kernels/backend.ts';
import { blrForward, blrParameters, type BlrFactors } from '../kernels/cpu/blr.ts';
import { createBackend, isBackendKind } from '../kernels/select.ts';
import { WebGpuBackend } from '../kernels/webgpu/backend.ts';
import { BlockLowRankLinear, DenseLinear, LowRankLinear, type LinearLayer } from '../models/linear.ts';
import { presetLayers, type RooflineLayer } from '../models/roofline.ts';
import { timePerCallUs } from './timing.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    tokens: { type: 'string' },
    layers: { type: 'string' },
    profile: { type: 'boolean' },
    'no-torch': { type: 'boolean' },
    backend: { type: 'string', default: 'webgpu' },
    out: { type: 'string', default: 'bench/out/blr-layers.json' },
  },
  strict: true,
});
const backendKind = values.backend;
if (!isBackendKind(backendKind)) throw new Error(`--backend must be webgpu or cpu, got ${backendKind}`);
// A fresh backend for each layer, disposed after it: nothing one layer allocated is still around
// for the next (on the H200 kernels measured later in one long-lived backend ran up to 3x slower).
const openBackend = async (): Promise<Backend> => (values.profile ? WebGpuBackend.create({ allowSoftware: true, profile: true }) : createBackend(backendKind));
let backend: Backend = await openBackend();
const description = backend.description;
console.log(`backend: ${description}`);

// Llama-2-7B q (4096²) and up (4096 → 11008), Llama-3.2-1B up (2048 → 8192), GPT2-S c_fc (768 → 3072).
const layers: RooflineLayer[] = values.quick
  ? [{ name: 'small', inFeatures: 96, outFeatures: 160, count: 1, method: 'blast', rank: 32, blocks: 4 }].flatMap((l) => (['lowrank', 'monarch', 'blast'] as const).map((method) => ({ ...l, method, blocks: method === 'lowrank' ? 1 : l.blocks })))
  : (['lowrank', 'monarch', 'blast'] as const).flatMap((method) => [
    ...presetLayers('llama-2-7b', method).filter((l) => l.name === 'q/k/v/o' || l.name === 'gate/up'),
    ...presetLayers('llama-3.2-1b', method).filter((l) => l.name === 'up'),
    ...presetLayers('gpt2', method).filter((l) => l.name === 'mlp.c_fc'),
  ]);
const layerNames = values.layers?.split(',');
if (layerNames) layers.splice(0, layers.length, ...layers.filter((l) => layerNames.includes(l.name)));
const TOKENS = values.tokens ? values.tokens.split(',').map(Number) : values.quick ? [1, 16] : [1, 16, 128, 1024, 2048];
if (!TOKENS.every((n) => Number.isInteger(n) && n >= 1)) throw new Error(`--tokens takes a list of token counts, got ${values.tokens}`);
const MAX_ROWS = Math.max(3, ...TOKENS); // 3: the rows checked against the reference

const rng = new Rng(11);
const random = (n: number, scale: number) => Float32Array.from({ length: n }, () => scale * rng.normal());

function makeFactors(layer: RooflineLayer): BlrFactors {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b, method } = layer;
  const inner = 1 / Math.sqrt(method === 'lowrank' ? i : i / b), outer = 1 / Math.sqrt(r);
  if (method === 'lowrank') return { method, v: random(r * i, inner), u: random(o * r, outer) };
  if (method === 'monarch') return { method, w1: random(r * i, inner), w2: random(o * r, outer) };
  return { method, u: random(o * r, outer), v: random(r * i, inner), s: random(b * b * r, 1) };
}

type Matrix = (rows: number, columns: number, values: Float32Array, scale: number) => ReturnType<Backend['upload']>;

/** The layer from `matrix` (uploads given values, or makes random ones of that scale on the device). */
function makeLayer(layer: RooflineLayer, factors: BlrFactors, matrix: Matrix): LinearLayer {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = layer;
  const inner = 1 / Math.sqrt(factors.method === 'lowrank' ? i : i / b), outer = 1 / Math.sqrt(r);
  if (factors.method === 'lowrank') return new LowRankLinear(backend, matrix(r, i, factors.v, inner), matrix(o, r, factors.u, outer), null, i, o, r, MAX_ROWS);
  if (factors.method === 'monarch') return new BlockLowRankLinear(backend, 'monarch', matrix(b * r, i / b, factors.w1, inner), matrix(o, r, factors.w2, outer), null, null, layer, MAX_ROWS);
  return new BlockLowRankLinear(backend, 'blast', matrix(b * r, i / b, factors.v, inner), matrix(o, r, factors.u, outer), backend.upload(factors.s), null, layer, MAX_ROWS);
}

// Every call reads its weights from memory, as decode does: layers (and dense matrices) come in
// enough copies, used in turn, to exceed the GPU's L2 (50 MB on an H100/H200) twice over.
const STREAM_BYTES = 128e6;
const copiesFor = (bytes: number) => Math.min(64, Math.max(2, Math.ceil(STREAM_BYTES / bytes)));

interface Row { layer: string; method: string; in: number; out: number; rank: number; blocks: number; rows: number; us: number; denseUs: number; error: number; torch?: { dense_us: number; blr_us: number; blr_compiled_us?: number } }
const results: Row[] = [];
const denseTimes = new Map<string, number>();
for (const [index, layer] of layers.entries()) {
  if (index > 0) {
    backend.dispose();
    backend = await openBackend();
  }
  const factors = makeFactors(layer);
  const name = `${layer.name} ${layer.method}`;
  const blr = makeLayer(layer, factors, (rows, columns, values) => backend.uploadMatrix(values, rows, columns, name));
  const blrCopies = [blr, ...Array.from({ length: copiesFor(2 * blrParameters(layer, layer.method)) - 1 }, (_, k) =>
    makeLayer(layer, factors, (rows, columns, _values, scale) => backend.randomMatrix(rows, columns, scale, 100 + k, name)))];
  const denseCopies = Array.from({ length: copiesFor(2 * layer.inFeatures * layer.outFeatures) }, (_, k) =>
    new DenseLinear(backend, backend.randomMatrix(layer.outFeatures, layer.inFeatures, 1 / Math.sqrt(layer.inFeatures), 3 + k, 'dense'), null, layer.inFeatures, layer.outFeatures));
  const x = random(MAX_ROWS * layer.inFeatures, 1);
  const xt = backend.upload(x);
  const out = backend.allocate(MAX_ROWS * layer.outFeatures);
  // Correct first: 3 rows against the float64 reference (f16 weights on the GPU: a loose bound).
  blr.forward(out, xt, 3);
  const got = await backend.read(out, 3 * layer.outFeatures);
  const expected = blrForward(factors, layer, x.subarray(0, 3 * layer.inFeatures), 3);
  let error = 0, scale = 0;
  for (let k = 0; k < expected.length; k++) {
    error = Math.max(error, Math.abs(got[k] - expected[k]));
    scale = Math.max(scale, Math.abs(expected[k]));
  }
  error /= scale;
  if (!(error < 1e-2)) throw new Error(`${layer.name} ${layer.method}: relative error ${error} against the reference`);
  for (const rows of TOKENS) {
    let call = 0;
    if (backend instanceof WebGpuBackend && values.profile) {
      // Each kernel's GPU time per call over 16 calls (copies in turn), instead of wall times.
      backend.takeProfile();
      for (let k = 0; k < 16; k++) blrCopies[call++ % blrCopies.length].forward(out, xt, rows);
      await backend.read(out, 1);
      const kernels = [...backend.takeProfile()].map(([kernel, p]) => `${kernel} ${((1000 * p.ms) / p.calls).toFixed(1)} µs × ${p.calls / 16}`);
      for (let k = 0; k < 16; k++) denseCopies[call++ % denseCopies.length].forward(out, xt, rows);
      await backend.read(out, 1);
      const dense = [...backend.takeProfile()].map(([kernel, p]) => `${kernel} ${((1000 * p.ms) / p.calls).toFixed(1)} µs`);
      console.log(`${layer.name} ${layer.method} b${layer.blocks} r${layer.rank} N=${rows}: ${kernels.join(', ')}; dense: ${dense.join(', ')}`);
      continue;
    }
    const sync = () => backend.read(out, 1), flush = () => backend.flush();
    const us = await timePerCallUs(() => blrCopies[call++ % blrCopies.length].forward(out, xt, rows), sync, flush);
    const key = `${layer.inFeatures}/${layer.outFeatures}/${rows}`;
    if (!denseTimes.has(key)) denseTimes.set(key, await timePerCallUs(() => denseCopies[call++ % denseCopies.length].forward(out, xt, rows), sync, flush));
    results.push({ layer: layer.name, method: layer.method, in: layer.inFeatures, out: layer.outFeatures, rank: layer.rank, blocks: layer.blocks, rows, us, denseUs: denseTimes.get(key)!, error });
  }
}

if (values.profile) process.exit(0);
let torchInfo: { device: string; torch: string } | undefined;
if (!values['no-torch']) {
  const cases = results.map((r) => [r.method, r.in, r.out, r.rank, r.blocks, r.rows]);
  const run = spawnSync('python3', [path.join('bench', 'torch_blr.py'), JSON.stringify(cases)], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (run.status === 0) {
    const parsed = JSON.parse(run.stdout.trim().split('\n').at(-1)!);
    torchInfo = { device: parsed.device, torch: parsed.torch };
    results.forEach((r, k) => { r.torch = parsed.results[k]; });
  } else {
    console.log(`(no PyTorch baseline: ${(run.stderr || run.error?.message || '').trim().split('\n').at(-1)})`);
  }
}

console.log('\n| layer | method | N | ours µs | our dense µs | PyTorch dense µs | PyTorch BLR µs | PyTorch dense / ours | PyTorch BLR / ours |');
console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of results) {
  const t = r.torch;
  const best = t ? Math.min(t.blr_us, t.blr_compiled_us ?? Infinity) : undefined;
  console.log(`| ${r.layer} ${r.in}→${r.out} | ${r.method} b${r.blocks} r${r.rank} | ${r.rows} | ${r.us.toFixed(1)} | ${r.denseUs.toFixed(1)} | ${t ? t.dense_us.toFixed(1) : '–'} | ${best !== undefined ? best.toFixed(1) : '–'} | ${t ? (t.dense_us / r.us).toFixed(2) : '–'} | ${best !== undefined ? (best / r.us).toFixed(2) : '–'} |`);
}
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), benchmark: 'blr-layers', backend: description, torch: torchInfo, results }, null, 2) + '\n');
console.log(`\nwrote ${values.out}`);
process.exit(0);
