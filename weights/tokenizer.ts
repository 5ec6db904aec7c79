// Text ↔ token ids through @huggingface/tokenizers, which implements tokenizer.json's pipeline
// (normalizer, pre-tokenizer, BPE with byte fallback, post-processor, decoder).
import { Tokenizer } from '@huggingface/tokenizers';

export class TextTokenizer {
  private readonly tokenizer: Tokenizer;
  readonly vocabSize: number;

  constructor(tokenizerJson: object, tokenizerConfig: object) {
    // A BPE model keeps the merge list it was given after building its rank table from it, and
    // never reads it again. For Llama 3 that is 280,000 two-string arrays, half the JS heap of a
    // served model, walked by every full collection (engine/collector.ts). The library gets its own
    // copy of the list, emptied once the table is built; the caller's JSON is left as it was.
    const json = tokenizerJson as { model?: { merges?: unknown } };
    const merges = Array.isArray(json.model?.merges) ? json.model.merges.slice() : undefined;
    this.tokenizer = new Tokenizer(merges ? { ...json, model: { ...json.model, merges } } : json, tokenizerConfig);
    const model = (this.tokenizer as unknown as { model?: { merges?: unknown; bpe_ranks?: unknown } }).model;
    if (merges && model?.bpe_ranks instanceof Map && model.bpe_ranks.size > 0) {
      if (Array.isArray(model.merges) && model.merges !== merges) model.merges.length = 0;
      merges.length = 0;
    }
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
