// Llama: RMSNorm, RoPE (default, linear or llama3 scaling), grouped-query attention, SwiGLU MLP,
// tied or untied LM head. Reads like the math; buffers are allocated once, in the constructor.
import type { AttentionShape, Backend, KVCache, Tensor } from '../kernels/backend.ts';
import { ropeTables } from '../kernels/cpu/ops.ts';
import { ropeInverseFrequencies, type ModelConfig } from './config.ts';
import { DenseLinear, type LinearLayer } from './linear.ts';
import { checkCacheRoom, StepIndices, WeightReader, type CausalLM } from './model.ts';

interface LlamaLayer {
  attentionNorm: Tensor;
  q: LinearLayer;
  k: LinearLayer;
  v: LinearLayer;
  o: LinearLayer;
  mlpNorm: Tensor;
  gate: LinearLayer;
  up: LinearLayer;
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

export class LlamaModel implements CausalLM {
  readonly parameters: number;
  private readonly embedding: Tensor;
  private readonly layers: LlamaLayer[];
  private readonly finalNorm: Tensor;
  private readonly lmHead: LinearLayer;
  private readonly ropeCos: Tensor;
  private readonly ropeSin: Tensor;
  private readonly attentionShape: AttentionShape;
  private readonly step: StepIndices;
  // Activations for up to maxStepTokens rows.
  private readonly hidden: Tensor;
  private readonly normed: Tensor;
  private readonly q: Tensor;
  private readonly k: Tensor;
  private readonly v: Tensor;
  private readonly attended: Tensor;
  private readonly projected: Tensor;
  private readonly gate: Tensor;
  private readonly up: Tensor;
  private readonly lastHidden: Tensor;
  private readonly lastNormed: Tensor;
  private readonly logits: Tensor;

  constructor(readonly config: ModelConfig, weights: WeightReader, readonly backend: Backend, readonly maxStepTokens: number) {
    const { hiddenSize: H, intermediateSize: I, heads, kvHeads, headDim, vocabSize } = config;
    const qWidth = heads * headDim;
    const kvWidth = kvHeads * headDim;
    const bias = config.attentionBias;
    this.embedding = weights.upload(llamaNames.embedding, [vocabSize, H]);
    this.layers = Array.from({ length: config.layers }, (_, l) => {
      const n = llamaNames.layer(l);
      return {
        attentionNorm: weights.upload(n.attentionNorm, [H]),
        q: weights.linear(n.q, H, qWidth, bias),
        k: weights.linear(n.k, H, kvWidth, bias),
        v: weights.linear(n.v, H, kvWidth, bias),
        o: weights.linear(n.o, qWidth, H, bias),
        mlpNorm: weights.upload(n.mlpNorm, [H]),
        gate: weights.linear(n.gate, H, I, config.mlpBias),
        up: weights.linear(n.up, H, I, config.mlpBias),
        down: weights.linear(n.down, I, H, config.mlpBias),
      };
    });
    this.finalNorm = weights.upload(llamaNames.finalNorm, [H]);
    this.lmHead = config.tiedEmbeddings && !weights.has(`${llamaNames.lmHead}.weight`)
      ? new DenseLinear(backend, this.embedding, null, H, vocabSize)
      : weights.linear(llamaNames.lmHead, H, vocabSize, false);
    this.parameters = weights.parameters;

    const tables = ropeTables(ropeInverseFrequencies(config), config.maxPositions);
    this.ropeCos = backend.upload(tables.cos);
    this.ropeSin = backend.upload(tables.sin);
    this.attentionShape = { heads, kvHeads, headDim, scale: 1 / Math.sqrt(headDim) };

    const rows = maxStepTokens;
    this.step = new StepIndices(backend, rows);
    this.hidden = backend.allocate(rows * H);
    this.normed = backend.allocate(rows * H);
    this.q = backend.allocate(rows * qWidth);
    this.k = backend.allocate(rows * kvWidth);
    this.v = backend.allocate(rows * kvWidth);
    this.attended = backend.allocate(rows * qWidth);
    this.projected = backend.allocate(rows * H);
    this.gate = backend.allocate(rows * I);
    this.up = backend.allocate(rows * I);
    this.lastHidden = backend.allocate(H);
    this.lastNormed = backend.allocate(H);
    this.logits = backend.allocate(vocabSize);
  }

  createCache(capacity: number): KVCache {
    const { layers, kvHeads, headDim, maxPositions } = this.config;
    return this.backend.createKVCache({ layers, kvHeads, headDim, capacity: Math.min(capacity, maxPositions) });
  }

  async forward(cache: KVCache, tokens: Int32Array, startPosition: number): Promise<Float32Array> {
    const be = this.backend;
    const { hiddenSize: H, intermediateSize: I, heads, kvHeads, headDim, normEps: eps } = this.config;
    checkCacheRoom(cache, startPosition, tokens.length);
    const rows = this.step.set(tokens, startPosition, this.maxStepTokens);
    const { positions } = this.step;

    be.gatherRows(this.hidden, this.embedding, this.step.tokens, rows, H);
    this.layers.forEach((layer, l) => {
      be.rmsNorm(this.normed, this.hidden, layer.attentionNorm, rows, H, eps);
      layer.q.forward(this.q, this.normed, rows);
      layer.k.forward(this.k, this.normed, rows);
      layer.v.forward(this.v, this.normed, rows);
      be.rope(this.q, positions, this.ropeCos, this.ropeSin, rows, heads, headDim);
      be.rope(this.k, positions, this.ropeCos, this.ropeSin, rows, kvHeads, headDim);
      be.writeKV(cache, l, this.k, this.v, positions, rows);
      be.attention(this.attended, this.q, cache, l, positions, rows, this.attentionShape);
      layer.o.forward(this.projected, this.attended, rows);
      be.add(this.hidden, this.hidden, this.projected, rows * H);

      be.rmsNorm(this.normed, this.hidden, layer.mlpNorm, rows, H, eps);
      layer.gate.forward(this.gate, this.normed, rows);
      layer.up.forward(this.up, this.normed, rows);
      be.swiglu(this.gate, this.gate, this.up, rows * I);
      layer.down.forward(this.projected, this.gate, rows);
      be.add(this.hidden, this.hidden, this.projected, rows * H);
    });
    be.gatherRows(this.lastHidden, this.hidden, this.step.lastRow, 1, H);
    be.rmsNorm(this.lastNormed, this.lastHidden, this.finalNorm, 1, H, eps);
    this.lmHead.forward(this.logits, this.lastNormed, 1);
    return be.read(this.logits, this.config.vocabSize);
  }

  dispose(): void {}
}
