// A dense Llama checkpoint → a block low-rank one in our format (README: config blr_layers; factor
// tensors U/V, W1/W2 or B/C/D), one projection at a time: each is factorised when the writer
// reaches its first factor, so memory holds one projection's weights and factors at a time.
import fs from 'node:fs';
import path from 'node:path';
import { blrParameters, blrToDense, type BlrFactors, type BlrShape } from '../kernels/cpu/blr.ts';
import { DTYPE_BYTES, fromFloat32 } from '../weights/dtypes.ts';
import { CheckpointError, ShardedSafetensors, writeSafetensors, type TensorToWrite } from '../weights/safetensors.ts';
import { parseModelConfig, type CompressedLayer, type ModelConfig } from './config.ts';
import { compressBlast, compressLowRank, compressMonarch, relativeError } from './factorize.ts';
import { llamaNames } from './llama.ts';

export const PROJECTIONS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
export type Projection = (typeof PROJECTIONS)[number];

/** (in, out) of each Llama projection, from the model's widths (q and o are heads · head_dim wide). */
export function projectionShapes(hidden: number, intermediate: number, qWidth: number, kvWidth: number): Record<Projection, [number, number]> {
  return { q: [hidden, qWidth], k: [hidden, kvWidth], v: [hidden, kvWidth], o: [qWidth, hidden], gate: [hidden, intermediate], up: [hidden, intermediate], down: [intermediate, hidden] };
}

export interface CompressOptions {
  method: CompressedLayer['method'];
  /** Ignored (1) for low-rank. */
  blocks: number;
  /** A rank for every projection, or one per projection; or `ratio` instead. */
  rank?: number | Partial<Record<Projection, number>>;
  /** Parameters kept, as a fraction of the dense projection's: r = ratio · i · o / (i + o [+ b²]). */
  ratio?: number;
  projections: Projection[];
  /** BLAST's gradient-descent iterations. */
  iterations?: number;
  onProgress?: (message: string) => void;
}

export interface CompressedProjection {
  module: string;
  shape: BlrShape;
  error: number;
  denseBytes: number;
  bytes: number;
}

/** The rank a ratio gives, floored to what the method allows (a multiple of the blocks for Monarch). */
export function rankForRatio(method: CompressedLayer['method'], ratio: number, inFeatures: number, outFeatures: number, blocks: number): number {
  const perRank = method === 'blast' ? inFeatures + outFeatures + blocks * blocks : inFeatures + outFeatures;
  let rank = Math.floor((ratio * inFeatures * outFeatures) / perRank);
  if (method === 'monarch') rank -= rank % blocks;
  if (rank < (method === 'monarch' ? blocks : 1)) throw new RangeError(`a ratio of ${ratio} leaves no rank for ${inFeatures}→${outFeatures} with ${blocks} blocks`);
  return rank;
}

/** Each projection the options replace (by module name), with its shape; checks that the blocks divide it. */
export function planCompression(config: ModelConfig, options: Pick<CompressOptions, 'method' | 'blocks' | 'rank' | 'ratio' | 'projections'>): Map<string, { projection: Projection; shape: BlrShape }> {
  const blocks = options.method === 'lowrank' ? 1 : options.blocks;
  const { hiddenSize: H, intermediateSize: I, heads, kvHeads, headDim } = config;
  const shapes = projectionShapes(H, I, heads * headDim, kvHeads * headDim);
  const modules = new Map<string, { projection: Projection; shape: BlrShape }>();
  for (let l = 0; l < config.layers; l++) {
    for (const projection of options.projections) {
      const [inFeatures, outFeatures] = shapes[projection];
      const explicit = typeof options.rank === 'number' ? options.rank : options.rank?.[projection];
      const rank = explicit ?? rankForRatio(options.method, options.ratio ?? 0.5, inFeatures, outFeatures, blocks);
      const shape = { inFeatures, outFeatures, rank, blocks };
      if (inFeatures % blocks !== 0 || outFeatures % blocks !== 0 || (options.method === 'monarch' && rank % blocks !== 0)) {
        throw new RangeError(`${projection} (${inFeatures}→${outFeatures}) cannot be ${options.method} with ${blocks} blocks of rank ${rank}: features${options.method === 'monarch' ? ' and rank' : ''} must be multiples of the blocks`);
      }
      modules.set(llamaNames.layer(l)[projection], { projection, shape });
    }
  }
  return modules;
}

/** config.json's `blr_layers` (models/config.ts) for planned projections. */
export function blrLayersConfig(modules: Map<string, { shape: BlrShape }>, method: CompressedLayer['method']): Record<string, CompressedLayer> {
  return Object.fromEntries([...modules].map(([module, { shape }]) => [module, { method, rank: shape.rank, blocks: shape.blocks }]));
}

