// Picking the next token from logits, in transformers' order: repetition penalty (then OpenAI's
// presence and frequency penalties), then greedy if
// the temperature is 0, else temperature, top-k, top-p, min-p, and a draw from what is left.
// This is the CPU backend's `sample` op and the reference for wgsl/sample.wgsl.
import type { SampleParams } from '../backend.ts';

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

/**
 * Tokens this far below the best logit (after temperature) have probability < e^-40 ≈ 4e-18:
 * they are dropped before sorting (no probability changes visibly; large vocabularies stay fast).
 * The GPU kernel applies the same cut, so both keep the same tokens.
 */
export const NEGLIGIBLE_LOGIT_GAP = 40;

/**
 * The tokens that survive temperature, top-k, top-p and min-p, with their renormalised
 * probabilities, best first (equal logits: lower id first).
 */
export function candidateDistribution(logits: Float32Array, options: Pick<SampleParams, 'temperature' | 'topK' | 'topP' | 'minP'>): Candidates {
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

/** The first candidate whose cumulative probability exceeds `draw` (the last one if rounding leaves none). */
export function drawCandidate({ ids, probs }: Candidates, draw: number): number {
  let cumulative = 0;
  for (let i = 0; i < ids.length; i++) {
    cumulative += probs[i];
    if (draw < cumulative) return ids[i];
  }
  return ids[ids.length - 1];
}

/**
 * OpenAI's presence and frequency penalties, in place: each token the output holds `count` times
 * (count > 0) loses presence + frequency × count.
 */
export function applyOutputPenalties(logits: Float32Array, outputCounts: Iterable<[number, number]>, presence: number, frequency: number): void {
  if (presence === 0 && frequency === 0) return;
  for (const [id, count] of outputCounts) {
    if (id < 0 || id >= logits.length || count <= 0) continue;
    logits[id] -= presence + frequency * count;
  }
}

/**
 * The next token from `count` logits (not modified). `tokenCounts` (backend.ts KVCache.tokenFlags:
 * 1 for a prompt token + 2 per time the output holds it) gives the repetition penalty (every token
 * held), then the presence and frequency penalties (output tokens); the pick is counted in it.
 */
export function sampleToken(logits: Float32Array, count: number, params: SampleParams, tokenCounts: Int32Array | null): number {
  const values = logits.slice(0, count);
  if (tokenCounts && params.repetitionPenalty !== 1) {
    const seen: number[] = [];
    for (let i = 0; i < count; i++) if (tokenCounts[i] !== 0) seen.push(i);
    applyRepetitionPenalty(values, seen, params.repetitionPenalty);
  }
  if (tokenCounts && (params.presencePenalty !== 0 || params.frequencyPenalty !== 0)) {
    const counts: [number, number][] = [];
    for (let i = 0; i < count; i++) if (tokenCounts[i] >= 2) counts.push([i, tokenCounts[i] >> 1]);
    applyOutputPenalties(values, counts, params.presencePenalty, params.frequencyPenalty);
  }
  let token: number;
  if (params.temperature === 0) {
    token = 0;
    for (let i = 1; i < count; i++) if (values[i] > values[token]) token = i;
  } else {
    token = drawCandidate(candidateDistribution(values, params), params.draw);
  }
  if (tokenCounts) tokenCounts[token] += 2;
  return token;
}
