import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fromFloat32, toFloat32 } from '../weights/dtypes.ts';
import { convertCheckpoint, metaToHfRows } from '../weights/convert.ts';
import { readLlama2cCheckpoint, readLlama2cTokenizer } from '../weights/llama2c.ts';
import { ShardedSafetensors } from '../weights/safetensors.ts';
import { bpeMerges, PieceType, sentencePieceToTokenizer, type SentencePieceVocab } from '../weights/sentencepiece.ts';
import { TextTokenizer } from '../weights/tokenizer.ts';
import { writeGguf, type GgufTensor } from './fixtures/gguf-writer.ts';
import { DEFAULT_MODEL, PROBES, STORIES_SOURCES, tempDirectory } from './helpers.ts';

const BIN = path.join(STORIES_SOURCES, 'stories260K.bin');
const GGUF = path.join(STORIES_SOURCES, 'stories260K.gguf');
const TOKENIZER_BIN = path.join(STORIES_SOURCES, 'tok512.bin');

describe('blr convert (library)', () => {
  const out = tempDirectory('convert');
  const fromBin = path.join(out, 'from-bin');
  const fromGguf = path.join(out, 'from-gguf');

  it('converts the llama2.c and GGUF forms of stories260K to the same weights and tokenizer', async () => {
    await convertCheckpoint(BIN, fromBin);
    await convertCheckpoint(GGUF, fromGguf);
    const a = ShardedSafetensors.openDirectory(fromBin);
    const b = ShardedSafetensors.openDirectory(fromGguf);
    expect(a.names().sort()).toEqual(b.names().sort());
    expect(a.names()).toHaveLength(2 + 9 * 5); // embedding, final norm, 9 tensors × 5 layers; tied head
    for (const name of a.names()) {
      expect(b.info(name).shape, name).toEqual(a.info(name).shape);
      expect(Buffer.from(b.readBytes(name)).equals(Buffer.from(a.readBytes(name))), name).toBe(true);
    }
    a.close();
    b.close();
    for (const file of ['tokenizer.json', 'generation_config.json']) {
      expect(fs.readFileSync(path.join(fromGguf, file), 'utf8'), file).toBe(fs.readFileSync(path.join(fromBin, file), 'utf8'));
    }
    const json = (dir: string, file: string) => JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
    const configA = json(fromBin, 'config.json');
    // The GGUF records its converter's default context (2048); llama2.c's header has the true 512.
    expect({ ...json(fromGguf, 'config.json'), max_position_embeddings: 512 }).toEqual(configA);
    expect({ ...json(fromGguf, 'tokenizer_config.json'), model_max_length: 512 }).toEqual(json(fromBin, 'tokenizer_config.json'));
    expect(configA).toMatchObject({ hidden_size: 64, intermediate_size: 172, num_hidden_layers: 5, num_attention_heads: 8, num_key_value_heads: 4, vocab_size: 512, tie_word_embeddings: true, rms_norm_eps: 1e-5 });
  });

  it('reproduces the bundled default model byte for byte', () => {
    for (const file of ['model.safetensors', 'config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
      expect(fs.readFileSync(path.join(fromBin, file)).equals(fs.readFileSync(path.join(DEFAULT_MODEL, file))), file).toBe(true);
    }
  });

  it('rejects truncated checkpoints and missing tokenizers with the file named', async () => {
    const truncated = path.join(out, 'truncated', 'model.bin');
    fs.mkdirSync(path.dirname(truncated));
    fs.writeFileSync(truncated, fs.readFileSync(BIN).subarray(0, 300_000));
    await expect(convertCheckpoint(truncated, path.join(out, 'x'), { tokenizerPath: TOKENIZER_BIN })).rejects.toThrow(/model.bin: truncated: tensor "layers\.\d\.wo" needs bytes \d+\.\.\d+ but the file has 300000/);
    const alone = path.join(out, 'alone', 'stories.bin');
    fs.mkdirSync(path.dirname(alone));
    fs.copyFileSync(BIN, alone);
    await expect(convertCheckpoint(alone, path.join(out, 'x'))).rejects.toThrow(/stories.bin: no tokenizer found beside it \(tried tok512.bin, tokenizer.bin\); pass --tokenizer FILE/);
    const badGguf = path.join(out, 'bad.gguf');
    fs.writeFileSync(badGguf, Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(20)]));
    await expect(convertCheckpoint(badGguf, path.join(out, 'y'))).rejects.toThrow(/bad.gguf: /);
  });
});

