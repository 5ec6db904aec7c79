// Llama: RMSNorm, RoPE (default, linear or llama3 scaling), grouped-query attention, SwiGLU MLP,
// tied or untied LM head. Reads like the math; buffers are allocated once, in the constructor.
import type { AttentionShape, Backend, KVCache, Tensor } from '../kernels/backend.ts';
import { ropeTables } from '../kernels/cpu/ops.ts';
import { ropeInverseFrequencies, type ModelConfig } from './config.ts';
import { DenseLinear, type LinearGroup, type LinearLayer } from './linear.ts';
import { concatenate, DecoderModel, StepBuffers, WeightReader, type StepPlan } from './model.ts';

/**
 * A layer's weights. Each norm's weight is folded into the projections that read the norm where they
 * are dense (WeightReader.normedGroup): the norm's own weight is then ones.
 */
export interface LlamaLayer {
  attentionNorm: Tensor;
  /** q, k and v projections: one matmul when all three are dense. */
  qkv: LinearGroup;
  o: LinearLayer;
  mlpNorm: Tensor;
  /** gate and up projections: one matmul when both are dense. */
  gateUp: LinearGroup;
  down: LinearLayer;
}

/** Hugging Face tensor names: the one place that maps the checkpoint onto the model. */
export const llamaNames = {
  embedding: 'model.embed_tokens.weight',
  finalNorm: 'model.norm.weight',
  lmHead: 'lm_head',
  layer: (l: number) => ({
    attentionNorm: `model.layers.${l}.input_layernorm.weight`,
    q: `model.layers.${l}.self_attn.q_proj`,
    k: `model.layers.${l}.self_attn.k_proj`,
    v: `model.layers.${l}.self_attn.v_proj`,
    o: `model.layers.${l}.self_attn.o_proj`,
    mlpNorm: `model.layers.${l}.post_attention_layernorm.weight`,
    gate: `model.layers.${l}.mlp.gate_proj`,
    up: `model.layers.${l}.mlp.up_proj`,
    down: `model.layers.${l}.mlp.down_proj`,
  }),
};

export class LlamaModel extends DecoderModel {
  readonly parameters: number;
  readonly padding: number;
  private readonly embedding: Tensor;
  private readonly layers: LlamaLayer[];
  private readonly finalNorm: Tensor;
  private readonly lmHead: LinearLayer;
  /** RoPE's cosines then sines, (maxPositions × headDim/2) each. */
  private readonly rotary: Tensor;
  private readonly attentionShape: AttentionShape;
  protected readonly buffers: StepBuffers;

  /** `layers`: read beforehand (loadModelAsync reads them one at a time); else read here. */
  constructor(readonly config: ModelConfig, weights: WeightReader, readonly backend: Backend, readonly maxStepTokens: number, readonly maxSequences: number, layers?: LlamaLayer[]) {
    super();
    const { hiddenSize: H, heads, kvHeads, headDim, vocabSize } = config;
    this.embedding = weights.upload(llamaNames.embedding, [vocabSize, H]);
    this.layers = layers ?? Array.from({ length: config.layers }, (_, l) => readLlamaLayer(weights, config, l));
    if (config.tiedEmbeddings && !weights.has(`${llamaNames.lmHead}.weight`)) {
      // The embedding is the LM head too: the final norm's weight stays apart.
      this.finalNorm = weights.upload(llamaNames.finalNorm, [H]);
      this.lmHead = new DenseLinear(backend, this.embedding, null, H, vocabSize);
    } else {
      ({ norm: this.finalNorm, layer: this.lmHead } = weights.normedLinear(llamaNames.finalNorm, llamaNames.lmHead, H, vocabSize, false));
    }
    this.parameters = weights.parameters;
    this.padding = weights.padding;

    const tables = ropeTables(ropeInverseFrequencies(config), config.maxPositions);
    this.rotary = backend.upload(concatenate([tables.cos, tables.sin]));
    this.attentionShape = { heads, kvHeads, headDim, scale: 1 / Math.sqrt(headDim) };

    this.buffers = new StepBuffers(backend, config, maxStepTokens, maxSequences, { gatedMlp: true });
  }

  protected record(cache: KVCache, step: StepPlan): void {
    const be = this.backend;
    const b = this.buffers;
    const { hiddenSize: H, heads, kvHeads, headDim, normEps: eps } = this.config;
    const { rows, tokenIds, positions, pages } = step;

    // Each RMSNorm travels with the projection that consumes it (fused into the matmul where a
    // kernel can): qkv(norm(hidden)), gateUp(norm(hidden)), lmHead(norm(last hidden)); so does the
    // MLP's SwiGLU: down(silu(gate) ⊙ up).
    be.gatherRows(b.hidden, this.embedding, tokenIds, rows, H);
    const gate = { up: b.mlpUp };
    this.layers.forEach((layer, l) => {
      // RoPE and the KV cache store travel with the q|k|v projection (in its epilogue where it can).
      const rope = { positions, rotary: this.rotary, heads, kvHeads, headDim, store: { cache, layer: l, pages } };
      layer.qkv.forward([b.q, b.k, b.v], b.hidden, rows, { weight: layer.attentionNorm, eps }, rope);
      for (const s of step.segments) be.attention(b.attended, b.q, cache, l, positions, pages, s.firstRow, s.rows, this.attentionShape, s.length, s.oneSequence);
      layer.o.forwardAdd(b.hidden, b.attended, rows);

      // SwiGLU: made by a dense gate|up matmul where it can (its epilogue, decoding), else it travels
      // with the down projection (made as it reads its input).
      const mlpNorm = { weight: layer.mlpNorm, eps };
      let gated = false;
      if (layer.gateUp.forwardSwiglu) gated = layer.gateUp.forwardSwiglu(b.mlp, b.mlpUp, b.hidden, rows, mlpNorm);
      else layer.gateUp.forward([b.mlp, b.mlpUp], b.hidden, rows, mlpNorm);
      layer.down.forwardAdd(b.hidden, b.mlp, rows, gated ? undefined : gate);
      this.betweenLayers(step);
    });
    const outputs = step.outputs.length;
    if (outputs === 0) return;
    be.gatherRows(b.lastHidden, b.hidden, step.outputRows, outputs, H);
    this.lmHead.forward(b.logits, b.lastHidden, outputs, { weight: this.finalNorm, eps });
  }
}

/** Layer `l`'s weights. */
export function readLlamaLayer(weights: WeightReader, config: ModelConfig, l: number): LlamaLayer {
  const { hiddenSize: H, intermediateSize: I, heads, kvHeads, headDim } = config;
  const qWidth = heads * headDim;
  const kvWidth = kvHeads * headDim;
  const bias = config.attentionBias;
  const n = llamaNames.layer(l);
  const attention = weights.normedGroup(n.attentionNorm, [n.q, n.k, n.v], H, [qWidth, kvWidth, kvWidth], bias);
  const o = weights.linear(n.o, qWidth, H, bias);
  const mlp = weights.normedGroup(n.mlpNorm, [n.gate, n.up], H, [I, I], config.mlpBias);
  return {
    attentionNorm: attention.norm,
    qkv: attention.group,
    o,
    mlpNorm: mlp.norm,
    gateUp: mlp.group,
    down: weights.linear(n.down, I, H, config.mlpBias),
  };
}
