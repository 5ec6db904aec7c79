// llama2.c's checkpoint (.bin) and tokenizer (.bin) formats, and the Meta-layout Llama checkpoint
// that both llama2.c and GGUF files read into.
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
}

/** A tensor whose bytes are read from its file only when asked for. */
export interface LazyTensor {
  dtype: 'F32' | 'F16';
  /** Row-major, outermost first. */
  shape: number[];
  read(): Uint8Array;
}

/**
 * Weights in Meta's naming and layout (rows = output features): tok_embeddings, norm, output
 * (absent when tied to the embedding), and per layer layers.{l}.{attention_norm, wq, wk, wv, wo,
 * ffn_norm, w1, w2, w3}.
 */
export interface MetaLlamaCheckpoint {
  config: MetaLlamaConfig;
  tensors: Map<string, LazyTensor>;
  close(): void;
}

export const META_LAYER_TENSORS = ['attention_norm', 'wq', 'wk', 'wv', 'wo', 'ffn_norm', 'w1', 'w2', 'w3'] as const;

/** Reads `byteLength` bytes at `position` of an open file; a short read names the tensor. */
export function readRegion(fd: number, filePath: string, name: string, position: number, byteLength: number): Uint8Array {
  const bytes = new Uint8Array(byteLength);
  let done = 0;
  while (done < byteLength) {
    const read = fs.readSync(fd, bytes, done, byteLength - done, position + done);
    if (read === 0) throw new CheckpointError(`${filePath}: tensor "${name}" is truncated: the file ends ${byteLength - done} bytes early`);
    done += read;
  }
  return bytes;
}

const HEADER_BYTES = 7 * 4;

export function readLlama2cCheckpoint(filePath: string): MetaLlamaCheckpoint {
  const fd = fs.openSync(filePath, 'r');
  try {
    const fileBytes = fs.fstatSync(fd).size;
    if (fileBytes < HEADER_BYTES) throw new CheckpointError(`${filePath}: ${fileBytes} bytes is too short for a llama2.c header`);
    const header = new DataView(readRegion(fd, filePath, 'header', 0, HEADER_BYTES).buffer);
    const [dim, hiddenDim, layers, heads, kvHeads, signedVocab, maxSequence] = Array.from({ length: 7 }, (_, i) => header.getInt32(i * 4, true));
    const vocabSize = Math.abs(signedVocab);
    if ([dim, hiddenDim, layers, heads, kvHeads, vocabSize, maxSequence].some((v) => v <= 0) || dim % heads !== 0 || heads % kvHeads !== 0) {
      throw new CheckpointError(`${filePath}: implausible llama2.c header (dim ${dim}, hidden_dim ${hiddenDim}, n_layers ${layers}, n_heads ${heads}, n_kv_heads ${kvHeads}, vocab_size ${signedVocab}, seq_len ${maxSequence})`);
    }
    const headDim = dim / heads;
    const kvDim = kvHeads * headDim;
    const tensors = new Map<string, LazyTensor>();
    let offset = HEADER_BYTES;
    const place = (name: string, shape: number[], keep = true) => {
      const byteLength = shape.reduce((a, b) => a * b, 1) * 4;
      const position = offset;
      if (position + byteLength > fileBytes) {
        throw new CheckpointError(`${filePath}: truncated: tensor "${name}" needs bytes ${position}..${position + byteLength} but the file has ${fileBytes}`);
      }
      offset += byteLength;
      if (keep) tensors.set(name, { dtype: 'F32', shape, read: () => readRegion(fd, filePath, name, position, byteLength) });
    };
    const perLayer = (name: string, shape: number[]) => {
      for (let l = 0; l < layers; l++) place(`layers.${l}.${name}`, shape);
    };
    place('tok_embeddings', [vocabSize, dim]);
    perLayer('attention_norm', [dim]);
    perLayer('wq', [dim, dim]);
    perLayer('wk', [kvDim, dim]);
    perLayer('wv', [kvDim, dim]);
    perLayer('wo', [dim, dim]);
    perLayer('ffn_norm', [dim]);
    perLayer('w1', [hiddenDim, dim]);
    perLayer('w2', [dim, hiddenDim]);
    perLayer('w3', [hiddenDim, dim]);
    place('norm', [dim]);
    place('freq_cis_real', [maxSequence, headDim / 2], false);
    place('freq_cis_imag', [maxSequence, headDim / 2], false);
    if (signedVocab < 0) place('output', [vocabSize, dim]);
    return {
      config: { dim, hiddenDim, layers, heads, kvHeads, vocabSize, maxSequence, normEps: 1e-5, ropeTheta: 10000 },
      tensors,
      close: () => fs.closeSync(fd),
    };
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
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
