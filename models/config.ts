// Hugging Face config.json → the one config object our models read.

export type Architecture = 'llama' | 'gpt2';

export interface RopeScaling {
  type: 'default' | 'linear' | 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositions: number;
}

/** A projection stored in block low-rank form (kernels/cpu/blr.ts): method, rank, blocks. */
export interface CompressedLayer {
  method: 'lowrank' | 'monarch' | 'blast';
  rank: number;
  /** 1 for low-rank; BLAST: the output's blocks. */
  blocks: number;
  /**
   * BLAST from the authors' format only: the input's blocks when they differ from the output's
   * (blast_num_blocks [b_out, b_in]). Loading turns such a layer into the equivalent one on
   * lcm(b_out, b_in) blocks each way.
   */
  inputBlocks?: number;
}

/**
 * Which projections a checkpoint stores in block low-rank form. Ours (config key `blr_layers`):
 * module name → layer, e.g. "model.layers.0.self_attn.q_proj": {"method": "blast", "rank": 64,
 * "blocks": 4}. The BLAST authors' (model_type "blast_llama"): every projection named in
 * target_modules (last name component, e.g. "q_proj") of the layers in `indices` (all when absent)
 * is BLAST with blast_rank (one, or per projection name) and blast_num_blocks.
 */
export type Compression =
  | { format: 'blr'; modules: Record<string, CompressedLayer> }
  | { format: 'blast'; targets: string[]; rank: number | Record<string, number>; blocks: number; inputBlocks: number; layers: number[] | null };

export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  maxPositions: number;
  normEps: number;
  tiedEmbeddings: boolean;
  /** Llama only. */
  ropeTheta: number;
  ropeScaling: RopeScaling;
  attentionBias: boolean;
  mlpBias: boolean;
  /** Null for a dense checkpoint. */
  compression: Compression | null;
}

/** The block low-rank form of module `name` (e.g. "model.layers.3.mlp.up_proj"), or undefined if dense. */
export function compressedLayer(config: ModelConfig, name: string): CompressedLayer | undefined {
  const c = config.compression;
  if (!c) return undefined;
  if (c.format === 'blr') return c.modules[name];
  const projection = name.slice(name.lastIndexOf('.') + 1);
  const layer = /\.layers\.(\d+)\./.exec(name);
  if (!c.targets.includes(projection) || (c.layers && (!layer || !c.layers.includes(Number(layer[1]))))) return undefined;
  const rank = typeof c.rank === 'number' ? c.rank : c.rank[projection];
  if (rank === undefined) return undefined;
  return c.inputBlocks === c.blocks ? { method: 'blast', rank, blocks: c.blocks } : { method: 'blast', rank, blocks: c.blocks, inputBlocks: c.inputBlocks };
}

function positiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0;
}

