// Turning a growing list of token ids into text chunks as they arrive.
//
// Decoding a single token is wrong for two reasons: a UTF-8 character may span several byte-
// fallback tokens (decoding part of it gives U+FFFD), and decoders such as SentencePiece's strip
// or merge spaces depending on neighbours. So we decode a short window that starts a few tokens
// back and emit only what the window adds beyond its already-emitted part, holding back while the
// text ends in an incomplete character.
import type { TextTokenizer } from '../weights/tokenizer.ts';

const REPLACEMENT = '\uFFFD';
/** Tokens of context kept before the unread part; enough for any decoder's neighbour rules. */
const WINDOW_CONTEXT = 5;

export class IncrementalDetokenizer {
  private readonly ids: number[];
  private prefixStart: number;
  private readStart: number;

  /** `contextIds` (the prompt) are never emitted but give the first tokens their neighbours. */
  constructor(private readonly tokenizer: TextTokenizer, contextIds: readonly number[] = []) {
    this.ids = [...contextIds];
    this.readStart = this.ids.length;
    this.prefixStart = Math.max(0, this.readStart - WINDOW_CONTEXT);
  }

  /** Adds a token and returns the text it completes ('' while a character is still partial). */
  push(id: number): string {
    this.ids.push(id);
    const prefixText = this.tokenizer.decode(this.ids.slice(this.prefixStart, this.readStart));
    const fullText = this.tokenizer.decode(this.ids.slice(this.prefixStart));
    if (fullText.length <= prefixText.length || fullText.endsWith(REPLACEMENT)) return '';
    const text = fullText.slice(prefixText.length);
    this.prefixStart = this.readStart;
    this.readStart = this.ids.length;
    return text;
  }

  /** Whatever is still held back (an incomplete character at the end of generation). */
  flush(): string {
    if (this.readStart === this.ids.length) return '';
    const prefixText = this.tokenizer.decode(this.ids.slice(this.prefixStart, this.readStart));
    const fullText = this.tokenizer.decode(this.ids.slice(this.prefixStart));
    this.prefixStart = this.readStart;
    this.readStart = this.ids.length;
    return fullText.slice(prefixText.length);
  }
}
