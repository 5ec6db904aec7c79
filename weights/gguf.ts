// GGUF files of the llama architecture (f32 and f16 tensors) → Meta-layout Llama weights and a
// SentencePiece vocabulary. Metadata comes from @huggingface/gguf; tensor data we read ourselves.
import fs from 'node:fs';
import { gguf, GGMLQuantizationType } from '@huggingface/gguf';
import { toFloat32 } from './dtypes.ts';
import type { MetaLlamaWeights } from './llama2c.ts';
import { CheckpointError } from './safetensors.ts';
import { PieceType, type SentencePieceVocab } from './sentencepiece.ts';

export interface GgufLlama {
  weights: MetaLlamaWeights;
  vocab: SentencePieceVocab;
}

export async function readGgufLlama(filePath: string): Promise<GgufLlama> {
  let parsed: Awaited<ReturnType<typeof gguf>>;
  try {
    parsed = await gguf(filePath, { allowLocalFile: true });
  } catch (error) {
    throw new CheckpointError(`${filePath}: cannot parse as GGUF (${(error as Error).message})`);
  }
  const metadata = parsed.metadata as Record<string, unknown>;
  const architecture = metadata['general.architecture'];
  if (architecture !== 'llama') throw new CheckpointError(`${filePath}: architecture "${String(architecture)}" is not supported (only llama)`);
  const number = (key: string, fallback?: number): number => {
    const value = metadata[key];
    if (typeof value === 'number') return value;
    if (typeof value === 'bigint') return Number(value);
    if (fallback !== undefined) return fallback;
    throw new CheckpointError(`${filePath}: metadata "${key}" is missing`);
  };
  const dim = number('llama.embedding_length');
  const heads = number('llama.attention.head_count');
  const kvHeads = number('llama.attention.head_count_kv', heads);
  const layers = number('llama.block_count');
  const hiddenDim = number('llama.feed_forward_length');
  const tokens = metadata['tokenizer.ggml.tokens'];
  if (!Array.isArray(tokens)) throw new CheckpointError(`${filePath}: no tokenizer.ggml.tokens in metadata`);
  const vocabSize = tokens.length;

  const infos = new Map(parsed.tensorInfos.map((t) => [t.name, t]));
  const fd = fs.openSync(filePath, 'r');
  try {
    const read = (name: string, expectedShape: number[]): Float32Array => {
      const info = infos.get(name);
      if (!info) throw new CheckpointError(`${filePath}: tensor "${name}" is missing`);
      // GGUF lists dimensions innermost first; expectedShape is row-major (outermost first).
      const shape = info.shape.map(Number).reverse();
      if (shape.join(',') !== expectedShape.join(',')) {
        throw new CheckpointError(`${filePath}: tensor "${name}" has shape [${shape}] but [${expectedShape}] was expected`);
      }
      const count = expectedShape.reduce((a, b) => a * b, 1);
      let dtype: 'F32' | 'F16';
      if (info.dtype === GGMLQuantizationType.F32) dtype = 'F32';
      else if (info.dtype === GGMLQuantizationType.F16) dtype = 'F16';
      else throw new CheckpointError(`${filePath}: tensor "${name}" is ${GGMLQuantizationType[info.dtype]}; only F32 and F16 tensors are supported`);
      const bytes = new Uint8Array(count * (dtype === 'F32' ? 4 : 2));
      const position = Number(parsed.tensorDataOffset + info.offset);
      if (fs.readSync(fd, bytes, 0, bytes.byteLength, position) !== bytes.byteLength) {
        throw new CheckpointError(`${filePath}: tensor "${name}" is truncated`);
      }
      return toFloat32(bytes, dtype, new Float32Array(count));
    };
    const headDim = dim / heads;
    const kvDim = kvHeads * headDim;
    const perLayer = (suffix: string, shape: number[]) => Array.from({ length: layers }, (_, l) => read(`blk.${l}.${suffix}`, shape));
    const tokenEmbedding = read('token_embd.weight', [vocabSize, dim]);
    let classifier: Float32Array | undefined = infos.has('output.weight') ? read('output.weight', [vocabSize, dim]) : undefined;
    // A converter may store the shared classifier a second time; keep the model tied then.
    if (classifier && classifier.every((v, i) => v === tokenEmbedding[i])) classifier = undefined;
    const weights: MetaLlamaWeights = {
      config: {
        dim, hiddenDim, layers, heads, kvHeads, vocabSize,
        maxSequence: number('llama.context_length', 2048),
        // Stored as f32: 1e-5 reads back as 9.99999974e-6; keep the decimal the author wrote.
        normEps: Number(number('llama.attention.layer_norm_rms_epsilon', 1e-5).toPrecision(7)),
        ropeTheta: number('llama.rope.freq_base', 10000),
        tiedClassifier: classifier === undefined,
      },
      tokenEmbedding,
      attentionNorm: perLayer('attn_norm.weight', [dim]),
      wq: perLayer('attn_q.weight', [dim, dim]),
      wk: perLayer('attn_k.weight', [kvDim, dim]),
      wv: perLayer('attn_v.weight', [kvDim, dim]),
      wo: perLayer('attn_output.weight', [dim, dim]),
      ffnNorm: perLayer('ffn_norm.weight', [dim]),
      w1: perLayer('ffn_gate.weight', [hiddenDim, dim]),
      w2: perLayer('ffn_down.weight', [dim, hiddenDim]),
      w3: perLayer('ffn_up.weight', [hiddenDim, dim]),
      finalNorm: read('output_norm.weight', [dim]),
      classifier,
    };
    const scores = metadata['tokenizer.ggml.scores'];
    const types = metadata['tokenizer.ggml.token_type'];
    const vocab: SentencePieceVocab = {
      pieces: tokens as string[],
      scores: Array.isArray(scores) ? (scores as number[]) : tokens.map(() => 0),
      types: Array.isArray(types) ? (types as PieceType[]) : tokens.map(() => PieceType.Normal),
      unkId: number('tokenizer.ggml.unknown_token_id', 0),
      bosId: number('tokenizer.ggml.bos_token_id', 1),
      eosId: number('tokenizer.ggml.eos_token_id', 2),
    };
    if (metadata['tokenizer.ggml.model'] !== 'llama') {
      throw new CheckpointError(`${filePath}: tokenizer model "${String(metadata['tokenizer.ggml.model'])}" is not supported (only SentencePiece "llama")`);
    }
    return { weights, vocab };
  } finally {
    fs.closeSync(fd);
  }
}
