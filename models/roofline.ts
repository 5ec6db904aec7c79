// Roofline model of block low-rank layers (../shared/ANCHORS.md §1): for each replaced projection,
// the bytes moved, FLOPs and arithmetic intensity of the dense layer, of the block low-rank layer
// as PyTorch runs it (every intermediate written to and read back from memory), and of the fused
// kernel designs (BLAST's partial fusion: Y stays on chip, Z is written once; Monarch's
// permutations folded into the stores; low-rank's x·V kept on chip), and the time each would take
// at a device's bandwidth and peak.
//
// Bytes count each pass over an array of elements at 2 bytes (bf16/f16): x (N·i) read, factors
// read once, intermediates of b·N·r elements written and read as each design does, y (N·o) written.
import { presetOptions, projectionModules, projectionShapes, PROJECTIONS, type Projection } from './compress.ts';
import { compressedLayer, type CompressedLayer, type ModelConfig } from './config.ts';

export interface DeviceSpec {
  bandwidthGBs: number;
  peakTflops: number;
  source: string;
}

/** Published dense 16-bit tensor peaks and memory bandwidths. */
export const DEVICES: Record<string, DeviceSpec> = {
  a40: { bandwidthGBs: 696, peakTflops: 149.7, source: 'NVIDIA A40 datasheet: 696 GB/s, 149.7 TFLOP/s FP16 tensor (dense)' },
  'orin-nano': { bandwidthGBs: 68, peakTflops: 10.2, source: 'Jetson Orin Nano 8GB: 68 GB/s; 32 tensor cores × 512 FP16 FLOP/clock × 625 MHz (dense)' },
  h100: { bandwidthGBs: 3350, peakTflops: 989.4, source: 'NVIDIA H100 SXM datasheet: 3.35 TB/s, 989 TFLOP/s BF16 (dense)' },
  h200: { bandwidthGBs: 4800, peakTflops: 989.4, source: 'NVIDIA H200 SXM datasheet: 4.8 TB/s, 989 TFLOP/s BF16 (dense)' },
};

export type BlrMethod = CompressedLayer['method'];

/** One kind of replaced projection in a model: its shape, its block low-rank form, how many there are. */
export interface RooflineLayer extends CompressedLayer {
  name: string;
  inFeatures: number;
  outFeatures: number;
  count: number;
}

export type Variant = 'dense' | 'pytorch' | 'fused';

export interface LayerCost {
  bytes: number;
  flops: number;
}

/** Bytes and FLOPs of one call of `layer` over N tokens, as `variant` runs it. */
export function layerCost(layer: RooflineLayer, tokens: number, variant: Variant): LayerCost {
  const { inFeatures: i, outFeatures: o, rank: r, blocks: b, method } = layer;
  const N = tokens;
  if (variant === 'dense') return { bytes: 2 * (N * i + i * o + N * o), flops: 2 * N * i * o };
  const factors = method === 'blast' ? r * (i + o + b * b) : r * (i + o);
  const flops = 2 * N * factors;
  const inner = method === 'lowrank' ? N * r : b * N * r; // elements of one intermediate
  let passes: number; // passes over intermediates of `inner` elements
  let outputPasses = 1; // y written once, unless PyTorch permutes it afterwards
  if (method === 'lowrank') passes = variant === 'pytorch' ? 2 : 0; // t written and read / kept on chip
  else if (method === 'monarch') {
    passes = variant === 'pytorch' ? 4 : 2; // t written, permuted (read + write), read / t' written in place, read
    if (variant === 'pytorch') outputPasses = 3; // y written, then read and written permuted
  } else passes = variant === 'pytorch' ? 4 : 2; // Y written and read, Z written and read / Z written once, read
  return { bytes: 2 * (N * i + factors + passes * inner + outputPasses * N * o), flops };
}

export interface RooflinePoint extends LayerCost {
  layer: string;
  tokens: number;
  variant: Variant;
  intensity: number;
  microseconds: number;
  bound: 'memory' | 'compute';
}