function parseCompression(raw: Json, source: string): Compression | null {
  if (raw.model_type === 'blast_llama') {
    const targets = raw.target_modules;
    if (!Array.isArray(targets) || !targets.every((t) => typeof t === 'string')) throw new ConfigError(`${source}: "target_modules" must be a list of projection names`);
    const rank = raw.blast_rank;
    if (!positiveInteger(rank) && !(rank && typeof rank === 'object' && !Array.isArray(rank) && Object.values(rank).every(positiveInteger))) {
      throw new ConfigError(`${source}: "blast_rank" must be a positive integer or an object of them per projection name, found ${JSON.stringify(rank)}`);
    }
    const blocks = [raw.blast_num_blocks].flat();
    if (blocks.length < 1 || blocks.length > 2 || !blocks.every(positiveInteger)) {
      throw new ConfigError(`${source}: "blast_num_blocks" must be a positive integer, [b] or [b_out, b_in], found ${JSON.stringify(raw.blast_num_blocks)}`);
    }
    const layers = raw.indices;
    if (layers != null && (!Array.isArray(layers) || !layers.every((l) => Number.isInteger(l) && l >= 0))) {
      throw new ConfigError(`${source}: "indices" must be a list of layer numbers`);
    }
    return {
      format: 'blast', targets: targets as string[], rank: rank as number | Record<string, number>,
      blocks: blocks[0] as number, inputBlocks: blocks[blocks.length - 1] as number, layers: (layers as number[] | null) ?? null,
    };
  }
  if (raw.blr_layers == null) return null;
  const modules = raw.blr_layers;
  if (typeof modules !== 'object' || Array.isArray(modules)) throw new ConfigError(`${source}: "blr_layers" must map module names to {method, rank, blocks}`);
  const parsed: Record<string, CompressedLayer> = {};
  for (const [name, spec] of Object.entries(modules as Json)) {
    const { method, rank, blocks = 1 } = (spec ?? {}) as Json;
    if ((method !== 'lowrank' && method !== 'monarch' && method !== 'blast') || !positiveInteger(rank) || !positiveInteger(blocks) || (method === 'lowrank' && blocks !== 1)) {
      throw new ConfigError(`${source}: blr_layers["${name}"] must be {"method": "lowrank" | "monarch" | "blast", "rank": r, "blocks": b} (low-rank: one block), found ${JSON.stringify(spec)}`);
    }
    parsed[name] = { method, rank, blocks };
  }
  return { format: 'blr', modules: parsed };
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Json = Record<string, unknown>;

export function parseModelConfig(raw: Json, source = 'config.json'): ModelConfig {
  const modelType = raw.model_type;
  const integer = (key: string, fallback?: number): number => {
    const value = raw[key] ?? fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
      throw new ConfigError(`${source}: "${key}" must be a positive integer, found ${JSON.stringify(raw[key])}`);
    }
    return value;
  };
  const float = (key: string, fallback: number): number => {
    const value = raw[key] ?? fallback;
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new ConfigError(`${source}: "${key}" must be a number`);
    return value;
  };
  if (modelType === 'llama' || modelType === 'mistral' || modelType === 'blast_llama') {
    const hiddenSize = integer('hidden_size');
    const heads = integer('num_attention_heads');
    const kvHeads = integer('num_key_value_heads', heads);
    if (heads % kvHeads !== 0) throw new ConfigError(`${source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
    const hiddenAct = raw.hidden_act ?? 'silu';
    if (hiddenAct !== 'silu') throw new ConfigError(`${source}: hidden_act "${String(hiddenAct)}" is not supported (only silu)`);
    return {
      architecture: 'llama',
      vocabSize: integer('vocab_size'),
      hiddenSize,
      intermediateSize: integer('intermediate_size'),
      layers: integer('num_hidden_layers'),
      heads,
      kvHeads,
      headDim: raw.head_dim == null ? hiddenSize / heads : integer('head_dim'),
      maxPositions: integer('max_position_embeddings', 2048),
      normEps: float('rms_norm_eps', 1e-6),
      tiedEmbeddings: raw.tie_word_embeddings === true,
      ropeTheta: float('rope_theta', 10000),
      ropeScaling: parseRopeScaling(raw.rope_scaling, source),
      attentionBias: raw.attention_bias === true,
      mlpBias: raw.mlp_bias === true,
      compression: parseCompression(raw, source),
    };
  }
  if (modelType === 'gpt2') {
    const hiddenSize = integer('n_embd');
    const heads = integer('n_head');
    const activation = raw.activation_function ?? 'gelu_new';
    if (activation !== 'gelu_new' && activation !== 'gelu_pytorch_tanh') {
      throw new ConfigError(`${source}: activation_function "${String(activation)}" is not supported (only gelu_new)`);
    }
    if (raw.scale_attn_by_inverse_layer_idx === true || raw.reorder_and_upcast_attn === true) {
      throw new ConfigError(`${source}: scale_attn_by_inverse_layer_idx and reorder_and_upcast_attn are not supported`);
    }
    return {
      architecture: 'gpt2',
      vocabSize: integer('vocab_size'),
      hiddenSize,
      intermediateSize: raw.n_inner == null ? 4 * hiddenSize : integer('n_inner'),
      layers: integer('n_layer'),
      heads,
      kvHeads: heads,
      headDim: hiddenSize / heads,
      maxPositions: integer('n_positions', 1024),
      normEps: float('layer_norm_epsilon', 1e-5),
      tiedEmbeddings: raw.tie_word_embeddings !== false,
      ropeTheta: 0,
      ropeScaling: parseRopeScaling(undefined, source),
      attentionBias: true,
      mlpBias: true,
      compression: parseCompression(raw, source),
    };
  }
  throw new ConfigError(`${source}: model_type "${String(modelType)}" is not supported (supported: llama, blast_llama, gpt2)`);
}

function parseRopeScaling(raw: unknown, source: string): RopeScaling {
  const none: RopeScaling = { type: 'default', factor: 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 };
  if (raw == null) return none;
  if (typeof raw !== 'object') throw new ConfigError(`${source}: rope_scaling must be an object`);
  const r = raw as Json;
  const type = r.rope_type ?? r.type;
  if (type === 'default') return none;
  const factor = typeof r.factor === 'number' ? r.factor : NaN;
  if (!(factor > 0)) throw new ConfigError(`${source}: rope_scaling.factor must be a positive number`);
  if (type === 'linear') return { ...none, type, factor };
  if (type === 'llama3') {
    const number = (key: string) => {
      if (typeof r[key] !== 'number') throw new ConfigError(`${source}: rope_scaling.${key} must be a number for llama3 scaling`);
      return r[key] as number;
    };
    return {
      type, factor,
      lowFreqFactor: number('low_freq_factor'),
      highFreqFactor: number('high_freq_factor'),
      originalMaxPositions: number('original_max_position_embeddings'),
    };
  }
  throw new ConfigError(`${source}: rope_scaling type "${String(type)}" is not supported (supported: default, linear, llama3)`);
}

/**
 * RoPE inverse frequencies, computed in f32 as transformers does, with linear or llama3 scaling.
 * Pairs are (i, i + headDim/2) within a head (rotate_half convention).
 */
export function ropeInverseFrequencies(config: ModelConfig): Float32Array {
  const half = config.headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / config.ropeTheta ** Math.fround((2 * i) / config.headDim);
  const s = config.ropeScaling;
  if (s.type === 'linear') for (let i = 0; i < half; i++) inv[i] = inv[i] / s.factor;
  if (s.type === 'llama3') {
    const lowFreqWavelen = s.originalMaxPositions / s.lowFreqFactor;
    const highFreqWavelen = s.originalMaxPositions / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen > lowFreqWavelen) inv[i] = inv[i] / s.factor;
      else if (wavelen >= highFreqWavelen) {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
      }
    }
  }
  return inv;
}
