import { describe, expect, it } from 'vitest';
import { Rng } from '../engine/rng.ts';
import { Sampler, validateSampling, type SamplingOptions } from '../engine/sampler.ts';
import { applyOutputPenalties, applyRepetitionPenalty, candidateDistribution, sampleToken } from '../kernels/cpu/sample.ts';

const base: SamplingOptions = { temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, seed: 42 };
// probabilities at temperature 1: softmax of log(p) gives back p
const probs = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04];
const logits = () => Float32Array.from(probs, Math.log);

describe('candidateDistribution', () => {
  it('keeps everything, sorted, with the softmax probabilities', () => {
    const c = candidateDistribution(logits(), base);
    expect(Array.from(c.ids)).toEqual([0, 1, 2, 3, 4, 5]);
    c.probs.forEach((p, i) => expect(p).toBeCloseTo(probs[i], 6));
  });

  it('top-k keeps the k most likely and renormalises', () => {
    const c = candidateDistribution(logits(), { ...base, topK: 2 });
    expect(Array.from(c.ids)).toEqual([0, 1]);
    expect(c.probs[0]).toBeCloseTo(0.4 / 0.65, 6);
  });

  it('top-p keeps the smallest prefix whose mass reaches p', () => {
    // cumulative mass: 0.4, 0.65, 0.8, 0.9, 0.96, 1
    expect(Array.from(candidateDistribution(logits(), { ...base, topP: 0.6 }).ids)).toEqual([0, 1]);
    expect(Array.from(candidateDistribution(logits(), { ...base, topP: 0.7 }).ids)).toEqual([0, 1, 2]);
    expect(Array.from(candidateDistribution(logits(), { ...base, topP: 0.1 }).ids)).toEqual([0]);
    const c = candidateDistribution(logits(), { ...base, topP: 0.85 });
    expect(Array.from(c.ids)).toEqual([0, 1, 2, 3]);
    expect(c.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
  });

  it('min-p drops tokens below min-p × the top probability', () => {
    expect(Array.from(candidateDistribution(logits(), { ...base, minP: 0.2 }).ids)).toEqual([0, 1, 2, 3]);
    expect(Array.from(candidateDistribution(logits(), { ...base, minP: 0.5 }).ids)).toEqual([0, 1]);
  });

  it('temperature sharpens and flattens', () => {
    const cold = candidateDistribution(logits(), { ...base, temperature: 0.5 });
    const hot = candidateDistribution(logits(), { ...base, temperature: 2 });
    expect(cold.probs[0]).toBeCloseTo(0.16 / probs.reduce((s, p) => s + p * p, 0), 6);
    expect(hot.probs[0]).toBeLessThan(0.4);
  });
});

/** Draws with `sampler`'s next step parameters from `values` (the CPU backend's sample op). */
function pick(sampler: Sampler, values: Float32Array, flags: Int32Array | null = null): number {
  return sampleToken(values, values.length, sampler.next(), flags);
}

describe('Sampler and sampleToken', () => {
  it('is greedy at temperature 0', () => {
    expect(pick(new Sampler({ ...base, temperature: 0 }), Float32Array.of(1, 5, 3))).toBe(1);
  });

  it('gives the same sequence for the same seed and another for another seed', () => {
    const draw = (seed: number) => {
      const sampler = new Sampler({ ...base, seed });
      return Array.from({ length: 40 }, () => pick(sampler, logits()));
    };
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });

  it('draws tokens with their probabilities', () => {
    const sampler = new Sampler({ ...base, seed: 3 });
    const counts = new Array(probs.length).fill(0);
    const n = 20000;
    for (let i = 0; i < n; i++) counts[pick(sampler, logits())]++;
    // 5 standard deviations of a binomial count
    counts.forEach((count, i) => expect(Math.abs(count / n - probs[i])).toBeLessThan(5 * Math.sqrt((probs[i] * (1 - probs[i])) / n)));
  });

  it('never draws a token that top-k, top-p or min-p removed', () => {
    const sampler = new Sampler({ ...base, topK: 4, topP: 0.7, seed: 9 });
    // top-k 4 renormalises to 0.44, 0.28, 0.17, 0.11; top-p 0.7 of that keeps tokens 0 and 1
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(pick(sampler, logits()));
    expect([...seen].sort()).toEqual([0, 1]);
  });

  it('applies the repetition penalty as transformers does', () => {
    const l = Float32Array.of(2, -2, 1);
    applyRepetitionPenalty(l, [0, 1, 0], 2);
    expect(Array.from(l)).toEqual([1, -4, 1]);
    const flags = Int32Array.of(1, 0);
    expect(pick(new Sampler({ ...base, temperature: 0, repetitionPenalty: 3 }), Float32Array.of(3, 2), flags)).toBe(1);
    expect(Array.from(flags)).toEqual([1, 2]); // the picked token is counted for the next step (2 per output)
  });

  it('applies OpenAI\'s presence and frequency penalties to output tokens only', () => {
    // Counts: token 0 in the prompt only, token 1 twice in the output, token 2 once in the output.
    const counts = Int32Array.of(1, 4, 2, 0);
    const logits = Float32Array.of(5, 5.5, 5.2, 3);
    const sampler = new Sampler({ ...base, temperature: 0, presencePenalty: 0.5, frequencyPenalty: 0.25 });
    // 5 (prompt only: untouched), 5.5 - 0.5 - 0.5 = 4.5, 5.2 - 0.5 - 0.25 = 4.45, 3.
    expect(pick(sampler, logits, counts)).toBe(0);
    expect(Array.from(counts)).toEqual([3, 4, 2, 0]);
    const penalised = Float32Array.of(5, 5.5, 5.2, 3);
    applyOutputPenalties(penalised, [[1, 2], [2, 1]], 0.5, 0.25);
    expect(Array.from(penalised)).toEqual(Array.from(Float32Array.of(5, 4.5, 4.45, 3)));
    // A negative presence penalty favours repeating: token 1 wins.
    expect(pick(new Sampler({ ...base, temperature: 0, presencePenalty: -1 }), Float32Array.of(5, 4.5, 4, 3), Int32Array.of(1, 2, 0, 0))).toBe(1);
    expect(() => validateSampling({ ...base, presencePenalty: 2.5 })).toThrow(/presence/);
    expect(() => validateSampling({ ...base, frequencyPenalty: -3 })).toThrow(/frequency/);
  });

  it('leaves the logits it samples from unchanged, and draws float32 values', () => {
    const values = Float32Array.of(2, -2, 1);
    const sampler = new Sampler({ ...base, repetitionPenalty: 2, seed: 5 });
    pick(sampler, values, Int32Array.of(1, 1, 1));
    expect(Array.from(values)).toEqual([2, -2, 1]);
    for (let i = 0; i < 100; i++) {
      const { draw } = sampler.next();
      expect(draw).toBe(Math.fround(draw));
      expect(draw >= 0 && draw < 1).toBe(true);
    }
    expect(new Sampler({ ...base, temperature: 0 }).next().draw).toBe(0);
  });

  it('rejects out-of-range options', () => {
    expect(() => validateSampling({ ...base, topP: 0 })).toThrow(/top-p/);
    expect(() => validateSampling({ ...base, temperature: -1 })).toThrow(/temperature/);
    expect(() => validateSampling({ ...base, topK: 1.5 })).toThrow(/top-k/);
    expect(() => validateSampling({ ...base, seed: -1 })).toThrow(/seed/);
  });
});

describe('Rng', () => {
  it('is deterministic and roughly uniform and normal', () => {
    const a = new Rng(5), b = new Rng(5);
    const xs = Array.from({ length: 10000 }, () => a.next());
    expect(xs.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => b.next()));
    expect(Math.abs(xs.reduce((s, x) => s + x, 0) / xs.length - 0.5)).toBeLessThan(0.02);
    const normals = Array.from({ length: 10000 }, () => a.normal());
    const mean = normals.reduce((s, x) => s + x, 0) / normals.length;
    const variance = normals.reduce((s, x) => s + (x - mean) ** 2, 0) / normals.length;
    expect(Math.abs(mean)).toBeLessThan(0.05);
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
  });
});
