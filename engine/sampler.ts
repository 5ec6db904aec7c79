// Next-token choice from logits, in transformers' order: repetition penalty, then greedy if the
// temperature is 0, else temperature, top-k, top-p, min-p, and a draw from what is left.
import { argmax } from '../kernels/cpu/ops.ts';
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
  seed: number;
}

export const GREEDY: Omit<SamplingOptions, 'seed'> = { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1 };

export function validateSampling(options: SamplingOptions): void {
  const fail = (what: string) => {
    throw new RangeError(what);
  };
  if (!(options.temperature >= 0) || !Number.isFinite(options.temperature)) fail(`temperature must be ≥ 0, got ${options.temperature}`);
  if (!Number.isInteger(options.topK) || options.topK < 0) fail(`top-k must be a non-negative integer, got ${options.topK}`);
  if (!(options.topP > 0 && options.topP <= 1)) fail(`top-p must be in (0, 1], got ${options.topP}`);
  if (!(options.minP >= 0 && options.minP <= 1)) fail(`min-p must be in [0, 1], got ${options.minP}`);
  if (!(options.repetitionPenalty > 0) || !Number.isFinite(options.repetitionPenalty)) fail(`repetition penalty must be > 0, got ${options.repetitionPenalty}`);
  if (!Number.isInteger(options.seed) || options.seed < 0 || options.seed > 0xffffffff) fail(`seed must be an integer in [0, 2^32), got ${options.seed}`);
}

export interface Candidates {
  ids: Int32Array;
  /** Probabilities of `ids`, summing to 1, in descending order. */
  probs: Float64Array;
}

/** transformers' RepetitionPenaltyLogitsProcessor, in place: divide positive logits, multiply negative. */
export function applyRepetitionPenalty(logits: Float32Array, history: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(history)) {
    if (id < 0 || id >= logits.length) continue;
    logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
  }
}

// Tokens this far below the best logit (after temperature) have probability < e^-40 ≈ 4e-18:
// dropping them before sorting changes no probability visibly and keeps large vocabularies fast.
const NEGLIGIBLE_LOGIT_GAP = 40;

/** The tokens that survive temperature, top-k, top-p and min-p, with their renormalised probabilities. */
export function candidateDistribution(logits: Float32Array, options: Omit<SamplingOptions, 'seed' | 'repetitionPenalty'>): Candidates {
  const inverseTemperature = 1 / options.temperature;
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  const floor = max - NEGLIGIBLE_LOGIT_GAP / inverseTemperature;
  let kept: number[] = [];
  for (let i = 0; i < logits.length; i++) if (logits[i] >= floor) kept.push(i);
  kept.sort((a, b) => logits[b] - logits[a] || a - b);
  if (options.topK > 0 && kept.length > options.topK) kept = kept.slice(0, options.topK);

  const softmax = (ids: number[]): Float64Array => {
    const top = logits[ids[0]] * inverseTemperature;
    const probs = new Float64Array(ids.length);
    let sum = 0;
    for (let i = 0; i < ids.length; i++) sum += probs[i] = Math.exp(logits[ids[i]] * inverseTemperature - top);
    for (let i = 0; i < ids.length; i++) probs[i] /= sum;
    return probs;
  };
  let probs = softmax(kept);
  if (options.topP < 1) {
    // The smallest prefix whose mass reaches top-p (at least one token).
    let cumulative = 0;
    let keep = 0;
    while (keep < kept.length && cumulative < options.topP) cumulative += probs[keep++];
    if (keep < kept.length) {
      kept = kept.slice(0, Math.max(1, keep));
      probs = softmax(kept);
    }
  }
  if (options.minP > 0) {
    const threshold = options.minP * probs[0];
    let keep = 1;
    while (keep < kept.length && probs[keep] >= threshold) keep++;
    if (keep < kept.length) {
      kept = kept.slice(0, keep);
      probs = softmax(kept);
    }
  }
  return { ids: Int32Array.from(kept), probs };
}

export class Sampler {
  private readonly rng: Rng;

  constructor(readonly options: SamplingOptions) {
    validateSampling(options);
    this.rng = new Rng(options.seed);
  }

  /** Picks the next token; `logits` is modified (penalty applied). */
  sample(logits: Float32Array, history: Iterable<number>): number {
    applyRepetitionPenalty(logits, history, this.options.repetitionPenalty);
    if (this.options.temperature === 0) return argmax(logits);
    const { ids, probs } = candidateDistribution(logits, this.options);
    const u = this.rng.next();
    let cumulative = 0;
    for (let i = 0; i < ids.length; i++) {
      cumulative += probs[i];
      if (u < cumulative) return ids[i];
    }
    return ids[ids.length - 1];
  }
}