describe('GGUF with f16 tensors', () => {
  it('keeps f16 weights as F16 in model.safetensors, with the same values', async () => {
    // Build an f16 GGUF of stories260K (separate classifier, so the untied path is used too).
    const source = readLlama2cCheckpoint(BIN);
    const vocab = readLlama2cTokenizer(TOKENIZER_BIN, 512);
    const ggufNames: Record<string, string> = {
      tok_embeddings: 'token_embd.weight', norm: 'output_norm.weight', attention_norm: 'attn_norm.weight',
      wq: 'attn_q.weight', wk: 'attn_k.weight', wv: 'attn_v.weight', wo: 'attn_output.weight',
      ffn_norm: 'ffn_norm.weight', w1: 'ffn_gate.weight', w2: 'ffn_down.weight', w3: 'ffn_up.weight',
    };
    const tensors: GgufTensor[] = [];
    for (const [meta, tensor] of source.tensors) {
      const [, layer, short] = meta.match(/^layers\.(\d+)\.(.+)$/) ?? [undefined, undefined, meta];
      const name = layer === undefined ? ggufNames[short!] : `blk.${layer}.${ggufNames[short!]}`;
      tensors.push({ name, shape: tensor.shape, dtype: 'F16', data: fromFloat32(toFloat32(tensor.read(), 'F32'), 'F16') });
    }
    const embedding = tensors.find((t) => t.name === 'token_embd.weight')!;
    const classifier = fromFloat32(toFloat32(source.tensors.get('tok_embeddings')!.read(), 'F32').map((v) => v * 0.5), 'F16');
    tensors.push({ name: 'output.weight', shape: embedding.shape, dtype: 'F16', data: classifier });
    source.close();
    const c = source.config;
    const file = path.join(tempDirectory('gguf16'), 'stories-f16.gguf');
    writeGguf(file, {
      'general.architecture': { type: 'string', value: 'llama' },
      'llama.context_length': { type: 'u32', value: 512 },
      'llama.embedding_length': { type: 'u32', value: c.dim },
      'llama.feed_forward_length': { type: 'u32', value: c.hiddenDim },
      'llama.block_count': { type: 'u32', value: c.layers },
      'llama.attention.head_count': { type: 'u32', value: c.heads },
      'llama.attention.head_count_kv': { type: 'u32', value: c.kvHeads },
      'llama.attention.layer_norm_rms_epsilon': { type: 'f32', value: 1e-5 },
      'tokenizer.ggml.model': { type: 'string', value: 'llama' },
      'tokenizer.ggml.tokens': { type: 'strings', value: vocab.pieces },
      'tokenizer.ggml.scores': { type: 'f32s', value: vocab.scores },
      'tokenizer.ggml.token_type': { type: 'i32s', value: vocab.types },
      'tokenizer.ggml.bos_token_id': { type: 'u32', value: 1 },
      'tokenizer.ggml.eos_token_id': { type: 'u32', value: 2 },
    }, tensors);

    const out = path.join(path.dirname(file), 'hf');
    await convertCheckpoint(file, out);
    const converted = ShardedSafetensors.openDirectory(out);
    const reference = ShardedSafetensors.openDirectory(DEFAULT_MODEL);
    for (const name of reference.names()) {
      expect(converted.info(name).dtype, name).toBe('F16');
      const expected = toFloat32(fromFloat32(reference.readFloat32(name), 'F16'), 'F16');
      expect(Array.from(converted.readFloat32(name)), name).toEqual(Array.from(expected));
    }
    expect(Array.from(converted.readFloat32('lm_head.weight'))).toEqual(Array.from(toFloat32(classifier, 'F16')));
    converted.close();
    reference.close();
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ tie_word_embeddings: false, torch_dtype: 'float16', rms_norm_eps: 1e-5, max_position_embeddings: 512 });
  });
});

