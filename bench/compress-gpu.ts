// `blr compress` on the GPU (models/factorize_gpu.ts) at full model shapes, random weights (timing
// only; a Gaussian matrix is the hard case for the error, so the errors printed are no guide to a
// trained weight's): BLAST's start and its time per gradient-descent iteration, and the low-rank
// and Monarch factorisations, per projection shape. BLAST runs twice (few and more iterations): its phases
// (normalising and uploading, the start) are timed inside, the time per iteration is the
// difference of the iteration phases over the extra iterations, and 300 iterations (the default)
// are projected from it. --profile times every dispatch of one BLAST run and prints the GPU time per kernel.
//
//   npx tsx bench/compress-gpu.ts [--shapes OUTxIN:RANK:BLOCKS,...] [--iterations 5,25] [--profile] [--out FILE]
// (default shapes: Llama-2-7B's q/k/v/o, gate/up and down at the paper's BLAST ranks, ANCHORS §1)
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { randomNormalMatrix } from '../kernels/cpu/ops.ts';
import { GpuLinalg } from '../kernels/webgpu/linalg.ts';
import { compressBlastGpu, compressLowRankGpu, compressMonarchGpu } from '../models/factorize_gpu.ts';

const { values } = parseArgs({
  options: {
    shapes: { type: 'string', default: '4096x4096:1024:16,11008x4096:1488:16,4096x11008:1488:16' },
    iterations: { type: 'string', default: '5,25' },
    profile: { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/out/compress-gpu.json' },
  },
});
const shapes = values.shapes.split(',').map((spec) => {
  const match = /^(\d+)x(\d+):(\d+):(\d+)$/.exec(spec.trim());
  if (!match) throw new Error(`--shapes takes OUTxIN:RANK:BLOCKS, such as 4096x4096:1024:16; got ${spec}`);
  const [outFeatures, inFeatures, rank, blocks] = match.slice(1).map(Number);
  return { outFeatures, inFeatures, rank, blocks };
});
const [few, more] = values.iterations.split(',').map(Number);
if (!(few >= 1 && more > few)) throw new Error('--iterations takes two counts, the second larger, such as 5,25');

const linalg = await GpuLinalg.open({ allowSoftware: true });
console.log(`device: ${linalg.gpu.description}`);
const rows: { shape: string; prepareS: number; startS: number; iterationMs: number; projected300S: number; measuredS: number; blastError: number; lowRankS: number; lowRankError: number; monarchS: number; monarchError: number }[] = [];
for (const shape of shapes) {
  const { outFeatures: o, inFeatures: i, rank: r, blocks: b } = shape;
  const weight = randomNormalMatrix(o, i, 0.02, o * 31 + i);
  const timed = async <T>(work: () => Promise<T>): Promise<[T, number]> => {
    const started = performance.now();
    const result = await work();
    return [result, (performance.now() - started) / 1000];
  };
  // Warm-up (pipelines, first allocations), then the two runs.
  await compressBlastGpu(linalg, weight, shape, { iterations: 1 });
  const fewRun = await compressBlastGpu(linalg, weight, shape, { iterations: few });
  const [result, moreS] = await timed(() => compressBlastGpu(linalg, weight, shape, { iterations: more }));
  const iterationMs = ((result.seconds.iterations - fewRun.seconds.iterations) * 1000) / (more - few);
  const { prepare, start } = result.seconds;
  const [lowRank, lowRankS] = await timed(() => compressLowRankGpu(linalg, weight, { ...shape, blocks: 1 }));
  // Monarch at the same rank and blocks (its rank rounded down to a multiple of the blocks).
  const monarchShape = { ...shape, rank: r - (r % b) };
  await compressMonarchGpu(linalg, weight, monarchShape);
  const [monarch, monarchS] = await timed(() => compressMonarchGpu(linalg, weight, monarchShape));
  const row = { shape: `${o}×${i} r${r} b${b}`, prepareS: prepare, startS: start, iterationMs, projected300S: prepare + start + (300 * iterationMs) / 1000, measuredS: moreS, blastError: result.error, lowRankS, lowRankError: lowRank.error, monarchS, monarchError: monarch.error };
  rows.push(row);
  console.log(`${row.shape}: prepare ${prepare.toFixed(2)} s, start ${start.toFixed(2)} s, ${iterationMs.toFixed(1)} ms per iteration, 300 iterations ≈ ${row.projected300S.toFixed(1)} s; low-rank ${lowRankS.toFixed(2)} s; Monarch ${monarchS.toFixed(2)} s`);
  if (values.profile) {
    linalg.startProfile();
    linalg.takeProfile();
    await compressBlastGpu(linalg, weight, shape, { iterations: few });
    const profile = [...linalg.takeProfile()].sort((x, y) => y[1].ms - x[1].ms);
    const total = profile.reduce((sum, [, p]) => sum + p.ms, 0);
    console.log(`  profile of the start + ${few} iterations (GPU ms per kernel, ${total.toFixed(0)} ms in all):`);
    for (const [name, p] of profile) console.log(`  | ${name} | ${p.calls} | ${p.ms.toFixed(1)} ms | ${((100 * p.ms) / total).toFixed(0)}% |`);
    // Later shapes unprofiled: a fresh device.
    break;
  }
}
console.log(`\n| shape (out×in, rank, blocks) | prepare s | BLAST start s | ms / iteration | ${more} iterations, measured s | 300 iterations s | low-rank s | Monarch s |`);
console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) console.log(`| ${r.shape} | ${r.prepareS.toFixed(2)} | ${r.startS.toFixed(2)} | ${r.iterationMs.toFixed(1)} | ${r.measuredS.toFixed(1)} | ${r.projected300S.toFixed(1)} | ${r.lowRankS.toFixed(2)} | ${r.monarchS.toFixed(2)} |`);
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, `${JSON.stringify({ date: new Date().toISOString(), device: linalg.gpu.description, iterations: [few, more], rows }, null, 2)}\n`);
console.log(`wrote ${values.out}`);
linalg.close();
