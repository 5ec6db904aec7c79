// Where the tensor-core GEMM's time goes (kernels/webgpu/gemm_subgroup_matrix.ts): the generated
// kernel timed whole and with parts of its K loop taken out, so each part's share shows. Variants
// (joined by '+'): nofetch — no loads from memory in the loop (stale registers are stashed);
// nostash — no stores into workgroup memory in the loop; stash8 — one store per eight halves
// loaded (their sum: the loads stay live, the stores nearly vanish); nomma — no matrix
// multiplies (their matrix loads go too); nobarrier — no barriers in the loop; direct — results
// stored straight from the accumulators into the output (interior tiles only), not through the
// scratch; epi1 — the first result matrix alone stored (the other accumulators' work goes too).
// Only 'base' computes the right product (checked against float64 on an awkward shape); the
// others are timed only. x and four weight copies hold random values; the copies are used in
// turn, as bench/kernels.ts does.
//
//   npx tsx bench/gemm-ablate.ts [--variants base,nofetch+nostash+nobarrier,...] [--tiles shipped,256x128] [--out FILE]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openGpu } from '../kernels/webgpu/gpu.ts';
import { gemmSubgroupMatrixSource, gemmTileColumns, gemmTileName, gemmTileRows, type GemmTile } from '../kernels/webgpu/gemm_subgroup_matrix.ts';
import { commonWgsl, composeWgsl } from '../kernels/webgpu/wgsl_source.ts';
import { floatToHalf, halfToFloat } from '../weights/dtypes.ts';
import { gemmParams, runAndRead, storageBuffer, timeCallsUs } from './gemm-harness.ts';

const { values } = parseArgs({
  options: {
    variants: { type: 'string', default: 'base,nofetch+nostash+nobarrier,nomma+stash8+nobarrier,stash8+nobarrier,stash8,nobarrier' },
    tiles: { type: 'string', default: 'shipped,256x128' },
    out: { type: 'string', default: 'bench/out/gemm-ablate.json' },
  },
  strict: true,
});
const gpu = await openGpu({ allowSoftware: true });
const device = gpu.device;
if (!gpu.features.subgroupMatrixF16) throw new Error('the GEMM needs f16 subgroup matrices (16 × 16 × 16)');
console.log(`device: ${gpu.description}`);

const VARIANT_PARTS = ['base', 'nofetch', 'nostash', 'stash8', 'nomma', 'nobarrier', 'direct', 'epi1'];

