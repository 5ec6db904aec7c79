// One sequence from prompt ids to finished text: chunked prefill into a KV cache, then one decode
// step per token, sampling, detokenising and stop checks as tokens arrive.
import { PREVIOUS_SAMPLE, type CausalLM, type SequenceCache } from '../models/model.ts';
import type { TextTokenizer } from '../weights/tokenizer.ts';
import { Sampler, type SamplingOptions } from './sampler.ts';
import { GeneratedText } from './stop.ts';

export interface GenerationRequest {
  promptIds: number[];
  maxTokens: number;
  sampling: SamplingOptions;
  stop?: string[];
  /** Keep going past end-of-sequence tokens (benchmarks, reference comparisons). */
  ignoreEos?: boolean;
  /** Called with each chunk of text as soon as it is final. */
  onText?: (text: string) => void;
  signal?: AbortSignal;
}

export type FinishReason = 'stop' | 'length';

export interface GenerationResult {
  promptIds: number[];
  /** Generated ids only. */
  ids: number[];
  /** Generated text only, stop string excluded. */
  text: string;
  finishReason: FinishReason;
  timings: {
    prefillMs: number;
    decodeMs: number;
    /** Decode steps per second (tokens after the first, which comes from the prefill). */
    decodeTokensPerS: number;
  };
}

export class ContextLengthError extends RangeError {
  constructor(readonly promptTokens: number, readonly contextTokens: number) {
    super(`the prompt is ${promptTokens} tokens but the context holds ${contextTokens}: ${promptTokens - contextTokens + 1} too many (one position is needed for the reply)`);
    this.name = 'ContextLengthError';
  }
}

/** Refuses a request that can never run: no prompt, a bad token id, no room for a reply, a bad max. */
/** `minTokens` 0: a request that only reads (scores) its prompt. */
export function checkRequest(promptIds: readonly number[], maxTokens: number, vocabSize: number, contextLength: number, minTokens = 1): void {
  if (promptIds.length === 0) throw new RangeError('the prompt has no tokens');
  if (!Number.isInteger(maxTokens) || maxTokens < minTokens) throw new RangeError(`max tokens must be ${minTokens === 0 ? 'a non-negative' : 'a positive'} integer, got ${maxTokens}`);
  const badId = promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
  if (badId !== undefined) throw new RangeError(`prompt token id ${badId} is outside the vocabulary (0..${vocabSize - 1})`);
  if (promptIds.length >= contextLength) throw new ContextLengthError(promptIds.length, contextLength);
}

export class Generator {
  constructor(
    readonly model: CausalLM,
    readonly tokenizer: TextTokenizer,
    readonly eosTokenIds: readonly number[],
    /** Positions available to one sequence (prompt + output). */
    readonly contextLength: number = model.config.maxPositions,
  ) {}

  async generate(request: GenerationRequest): Promise<GenerationResult> {
    const { promptIds, maxTokens } = request;
    checkRequest(promptIds, maxTokens, this.model.config.vocabSize, this.contextLength);

    const capacity = Math.min(this.contextLength, promptIds.length + maxTokens);
    const cache = this.model.createCache(capacity);
    try {
      return await this.run(request, cache, capacity);
    } finally {
      cache.release();
    }
  }

  private async run(request: GenerationRequest, cache: SequenceCache, capacity: number): Promise<GenerationResult> {
    const { promptIds, maxTokens } = request;
    const sampler = new Sampler(request.sampling);
    const output = new GeneratedText(this.tokenizer, promptIds, request.stop ?? []);
    const eos = new Set(request.ignoreEos ? [] : this.eosTokenIds);
    const ids: number[] = [];
    let text = '';
    const emit = (chunk: string) => {
      if (!chunk) return;
      text += chunk;
      request.onText?.(chunk);
    };
    if (sampler.penalises) {
      // The penalties read which tokens the sequence holds; sampling counts new ones.
      this.model.backend.uploadIndices(cache.cache.tokenFlags, promptTokenFlags(promptIds, cache.cache.flagStride));
    }

    // Tokens are sampled where the logits are; only ids come back. On a GPU decoding is pipelined:
    // step n + 1 (fed step n's token on the device) is submitted before step n's id is read, so the
    // CPU's recording overlaps the GPU's work; when step n ends the sequence, step n + 1 was wasted
    // work on a cache about to be released. The CPU backend runs a step as it is recorded, so
    // there each step waits for the previous token to be checked.
    const pipelined = this.model.backend.name !== 'cpu';
    const prefillStart = performance.now();
    const step = this.model.maxStepTokens;
    const lastChunk = Math.floor((promptIds.length - 1) / step) * step;
    for (let start = 0; start < lastChunk; start += step) {
      this.model.prefill(cache, Int32Array.from(promptIds.slice(start, start + step)), start);
      request.signal?.throwIfAborted();
    }
    let pending: Promise<number> | undefined = this.model.forwardSample(cache, Int32Array.from(promptIds.slice(lastChunk)), lastChunk, sampler.next());
    let next: Promise<number> | undefined;
    let first = true;
    let prefillMs = 0;
    let decodeStart = 0;
    let decodeSteps = 0;
    let finishReason: FinishReason = 'length';
    let stoppedByString = false;
    try {
      while (pending) {
        // The token that `pending` will give is number ids.length + 1 and sits at this position.
        const position = promptIds.length + ids.length;
        const more = ids.length + 1 < maxTokens && position + 1 < capacity;
        const submitNext = () => (more ? this.model.forwardSample(cache, PREVIOUS_SAMPLE, position, sampler.next()) : undefined);
        if (pipelined) {
          next = submitNext();
          next?.catch(() => undefined); // its failure surfaces when it is awaited, in the loop
        }
        const token = await pending;
        if (first) {
          first = false;
          prefillMs = performance.now() - prefillStart;
          decodeStart = performance.now();
        } else {
          decodeSteps++;
        }
        ids.push(token);
        if (eos.has(token)) {
          finishReason = 'stop';
          break;
        }
        const released = output.push(token);
        emit(released.text);
        if (released.stopped) {
          finishReason = 'stop';
          stoppedByString = true;
          break;
        }
        request.signal?.throwIfAborted();
        pending = pipelined ? next : submitNext();
      }
    } finally {
      // A step still in flight finishes before its cache goes back to the pool.
      await next?.catch(() => undefined);
    }
    const decodeMs = performance.now() - decodeStart;
    if (!stoppedByString) {
      const tail = output.finish();
      emit(tail.text);
      if (tail.stopped) finishReason = 'stop';
    }
    return {
      promptIds,
      ids,
      text,
      finishReason,
      timings: { prefillMs, decodeMs, decodeTokensPerS: decodeSteps > 0 ? (decodeSteps * 1000) / decodeMs : 0 },
    };
  }
}

/** A sequence's row of token counts (backend.ts KVCache.tokenFlags) before its output: 1 per prompt token. */
export function promptTokenFlags(promptIds: readonly number[], flagStride: number): Int32Array {
  const flags = new Int32Array(flagStride);
  for (const id of promptIds) flags[id] = 1;
  return flags;
}
