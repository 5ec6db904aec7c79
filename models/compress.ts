// A dense Llama or GPT-2 checkpoint → a block low-rank one in our format (README: config
// blr_layers; factor tensors U/V, W1/W2 or B/C/D of the (out × in) weight — GPT-2's Conv1D
// (in × out) weights are transposed first), one projection at a time: each is factorised when the
// writer reaches its first factor, so memory holds one projection's weights and factors at a time.
import fs from 'node:fs';
import path from 'node:path';
import { blrParameters, blrToDense, type BlrFactors, type BlrShape } from '../kernels/cpu/blr.ts';
import { transpose } from '../kernels/cpu/ops.ts';
import { DTYPE_BYTES, fromFloat32 } from '../weights/dtypes.ts';
import { openLinalg, type BackendKind } from '../kernels/select.ts';
import { CheckpointError, ShardedSafetensors, writeSafetensorsAsync, type TensorToWriteAsync } from '../weights/safetensors.ts';
import { parseModelConfig, type CompressedLayer, type ModelConfig } from './config.ts';
import { compressBlast, compressLowRank, compressMonarch, relativeError } from './factorize.ts';
import { gpt2Names } from './gpt2.ts';
import { llamaNames } from './llama.ts';

export const PROJECTIONS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
/** Progress within one projection's factorisation (BLAST's iterations) at most this often. */
const PROGRESS_EVERY_MS = 10_000;
export type LlamaProjection = (typeof PROJECTIONS)[number];
/** GPT-2's: c_proj is the MLP's output projection (as the paper names it), attn.c_proj the attention's. */
export const GPT2_PROJECTIONS = ['c_attn', 'attn.c_proj', 'c_fc', 'c_proj'] as const;
export type Gpt2Projection = (typeof GPT2_PROJECTIONS)[number];
export type Projection = LlamaProjection | Gpt2Projection;

/** (in, out) of each GPT-2 projection. */
function gpt2Shapes(hidden: number, intermediate: number): Record<Gpt2Projection, [number, number]> {
  return { c_attn: [hidden, 3 * hidden], 'attn.c_proj': [hidden, hidden], c_fc: [hidden, intermediate], c_proj: [intermediate, hidden] };
}

