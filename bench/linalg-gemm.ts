// The f32 GEMM of GPU compression (wgsl/linalg_gemm.wgsl) at the shapes one BLAST iteration of a
// Llama-2-7B gate projection runs (11008 × 4096, rank 1488, 16 blocks: the residual over the 256
// block pairs, U's and V's gradients, the couplings' products), random values, each timed over
// ten dispatches with GPU timestamps (median dispatch). Prints TFLOP/s.
//
//   npx tsx bench/linalg-gemm.ts [--base FILE --base-tile N]   (--base: another GEMM kernel with the same
//                                                              bindings, timed first as "base")
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { randomNormalMatrix } from '../kernels/cpu/ops.ts';
import { openGpu } from '../kernels/webgpu/gpu.ts';
import { GpuLinalg, type Step } from '../kernels/webgpu/linalg.ts';

const { values } = parseArgs({ options: { base: { type: 'string' }, 'base-tile': { type: 'string', default: '64' } } });
const gpu = await openGpu({ allowSoftware: true });
console.log(`device: ${gpu.description}`);
const kernels: [string, GpuLinalg][] = [];
if (values.base) kernels.push(['base', await GpuLinalg.create(gpu, { code: fs.readFileSync(values.base, 'utf8'), tile: Number(values['base-tile']) })]);
kernels.push(['linalg_gemm.wgsl', await GpuLinalg.create(gpu)]);

const o = 11008, i = 4096, r = 1488, b = 16, ob = o / b, ib = i / b;
console.log('| kernel | GEMM (m × n × k, batch) | ms | TFLOP/s |');
console.log('| --- | --- | ---: | ---: |');
for (const [name, linalg] of kernels) {
  const array = (n: number) => linalg.upload(randomNormalMatrix(1, n, 1, n % 9973));
  const a = array(o * i), residual = array(o * i), u = array(o * r), gradU = array(o * r), v = array(r * i), gradV = array(r * i), s = array(b * b * r);
  const products = array(7 * b * r * ib);
  const cases: [string, number, Step][] = [
    ['residual', 2 * o * i * r, linalg.gemm({ m: ob, n: ib, k: r, batch: b * b, zInner: b }, { array: residual, outer: ob * i, inner: ib, row: i, col: 1 },
      { array: u, outer: ob * r, row: r, col: 1 }, { array: v, inner: ib, row: i, col: 1 }, { alpha: -1, beta: 1, scaleA: { array: s, outer: b * r, inner: r, perK: 1 } })],
    ['U gradient', 2 * o * i * r, linalg.gemm({ m: ob, n: r, k: i, batch: b }, { array: gradU, inner: ob * r, row: r, col: 1 }, { array: a, inner: ob * i, row: i, col: 1 },
      { array: v, row: 1, col: i }, { scaleB: { array: s, inner: b * r, kBlock: ib, perKBlock: r, perMN: 1 } })],
    ['V gradient', 2 * o * i * r, linalg.gemm({ m: r, n: ib, k: o, batch: b }, { array: gradV, inner: ib, row: i, col: 1 }, { array: u, row: 1, col: r },
      { array: a, inner: ib, row: i, col: 1 }, { scaleA: { array: s, inner: r, kBlock: ob, perKBlock: b * r, perMN: 1 } })],
    ['coupling products (7 of 16 rows of blocks)', 2 * 7 * b * r * ib * ob, linalg.gemm({ m: r, n: ib, k: ob, batch: 7 * b, zInner: b }, { array: products, outer: b * r * ib, inner: r * ib, row: ib, col: 1 },
      { array: u, outer: ob * r, row: 1, col: r }, { array: a, outer: ob * i, inner: ib, row: i, col: 1 })],
  ];
  linalg.startProfile();
  for (const [label, flops, step] of cases) {
    const times: number[] = [];
    for (let t = 0; t < 10; t++) {
      linalg.takeProfile();
      await linalg.run([step]);
      times.push(linalg.takeProfile().get('gemm')!.ms);
    }
    times.sort((x, y) => x - y);
    const ms = times[5];
    console.log(`| ${name} | ${label}: ${step.kind === 'dispatch' ? step.workgroups.join('×') : ''} workgroups | ${ms.toFixed(2)} | ${(flops / ms / 1e9).toFixed(1)} |`);
  }
}
