// Continuous batching: sequences run together over a paged KV cache give exactly what each gives
// alone (the Generator, one sequence in its own cache), on the CPU and on WebGPU.
import { describe, expect, it } from 'vitest';
import { Generator, type GenerationResult } from '../engine/generate.ts';
import { GREEDY, type SamplingOptions } from '../engine/sampler.ts';
import { QueueFullError, Scheduler, tokenLogprobs, type GeneratedToken } from '../engine/scheduler.ts';
import type { Backend } from '../kernels/backend.ts';
import { CpuBackend } from '../kernels/cpu/backend.ts';
import { loadModel } from '../models/load.ts';
import { readModelDirectory } from '../weights/model-directory.ts';
import { gpuForTests } from './gpu.ts';
import { DEFAULT_MODEL, tinyModelDirectory } from './helpers.ts';

const gpu = (await gpuForTests()).backend;

interface Case {
  prompt: string;
  maxTokens: number;
  sampling: SamplingOptions;
  stop?: string[];
}

const CASES: Case[] = [
  { prompt: 'Once upon a time', maxTokens: 40, sampling: { ...GREEDY, seed: 0 } },
  { prompt: 'The little dog', maxTokens: 25, sampling: { ...GREEDY, temperature: 0.9, topP: 0.9, seed: 3 } },
  { prompt: 'Lily and Ben went to the park to play. They saw a big tree and', maxTokens: 30, sampling: { ...GREEDY, seed: 0 }, stop: ['.'] },
  { prompt: 'A', maxTokens: 12, sampling: { ...GREEDY, temperature: 1.2, topK: 20, seed: 11 } },
  { prompt: 'Tom had a red ball', maxTokens: 35, sampling: { ...GREEDY, repetitionPenalty: 1.3, seed: 0 } },
  { prompt: 'One day, a girl named Sue', maxTokens: 33, sampling: { ...GREEDY, temperature: 0.7, presencePenalty: 0.8, frequencyPenalty: 0.6, seed: 5 } },
  { prompt: 'The sun was hot and the birds sang in the tall green trees near the house', maxTokens: 20, sampling: { ...GREEDY, frequencyPenalty: 1.5, seed: 0 } },
  { prompt: 'Mom said', maxTokens: 28, sampling: { ...GREEDY, temperature: 1, minP: 0.1, seed: 8 } },
];

const backends: [string, () => Backend | undefined][] = [
  ['cpu', () => new CpuBackend()],
  ['webgpu', () => gpu],
];

