// Models with random weights, from a Hugging Face config alone: for benchmarks at full model size
// (latency does not depend on the values) and for test fixtures. Matrices are made by the backend
// itself (on the GPU for WebGPU), so a 7B model needs no checkpoint and no trip through JS.
import type { Backend, Tensor } from '../kernels/backend.ts';
import { randomNormalMatrix } from '../kernels/cpu/ops.ts';
import { CheckpointError, elementCount, type TensorInfo } from '../weights/safetensors.ts';
import { compressedLayer, parseModelConfig } from './config.ts';
import { Gpt2Model } from './gpt2.ts';
import { LlamaModel } from './llama.ts';
import { WeightReader, type CausalLM, type DeviceTensorSource } from './model.ts';

export type TensorKind = 'matrix' | 'factor' | 'embedding' | 'norm' | 'bias' | 'coupling';

export interface PlannedTensor {
  name: string;
  shape: number[];
  kind: TensorKind;
}

/**
 * Every tensor a checkpoint of this config holds, in checkpoint order: a Hugging Face one, with the
 * projections the config names in block low-rank form (models/config.ts) as their factors.
 */
export function tensorPlan(config: Record<string, unknown>): PlannedTensor[] {
  const parsed = parseModelConfig(config, 'random model config');
  return densePlan(config).flatMap((t) => {
    const prefix = t.name.endsWith('.weight') ? t.name.slice(0, -'.weight'.length) : '';
    const layer = prefix ? compressedLayer(parsed, prefix) : undefined;
    if (!layer) return [t];
    // GPT-2's Conv1D weights are (in × out); factors describe the (out × in) weight either way.
    const [o, i] = parsed.architecture === 'gpt2' ? [t.shape[1], t.shape[0]] : t.shape;
    const { method, rank: r, blocks: b } = layer;
    const factor = (suffix: string, shape: number[], kind: TensorKind = 'factor') => ({ name: `${prefix}.${suffix}`, shape, kind });
    if (method === 'lowrank') return [factor('U', [o, r]), factor('V', [r, i])];
    if (method === 'monarch') return [factor('W1', [b, r, i / b]), factor('W2', [b, o / b, r])];
    const bIn = layer.inputBlocks ?? b;
    return [factor('B', [b, o / b, r]), factor('C', [bIn, r, i / bIn]), factor('D', [b, bIn, r], 'coupling')];
  });
}

function densePlan(config: Record<string, unknown>): PlannedTensor[] {
  const c = config as Record<string, number>;
  if (config.model_type === 'gpt2') {
    const H = c.n_embd;
    const I = c.n_inner ?? 4 * H;
    const plan: PlannedTensor[] = [
      { name: 'wte.weight', shape: [c.vocab_size, H], kind: 'embedding' },
      { name: 'wpe.weight', shape: [c.n_positions, H], kind: 'embedding' },
    ];
    for (let l = 0; l < c.n_layer; l++) {
      const p = `h.${l}`;
      plan.push(
        { name: `${p}.ln_1.weight`, shape: [H], kind: 'norm' }, { name: `${p}.ln_1.bias`, shape: [H], kind: 'bias' },
        { name: `${p}.attn.c_attn.weight`, shape: [H, 3 * H], kind: 'matrix' }, { name: `${p}.attn.c_attn.bias`, shape: [3 * H], kind: 'bias' },
        { name: `${p}.attn.c_proj.weight`, shape: [H, H], kind: 'matrix' }, { name: `${p}.attn.c_proj.bias`, shape: [H], kind: 'bias' },
        { name: `${p}.ln_2.weight`, shape: [H], kind: 'norm' }, { name: `${p}.ln_2.bias`, shape: [H], kind: 'bias' },
        { name: `${p}.mlp.c_fc.weight`, shape: [H, I], kind: 'matrix' }, { name: `${p}.mlp.c_fc.bias`, shape: [I], kind: 'bias' },
        { name: `${p}.mlp.c_proj.weight`, shape: [I, H], kind: 'matrix' }, { name: `${p}.mlp.c_proj.bias`, shape: [H], kind: 'bias' },
      );
    }
    plan.push({ name: 'ln_f.weight', shape: [H], kind: 'norm' }, { name: 'ln_f.bias', shape: [H], kind: 'bias' });
    return plan;
  }
  const H = c.hidden_size;
  const headDim = c.head_dim ?? H / c.num_attention_heads;
  const q = c.num_attention_heads * headDim;
  const kv = (c.num_key_value_heads ?? c.num_attention_heads) * headDim;
  const I = c.intermediate_size;
  const plan: PlannedTensor[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocab_size, H], kind: 'embedding' }];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    plan.push(
      { name: `${p}.input_layernorm.weight`, shape: [H], kind: 'norm' },
      { name: `${p}.self_attn.q_proj.weight`, shape: [q, H], kind: 'matrix' },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, H], kind: 'matrix' },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, H], kind: 'matrix' },
      { name: `${p}.self_attn.o_proj.weight`, shape: [H, q], kind: 'matrix' },
      { name: `${p}.post_attention_layernorm.weight`, shape: [H], kind: 'norm' },
      { name: `${p}.mlp.gate_proj.weight`, shape: [I, H], kind: 'matrix' },
      { name: `${p}.mlp.up_proj.weight`, shape: [I, H], kind: 'matrix' },
      { name: `${p}.mlp.down_proj.weight`, shape: [H, I], kind: 'matrix' },
    );
  }
  plan.push({ name: 'model.norm.weight', shape: [H], kind: 'norm' });
  if (!config.tie_word_embeddings) plan.push({ name: 'lm_head.weight', shape: [c.vocab_size, H], kind: 'embedding' });
  return plan;
}

