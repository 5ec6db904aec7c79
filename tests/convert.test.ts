import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { convertCheckpoint, metaToHfRows } from '../weights/convert.ts';
import { readLlama2cTokenizer } from '../weights/llama2c.ts';
import { ShardedSafetensors } from '../weights/safetensors.ts';
import { bpeMerges, PieceType, sentencePieceToTokenizer, type SentencePieceVocab } from '../weights/sentencepiece.ts';
import { TextTokenizer } from '../weights/tokenizer.ts';
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
    await expect(convertCheckpoint(truncated, path.join(out, 'x'), { tokenizerPath: TOKENIZER_BIN })).rejects.toThrow(/model.bin: truncated: tensor "w[a-z0-9]*\[\d\]"/);
    const alone = path.join(out, 'alone', 'stories.bin');
    fs.mkdirSync(path.dirname(alone));
    fs.copyFileSync(BIN, alone);
    await expect(convertCheckpoint(alone, path.join(out, 'x'))).rejects.toThrow(/stories.bin: no tokenizer found beside it \(tried tok512.bin, tokenizer.bin\); pass --tokenizer FILE/);
    const badGguf = path.join(out, 'bad.gguf');
    fs.writeFileSync(badGguf, Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(20)]));
    await expect(convertCheckpoint(badGguf, path.join(out, 'y'))).rejects.toThrow(/bad.gguf: /);
  });
});

describe('Meta → Hugging Face RoPE row order', () => {
  it('moves interleaved pairs (2i, 2i+1) to halves (i, i + headDim/2) within each head', () => {
    // 2 heads of 4 rows, 1 column: row value = its Meta index
    const hf = metaToHfRows(Float32Array.from({ length: 8 }, (_, i) => i), 2, 1);
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
