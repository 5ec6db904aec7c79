// llama2.c's checkpoint (.bin) and tokenizer (.bin) formats.
//
// Checkpoint: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
// seq_len; a negative vocab_size means the classifier is stored separately), then f32 tensors in
// this order: token embedding, attention RMS weights, wq, wk, wv, wo, FFN RMS weights, w1, w2, w3,
// final RMS weight, two legacy RoPE tables (seq_len × head_size/2 each), and the classifier if not
// shared. wq and wk are in Meta's interleaved-RoPE row order.
import fs from 'node:fs';
import { CheckpointError } from './safetensors.ts';
import { inferPieceTypes, type SentencePieceVocab } from './sentencepiece.ts';

export interface MetaLlamaConfig {
  dim: number;
  hiddenDim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocabSize: number;
  maxSequence: number;
  normEps: number;
  ropeTheta: number;
  tiedClassifier: boolean;
}

/** Weights in Meta/llama2.c naming and layout: per-layer arrays, rows = output features. */
export interface MetaLlamaWeights {
  config: MetaLlamaConfig;
  tokenEmbedding: Float32Array;
  attentionNorm: Float32Array[];
  wq: Float32Array[];
  wk: Float32Array[];
  wv: Float32Array[];
  wo: Float32Array[];
  ffnNorm: Float32Array[];
  w1: Float32Array[];
  w2: Float32Array[];
  w3: Float32Array[];
  finalNorm: Float32Array;
  classifier: Float32Array | undefined;
}

const HEADER_BYTES = 7 * 4;

export function readLlama2cCheckpoint(filePath: string): MetaLlamaWeights {
  const bytes = fs.readFileSync(filePath);
  if (bytes.byteLength < HEADER_BYTES) throw new CheckpointError(`${filePath}: ${bytes.byteLength} bytes is too short for a llama2.c header`);
  const header = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const [dim, hiddenDim, layers, heads, kvHeads, signedVocab, maxSequence] = Array.from({ length: 7 }, (_, i) => header.getInt32(i * 4, true));
  const vocabSize = Math.abs(signedVocab);
  if ([dim, hiddenDim, layers, heads, kvHeads, vocabSize, maxSequence].some((v) => v <= 0) || dim % heads !== 0 || heads % kvHeads !== 0) {
    throw new CheckpointError(`${filePath}: implausible llama2.c header (dim ${dim}, hidden_dim ${hiddenDim}, n_layers ${layers}, n_heads ${heads}, n_kv_heads ${kvHeads}, vocab_size ${signedVocab}, seq_len ${maxSequence})`);
  }
  const headDim = dim / heads;
  const kvDim = kvHeads * headDim;
  const floats = new Float32Array((bytes.byteLength - HEADER_BYTES) >> 2);
  new Uint8Array(floats.buffer).set(bytes.subarray(HEADER_BYTES, HEADER_BYTES + floats.byteLength));
  let offset = 0;
  const take = (name: string, count: number): Float32Array => {
    if (offset + count > floats.length) {
      throw new CheckpointError(`${filePath}: truncated: tensor "${name}" needs ${count} floats at float ${offset}, file holds ${floats.length}`);
    }
    const out = floats.slice(offset, offset + count);
    offset += count;
    return out;
  };
  const perLayer = (name: string, count: number) => Array.from({ length: layers }, (_, l) => take(`${name}[${l}]`, count));
  const tokenEmbedding = take('token_embedding_table', vocabSize * dim);
  const attentionNorm = perLayer('rms_att_weight', dim);
  const wq = perLayer('wq', dim * dim);
  const wk = perLayer('wk', kvDim * dim);
  const wv = perLayer('wv', kvDim * dim);
  const wo = perLayer('wo', dim * dim);
  const ffnNorm = perLayer('rms_ffn_weight', dim);
  const w1 = perLayer('w1', hiddenDim * dim);
  const w2 = perLayer('w2', dim * hiddenDim);
  const w3 = perLayer('w3', hiddenDim * dim);
  const finalNorm = take('rms_final_weight', dim);
  take('freq_cis_real', (maxSequence * headDim) / 2);
  take('freq_cis_imag', (maxSequence * headDim) / 2);
  const tiedClassifier = signedVocab > 0;
  const classifier = tiedClassifier ? undefined : take('wcls', vocabSize * dim);
  return {
    config: { dim, hiddenDim, layers, heads, kvHeads, vocabSize, maxSequence, normEps: 1e-5, ropeTheta: 10000, tiedClassifier },
    tokenEmbedding, attentionNorm, wq, wk, wv, wo, ffnNorm, w1, w2, w3, finalNorm, classifier,
  };
}

/**
 * llama2.c's tokenizer.bin: int32 max_token_length, then per token float32 score, int32 byte
 * length, bytes. Its exporter wrote spaces instead of ▁ and "\n<s>\n" / "\n</s>\n" for BOS/EOS;
 * we restore SentencePiece's spelling.
 */
export function readLlama2cTokenizer(filePath: string, vocabSize: number): SentencePieceVocab {
  const bytes = fs.readFileSync(filePath);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const decoder = new TextDecoder('utf-8');
  const pieces: string[] = [];
  const scores: number[] = [];
  let offset = 4;
  for (let id = 0; id < vocabSize; id++) {
    if (offset + 8 > bytes.byteLength) throw new CheckpointError(`${filePath}: truncated at token ${id} of ${vocabSize}`);
    const score = view.getFloat32(offset, true);
    const length = view.getInt32(offset + 4, true);
    if (length < 0 || offset + 8 + length > bytes.byteLength) throw new CheckpointError(`${filePath}: token ${id} has a bad length ${length}`);
    pieces.push(decoder.decode(bytes.subarray(offset + 8, offset + 8 + length)));
    scores.push(score);
    offset += 8 + length;
  }
  const ids = { unkId: 0, bosId: 1, eosId: 2 };
  const restored = pieces.map((piece, id) => {
    if (id === ids.unkId) return '<unk>';
    if (id === ids.bosId) return '<s>';
    if (id === ids.eosId) return '</s>';
    return piece.replaceAll(' ', '▁');
  });
  return { pieces: restored, scores, types: inferPieceTypes(restored, ids), ...ids };
}