export function rooflinePoint(layer: RooflineLayer, tokens: number, variant: Variant, device: DeviceSpec): RooflinePoint {
  const cost = layerCost(layer, tokens, variant);
  const memory = cost.bytes / (device.bandwidthGBs * 1e3); // µs
  const compute = cost.flops / (device.peakTflops * 1e6); // µs
  return {
    ...cost, layer: layer.name, tokens, variant, intensity: cost.flops / cost.bytes,
    microseconds: Math.max(memory, compute), bound: memory >= compute ? 'memory' : 'compute',
  };
}

/** The paper's configurations (ANCHORS §1): per model, the replaced projections for each method. */
export const PRESETS = ['llama-2-7b', 'llama-3.2-1b', 'gpt2'] as const;
export type Preset = (typeof PRESETS)[number];

/** Llama shapes of the named models: hidden, intermediate and k/v widths, layers. */
const LLAMA_SHAPES = {
  'llama-2-7b': { hidden: 4096, intermediate: 11008, kvWidth: 4096, layers: 32 },
  'llama-3.2-1b': { hidden: 2048, intermediate: 8192, kvWidth: 512, layers: 16 },
} as const;

export function presetLayers(preset: Preset, method: BlrMethod): RooflineLayer[] {
  if (preset === 'gpt2') {
    const options = presetOptions(preset, method);
    const blocks = method === 'lowrank' ? 1 : options.blocks;
    const rank = options.rank as number;
    const layer = (name: string, inFeatures: number, outFeatures: number): RooflineLayer => ({ name, inFeatures, outFeatures, count: 12, method, rank, blocks });
    return [layer('attn.c_attn', 768, 2304), layer('mlp.c_fc', 768, 3072), layer('mlp.c_proj', 3072, 768)];
  }
  // The blocks, ranks and projections `blr compress --preset` uses; projections of one shape and rank grouped.
  const { hidden: H, intermediate: I, kvWidth, layers } = LLAMA_SHAPES[preset];
  const { blocks, rank, projections = PROJECTIONS } = presetOptions(preset, method);
  const shapes: Partial<Record<Projection, [number, number]>> = projectionShapes(H, I, H, kvWidth);
  const groups = new Map<string, RooflineLayer>();
  for (const projection of projections) {
    const [inFeatures, outFeatures] = shapes[projection]!;
    const r = typeof rank === 'number' ? rank : rank![projection]!;
    const key = `${inFeatures}/${outFeatures}/${r}`;
    const group = groups.get(key);
    if (group) {
      group.name += `/${projection}`;
      group.count += layers;
    } else groups.set(key, { name: projection, inFeatures, outFeatures, count: layers, method, rank: r, blocks: method === 'lowrank' ? 1 : blocks });
  }
  return [...groups.values()];
}

/** The block low-rank projections of a Llama or GPT-2 checkpoint's config, grouped by projection and form. */
export function configLayers(config: ModelConfig): RooflineLayer[] {
  const groups = new Map<string, RooflineLayer>();
  // GPT-2 module names come with or without the "transformer." prefix.
  const modules = config.architecture === 'gpt2'
    ? [...projectionModules(config, undefined, ''), ...projectionModules(config, undefined, 'transformer.')]
    : projectionModules(config);
  for (const { projection, module, inFeatures, outFeatures } of modules) {
    const spec = compressedLayer(config, module);
    if (!spec) continue;
    const name = config.architecture === 'gpt2' ? projection : module.slice(module.lastIndexOf('.') + 1);
    const key = `${name}/${spec.method}/${spec.rank}/${spec.blocks}`;
    const group = groups.get(key);
    if (group) group.count++;
    else groups.set(key, { name, inFeatures, outFeatures, count: 1, ...spec });
  }
  return [...groups.values()];
}

