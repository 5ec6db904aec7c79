// GPT-2: learned position embeddings, pre-LayerNorm blocks, gelu_new MLP, LM head tied to the
// token embedding. Its checkpoints store linear weights as Conv1D (inFeatures × outFeatures); we
// transpose them once at load, and split the fused c_attn into q, k and v.
import type { AttentionShape, Backend, KVCache, Tensor } from '../kernels/backend.ts';
import { transpose } from '../kernels/cpu/ops.ts';
import type { ModelConfig } from './config.ts';
import { ConcatenatedLinear, DenseLinear, type LinearGroup, type LinearLayer } from './linear.ts';
import { DecoderModel, StepBuffers, type StepPlan, type WeightReader } from './model.ts';

export interface Gpt2Layer {
  norm1: { weight: Tensor; bias: Tensor };
  /** c_attn: q, k and v in one matrix, one matmul (or one block low-rank layer, its output split three ways). */
  qkv: LinearGroup;
  attentionProjection: LinearLayer;
  norm2: { weight: Tensor; bias: Tensor };
  fc: LinearLayer;
  mlpProjection: LinearLayer;
}

/** Hugging Face tensor names; GPT2LMHeadModel checkpoints prefix them with "transformer.". */
export function gpt2Names(prefix: string) {
  return {
    tokenEmbedding: `${prefix}wte.weight`,
    positionEmbedding: `${prefix}wpe.weight`,
    finalNorm: `${prefix}ln_f`,
    lmHead: 'lm_head',
    layer: (l: number) => ({
      norm1: `${prefix}h.${l}.ln_1`,
      attention: `${prefix}h.${l}.attn.c_attn`,
      attentionProjection: `${prefix}h.${l}.attn.c_proj`,
      norm2: `${prefix}h.${l}.ln_2`,
      fc: `${prefix}h.${l}.mlp.c_fc`,
      mlpProjection: `${prefix}h.${l}.mlp.c_proj`,
    }),
  };
}

/** The names of this checkpoint's tensors (with or without the "transformer." prefix). */
function checkpointNames(weights: WeightReader) {
  return gpt2Names(weights.has('transformer.wte.weight') ? 'transformer.' : '');
}

function layerNorm(weights: WeightReader, prefix: string, width: number) {
  return { weight: weights.upload(`${prefix}.weight`, [width]), bias: weights.upload(`${prefix}.bias`, [width]) };
}

/** Layer `l`'s weights. */
export function readGpt2Layer(weights: WeightReader, config: ModelConfig, l: number): Gpt2Layer {
  const { hiddenSize: H, intermediateSize: I } = config;
  const n = checkpointNames(weights).layer(l);
  return {
    norm1: layerNorm(weights, n.norm1, H),
    qkv: conv1d(weights, n.attention, H, [H, H, H]),
    attentionProjection: conv1d(weights, n.attentionProjection, H, [H]),
    norm2: layerNorm(weights, n.norm2, H),
    fc: conv1d(weights, n.fc, H, [I]),
    mlpProjection: conv1d(weights, n.mlpProjection, I, [H]),
  };
}

export class Gpt2Model extends DecoderModel {
  readonly parameters: number;
  readonly padding: number;
  private readonly tokenEmbedding: Tensor;
  private readonly positionEmbedding: Tensor;
  private readonly layers: Gpt2Layer[];
  private readonly finalNorm: { weight: Tensor; bias: Tensor };
  private readonly lmHead: LinearLayer;
  private readonly attentionShape: AttentionShape;
  protected readonly buffers: StepBuffers;

