// blr roofline: bytes, FLOPs, arithmetic intensity and roofline time of a model's block low-rank
// layers — dense, as PyTorch runs them, and with fused kernels — on a device; a table and an SVG.
import fs from 'node:fs';
import path from 'node:path';
import { parseModelConfig } from '../models/config.ts';
import { configLayers, DEVICES, layerCost, presetLayers, PRESETS, rooflinePoint, rooflineSvg, type BlrMethod, type DeviceSpec, type Preset, type RooflineLayer, type RooflinePoint, type Variant } from '../models/roofline.ts';
import { numberOption, parseCommandLine, UsageError } from './args.ts';

export const ROOFLINE_HELP = `Usage: blr roofline --model DIR|${PRESETS.join('|')} [options]

For each block low-rank projection of the model — the paper's configurations for a named model
(every method unless --method), or the layers a checkpoint directory stores in block low-rank
form — prints the bytes moved, FLOPs, arithmetic intensity and roofline time at each token count
N, for the dense layer, for the block low-rank layer as PyTorch runs it (every intermediate
through memory), and for fused kernels; then the whole model's totals. Bytes at 2 per element.

Options:
  --model DIR|NAME      a Llama or GPT-2 checkpoint directory (its block low-rank projections), or ${PRESETS.join(', ')}
  --device NAME         ${Object.keys(DEVICES).join(', ')} (default h200)
  --bandwidth GB/s      memory bandwidth (with --peak: a measured device instead of a named one)
  --peak TFLOP/s        16-bit tensor peak
  --tokens LIST         token counts N, comma-separated (default 1,16,128,1024,2048)
  --method NAME         lowrank, monarch or blast (named models only; default: all three)
  --svg FILE            also write the roofline plot
  --json                print the points as JSON instead of tables
  -h, --help            show this help
`;

const VARIANT_LABEL: Record<Variant, string> = { dense: 'dense', pytorch: 'PyTorch BLR', fused: 'fused BLR' };

export async function runRoofline(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine('roofline', args, {
    model: { type: 'string' },
    device: { type: 'string' },
    bandwidth: { type: 'string' },
    peak: { type: 'string' },
    tokens: { type: 'string' },
    method: { type: 'string' },
    svg: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(ROOFLINE_HELP);
    return;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`, 'roofline');
  if (!values.model) throw new UsageError('--model is required', 'roofline');

  let device: DeviceSpec;
  let deviceName: string;
  if (values.bandwidth !== undefined || values.peak !== undefined) {
    if (values.bandwidth === undefined || values.peak === undefined) throw new UsageError('--bandwidth and --peak go together', 'roofline');
    device = { bandwidthGBs: numberOption('bandwidth', values.bandwidth, 0, { min: 1e-6 }), peakTflops: numberOption('peak', values.peak, 0, { min: 1e-6 }), source: 'given on the command line' };
    deviceName = `${device.bandwidthGBs} GB/s, ${device.peakTflops} TFLOP/s`;
  } else {
    deviceName = values.device ?? 'h200';
    const named = DEVICES[deviceName];
    if (!named) throw new UsageError(`unknown --device "${deviceName}" (known: ${Object.keys(DEVICES).join(', ')}; or give --bandwidth and --peak)`, 'roofline');
    device = named;
  }
  const tokens = (values.tokens ?? '1,16,128,1024,2048').split(',').map((t) => numberOption('tokens', t, 0, { integer: true, min: 1 }));

  let layers: RooflineLayer[];
  let modelName: string;
  if ((PRESETS as readonly string[]).includes(values.model)) {
    const methods: BlrMethod[] = values.method === undefined ? ['lowrank', 'monarch', 'blast'] : [values.method as BlrMethod];
    if (!methods.every((m) => m === 'lowrank' || m === 'monarch' || m === 'blast')) throw new UsageError(`--method must be lowrank, monarch or blast, got "${values.method}"`, 'roofline');
    layers = methods.flatMap((m) => presetLayers(values.model as Preset, m));
    modelName = values.model;
  } else {
    if (values.method !== undefined) throw new UsageError('--method applies to named models; a checkpoint says its own methods', 'roofline');
    const configPath = path.join(values.model, 'config.json');
    if (!fs.existsSync(configPath)) throw new Error(`${values.model}: no config.json (give a model directory or one of ${PRESETS.join(', ')})`);
    const config = parseModelConfig(JSON.parse(fs.readFileSync(configPath, 'utf8')), configPath);
    layers = configLayers(config);
    if (layers.length === 0) throw new Error(`${configPath}: no projection is stored in block low-rank form`);
    modelName = values.model;
  }

  const points: (RooflinePoint & { method: BlrMethod; inFeatures: number; outFeatures: number; rank: number; blocks: number })[] = [];
  for (const layer of layers) {
    for (const n of tokens) {
      for (const variant of ['dense', 'pytorch', 'fused'] as Variant[]) {
        points.push({ ...rooflinePoint(layer, n, variant, device), method: layer.method, inFeatures: layer.inFeatures, outFeatures: layer.outFeatures, rank: layer.rank, blocks: layer.blocks });
      }
    }
  }
  if (values.svg) {
    fs.writeFileSync(values.svg, rooflineSvg(points, device, `${modelName}: block low-rank layers on ${deviceName}`));
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ model: modelName, device: { name: deviceName, ...device }, points })}\n`);
    return;
  }

  const out: string[] = [`${modelName} on ${deviceName} (${device.bandwidthGBs} GB/s, ${device.peakTflops} TFLOP/s: ${device.source})`, ''];
  out.push('| layer | in → out | form | ×/model | N | variant | MB | GFLOP | FLOP/byte | µs | bound | dense / this |');
  out.push('| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |');
  for (const layer of layers) {
    for (const n of tokens) {
      const dense = rooflinePoint(layer, n, 'dense', device);
      for (const variant of ['dense', 'pytorch', 'fused'] as Variant[]) {
        const p = rooflinePoint(layer, n, variant, device);
        out.push(`| ${layer.name} | ${layer.inFeatures} → ${layer.outFeatures} | ${layer.method} b${layer.blocks} r${layer.rank} | ${layer.count} | ${n} | ${VARIANT_LABEL[variant]} | ${(p.bytes / 1e6).toFixed(2)} | ${(p.flops / 1e9).toFixed(3)} | ${p.intensity.toFixed(1)} | ${p.microseconds.toFixed(2)} | ${p.bound} | ${(dense.microseconds / p.microseconds).toFixed(2)} |`);
      }
    }
  }
  out.push('', 'Whole model, these layers (µs per forward step: each layer × its count):', '');
  out.push('| method | N | dense µs | PyTorch BLR µs | fused BLR µs | fused speedup over dense | weight bytes, BLR / dense |');
  out.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const method of [...new Set(layers.map((l) => l.method))]) {
    const group = layers.filter((l) => l.method === method);
    const weights = (variant: Variant) => group.reduce((sum, l) => sum + l.count * (layerCost(l, 0, variant).bytes), 0);
    for (const n of tokens) {
      const total = (variant: Variant) => group.reduce((sum, l) => sum + l.count * rooflinePoint(l, n, variant, device).microseconds, 0);
      out.push(`| ${method} | ${n} | ${total('dense').toFixed(1)} | ${total('pytorch').toFixed(1)} | ${total('fused').toFixed(1)} | ${(total('dense') / total('fused')).toFixed(2)}x | ${(weights('fused') / weights('dense')).toFixed(3)} |`);
    }
  }
  if (values.svg) out.push('', `wrote ${values.svg}`);
  process.stdout.write(`${out.join('\n')}\n`);
}
