// llama2.c checkpoints and GGUF files → a Hugging Face model directory (config.json,
// generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json).
import fs from 'node:fs';
import path from 'node:path';
import { fromFloat32 } from './dtypes.ts';
import { readGgufLlama } from './gguf.ts';
import { readLlama2cCheckpoint, readLlama2cTokenizer, type MetaLlamaWeights } from './llama2c.ts';
import { CheckpointError, writeSafetensors, type TensorToWrite } from './safetensors.ts';
import { sentencePieceToTokenizer, type SentencePieceVocab } from './sentencepiece.ts';

export interface ConvertOptions {
  /** llama2.c tokenizer .bin; by default tok<vocab>.bin or tokenizer.bin beside the checkpoint. */
  tokenizerPath?: string;
  onProgress?: (message: string) => void;
}

export interface ConvertResult {
  format: 'llama2c' | 'gguf';
  outputDirectory: string;
  tensors: number;
  parameters: number;
}

export async function convertCheckpoint(inputPath: string, outputDirectory: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  const progress = options.onProgress ?? (() => {});
  if (!fs.existsSync(inputPath)) throw new CheckpointError(`${inputPath}: no such file`);
  const format = detectFormat(inputPath);
  progress(`reading ${format} checkpoint ${inputPath}`);
  let weights: MetaLlamaWeights;
  let vocab: SentencePieceVocab;
  if (format === 'gguf') {
    ({ weights, vocab } = await readGgufLlama(inputPath));
  } else {
    weights = readLlama2cCheckpoint(inputPath);
    const tokenizerPath = options.tokenizerPath ?? findLlama2cTokenizer(inputPath, weights.config.vocabSize);
    progress(`reading tokenizer ${tokenizerPath}`);
    vocab = readLlama2cTokenizer(tokenizerPath, weights.config.vocabSize);
  }
  const { config } = weights;
  fs.mkdirSync(outputDirectory, { recursive: true });
  const tensors = hfLlamaTensors(weights);
  progress(`writing ${tensors.length} tensors to ${path.join(outputDirectory, 'model.safetensors')}`);
  writeSafetensors(path.join(outputDirectory, 'model.safetensors'), tensors, { format: 'pt' });
  const hfConfig = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: config.dim,
    intermediate_size: config.hiddenDim,
    num_hidden_layers: config.layers,
    num_attention_heads: config.heads,
    num_key_value_heads: config.kvHeads,
    head_dim: config.dim / config.heads,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxSequence,
    rms_norm_eps: config.normEps,
    rope_theta: config.ropeTheta,
    hidden_act: 'silu',
    tie_word_embeddings: config.tiedClassifier,
    attention_bias: false,
    mlp_bias: false,
    bos_token_id: vocab.bosId,
    eos_token_id: vocab.eosId,
    torch_dtype: 'float32',
  };
  writeJson(path.join(outputDirectory, 'config.json'), hfConfig);
  writeJson(path.join(outputDirectory, 'generation_config.json'), { bos_token_id: vocab.bosId, eos_token_id: vocab.eosId });
  progress('building tokenizer.json from the SentencePiece vocabulary');
  const { tokenizerJson, tokenizerConfig } = sentencePieceToTokenizer(vocab, { maxLength: config.maxSequence });
  writeJson(path.join(outputDirectory, 'tokenizer.json'), tokenizerJson);
  writeJson(path.join(outputDirectory, 'tokenizer_config.json'), tokenizerConfig);
  const parameters = tensors.reduce((sum, t) => sum + t.data.byteLength / 4, 0);
  progress(`done: ${parameters.toLocaleString('en-US')} parameters in ${outputDirectory}`);
  return { format, outputDirectory, tensors: tensors.length, parameters };
}

function detectFormat(inputPath: string): 'llama2c' | 'gguf' {
  const fd = fs.openSync(inputPath, 'r');
  const magic = Buffer.alloc(4);
  fs.readSync(fd, magic, 0, 4, 0);
  fs.closeSync(fd);
  return magic.toString('latin1') === 'GGUF' ? 'gguf' : 'llama2c';
}

function findLlama2cTokenizer(checkpointPath: string, vocabSize: number): string {
  const directory = path.dirname(checkpointPath);
  for (const name of [`tok${vocabSize}.bin`, 'tokenizer.bin']) {
    const candidate = path.join(directory, name);
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new CheckpointError(`${checkpointPath}: no tokenizer found beside it (tried tok${vocabSize}.bin, tokenizer.bin); pass --tokenizer FILE`);
}

/**
 * Meta's wq/wk rows interleave each head's RoPE pairs (2i, 2i+1); Hugging Face's rotate_half pairs
 * (i, i + headDim/2). Row i*2 + half of a head moves to half*headDim/2 + i.
 */
export function metaToHfRows(weight: Float32Array, heads: number, columns: number): Float32Array {
  const rows = weight.length / columns;
  const headDim = rows / heads;
  const out = new Float32Array(weight.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < headDim / 2; i++) {
      for (let half = 0; half < 2; half++) {
        const from = h * headDim + i * 2 + half;
        const to = h * headDim + half * (headDim / 2) + i;
        out.set(weight.subarray(from * columns, (from + 1) * columns), to * columns);
      }
    }
  }
  return out;
}

function hfLlamaTensors(w: MetaLlamaWeights): TensorToWrite[] {
  const { dim, hiddenDim, heads, kvHeads, vocabSize } = w.config;
  const kvDim = (dim / heads) * kvHeads;
  const tensor = (name: string, shape: number[], data: Float32Array): TensorToWrite => ({ name, dtype: 'F32', shape, data: fromFloat32(data, 'F32') });
  const out = [tensor('model.embed_tokens.weight', [vocabSize, dim], w.tokenEmbedding)];
  for (let l = 0; l < w.config.layers; l++) {
    const p = `model.layers.${l}`;
    out.push(
      tensor(`${p}.input_layernorm.weight`, [dim], w.attentionNorm[l]),
      tensor(`${p}.self_attn.q_proj.weight`, [dim, dim], metaToHfRows(w.wq[l], heads, dim)),
      tensor(`${p}.self_attn.k_proj.weight`, [kvDim, dim], metaToHfRows(w.wk[l], kvHeads, dim)),
      tensor(`${p}.self_attn.v_proj.weight`, [kvDim, dim], w.wv[l]),
      tensor(`${p}.self_attn.o_proj.weight`, [dim, dim], w.wo[l]),
      tensor(`${p}.post_attention_layernorm.weight`, [dim], w.ffnNorm[l]),
      tensor(`${p}.mlp.gate_proj.weight`, [hiddenDim, dim], w.w1[l]),
      tensor(`${p}.mlp.down_proj.weight`, [dim, hiddenDim], w.w2[l]),
      tensor(`${p}.mlp.up_proj.weight`, [hiddenDim, dim], w.w3[l]),
    );
  }
  out.push(tensor('model.norm.weight', [dim], w.finalNorm));
  if (w.classifier) out.push(tensor('lm_head.weight', [vocabSize, dim], w.classifier));
  return out;
}

function writeJson(filePath: string, value: unknown): void {
  fs.writeFileSync(filePath, JSON.stringify(value, null, 2) + '\n');
}