/** The kernel's source with the variant's parts taken out; throws where a part found nothing to change. */
function ablate(source: string, variant: string): string {
  const parts = variant.split('+');
  for (const part of parts) if (!VARIANT_PARTS.includes(part)) throw new RangeError(`unknown variant part ${part} (${VARIANT_PARTS.join(', ')})`);
  const has = (part: string) => parts.includes(part);
  const change = (text: string, pattern: RegExp, by: string | ((...m: string[]) => string), part: string) => {
    const changed = text.replace(pattern, by as string);
    if (changed === text) throw new Error(`${part}: nothing to change in the kernel (has the generator changed?)`);
    return changed;
  };
  let s = source;
  if (has('stash8')) {
    s = change(s, /for \(var c = 0u; c < 4u; c\+\+\) \{\n    let pair = bitcast<vec2<f16>>\(v\[c\]\);\n    (\w+)\[at \+ 2u \* c\] = pair.x;\n    \w+\[at \+ 2u \* c \+ 1u\] = pair.y;\n  \}/g,
      (_m, array) => `let p0 = bitcast<vec2<f16>>(v[0]) + bitcast<vec2<f16>>(v[1]) + bitcast<vec2<f16>>(v[2]) + bitcast<vec2<f16>>(v[3]);\n  ${array}[at] = p0.x + p0.y;`, 'stash8');
  }
  // The K loop and the epilogue after it; the first step's fetch and stash before it stay.
  const loopStart = s.indexOf('  for (var t = first');
  const head = s.slice(0, loopStart);
  let body = s.slice(loopStart);
  if (has('nofetch')) body = change(body, /^ +[xw]r\d+ = load_.*$/gm, '', 'nofetch');
  if (has('nostash')) body = change(body, /^ +stash_[xw]\(.*$/gm, '', 'nostash');
  if (has('nomma')) body = change(body, /^.*subgroupMatrixMultiplyAccumulate\(a.*$/gm, '', 'nomma');
  if (has('nobarrier')) body = change(body, /^    workgroupBarrier\(\);$/gm, '', 'nobarrier');
  const epilogue = body.indexOf('  subgroupMatrixStore<row_major>(&scratch');
  if (has('direct')) {
    const accumulators = [...body.slice(epilogue).matchAll(/subgroupMatrixStore<row_major>\(&scratch, subgroup \* 256u, (acc(\d+)_(\d+)), 16u\);/g)];
    body = body.slice(0, epilogue) + accumulators.map((m) => `  subgroupMatrixStore<row_major>(&out0, (row0 + sg_row + ${Number(m[2]) * 16}u) * params.out_features + col0 + sg_col + ${Number(m[3]) * 16}u, ${m[1]}, params.out_features);`).join('\n') + '\n}\n';
  }
  if (has('epi1')) body = body.slice(0, body.indexOf('  subgroupMatrixStore<row_major>(&scratch', epilogue + 1)) + '}\n';
  return head + body;
}

const paramsBuffer = (rows: number, inFeatures: number, outFeatures: number, wStride: number) => gemmParams(device, rows, inFeatures, outFeatures, wStride);
const storage = (bytes: number) => storageBuffer(device, bytes);
const spare = [storage(16), storage(16), storage(16), storage(16)];

// One explicit layout, so variants that leave a binding unused still take the same bind groups.
const bindGroupLayout = device.createBindGroupLayout({
  entries: [0, 1, 2, 3, 4, 5, 6, 7].map((binding) => ({
    binding, visibility: GPUShaderStage.COMPUTE,
    buffer: { type: binding === 0 ? 'uniform' as const : binding <= 3 ? 'read-only-storage' as const : 'storage' as const },
  })),
});
const pipelineLayout = device.createPipelineLayout({ bindGroupLayouts: [bindGroupLayout] });
async function build(code: string): Promise<GPUComputePipeline> {
  const module = device.createShaderModule({ code: composeWgsl([...commonWgsl('matmul_common'), code]) });
  const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
  if (errors.length) throw new Error(errors.map((m) => `line ${m.lineNum}: ${m.message}`).join('; '));
  return device.createComputePipelineAsync({ layout: pipelineLayout, compute: { module, entryPoint: 'main' } });
}
function binds(params: GPUBuffer, x: GPUBuffer, w: GPUBuffer, out: GPUBuffer): GPUBindGroup {
  const entries: [number, GPUBuffer][] = [[0, params], [1, x], [2, w], [3, spare[0]], [4, out], [5, spare[1]], [6, spare[2]], [7, spare[3]]];
  return device.createBindGroup({ layout: bindGroupLayout, entries: entries.map(([binding, buffer]) => ({ binding, resource: { buffer } })) });
}

/** Largest error against float64 (f16-rounded inputs) relative to the largest |value|, on 150 × 264 → 200. */
async function check(tile: GemmTile, p: GPUComputePipeline): Promise<number> {
  const rows = 150, inFeatures = 264, outFeatures = 200, stride = 264;
  const xs = Float32Array.from({ length: rows * inFeatures }, (_, i) => halfToFloat(floatToHalf(Math.sin(i * 0.37))));
  const halves = new Uint16Array(outFeatures * stride);
  const ws = new Float64Array(outFeatures * inFeatures);
  for (let o = 0; o < outFeatures; o++) for (let k = 0; k < inFeatures; k++) {
    const h = floatToHalf(Math.cos((o * 31 + k * 7) * 0.11) / 8);
    halves[o * stride + k] = h;
    ws[o * inFeatures + k] = halfToFloat(h);
  }
  const x = storage(rows * inFeatures * 2);
  device.queue.writeBuffer(x, 0, Uint16Array.from(xs, (v) => floatToHalf(v)));
  const w = storage(halves.byteLength);
  device.queue.writeBuffer(w, 0, halves);
  const out = storage(rows * outFeatures * 4);
  const params = paramsBuffer(rows, inFeatures, outFeatures, stride);
  const got = await runAndRead(device, (pass) => {
    pass.setPipeline(p);
    pass.setBindGroup(0, binds(params, x, w, out));
    pass.dispatchWorkgroups(Math.ceil(outFeatures / gemmTileColumns(tile)), Math.ceil(rows / gemmTileRows(tile)), 1);
  }, out);
  let worst = 0, largest = 0;
  for (let r = 0; r < rows; r++) for (let o = 0; o < outFeatures; o++) {
    let sum = 0;
    for (let k = 0; k < inFeatures; k++) sum += xs[r * inFeatures + k] * ws[o * inFeatures + k];
    largest = Math.max(largest, Math.abs(sum));
    worst = Math.max(worst, Math.abs(sum - got[r * outFeatures + o]));
  }
  for (const buffer of [x, w, out, params]) buffer.destroy();
  return worst / largest;
}

const TILES: Record<string, GemmTile> = {
  shipped: { subgroupsM: 2, subgroupsN: 4, blocksM: 4, blocksN: 2, depth: 64, stages: 1, loopK: true }, // the backend's 128 × 128
  '256x128': { subgroupsM: 4, subgroupsN: 4, blocksM: 4, blocksN: 2, depth: 32, stages: 1, loopK: true }, // 16 subgroups of 64 × 32
  '128x256': { subgroupsM: 4, subgroupsN: 4, blocksM: 2, blocksN: 4, depth: 32, stages: 1, loopK: true },
  '256x128w': { subgroupsM: 4, subgroupsN: 2, blocksM: 4, blocksN: 4, depth: 32, stages: 1, loopK: true }, // 8 subgroups of 64 × 64
  '128x128w': { subgroupsM: 2, subgroupsN: 2, blocksM: 4, blocksN: 4, depth: 64, stages: 1, loopK: true }, // 4 subgroups of 64 × 64
  '128x128s2': { subgroupsM: 2, subgroupsN: 4, blocksM: 4, blocksN: 2, depth: 32, stages: 2, loopK: true },
  '128x128k32': { subgroupsM: 2, subgroupsN: 4, blocksM: 4, blocksN: 2, depth: 32, stages: 1, loopK: true }, // fewer registers staged
  '128x128k16': { subgroupsM: 2, subgroupsN: 4, blocksM: 4, blocksN: 2, depth: 16, stages: 1, loopK: true },
  '128x128k16s2': { subgroupsM: 2, subgroupsN: 4, blocksM: 4, blocksN: 2, depth: 16, stages: 2, loopK: true },
};
const tiles = values.tiles.split(',').map((name) => {
  const tile = TILES[name];
  if (!tile) throw new RangeError(`unknown tile ${name} (${Object.keys(TILES).join(', ')})`);
  return tile;
});
const variants = values.variants.split(',');
// (rows, in, out): the Llama-2-7B shapes at 1024 tokens, a 128-token prompt, and short K for the fixed cost.
const SHAPES: [number, number, number][] = [[1024, 4096, 4096], [1024, 11008, 4096], [1024, 4096, 11008], [128, 4096, 4096], [1024, 64, 4096], [1024, 1024, 4096]];

// Random f16 values in x and the weights (never zeros: the tensor cores' power, and so their clock,
// depends on the data): one random block written over each buffer.
const RANDOM_HALVES = 1 << 20;
const block = Uint16Array.from({ length: RANDOM_HALVES }, () => floatToHalf((Math.random() * 2 - 1) / 8));
function randomHalves(halves: number): GPUBuffer {
  const buffer = storage(halves * 2);
  for (let at = 0; at < halves; at += RANDOM_HALVES) device.queue.writeBuffer(buffer, at * 2, block, 0, Math.min(RANDOM_HALVES, halves - at));
  return buffer;
}
const x = randomHalves(1024 * 11008);
const weights = [0, 1, 2, 3].map(() => randomHalves(11008 * 4096));
const out = storage(1024 * 11008 * 4);
interface Row { tile: string; variant: string; error?: number; us: number[] }
const rows: Row[] = [];
for (const tile of tiles) {
  for (const variant of variants) {
    const pipeline = await build(ablate(gemmSubgroupMatrixSource(tile, 'f16'), variant));
    const error = variant === 'base' ? await check(tile, pipeline) : undefined;
    const us: number[] = [];
    for (const [rowCount, inFeatures, outFeatures] of SHAPES) {
      const params = paramsBuffer(rowCount, inFeatures, outFeatures, inFeatures);
      const groups = weights.map((w) => binds(params, x, w, out));
      const grid = [Math.ceil(outFeatures / gemmTileColumns(tile)), Math.ceil(rowCount / gemmTileRows(tile)), 1] as const;
      us.push(await timeCallsUs(device, (pass, call) => {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, groups[call % 4]);
        pass.dispatchWorkgroups(...grid);
      }, rowCount >= 1024 ? 20 : 80, 5));
      params.destroy();
    }
    rows.push({ tile: gemmTileName(tile), variant, error, us });
    console.log(`${gemmTileName(tile)} ${variant}: ${us.map((u) => u.toFixed(1)).join(' / ')} µs`);
  }
}

console.log(`\n| tile | variant | error (base) | ${SHAPES.map(([r, i, o]) => `${r} × ${i} → ${o}: µs (TFLOP/s)`).join(' | ')} |`);
console.log(`| --- | --- | ---: |${SHAPES.map(() => ' ---: |').join('')}`);
for (const row of rows) {
  const cells = row.us.map((us, s) => `${us.toFixed(1)} (${((2 * SHAPES[s][0] * SHAPES[s][1] * SHAPES[s][2]) / us / 1e6).toFixed(0)})`);
  console.log(`| ${row.tile} | ${row.variant} | ${row.error === undefined ? '–' : row.error.toExponential(1)} | ${cells.join(' | ')} |`);
}
const failed = rows.filter((r) => r.error !== undefined && !(r.error < 2e-3));
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), device: gpu.description, shapes: SHAPES, rows }, null, 2) + '\n');
console.log(`\nwrote ${values.out}`);
if (failed.length) {
  console.error(`wrong products: ${failed.map((r) => r.tile).join(', ')}`);
  process.exit(1);
}
process.exit(0);