describe('Meta → Hugging Face RoPE row order', () => {
  it('moves interleaved pairs (2i, 2i+1) to halves (i, i + headDim/2) within each head', () => {
    // 2 heads of 4 rows, 1 column: row value = its Meta index
    const hf = metaToHfRows(Uint8Array.from({ length: 8 }, (_, i) => i), 2, 1);
    expect(Array.from(hf)).toEqual([0, 2, 1, 3, 4, 6, 5, 7]);
  });
});

describe('SentencePiece → tokenizer.json', () => {
  const vocab: SentencePieceVocab = {
    pieces: ['<unk>', '<s>', '</s>', 'a', 'b', 'c', 'ab', 'bc', 'abc', '▁', '▁ab'],
    scores: [0, 0, 0, -10, -11, -12, -1, -2, -3, -13, -4],
    types: [PieceType.Unknown, PieceType.Control, PieceType.Control, 1, 1, 1, 1, 1, 1, 1, 1],
    unkId: 0, bosId: 1, eosId: 2,
  };

  it('derives merges from every split into two pieces, ranked by the merged piece score', () => {
    // abc has two splits; equal scores are ordered by the ids of the parts (transformers does the same)
    expect(bpeMerges(vocab)).toEqual([['a', 'b'], ['b', 'c'], ['a', 'bc'], ['ab', 'c'], ['▁', 'ab']]);
  });

  /** llama2.c's encoder: dummy prefix, characters (or bytes), then merge the best-scoring pair until none is left. */
  function llama2cEncode(pieces: string[], scores: number[], text: string): number[] {
    const ids = new Map<string, number>();
    pieces.forEach((p, i) => { if (!ids.has(p)) ids.set(p, i); });
    const tokens: number[] = [1];
    if (text === '') return tokens;
    for (const char of ('▁' + text.replaceAll(' ', '▁'))) {
      const id = ids.get(char);
      if (id !== undefined) tokens.push(id);
      else for (const byte of Buffer.from(char, 'utf8')) tokens.push(byte + 3);
    }
    for (;;) {
      let best = -Infinity, bestAt = -1, bestId = -1;
      for (let i = 0; i + 1 < tokens.length; i++) {
        if (i === 0) continue; // never merge with BOS
        const id = ids.get(pieces[tokens[i]] + pieces[tokens[i + 1]]);
        if (id !== undefined && scores[id] > best) { best = scores[id]; bestAt = i; bestId = id; }
      }
      if (bestAt === -1) return tokens;
      tokens.splice(bestAt, 2, bestId);
    }
  }

  it('tokenizes like llama2.c on the stories260K vocabulary', () => {
    const sp = readLlama2cTokenizer(TOKENIZER_BIN, 512);
    const { tokenizerJson, tokenizerConfig } = sentencePieceToTokenizer(sp, { maxLength: 512 });
    const tokenizer = new TextTokenizer(tokenizerJson, tokenizerConfig);
    const texts = [...PROBES.filter((p) => !p.includes('<s>')), 'Once upon a time, there was a little girl named Lily. She loved to play outside.'];
    for (const text of texts) expect(tokenizer.encode(text), JSON.stringify(text)).toEqual(llama2cEncode(sp.pieces, sp.scores, text));
    expect(tokenizer.decode(tokenizer.encode('Once upon a time 🦙'))).toBe('Once upon a time 🦙');
  });
});
