// Stop strings over streamed text: text that might be the start of a stop string is held back
// until it is known not to be; on a match, the text before the stop string is released and the
// stop string itself never is (as OpenAI's API does).
import type { TextTokenizer } from '../weights/tokenizer.ts';
import { IncrementalDetokenizer } from './detokenizer.ts';

export class StopStringMatcher {
  private pending = '';
  private readonly longest: number;

  constructor(private readonly stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
    this.longest = Math.max(0, ...this.stops.map((s) => s.length));
  }

  /** Feeds new text; returns what can be released now and whether a stop string was hit. */
  push(text: string): { text: string; stopped: boolean } {
    if (this.stops.length === 0) return { text, stopped: false };
    this.pending += text;
    let firstMatch = -1;
    for (const stop of this.stops) {
      const at = this.pending.indexOf(stop);
      if (at !== -1 && (firstMatch === -1 || at < firstMatch)) firstMatch = at;
    }
    if (firstMatch !== -1) {
      const released = this.pending.slice(0, firstMatch);
      this.pending = '';
      return { text: released, stopped: true };
    }
    // Hold back the longest tail that is a prefix of some stop string.
    let hold = 0;
    for (let length = Math.min(this.longest - 1, this.pending.length); length > 0; length--) {
      const tail = this.pending.slice(this.pending.length - length);
      if (this.stops.some((s) => s.startsWith(tail))) {
        hold = length;
        break;
      }
    }
    const released = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { text: released, stopped: false };
  }

  /** At the end of generation, held-back text was not a stop string after all. */
  flush(): string {
    const rest = this.pending;
    this.pending = '';
    return rest;
  }
}

/**
 * A sequence's generated text as tokens arrive: detokenised without broken characters, with stop
 * strings cut out (what the Generator and the Scheduler both stream).
 */
export class GeneratedText {
  private readonly detokenizer: IncrementalDetokenizer;
  private readonly stops: StopStringMatcher;

  constructor(tokenizer: TextTokenizer, promptIds: readonly number[], stops: readonly string[]) {
    this.detokenizer = new IncrementalDetokenizer(tokenizer, promptIds);
    this.stops = new StopStringMatcher(stops);
  }

  /** A new token: the text it releases, and whether a stop string was hit. */
  push(id: number): { text: string; stopped: boolean } {
    return this.stops.push(this.detokenizer.push(id));
  }

  /**
   * At the end of generation (not after a stop string): what was held back — a partial character,
   * or text that could have begun a stop string — and whether it completes a stop string after all.
   */
  finish(): { text: string; stopped: boolean } {
    const tail = this.stops.push(this.detokenizer.flush());
    return tail.stopped ? tail : { text: tail.text + this.stops.flush(), stopped: false };
  }
}
