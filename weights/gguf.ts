// GGUF files of the llama architecture (f32 and f16 tensors) → a Meta-layout Llama checkpoint and
// a SentencePiece vocabulary. Metadata comes from @huggingface/gguf; tensor data is read lazily.
import fs from 'node:fs';
import { gguf, GGMLQuantizationType } from '@huggingface/gguf';
import { readRegion, type LazyTensor, type MetaLlamaCheckpoint } from './llama2c.ts';
import { CheckpointError } from './safetensors.ts';
import { PieceType, type SentencePieceVocab } from './sentencepiece.ts';

export interface GgufLlama {
  checkpoint: MetaLlamaCheckpoint;
  vocab: SentencePieceVocab;
}

/** GGUF tensor names for the Meta names of llama2c.ts. */
const GGUF_NAMES: Record<string, string> = {
  tok_embeddings: 'token_embd.weight',
  norm: 'output_norm.weight',
  output: 'output.weight',
  attention_norm: 'attn_norm.weight',
  wq: 'attn_q.weight',
  wk: 'attn_k.weight',
  wv: 'attn_v.weight',
  wo: 'attn_output.weight',
  ffn_norm: 'ffn_norm.weight',
  w1: 'ffn_gate.weight',
  w2: 'ffn_down.weight',
  w3: 'ffn_up.weight',
};

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
  if (metadata['tokenizer.ggml.model'] !== 'llama') {
    throw new CheckpointError(`${filePath}: tokenizer model "${String(metadata['tokenizer.ggml.model'])}" is not supported (only SentencePiece "llama")`);
  }
  const number = (key: string, fallback?: number): number => {
    const value = metadata[key];
    if (typeof value === 'number') return value;
    if (typeof value === 'bigint') return Number(value);
    if (fallback !== undefined) return fallback;
    throw new CheckpointError(`${filePath}: metadata "${key}" is missing`);
  };
  const tokens = metadata['tokenizer.ggml.tokens'];
  if (!Array.isArray(tokens)) throw new CheckpointError(`${filePath}: no tokenizer.ggml.tokens in metadata`);
  const dim = number('llama.embedding_length');
  const heads = number('llama.attention.head_count');
  const kvHeads = number('llama.attention.head_count_kv', heads);
  const layers = number('llama.block_count');
  const hiddenDim = number('llama.feed_forward_length');
  const vocabSize = tokens.length;
  const kvDim = (dim / heads) * kvHeads;

  const infos = new Map(parsed.tensorInfos.map((t) => [t.name, t]));
  const fileBytes = fs.statSync(filePath).size;
  const fd = fs.openSync(filePath, 'r');
  try {
    const tensors = new Map<string, LazyTensor>();
    const place = (metaName: string, ggufName: string, expectedShape: number[], required = true) => {
      const info = infos.get(ggufName);
      if (!info) {
        if (required) throw new CheckpointError(`${filePath}: tensor "${ggufName}" is missing`);
        return;
      }
      // GGUF lists dimensions innermost first; ours are outermost first.
      const shape = info.shape.map(Number).reverse();
      if (shape.join(',') !== expectedShape.join(',')) {
        throw new CheckpointError(`${filePath}: tensor "${ggufName}" has shape [${shape}] but the metadata implies [${expectedShape}]`);
      }
      let dtype: 'F32' | 'F16';
      if (info.dtype === GGMLQuantizationType.F32) dtype = 'F32';
      else if (info.dtype === GGMLQuantizationType.F16) dtype = 'F16';
      else throw new CheckpointError(`${filePath}: tensor "${ggufName}" is ${GGMLQuantizationType[info.dtype]}; only F32 and F16 tensors are supported`);
      const byteLength = expectedShape.reduce((a, b) => a * b, 1) * (dtype === 'F32' ? 4 : 2);
      const position = Number(parsed.tensorDataOffset + info.offset);
      if (position + byteLength > fileBytes) throw new CheckpointError(`${filePath}: tensor "${ggufName}" runs past the end of the file (truncated?)`);
      tensors.set(metaName, { dtype, shape, read: () => readRegion(fd, filePath, ggufName, position, byteLength) });
    };
    place('tok_embeddings', GGUF_NAMES.tok_embeddings, [vocabSize, dim]);
    place('norm', GGUF_NAMES.norm, [dim]);
    place('output', GGUF_NAMES.output, [vocabSize, dim], false);
    const layerShapes: Record<string, number[]> = {
      attention_norm: [dim], wq: [dim, dim], wk: [kvDim, dim], wv: [kvDim, dim], wo: [dim, dim],
      ffn_norm: [dim], w1: [hiddenDim, dim], w2: [dim, hiddenDim], w3: [hiddenDim, dim],
    };
    for (let l = 0; l < layers; l++) {
      for (const [name, shape] of Object.entries(layerShapes)) place(`layers.${l}.${name}`, `blk.${l}.${GGUF_NAMES[name]}`, shape);
    }
    // Converters often store a shared classifier a second time; keep such a model tied.
    const output = tensors.get('output');
    const embedding = tensors.get('tok_embeddings')!;
    if (output && output.dtype === embedding.dtype && Buffer.from(output.read()).equals(Buffer.from(embedding.read()))) tensors.delete('output');

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
    const checkpoint: MetaLlamaCheckpoint = {
      config: {
        dim, hiddenDim, layers, heads, kvHeads, vocabSize,
        maxSequence: number('llama.context_length', 2048),
        // Stored as f32: 1e-5 reads back as 9.99999974e-6; keep the decimal the author wrote.
        normEps: Number(number('llama.attention.layer_norm_rms_epsilon', 1e-5).toPrecision(7)),
        ropeTheta: number('llama.rope.freq_base', 10000),
      },
      tensors,
      close: () => fs.closeSync(fd),
    };
    return { checkpoint, vocab };
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
}