  /** `layers`: read beforehand (loadModelAsync reads them one at a time); else read here. */
  constructor(readonly config: ModelConfig, weights: WeightReader, readonly backend: Backend, readonly maxStepTokens: number, readonly maxSequences: number, layers?: Gpt2Layer[]) {
    super();
    const { hiddenSize: H, vocabSize, heads, headDim } = config;
    const names = checkpointNames(weights);
    const norm = (prefix: string) => layerNorm(weights, prefix, H);
    this.tokenEmbedding = weights.upload(names.tokenEmbedding, [vocabSize, H]);
    this.positionEmbedding = weights.upload(names.positionEmbedding, [config.maxPositions, H]);
    this.layers = layers ?? Array.from({ length: config.layers }, (_, l) => readGpt2Layer(weights, config, l));
    this.finalNorm = norm(names.finalNorm);
    this.lmHead = config.tiedEmbeddings || !weights.has(`${names.lmHead}.weight`)
      ? new DenseLinear(backend, this.tokenEmbedding, null, H, vocabSize)
      : weights.linear(names.lmHead, H, vocabSize, false);
    this.parameters = weights.parameters;
    this.padding = weights.padding;
    this.attentionShape = { heads, kvHeads: heads, headDim, scale: 1 / Math.sqrt(headDim) };

    this.buffers = new StepBuffers(backend, config, maxStepTokens, maxSequences, { gatedMlp: false });
  }

  protected record(cache: KVCache, step: StepPlan): void {
    const be = this.backend;
    const b = this.buffers;
    const { hiddenSize: H, normEps: eps } = this.config;
    const { rows, tokenIds, positions, pages } = step;

    be.gatherRows(b.hidden, this.tokenEmbedding, tokenIds, rows, H);
    be.gatherRows(b.projected, this.positionEmbedding, positions, rows, H);
    be.add(b.hidden, b.hidden, b.projected, rows * H);
    // Each LayerNorm goes to the matmul that reads it (an InputNorm with a bias): inside the GEMV
    // for one row on a GPU with subgroups, a pass of its own elsewhere.
    const norm = (n: { weight: Tensor; bias: Tensor }) => ({ weight: n.weight, bias: n.bias, eps });
    this.layers.forEach((layer, l) => {
      layer.qkv.forward([b.q, b.k, b.v], b.hidden, rows, norm(layer.norm1));
      be.writeKV(cache, l, b.k, b.v, positions, pages, rows);
      for (const s of step.segments) be.attention(b.attended, b.q, cache, l, positions, pages, s.firstRow, s.rows, this.attentionShape, s.length, s.oneSequence);
      layer.attentionProjection.forwardAdd(b.hidden, b.attended, rows);

      layer.fc.forward(b.mlp, b.hidden, rows, norm(layer.norm2), 'gelu');
      layer.mlpProjection.forwardAdd(b.hidden, b.mlp, rows);
      this.betweenLayers(step);
    });
    const outputs = step.outputs.length;
    if (outputs === 0) return;
    be.gatherRows(b.lastHidden, b.hidden, step.outputRows, outputs, H);
    this.lmHead.forward(b.logits, b.lastHidden, outputs, norm(this.finalNorm));
  }
}

/**
 * A Conv1D weight (inFeatures × Σ widths) and bias, transposed once to (Σ widths × inFeatures):
 * one dense layer, or for several widths (c_attn's q, k, v) one matrix whose rows split by width.
 * A projection the checkpoint stores in block low-rank form (its factors already out × in) is
 * that layer, its output split by width where there are several.
 */
function conv1d(weights: WeightReader, prefix: string, inFeatures: number, widths: [number]): LinearLayer;
function conv1d(weights: WeightReader, prefix: string, inFeatures: number, widths: number[]): LinearGroup;
function conv1d(weights: WeightReader, prefix: string, inFeatures: number, widths: number[]): LinearLayer | LinearGroup {
  const total = widths.reduce((a, b) => a + b, 0);
  if (weights.isCompressed(prefix)) {
    const layer = weights.linear(prefix, inFeatures, total, true);
    return widths.length === 1 ? layer : weights.splitOutputs(layer, widths);
  }
  const transposed = transpose(weights.read(`${prefix}.weight`, [inFeatures, total]), inFeatures, total);
  const backend = weights.backend;
  const matrix = backend.uploadMatrix(transposed, total, inFeatures, `${prefix}.weight (transposed)`);
  const bias = backend.upload(weights.read(`${prefix}.bias`, [total]));
  return widths.length === 1
    ? new DenseLinear(backend, matrix, bias, inFeatures, total)
    : new ConcatenatedLinear(backend, matrix, bias, inFeatures, widths);
}