/** (in, out) of each Llama projection, from the model's widths (q and o are heads · head_dim wide). */
export function projectionShapes(hidden: number, intermediate: number, qWidth: number, kvWidth: number): Record<LlamaProjection, [number, number]> {
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
  /** Which projections; all of the architecture's when absent. */
  projections?: Projection[];
  /** BLAST's gradient-descent iterations. */
  iterations?: number;
  /** Where the factorisations run: `auto` on a hardware GPU when there is one, else the CPU (default `cpu`). */
  backend?: BackendKind;
  /** Progress within a projection (BLAST's iterations) at most this often (default 10 s). */
  progressEveryMs?: number;
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

/** A projection of one layer: its module name in the checkpoint and its (in, out). */
export interface ProjectionModule {
  projection: Projection;
  module: string;
  inFeatures: number;
  outFeatures: number;
}

/**
 * Every layer's `projections` (all of the architecture's when absent) by module name, checking
 * that they exist in the architecture. `gpt2Prefix`: GPT-2 module names' prefix in the checkpoint
 * ("transformer." or "").
 */
export function projectionModules(config: ModelConfig, projections?: Projection[], gpt2Prefix = ''): ProjectionModule[] {
  const { hiddenSize: H, intermediateSize: I, heads, kvHeads, headDim } = config;
  const gpt2 = config.architecture === 'gpt2';
  const known: readonly Projection[] = gpt2 ? GPT2_PROJECTIONS : PROJECTIONS;
  const shapes: Partial<Record<Projection, [number, number]>> = gpt2 ? gpt2Shapes(H, I) : projectionShapes(H, I, heads * headDim, kvHeads * headDim);
  const chosen = projections ?? [...known];
  const unknown = chosen.find((p) => !known.includes(p));
  if (unknown !== undefined) throw new RangeError(`unknown projection "${unknown}" for a ${config.architecture} checkpoint (known: ${known.join(', ')})`);
  const moduleName = (l: number, projection: Projection): string => {
    if (!gpt2) return llamaNames.layer(l)[projection as LlamaProjection];
    const n = gpt2Names(gpt2Prefix).layer(l);
    return { c_attn: n.attention, 'attn.c_proj': n.attentionProjection, c_fc: n.fc, c_proj: n.mlpProjection }[projection as Gpt2Projection];
  };
  return Array.from({ length: config.layers }, (_, l) => chosen.map((projection) => {
    const [inFeatures, outFeatures] = shapes[projection]!;
    return { projection, module: moduleName(l, projection), inFeatures, outFeatures };
  })).flat();
}

/** Each projection the options replace (by module name), with its shape; checks that the blocks divide it. */
export function planCompression(config: ModelConfig, options: Pick<CompressOptions, 'method' | 'blocks' | 'rank' | 'ratio' | 'projections'>, gpt2Prefix = ''): Map<string, { projection: Projection; shape: BlrShape }> {
  const blocks = options.method === 'lowrank' ? 1 : options.blocks;
  const modules = new Map<string, { projection: Projection; shape: BlrShape }>();
  for (const { projection, module, inFeatures, outFeatures } of projectionModules(config, options.projections, gpt2Prefix)) {
    const explicit = typeof options.rank === 'number' ? options.rank : options.rank?.[projection];
    const rank = explicit ?? rankForRatio(options.method, options.ratio ?? 0.5, inFeatures, outFeatures, blocks);
    const shape = { inFeatures, outFeatures, rank, blocks };
    if (inFeatures % blocks !== 0 || outFeatures % blocks !== 0 || (options.method === 'monarch' && rank % blocks !== 0)) {
      throw new RangeError(`${projection} (${inFeatures}→${outFeatures}) cannot be ${options.method} with ${blocks} blocks of rank ${rank}: features${options.method === 'monarch' ? ' and rank' : ''} must be multiples of the blocks`);
    }
    modules.set(module, { projection, shape });
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
  if (config.compression) throw new CheckpointError(`${configPath}: already block low-rank`);
  const source = ShardedSafetensors.openDirectory(input);
  let closeLinalg = (): void => {};
  try {
    const conv1d = config.architecture === 'gpt2';
    const modules = planCompression(config, options, source.has('transformer.wte.weight') ? 'transformer.' : '');

    const results: CompressedProjection[] = [];
    const tensors: TensorToWriteAsync[] = [];
    const total = modules.size;
    const linalg = await openLinalg(options.backend ?? 'cpu', progress);
    if (linalg) progress(`factorising on ${linalg.gpu.description}`);
    // Loaded only with a GPU: the CPU path never pays for Dawn's native module.
    const gpu = linalg && { linalg, factorise: await import('./factorize_gpu.ts'), CapacityError: (await import('../kernels/webgpu/linalg.ts')).GpuCapacityError };
    closeLinalg = () => linalg?.close();
    for (const name of source.names()) {
      const info = source.info(name);
      const module = name.endsWith('.weight') ? modules.get(name.slice(0, -'.weight'.length)) : undefined;
      if (!module) {
        tensors.push({ name, dtype: info.dtype, shape: info.shape, data: () => source.readBytes(name) });
        continue;
      }
      const prefix = name.slice(0, -'.weight'.length);
      const { shape } = module;
      const stored = conv1d ? [shape.inFeatures, shape.outFeatures] : [shape.outFeatures, shape.inFeatures];
      if (info.shape.join(',') !== stored.join(',')) {
        throw new CheckpointError(`${info.file}: tensor "${name}" has shape [${info.shape}] but the config implies [${stored}]`);
      }
      // Factors keep the checkpoint's 16-bit type (f32 otherwise).
      const factorDtype = info.dtype === 'F16' || info.dtype === 'BF16' ? info.dtype : 'F32';
      // Factorised when the writer reaches the first factor; the others reuse it.
      let factored: Promise<BlrFactors> | undefined;
      const factorise = (): Promise<BlrFactors> => factored ??= (async () => {
        const weight = conv1d ? transpose(source.readFloat32(name), shape.inFeatures, shape.outFeatures) : source.readFloat32(name);
        const started = performance.now();
        // BLAST's iterations, every PROGRESS_EVERY_MS at most: a 7B projection takes most of a minute on a GPU, hours on a CPU.
        let shown = started;
        const onIteration = (iteration: number, error: number) => {
          if (performance.now() - shown < (options.progressEveryMs ?? PROGRESS_EVERY_MS)) return;
          shown = performance.now();
          progress(`${results.length + 1}/${total} ${prefix}: iteration ${iteration + 1}/${options.iterations ?? 300}, relative error ${error.toFixed(4)} (${((shown - started) / 1000).toFixed(0)} s)`);
        };
        // The GPU reports its own error (from its residual); the CPU's is measured against toDense.
        const onGpu = async (): Promise<{ factors: BlrFactors; error: number } | undefined> => {
          if (!gpu) return undefined;
          try {
            return options.method === 'blast' ? await gpu.factorise.compressBlastGpu(gpu.linalg, weight, shape, { iterations: options.iterations, onIteration })
              : options.method === 'monarch' ? await gpu.factorise.compressMonarchGpu(gpu.linalg, weight, shape)
                : await gpu.factorise.compressLowRankGpu(gpu.linalg, weight, shape);
          } catch (error) {
            if (!(error instanceof gpu.CapacityError)) throw error;
            progress(`${prefix}: ${error.message}; factorising it on the CPU`);
            return undefined;
          }
        };
        const { factors, error } = await onGpu() ?? withError(weight, shape, options.method === 'lowrank' ? compressLowRank(weight, shape)
          : options.method === 'monarch' ? compressMonarch(weight, shape)
            : compressBlast(weight, shape, { iterations: options.iterations, onIteration }));
        const bytes = DTYPE_BYTES[factorDtype] * blrParameters(shape, options.method);
        results.push({ module: prefix, shape, error, denseBytes: info.byteLength, bytes });
        progress(`${results.length}/${total} ${prefix} ${shape.inFeatures}→${shape.outFeatures} ${options.method} b${shape.blocks} r${shape.rank}: relative error ${error.toFixed(4)}, ${(info.byteLength / 1e6).toFixed(2)} → ${(bytes / 1e6).toFixed(2)} MB (${((performance.now() - started) / 1000).toFixed(1)} s${linalg ? ' on the GPU' : ''})`);
        return factors;
      })();
      const { inFeatures: i, outFeatures: o, rank: r, blocks: b } = shape;
      const factor = (suffix: string, factorShape: number[], pick: (f: BlrFactors) => Float32Array): TensorToWriteAsync =>
        ({ name: `${prefix}.${suffix}`, dtype: factorDtype, shape: factorShape, data: async () => fromFloat32(pick(await factorise()), factorDtype) });
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
    await writeSafetensorsAsync(path.join(output, 'model.safetensors'), tensors, { format: 'pt' });
    fs.writeFileSync(path.join(output, 'config.json'), `${JSON.stringify({ ...rawConfig, blr_layers: blrLayersConfig(modules, options.method) }, null, 2)}\n`);
    for (const file of ['tokenizer.json', 'tokenizer.json.gz', 'tokenizer_config.json', 'generation_config.json']) {
      if (fs.existsSync(path.join(input, file))) fs.copyFileSync(path.join(input, file), path.join(output, file));
    }
    return results;
  } finally {
    closeLinalg();
    source.close();
  }
}

function withError(weight: Float32Array, shape: BlrShape, factors: BlrFactors): { factors: BlrFactors; error: number } {
  return { factors, error: relativeError(weight, blrToDense(factors, shape)) };
}

/** The paper's configurations (../shared/ANCHORS.md §1) for Llama-2-7B, Llama-3.2-1B and GPT2-S: projections, blocks, ranks. */
export const COMPRESS_PRESETS = ['llama-2-7b', 'llama-3.2-1b', 'gpt2'] as const;
export type CompressPreset = (typeof COMPRESS_PRESETS)[number];

export function presetOptions(preset: CompressPreset, method: CompressedLayer['method']): Pick<CompressOptions, 'blocks' | 'rank' | 'projections'> {
  if (preset === 'llama-2-7b') {
    const mlp = method === 'monarch' ? 1536 : 1488;
    return { blocks: 16, projections: [...PROJECTIONS], rank: { q: 1024, k: 1024, v: 1024, o: 1024, gate: mlp, up: mlp, down: mlp } };
  }
  if (preset === 'gpt2') return { blocks: method === 'monarch' ? 4 : 6, projections: ['c_attn', 'c_fc', 'c_proj'], rank: 192 };
  return { blocks: 16, projections: ['q', 'o', 'gate', 'up', 'down'], rank: { q: 256, o: 256, gate: 512, up: 768, down: 768 } };
}