/**
 * The spread of a random tensor: matrices 1/√fan-in (Conv1D weights are in × out, Llama's out × in,
 * block low-rank factors (…, in) for both), embeddings 0.5, norm weights near 1, biases small,
 * BLAST couplings 1. Logits then come out O(1–10), so greedy decoding is not a string of near-ties.
 */
export function randomScale(kind: TensorKind, shape: number[], conv1d: boolean): number {
  if (kind === 'matrix') return 1 / Math.sqrt(conv1d ? shape[0] : shape[1]);
  if (kind === 'factor') return 1 / Math.sqrt(shape[shape.length - 1]);
  return kind === 'embedding' ? 0.5 : kind === 'norm' ? 0.1 : kind === 'coupling' ? 1 : 0.05;
}

export class RandomTensorSource implements DeviceTensorSource {
  readonly location: string;
  private readonly tensors = new Map<string, PlannedTensor & { seed: number }>();
  private readonly conv1d: boolean;

  constructor(config: Record<string, unknown>, readonly seed: number) {
    this.location = `random weights (seed ${seed})`;
    this.conv1d = config.model_type === 'gpt2';
    tensorPlan(config).forEach((t, i) => this.tensors.set(t.name, { ...t, seed: (seed * 1000003 + i * 7919) >>> 0 }));
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  private planned(name: string) {
    const t = this.tensors.get(name);
    if (!t) throw new CheckpointError(`${this.location}: no tensor named "${name}"`);
    return t;
  }

  info(name: string): TensorInfo {
    const t = this.planned(name);
    return { name, file: this.location, dtype: 'F32', shape: t.shape, fileOffset: 0, byteLength: elementCount(t.shape) * 4 };
  }

  readFloat32(name: string): Float32Array {
    const t = this.planned(name);
    const count = elementCount(t.shape);
    const values = randomNormalMatrix(1, count, randomScale(t.kind, t.shape, this.conv1d), t.seed);
    if (t.kind === 'norm') for (let i = 0; i < count; i++) values[i] += 1;
    return values;
  }

  readBytes(name: string): Uint8Array {
    return new Uint8Array(this.readFloat32(name).buffer);
  }

  /** A matrix of the tensor's last dimension as columns (a 3-d factor's blocks stacked as rows). */
  createMatrix(backend: Backend, name: string, rows?: number): Tensor {
    const t = this.planned(name);
    const columns = t.shape[t.shape.length - 1];
    return backend.randomMatrix(rows ?? elementCount(t.shape) / columns, columns, randomScale(t.kind, t.shape, this.conv1d), t.seed, name);
  }

  close(): void {}
}

export function loadRandomModel(hfConfig: Record<string, unknown>, backend: Backend, options: { seed?: number; maxStepTokens?: number; maxSequences?: number } = {}): CausalLM {
  const config = parseModelConfig(hfConfig, 'random model config');
  const maxStepTokens = Math.min(options.maxStepTokens ?? 256, config.maxPositions);
  const weights = new WeightReader(new RandomTensorSource(hfConfig, options.seed ?? 0), backend, undefined, { config, maxRows: maxStepTokens });
  return config.architecture === 'llama'
    ? new LlamaModel(config, weights, backend, maxStepTokens, options.maxSequences ?? 1)
    : new Gpt2Model(config, weights, backend, maxStepTokens, options.maxSequences ?? 1);
}