/** An SVG log–log roofline: the device's roof, and a point per (layer, tokens, variant). */
export function rooflineSvg(points: RooflinePoint[], device: DeviceSpec, title: string): string {
  const width = 760, height = 500, left = 70, right = 190, top = 40, bottom = 60;
  const plotW = width - left - right, plotH = height - top - bottom;
  const intensities = points.map((p) => p.intensity);
  const xMin = Math.pow(10, Math.floor(Math.log10(Math.min(0.5, ...intensities))));
  const xMax = Math.pow(10, Math.ceil(Math.log10(Math.max(device.peakTflops * 1e3 / device.bandwidthGBs * 4, ...intensities))));
  const attainable = (ai: number) => Math.min(device.peakTflops, (ai * device.bandwidthGBs) / 1e3);
  const yMax = Math.pow(10, Math.ceil(Math.log10(device.peakTflops * 1.01)));
  const yMin = Math.pow(10, Math.floor(Math.log10(Math.min(attainable(xMin), ...points.map((p) => p.flops / p.microseconds / 1e6)))));
  const x = (ai: number) => left + ((Math.log10(ai) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * plotW;
  const y = (tflops: number) => top + plotH - ((Math.log10(tflops) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * plotH;
  const colors: Record<Variant, string> = { dense: '#555555', pytorch: '#d62728', fused: '#1f77b4' };
  const labels: Record<Variant, string> = { dense: 'dense', pytorch: 'BLR as PyTorch runs it', fused: 'BLR, fused kernels' };
  const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${left}" y="22" font-size="14">${escape(title)}</text>`,
    `<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`,
  ];
  for (let e = Math.log10(xMin); e <= Math.log10(xMax); e++) {
    parts.push(`<line x1="${x(10 ** e)}" y1="${top}" x2="${x(10 ** e)}" y2="${top + plotH}" stroke="#eee"/>`, `<text x="${x(10 ** e)}" y="${top + plotH + 16}" text-anchor="middle">${10 ** e >= 1 ? 10 ** e : (10 ** e).toPrecision(1)}</text>`);
  }
  for (let e = Math.log10(yMin); e <= Math.log10(yMax); e++) {
    parts.push(`<line x1="${left}" y1="${y(10 ** e)}" x2="${left + plotW}" y2="${y(10 ** e)}" stroke="#eee"/>`, `<text x="${left - 6}" y="${y(10 ** e) + 4}" text-anchor="end">${10 ** e >= 1 ? 10 ** e : (10 ** e).toPrecision(1)}</text>`);
  }
  parts.push(
    `<text x="${left + plotW / 2}" y="${height - 20}" text-anchor="middle">arithmetic intensity (FLOP/byte)</text>`,
    `<text transform="translate(18 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">attainable TFLOP/s</text>`,
  );
  const ridge = (device.peakTflops * 1e3) / device.bandwidthGBs;
  parts.push(`<polyline fill="none" stroke="black" stroke-width="2" points="${x(xMin)},${y(attainable(xMin))} ${x(ridge)},${y(device.peakTflops)} ${x(xMax)},${y(device.peakTflops)}"/>`);
  for (const p of points) {
    const tflops = p.flops / p.microseconds / 1e6;
    parts.push(`<circle cx="${x(p.intensity).toFixed(1)}" cy="${y(tflops).toFixed(1)}" r="4" fill="${colors[p.variant]}" fill-opacity="0.8"><title>${escape(`${p.layer}, N = ${p.tokens}, ${labels[p.variant]}: ${p.intensity.toFixed(1)} FLOP/byte, ${p.microseconds.toFixed(1)} µs`)}</title></circle>`);
    parts.push(`<text x="${(x(p.intensity) + 5).toFixed(1)}" y="${(y(tflops) - 5).toFixed(1)}" font-size="9" fill="${colors[p.variant]}">${p.tokens}</text>`);
  }
  (['dense', 'pytorch', 'fused'] as Variant[]).forEach((variant, k) => {
    parts.push(`<circle cx="${left + plotW + 20}" cy="${top + 10 + 20 * k}" r="5" fill="${colors[variant]}"/>`, `<text x="${left + plotW + 30}" y="${top + 14 + 20 * k}">${labels[variant]}</text>`);
  });
  parts.push(`<text x="${left + plotW + 14}" y="${top + 80}" font-size="9">labels: tokens N</text>`, '</svg>', '');
  return parts.join('\n');
}