export async function compressCheckpoint(input: string, output: string, options: CompressOptions): Promise<CompressedProjection[]> {
  const progress = options.onProgress ?? (() => {});
  const configPath = path.join(input, 'config.json');
  if (!fs.existsSync(configPath)) throw new CheckpointError(`${input}: no config.json`);
  const rawConfig = JSON.parse(fs.readFileSync(configPath, 'utf8')) as Record<string, unknown>;
  const config = parseModelConfig(rawConfig, configPath);
  if (config.architecture !== 'llama') throw new CheckpointError(`${configPath}: blr compress takes Llama checkpoints so far`);
  if (config.compression) throw new CheckpointError(`${configPath}: already block low-rank`);
  const source = ShardedSafetensors.openDirectory(input);
  try {
    const modules = planCompression(config, options);

    const results: CompressedProjection[] = [];
    const tensors: TensorToWrite[] = [];
    const total = modules.size;
    for (const name of source.names()) {
      const info = source.info(name);
      const module = name.endsWith('.weight') ? modules.get(name.slice(0, -'.weight'.length)) : undefined;
      if (!module) {
        tensors.push({ name, dtype: info.dtype, shape: info.shape, data: () => source.readBytes(name) });
        continue;
      }
      const prefix = name.slice(0, -'.weight'.length);
      const { shape } = module;
      if (info.shape.join(',') !== `${shape.outFeatures},${shape.inFeatures}`) {
        throw new CheckpointError(`${info.file}: tensor "${name}" has shape [${info.shape}] but the config implies [${shape.outFeatures},${shape.inFeatures}]`);
      }
      // Factors keep the checkpoint's 16-bit type (f32 otherwise).
      const factorDtype = info.dtype === 'F16' || info.dtype === 'BF16' ? info.dtype : 'F32';
      // Factorised when the writer reaches the first factor; the others reuse it.
      let factors: BlrFactors | undefined;
      const factorise = (): BlrFactors => {
        if (factors) return factors;
        const weight = source.readFloat32(name);
        const started = performance.now();
        factors = options.method === 'lowrank' ? compressLowRank(weight, shape)
          : options.method === 'monarch' ? compressMonarch(weight, shape)
            : compressBlast(weight, shape, { iterations: options.iterations });
        const error = relativeError(weight, blrToDense(factors, shape));
        const bytes = DTYPE_BYTES[factorDtype] * blrParameters(shape, options.method);
        results.push({ module: prefix, shape, error, denseBytes: info.byteLength, bytes });
        progress(`${results.length}/${total} ${prefix} ${shape.inFeatures}→${shape.outFeatures} ${options.method} b${shape.blocks} r${shape.rank}: relative error ${error.toFixed(4)}, ${(info.byteLength / 1e6).toFixed(2)} → ${(bytes / 1e6).toFixed(2)} MB (${((performance.now() - started) / 1000).toFixed(1)} s)`);
        return factors;
      };
      const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
      const factor = (suffix: string, factorShape: number[], pick: (f: BlrFactors) => Float32Array): TensorToWrite =>
        ({ name: `${prefix}.${suffix}`, dtype: factorDtype, shape: factorShape, data: () => fromFloat32(pick(factorise()), factorDtype) });
      if (options.method === 'lowrank') {
        tensors.push(factor('U', [o, r], (f) => (f as Extract<BlrFactors, { method: 'lowrank' }>).u), factor('V', [r, i], (f) => (f as Extract<BlrFactors, { method: 'lowrank' }>).v));
      } else if (options.method === 'monarch') {
        tensors.push(factor('W1', [b, r, i / b], (f) => (f as Extract<BlrFactors, { method: 'monarch' }>).w1), factor('W2', [b, o / b, r], (f) => (f as Extract<BlrFactors, { method: 'monarch' }>).w2));
      } else {
        tensors.push(
          factor('B', [b, o / b, r], (f) => (f as Extract<BlrFactors, { method: 'blast' }>).u),
          factor('C', [b, r, i / b], (f) => (f as Extract<BlrFactors, { method: 'blast' }>).v),
          factor('D', [b, b, r], (f) => (f as Extract<BlrFactors, { method: 'blast' }>).s),
        );
      }
    }
    const missing = [...modules.keys()].find((m) => !source.has(`${m}.weight`));
    if (missing) throw new CheckpointError(`${input}: missing tensor "${missing}.weight"`);

    fs.mkdirSync(output, { recursive: true });
    writeSafetensors(path.join(output, 'model.safetensors'), tensors, { format: 'pt' });
    fs.writeFileSync(path.join(output, 'config.json'), `${JSON.stringify({ ...rawConfig, blr_layers: blrLayersConfig(modules, options.method) }, null, 2)}\n`);
    for (const file of ['tokenizer.json', 'tokenizer.json.gz', 'tokenizer_config.json', 'generation_config.json']) {
      if (fs.existsSync(path.join(input, file))) fs.copyFileSync(path.join(input, file), path.join(output, file));
    }
    return results;
  } finally {
    source.close();
  }
}

/** The paper's configurations (../shared/ANCHORS.md §1) for the Llama models: projections, blocks, ranks. */
export const COMPRESS_PRESETS = ['llama-2-7b', 'llama-3.2-1b'] as const;
export type CompressPreset = (typeof COMPRESS_PRESETS)[number];

export function presetOptions(preset: CompressPreset, method: CompressedLayer['method']): Pick<CompressOptions, 'blocks' | 'rank' | 'projections'> {
  if (preset === 'llama-2-7b') {
    const mlp = method === 'monarch' ? 1536 : 1488;
    return { blocks: 16, projections: [...PROJECTIONS], rank: { q: 1024, k: 1024, v: 1024, o: 1024, gate: mlp, up: mlp, down: mlp } };
  }
  return { blocks: 16, projections: ['q', 'o', 'gate', 'up', 'down'], rank: { q: 256, o: 256, gate: 512, up: 768, down: 768 } };
}
