// WebGPU matmul benchmark: decode GEMV (bandwidth against a copy ceiling measured on the same
// device in the same run) and prefill GEMM (TFLOP/s against PyTorch's F.linear, run from this
// command when python3 with torch and a GPU is there). Random weights; prints tables, writes JSON.
//
//   npx tsx bench/kernels.ts [--quick] [--tokens 128,1024,2048] [--shapes INxOUT,...] [--out FILE] [--no-torch] [--portable]
// --portable measures the kernels for adapters without subgroups or subgroup matrices.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Rng } from '../engine/rng.ts';
import { WebGpuBackend } from '../kernels/webgpu/backend.ts';
import { copyCeilingGBs } from './copy-ceiling.ts';
import { timePerCallUs } from './timing.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    'no-torch': { type: 'boolean' },
    portable: { type: 'boolean' },
    tokens: { type: 'string' },
    shapes: { type: 'string' },
    out: { type: 'string', default: 'bench/out/kernels.json' },
  },
  strict: true,
});

// (in, out): Llama-2-7B q/o and up/down, Llama-3.2-1B up.
const SHAPES: [number, number][] = values.shapes ? values.shapes.split(',').map((s) => s.split('x').map(Number) as [number, number])
  : values.quick ? [[256, 384]] : [[4096, 4096], [4096, 11008], [11008, 4096], [2048, 8192]];
const GEMM_ROWS = values.tokens ? values.tokens.split(',').map(Number) : values.quick ? [64] : [128, 1024, 2048];

const backend = await WebGpuBackend.create({ allowSoftware: true, portable: values.portable });
const device = backend.gpu.device;
console.log(`device: ${backend.description}`);

const rng = new Rng(7);
function randomMatrix(rows: number, columns: number): Float32Array {
  const values = new Float32Array(rows * columns);
  const scale = 1 / Math.sqrt(columns);
  for (let i = 0; i < values.length; i++) values[i] = scale * rng.normal();
  return values;
}

const copyGBs = await copyCeilingGBs(device);
console.log(`copy ceiling: ${copyGBs.toFixed(0)} GB/s (WGSL copy kernel, read + write)`);

interface Row { kind: 'gemv' | 'gemm'; rows: number; in: number; out: number; us: number; gbs?: number; tflops: number; torchUs?: number }
const results: Row[] = [];
// Weights are made on the GPU, four copies used in turn: 4 × 32 MB already exceeds the H200's L2,
// so every call streams its weights from memory, as decode does.
const COPIES = 4;
for (const [inFeatures, outFeatures] of SHAPES) {
  const weights = Array.from({ length: COPIES }, (_, i) => backend.randomMatrix(outFeatures, inFeatures, 1 / Math.sqrt(inFeatures), i + 1, 'w'));
  for (const rows of [1, ...GEMM_ROWS]) {
    const x = backend.upload(randomMatrix(rows, inFeatures));
    const out = backend.allocate(rows * outFeatures);
    let call = 0;
    // Submitted 16 calls at a time while the next are recorded, so the GPU's time is what counts.
    const us = await timePerCallUs(() => backend.matmul(out, x, weights[call++ % COPIES], null, rows, inFeatures, outFeatures), () => backend.read(out, 1), () => backend.flush());
    const bytes = 2 * inFeatures * outFeatures + 4 * rows * (inFeatures + outFeatures);
    const flops = 2 * rows * inFeatures * outFeatures;
    results.push({ kind: rows === 1 ? 'gemv' : 'gemm', rows, in: inFeatures, out: outFeatures, us, gbs: bytes / us / 1e3, tflops: flops / us / 1e6 });
  }
}

let torch: { device: string; torch: string; results: { rows: number; in: number; out: number; us: number }[]; copy_gbs: number } | undefined;
if (!values['no-torch']) {
  const shapes = results.map((r) => [r.rows, r.in, r.out]);
  const run = spawnSync('python3', [path.join('bench', 'torch_linear.py'), JSON.stringify(shapes)], { encoding: 'utf8' });
  if (run.status === 0) {
    torch = JSON.parse(run.stdout.trim().split('\n').at(-1)!);
    for (const r of results) r.torchUs = torch!.results.find((t) => t.rows === r.rows && t.in === r.in && t.out === r.out)?.us;
  } else {
    console.log(`(no PyTorch baseline: ${(run.stderr || run.error?.message || '').trim().split('\n').at(-1)})`);
  }
}

const table = (header: string[], rows: string[][]) => {
  console.log(`| ${header.join(' | ')} |`);
  console.log(`|${header.map(() => ' ---: ').join('|')}|`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
};
console.log('\nGEMV (decode, 1 token): f16 weights, f32 accumulate');
table(['in → out', 'µs', 'GB/s', '% of copy', 'PyTorch bf16 µs', 'PyTorch / ours'],
  results.filter((r) => r.kind === 'gemv').map((r) => [`${r.in} → ${r.out}`, r.us.toFixed(1), r.gbs!.toFixed(0),
    `${((100 * r.gbs!) / copyGBs).toFixed(0)}%`, r.torchUs?.toFixed(1) ?? '–', r.torchUs ? (r.torchUs / r.us).toFixed(2) : '–']));
console.log('\nGEMM (prefill)');
table(['tokens', 'in → out', 'µs', 'TFLOP/s', 'PyTorch bf16 µs', 'PyTorch TFLOP/s', 'ours / PyTorch speed'],
  results.filter((r) => r.kind === 'gemm').map((r) => [String(r.rows), `${r.in} → ${r.out}`, r.us.toFixed(1), r.tflops.toFixed(1),
    r.torchUs?.toFixed(1) ?? '–', r.torchUs ? ((2 * r.rows * r.in * r.out) / r.torchUs / 1e6).toFixed(1) : '–', r.torchUs ? (r.torchUs / r.us).toFixed(2) : '–']));

const summary = { date: new Date().toISOString(), benchmark: 'kernels', device: backend.description, copyCeilingGBs: copyGBs, torch, results };
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify(summary, null, 2) + '\n');
console.log(`\nwrote ${values.out}`);
backend.dispose();
