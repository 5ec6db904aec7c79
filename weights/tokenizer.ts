// Text ↔ token ids through @huggingface/tokenizers, which implements tokenizer.json's pipeline
// (normalizer, pre-tokenizer, BPE with byte fallback, post-processor, decoder).
import { Tokenizer } from '@huggingface/tokenizers';

export class TextTokenizer {
  private readonly tokenizer: Tokenizer;
  readonly vocabSize: number;

  constructor(tokenizerJson: object, tokenizerConfig: object) {
    // The library builds its tables from a copy of the JSON's model section (the caller's JSON is
    // left as it was), and then we slim what it keeps: a served model's tokenizer is most of the
    // JS heap, which every full collection walks (engine/collector.ts). For Llama 3 it kept the
    // 280,000 merges twice (the list, and a Map from each pair's JSON to its rank: 44 MB) and the
    // JSON itself (the vocabulary as an object: 18 MB), none of it needed once its tables exist.
    const json = tokenizerJson as { model?: { merges?: unknown } };
    const merges = Array.isArray(json.model?.merges) ? json.model.merges.slice() : undefined;
    this.tokenizer = new Tokenizer(merges ? { ...json, model: { ...json.model, merges } } : json, tokenizerConfig);
    const library = this.tokenizer as unknown as { tokenizer?: object; model?: LibraryModel };
    const model = library.model;
    if (merges && model && Array.isArray(model.merges) && model.bpe_ranks instanceof Map && model.tokens_to_ids instanceof Map) {
      model.bpe_ranks = MergeRanks.from(model.merges as unknown[], model.bpe_ranks, model.tokens_to_ids);
      model.merges.length = 0;
      merges.length = 0;
    }
    if (model?.config && typeof model.config === 'object') {
      // Read at construction only (vocab and merges, into the tables above); the rest stays.
      const { vocab: _vocab, merges: _merges, ...rest } = model.config;
      model.config = rest;
    }
    if (library.tokenizer) library.tokenizer = {}; // the JSON, read at construction only
    this.vocabSize = this.tokenizer.get_vocab(true).size;
  }

  /** Ids for `text`, with the special tokens (BOS) the tokenizer's post-processor adds. */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: number[], skipSpecialTokens = true): string {
    if (ids.length === 0) return ''; // the library refuses an empty list
    return this.tokenizer.decode(ids, { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
  }

  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  tokenText(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }
}

/** The fields of the library's BPE model this file touches. */
interface LibraryModel {
  config?: { vocab?: unknown; merges?: unknown; [key: string]: unknown };
  merges?: unknown;
  bpe_ranks?: { get(key: string): number | undefined };
  tokens_to_ids?: unknown;
}

/**
 * The rank of each BPE merge, looked up the way the library's BPE model looks up its own Map (by
 * the pair's JSON, `["a","b"]`), but keyed by the pair's two vocabulary ids in an open-addressing
 * table of typed arrays: 6 MB outside the JS heap for Llama 3's 280,000 merges instead of a Map
 * of 280,000 strings. A merge whose halves are not both in the vocabulary (none in the tokenizers
 * we ship) stays in a small Map by its JSON.
 */
export class MergeRanks {
  private readonly firsts: Int32Array;
  private readonly seconds: Int32Array;
  private readonly ranks: Int32Array;
  private readonly mask: number;
  private readonly shift: number;
  private readonly others = new Map<string, number>();
  /** Distinct pairs. */
  size = 0;

  private constructor(bits: number, private readonly ids: Map<string, number>) {
    this.firsts = new Int32Array(1 << bits).fill(-1);
    this.seconds = new Int32Array(1 << bits);
    this.ranks = new Int32Array(1 << bits);
    this.mask = (1 << bits) - 1;
    this.shift = 32 - bits;
  }

  /**
   * From the library's merge list (pairs, in rank order) and its Map, which decides the rank of a
   * pair listed twice (the Map keeps the last); both must describe the same merges.
   */
  static from(merges: unknown[], byJson: Map<string, number>, ids: Map<string, number>): MergeRanks {
    let bits = 10;
    while (1 << bits < 2 * byJson.size) bits++;
    const table = new MergeRanks(bits, ids);
    merges.forEach((pair) => {
      if (!Array.isArray(pair) || pair.length !== 2) throw new Error(`BPE merge ${JSON.stringify(pair)} is not a pair`);
      const key = JSON.stringify(pair);
      const rank = byJson.get(key);
      if (rank === undefined) throw new Error(`BPE merge ${key} has no rank`);
      table.set(key, pair[0], pair[1], rank);
    });
    if (table.size !== byJson.size) throw new Error(`BPE merges: ${table.size} distinct pairs, ${byJson.size} ranks`);
    return table;
  }

  /** The rank of the pair whose JSON is `key`, or undefined: what the library's Map answered. */
  get(key: string): number | undefined {
    // Without a backslash neither string holds a quote: the first after `["` closes the first.
    const middle = key.includes('\\') ? -1 : key.indexOf('"', 2);
    const pair = middle < 0 ? (JSON.parse(key) as [string, string]) : [key.slice(2, middle), key.slice(middle + 3, -2)];
    const first = this.ids.get(pair[0]);
    const second = this.ids.get(pair[1]);
    if (first === undefined || second === undefined) return this.others.get(key);
    for (let slot = this.slot(first, second); ; slot = (slot + 1) & this.mask) {
      if (this.firsts[slot] === -1) return undefined;
      if (this.firsts[slot] === first && this.seconds[slot] === second) return this.ranks[slot];
    }
  }

  private set(key: string, a: unknown, b: unknown, rank: number): void {
    const first = typeof a === 'string' ? this.ids.get(a) : undefined;
    const second = typeof b === 'string' ? this.ids.get(b) : undefined;
    if (first === undefined || second === undefined) {
      if (!this.others.has(key)) this.size++;
      this.others.set(key, rank);
      return;
    }
    let slot = this.slot(first, second);
    while (this.firsts[slot] !== -1 && !(this.firsts[slot] === first && this.seconds[slot] === second)) slot = (slot + 1) & this.mask;
    if (this.firsts[slot] === -1) this.size++;
    this.firsts[slot] = first;
    this.seconds[slot] = second;
    this.ranks[slot] = rank;
  }

  private slot(first: number, second: number): number {
    return (Math.imul(first, 0x9e3779b1) ^ Math.imul(second + 0x7f4a7c15, 0x85ebca77)) >>> this.shift;
  }
}
