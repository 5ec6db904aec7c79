// llama2.c checkpoints and GGUF files → a Hugging Face model directory (config.json,
// generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json).
import fs from 'node:fs';
import path from 'node:path';
import { readGgufLlama } from './gguf.ts';
import { readLlama2cCheckpoint, readLlama2cTokenizer, type MetaLlamaCheckpoint } from './llama2c.ts';
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
  let checkpoint: MetaLlamaCheckpoint;
  let vocab: SentencePieceVocab;
  if (format === 'gguf') {
    ({ checkpoint, vocab } = await readGgufLlama(inputPath));
  } else {
    checkpoint = readLlama2cCheckpoint(inputPath);
    try {
      const tokenizerPath = options.tokenizerPath ?? findLlama2cTokenizer(inputPath, checkpoint.config.vocabSize);
      progress(`reading tokenizer ${tokenizerPath}`);
      vocab = readLlama2cTokenizer(tokenizerPath, checkpoint.config.vocabSize);
    } catch (error) {
      checkpoint.close();
      throw error;
    }
  }
  try {
    const { config } = checkpoint;
    const tied = !checkpoint.tensors.has('output');
    fs.mkdirSync(outputDirectory, { recursive: true });
    const tensors = hfLlamaTensors(checkpoint);
    const weightsPath = path.join(outputDirectory, 'model.safetensors');
    let written = 0;
    const withProgress = tensors.map((t) => ({
      ...t,
      data: () => {
        const data = (t.data as () => Uint8Array)();
        progress(`tensor ${++written}/${tensors.length} ${t.name} [${t.shape}] ${t.dtype}`);
        return data;
      },
    }));
    writeSafetensors(weightsPath, withProgress, { format: 'pt' });
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
      tie_word_embeddings: tied,
      attention_bias: false,
      mlp_bias: false,
      bos_token_id: vocab.bosId,
      eos_token_id: vocab.eosId,
      torch_dtype: tensors.every((t) => t.dtype === 'F16') ? 'float16' : 'float32',
    };
    writeJson(path.join(outputDirectory, 'config.json'), hfConfig);
    writeJson(path.join(outputDirectory, 'generation_config.json'), { bos_token_id: vocab.bosId, eos_token_id: vocab.eosId });
    progress('building tokenizer.json from the SentencePiece vocabulary');
    const { tokenizerJson, tokenizerConfig } = sentencePieceToTokenizer(vocab, { maxLength: config.maxSequence });
    writeJson(path.join(outputDirectory, 'tokenizer.json'), tokenizerJson);
    writeJson(path.join(outputDirectory, 'tokenizer_config.json'), tokenizerConfig);
    const parameters = tensors.reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
    progress(`done: ${parameters.toLocaleString('en-US')} parameters in ${outputDirectory}`);
    return { format, outputDirectory, tensors: tensors.length, parameters };
  } finally {
    checkpoint.close();
  }
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
 * (i, i + headDim/2). Row i*2 + half of a head moves to half*headDim/2 + i. Works on raw bytes,
 * so f16 tensors keep their dtype.
 */
export function metaToHfRows(weight: Uint8Array, heads: number, rowBytes: number): Uint8Array {
  const rows = weight.byteLength / rowBytes;
  const headDim = rows / heads;
  const out = new Uint8Array(weight.byteLength);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < headDim / 2; i++) {
      for (let half = 0; half < 2; half++) {
        const from = h * headDim + i * 2 + half;
        const to = h * headDim + half * (headDim / 2) + i;
        out.set(weight.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
    }
  }
  return out;
}

/** Meta names → Hugging Face names, in the order they are written; wq and wk get their rows reordered. */
function hfLlamaTensors(checkpoint: MetaLlamaCheckpoint): TensorToWrite[] {
  const { heads, kvHeads, layers } = checkpoint.config;
  const names: [meta: string, hf: string, ropeHeads?: number][] = [['tok_embeddings', 'model.embed_tokens.weight']];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    names.push(
      [`layers.${l}.attention_norm`, `${p}.input_layernorm.weight`],
      [`layers.${l}.wq`, `${p}.self_attn.q_proj.weight`, heads],
      [`layers.${l}.wk`, `${p}.self_attn.k_proj.weight`, kvHeads],
      [`layers.${l}.wv`, `${p}.self_attn.v_proj.weight`],
      [`layers.${l}.wo`, `${p}.self_attn.o_proj.weight`],
      [`layers.${l}.ffn_norm`, `${p}.post_attention_layernorm.weight`],
      [`layers.${l}.w1`, `${p}.mlp.gate_proj.weight`],
      [`layers.${l}.w2`, `${p}.mlp.down_proj.weight`],
      [`layers.${l}.w3`, `${p}.mlp.up_proj.weight`],
    );
  }
  names.push(['norm', 'model.norm.weight']);
  if (checkpoint.tensors.has('output')) names.push(['output', 'lm_head.weight']);
  return names.map(([meta, hf, ropeHeads]) => {
    const tensor = checkpoint.tensors.get(meta)!;
    const rowBytes = (tensor.shape.at(-1) ?? 1) * (tensor.dtype === 'F32' ? 4 : 2);
    return {
      name: hf,
      dtype: tensor.dtype,
      shape: tensor.shape,
      data: ropeHeads ? () => metaToHfRows(tensor.read(), ropeHeads, rowBytes) : () => tensor.read(),
    };
  });
}
function writeJson(filePath: string, value: unknown): void {
  fs.writeFileSync(filePath, JSON.stringify(value, null, 2) + '\n');
}
