// Sampling options, and the seeded source of each step's draw. The pick itself happens where the
// logits are, in the backend's `sample` op (kernels/cpu/sample.ts is the reference), so on a GPU
// only the chosen id crosses back to the CPU.
import { usesTokenCounts, type SampleParams } from '../kernels/backend.ts';
import { Rng } from './rng.ts';

export interface SamplingOptions {
  /** 0 means greedy. */
  temperature: number;
  /** 0 keeps every token. */
  topK: number;
  /** 1 keeps every token. */
  topP: number;
  /** 0 keeps every token. */
  minP: number;
  /** 1 means no penalty; > 1 discourages tokens already in the prompt or output. */
  repetitionPenalty: number;
  /** OpenAI's presence penalty in [-2, 2]: subtracted from the logit of every token the output holds. */
  presencePenalty: number;
  /** OpenAI's frequency penalty in [-2, 2]: subtracted once per time the output holds a token. */
  frequencyPenalty: number;
  seed: number;
}

export const GREEDY: Omit<SamplingOptions, 'seed'> = { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };

export function validateSampling(options: SamplingOptions): void {
  const fail = (what: string) => {
    throw new RangeError(what);
  };
  if (!(options.temperature >= 0) || !Number.isFinite(options.temperature)) fail(`temperature must be ≥ 0, got ${options.temperature}`);
  if (!Number.isInteger(options.topK) || options.topK < 0) fail(`top-k must be a non-negative integer, got ${options.topK}`);
  if (!(options.topP > 0 && options.topP <= 1)) fail(`top-p must be in (0, 1], got ${options.topP}`);
  if (!(options.minP >= 0 && options.minP <= 1)) fail(`min-p must be in [0, 1], got ${options.minP}`);
  if (!(options.repetitionPenalty > 0) || !Number.isFinite(options.repetitionPenalty)) fail(`repetition penalty must be > 0, got ${options.repetitionPenalty}`);
  if (!(options.presencePenalty >= -2 && options.presencePenalty <= 2)) fail(`presence penalty must be in [-2, 2], got ${options.presencePenalty}`);
  if (!(options.frequencyPenalty >= -2 && options.frequencyPenalty <= 2)) fail(`frequency penalty must be in [-2, 2], got ${options.frequencyPenalty}`);
  if (!Number.isInteger(options.seed) || options.seed < 0 || options.seed > 0xffffffff) fail(`seed must be an integer in [0, 2^32), got ${options.seed}`);
}

/** One sequence's sampling: the same seed gives the same draws, step after step. */
export class Sampler {
  private readonly rng: Rng;

  constructor(readonly options: SamplingOptions) {
    validateSampling(options);
    this.rng = new Rng(options.seed);
  }

  /** Whether the backend must see which tokens the sequence holds. */
  get penalises(): boolean {
    return usesTokenCounts(this.options);
  }

  /** The next step's parameters; a non-greedy step takes one draw from the generator. */
  next(): SampleParams {
    const { temperature, topK, topP, minP, repetitionPenalty, presencePenalty, frequencyPenalty } = this.options;
    // 24 random bits: exactly a float32 in [0, 1), so the CPU and the GPU see the same number.
    const draw = temperature === 0 ? 0 : (this.rng.nextUint32() >>> 8) / 16777216;
    return { temperature, topK, topP, minP, repetitionPenalty, presencePenalty, frequencyPenalty, draw };
  }
}