describe.each(backends)('Scheduler on %s', (name, makeBackend) => {
  const backend = makeBackend();
  const directory = readModelDirectory(DEFAULT_MODEL);
  // Small steps (24 tokens): long prompts are prefilled in chunks beside decoding sequences.
  const model = backend ? loadModel(directory, backend, { maxSequences: 8, maxStepTokens: 24 }) : undefined;
  const alone = async (c: Case) => {
    const single = loadModel(directory, backend!);
    const generator = new Generator(single, directory.tokenizer, directory.eosTokenIds);
    return generator.generate({ promptIds: directory.tokenizer.encode(c.prompt), maxTokens: c.maxTokens, sampling: c.sampling, stop: c.stop, ignoreEos: true });
  };

  it('runs 8 sequences at once, each giving exactly the tokens and text it gives alone', async ({ skip }) => {
    if (!model) return skip();
    const expected: GenerationResult[] = [];
    for (const c of CASES) expected.push(await alone(c));
    const scheduler = new Scheduler(model, directory.tokenizer, directory.eosTokenIds, { maxBatch: 8, maxQueue: 8, contextLength: 256 });
    const streamed = CASES.map(() => [] as string[]);
    const results = await Promise.all(CASES.map((c, i) => scheduler.submit({
      promptIds: directory.tokenizer.encode(c.prompt), maxTokens: c.maxTokens, sampling: c.sampling, stop: c.stop, ignoreEos: true,
      onText: (text) => streamed[i].push(text),
    })));
    results.forEach((result, i) => {
      expect(result.ids, `${name} case ${i}`).toEqual(expected[i].ids);
      expect(result.text).toBe(expected[i].text);
      expect(streamed[i].join('')).toBe(result.text);
      expect(result.finishReason).toBe(expected[i].finishReason);
    });
    // Steps held several sequences at once, and every block came back.
    expect(scheduler.stats.rows / scheduler.stats.steps).toBeGreaterThan(2);
    expect(scheduler.allocator.used).toBe(0);
    await scheduler.close();
  });

  it('admits more requests than its batch as others finish, and refuses past its queue', async ({ skip }) => {
    if (!model) return skip();
    const scheduler = new Scheduler(model, directory.tokenizer, directory.eosTokenIds, { maxBatch: 2, maxQueue: 3, contextLength: 128 });
    const promptIds = directory.tokenizer.encode('Once upon a time');
    const request = (maxTokens: number) => ({ promptIds, maxTokens, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true });
    const runs = [10, 4, 7, 3, 5].map((n) => scheduler.submit(request(n)));
    expect(() => scheduler.submit(request(2))).toThrow(QueueFullError);
    const results = await Promise.all(runs);
    const reference = await alone({ prompt: 'Once upon a time', maxTokens: 10, sampling: { ...GREEDY, seed: 0 } });
    results.forEach((r, i) => expect(r.ids).toEqual(reference.ids.slice(0, [10, 4, 7, 3, 5][i])));
    expect(scheduler.allocator.used).toBe(0);
    await scheduler.close();
  });

  it('cancels a sequence within a step and frees its blocks; the others go on', async ({ skip }) => {
    if (!model) return skip();
    const scheduler = new Scheduler(model, directory.tokenizer, directory.eosTokenIds, { maxBatch: 4, maxQueue: 4, contextLength: 256 });
    const promptIds = directory.tokenizer.encode('Once upon a time');
    const controller = new AbortController();
    let tokens = 0;
    let blocksWhileRunning = 0;
    const cancelled = scheduler.submit({
      promptIds, maxTokens: 200, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true, signal: controller.signal,
      onText: () => {
        blocksWhileRunning = Math.max(blocksWhileRunning, scheduler.allocator.used);
        if (++tokens === 5) controller.abort(new Error('client went away'));
      },
    });
    const other = scheduler.submit({ promptIds, maxTokens: 60, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true });
    await expect(cancelled).rejects.toThrow(/client went away/);
    expect(tokens).toBeLessThanOrEqual(6); // at most one more step ran
    expect(blocksWhileRunning).toBeGreaterThan(0);
    expect((await other).ids).toEqual((await alone({ prompt: 'Once upon a time', maxTokens: 60, sampling: { ...GREEDY, seed: 0 } })).ids);
    expect(scheduler.allocator.used).toBe(0);
    await scheduler.close();
  });

  it('reports logprobs: the chosen token\'s and the top alternatives, from the model\'s logits', async ({ skip }) => {
    if (!model) return skip();
    const scheduler = new Scheduler(model, directory.tokenizer, directory.eosTokenIds, { maxBatch: 2, maxQueue: 2, contextLength: 128 });
    const promptIds = directory.tokenizer.encode('Once upon a time');
    const streamedTokens: GeneratedToken[] = [];
    const [withLogprobs, plain] = await Promise.all([
      scheduler.submit({ promptIds, maxTokens: 6, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true, logprobs: 3, onText: (_, t) => streamedTokens.push(...t) }),
      scheduler.submit({ promptIds, maxTokens: 6, sampling: { ...GREEDY, temperature: 1, seed: 2 }, ignoreEos: true }),
    ]);
    expect(plain.tokens).toBeUndefined();
    expect(withLogprobs.tokens!.map((t) => t.id)).toEqual(withLogprobs.ids);
    expect(streamedTokens).toEqual(withLogprobs.tokens);
    // Against the logits of a one-sequence forward pass over the same tokens.
    const single = loadModel(directory, backend!);
    const cache = single.createCache(64);
    const ids = [...promptIds];
    for (const token of withLogprobs.tokens!) {
      const logits = await single.forward(cache, Int32Array.from(ids), 0);
      const expected = tokenLogprobs(logits, token.id, 3);
      expect(token.top!.map((t) => t.id)).toEqual(expected.top!.map((t) => t.id));
      expect(token.logprob).toBeCloseTo(expected.logprob, 3);
      expect(token.top![0].id).toBe(token.id); // greedy picks the most likely
      expect(token.logprob).toBeLessThanOrEqual(0);
      ids.push(token.id);
    }
    cache.release();
    await scheduler.close();
  });

  it('scores prompts (echo with logprobs): each prompt token from the logits of the tokens before it, in chunks beside other work', async ({ skip }) => {
    if (!model) return skip();
    // Three rows of logits a step: a 40-token prompt is read 1-3 tokens at a time beside a decoding sequence.
    const small = loadModel(directory, backend!, { maxSequences: 3, maxStepTokens: 24 });
    const scheduler = new Scheduler(small, directory.tokenizer, directory.eosTokenIds, { maxBatch: 2, maxQueue: 2, contextLength: 128 });
    const long = directory.tokenizer.encode('Lily and Ben went to the park to play. They saw a big tree and a small bird in it.');
    const short = directory.tokenizer.encode('Once upon a time');
    let prompted: GeneratedToken[] | undefined;
    const [scored, other] = await Promise.all([
      scheduler.submit({ promptIds: long, maxTokens: 3, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true, logprobs: 2, promptLogprobs: 2, onPrompt: (t) => (prompted = [...t]), onText: () => expect(prompted).toBeDefined() }),
      scheduler.submit({ promptIds: short, maxTokens: 30, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true }),
    ]);
    expect(other.promptTokenLogprobs).toBeUndefined();
    expect(other.ids).toEqual((await alone({ prompt: 'Once upon a time', maxTokens: 30, sampling: { ...GREEDY, seed: 0 } })).ids);
    const tokens = scored.promptTokenLogprobs!;
    expect(prompted).toEqual(tokens);
    expect(tokens.map((t) => t.id)).toEqual(long.slice(1));
    // Against a one-sequence forward pass over each prefix.
    const single = loadModel(directory, backend!);
    const cache = single.createCache(64);
    for (let i = 1; i < long.length; i++) {
      const logits = await single.forward(cache, Int32Array.from(long.slice(0, i)), 0);
      const expected = tokenLogprobs(logits, long[i], 2);
      // Read in chunks of 1-3 rows beside other work vs one pass over the prefix: other kernels, other rounding.
      expect(tokens[i - 1].logprob, `prompt token ${i}`).toBeCloseTo(expected.logprob, 2);
      expect(tokens[i - 1].top!.map((t) => t.id)).toEqual(expected.top!.map((t) => t.id));
    }
    cache.release();
    // The generated tokens as a request without prompt logprobs gives them.
    expect(scored.ids).toEqual((await scheduler.submit({ promptIds: long, maxTokens: 3, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true })).ids);
    // No tokens after the prompt: scored alike, nothing generated; only for a prompt being scored.
    const only = await scheduler.submit({ promptIds: long, maxTokens: 0, sampling: { ...GREEDY, seed: 0 }, promptLogprobs: 2 });
    expect(only).toMatchObject({ ids: [], text: '', finishReason: 'length' });
    only.promptTokenLogprobs!.forEach((t, i) => {
      expect(t.id).toBe(tokens[i].id);
      expect(t.logprob).toBeCloseTo(tokens[i].logprob, 3);
    });
    expect(() => scheduler.submit({ promptIds: long, maxTokens: 0, sampling: { ...GREEDY, seed: 0 } })).toThrow(/max tokens must be a positive integer/);
    expect(scheduler.allocator.used).toBe(0);
    await scheduler.close();
  });

  it('refuses prompts that cannot run, at once', async ({ skip }) => {
    if (!model) return skip();
    const scheduler = new Scheduler(model, directory.tokenizer, directory.eosTokenIds, { maxBatch: 2, maxQueue: 2, contextLength: 16 });
    const sampling = { ...GREEDY, seed: 0 };
    expect(() => scheduler.submit({ promptIds: new Array(20).fill(5), maxTokens: 4, sampling })).toThrow(/20 tokens but the context holds 16: 5 too many/);
    expect(() => scheduler.submit({ promptIds: [1, 100000], maxTokens: 4, sampling })).toThrow(/outside the vocabulary/);
    expect(() => scheduler.submit({ promptIds: [1], maxTokens: 4, sampling: { ...sampling, topP: 0 } })).toThrow(/top-p/);
    // Context 16: the prompt plus the output fill it, then "length".
    const result = await scheduler.submit({ promptIds: new Array(10).fill(5), maxTokens: 100, sampling, ignoreEos: true });
    expect(result.ids.length).toBe(6);
    expect(result.finishReason).toBe('length');
    await scheduler.close();
  });
});

describe('Scheduler with GPT-2', () => {
  it('batches a GPT-2 model (position embeddings, writeKV) as it runs each sequence alone', async () => {
    const directory = readModelDirectory(tinyModelDirectory('gpt2-style'));
    const backend = new CpuBackend();
    const model = loadModel(directory, backend, { maxSequences: 4, maxStepTokens: 16 });
    const scheduler = new Scheduler(model, directory.tokenizer, directory.eosTokenIds, { maxBatch: 4, maxQueue: 0, contextLength: 64 });
    const prompts = [[1, 2, 3], [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 9], [4], [5, 6]];
    const sampling = { ...GREEDY, seed: 0 };
    const together = await Promise.all(prompts.map((promptIds) => scheduler.submit({ promptIds, maxTokens: 12, sampling, ignoreEos: true })));
    const generator = new Generator(loadModel(directory, backend), directory.tokenizer, directory.eosTokenIds);
    for (const [i, promptIds] of prompts.entries()) {
      expect(together[i].ids).toEqual((await generator.generate({ promptIds, maxTokens: 12, sampling, ignoreEos: true })).ids);
    }
    await scheduler.close();
  });
});
