import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { IncrementalDetokenizer } from '../engine/detokenizer.ts';
import { ContextLengthError, Generator } from '../engine/generate.ts';
import { GREEDY } from '../engine/sampler.ts';
import { StopStringMatcher } from '../engine/stop.ts';
import { CpuBackend } from '../kernels/cpu/backend.ts';
import { loadModel } from '../models/load.ts';
import { readModelDirectory } from '../weights/model-directory.ts';
import { MergeRanks, TextTokenizer } from '../weights/tokenizer.ts';
import { Tokenizer } from '@huggingface/tokenizers';
import { DEFAULT_MODEL, FIXTURES, reference } from './helpers.ts';

function fixtureTokenizer(name: string): TextTokenizer {
  const json = JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(FIXTURES, 'tokenizers', `${name}.tokenizer.json.gz`))).toString('utf8'));
  return new TextTokenizer(json, {});
}

describe('TextTokenizer', () => {
  it.each(['llama3', 'gpt2'])('leaves the %s JSON it was given as it was: a second tokenizer from it encodes the same', (name) => {
    const json = JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(FIXTURES, 'tokenizers', `${name}.tokenizer.json.gz`))).toString('utf8'));
    const merges = json.model.merges.length;
    const first = new TextTokenizer(json, {});
    expect(json.model.merges.length).toBe(merges);
    const second = new TextTokenizer(json, {});
    const text = 'Once upon a time, naïve 🦙 tokenizers merged everything: 日本語 1234';
    expect(second.encode(text)).toEqual(first.encode(text));
    // Merges applied: far fewer tokens than bytes.
    expect(first.encode(text, false).length).toBeLessThan(new TextEncoder().encode(text).length / 2);
  });

  const texts = [
    'Once upon a time, naïve 🦙 tokenizers merged everything: 日本語 1234',
    '"quoted", \\back\\slashes\\, ",", commas,,, and \t\ttabs\n\n\r\n  spaces    ',
    fs.readFileSync(path.join(FIXTURES, '..', '..', 'README.md'), 'utf8').slice(0, 6000),
  ];
  it.each(['llama3', 'llama2', 'gpt2'])('encodes %s text as the library does with its own merge table, which it no longer keeps', (name) => {
    const json = JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(FIXTURES, 'tokenizers', `${name}.tokenizer.json.gz`))).toString('utf8'));
    const library = new Tokenizer(structuredClone(json), {});
    const ours = new TextTokenizer(json, {});
    for (const text of texts) expect(ours.encode(text)).toEqual(library.encode(text).ids);
    // Every pair the library's Map ranks, ranked alike; pairs it does not rank, not ranked.
    const theirs = (library as unknown as { model: { bpe_ranks: Map<string, number> } }).model.bpe_ranks;
    const table = (ours as unknown as { tokenizer: { model: { bpe_ranks: MergeRanks } } }).tokenizer.model.bpe_ranks;
    expect(table).toBeInstanceOf(MergeRanks);
    expect(table.size).toBe(theirs.size);
    for (const [key, rank] of theirs) if (table.get(key) !== rank) expect(table.get(key), key).toBe(rank);
    const unranked = [['Hello', 'World'], ['a', '"'], [',', ','], ['', 'x']].map((pair) => JSON.stringify(pair)).filter((key) => !theirs.has(key));
    expect(unranked.length).toBeGreaterThan(2);
    for (const key of unranked) expect(table.get(key), key).toBeUndefined();
  });

  it('ranks merges by token ids, the last rank of a pair listed twice as a Map would, and halves outside the vocabulary by their JSON', () => {
    const ids = new Map(['a', 'b', 'ab', '"', '\\', ','].map((token, id) => [token, id]));
    const merges = [['a', 'b'], ['"', '\\'], [',', ','], ['ab', 'zz'], ['a', 'b'], ['b', 'a']];
    const byJson = new Map(merges.map((pair, rank) => [JSON.stringify(pair), rank]));
    const table = MergeRanks.from(merges, byJson, ids);
    expect(table.size).toBe(5);
    for (const [key, rank] of byJson) expect(table.get(key), key).toBe(rank);
    expect(table.get(JSON.stringify(['a', 'a']))).toBeUndefined();
    expect(table.get(JSON.stringify(['zz', 'ab']))).toBeUndefined();
    expect(() => MergeRanks.from([['a']], byJson, ids)).toThrow(/not a pair/);
    expect(() => MergeRanks.from([['a', 'a']], byJson, ids)).toThrow(/no rank/);
  });
});

describe('IncrementalDetokenizer', () => {
  const text = ' naïve 🦙🚀 日本語 ok\n\tdone 👍🏽';
  it.each(['llama2', 'gpt2'])('streams %s tokens without ever emitting a broken character', (name) => {
    const tokenizer = fixtureTokenizer(name);
    const prompt = tokenizer.encode('Hello');
    const generated = tokenizer.encode(text, false);
    const detokenizer = new IncrementalDetokenizer(tokenizer, prompt);
    const chunks = generated.map((id) => detokenizer.push(id));
    chunks.push(detokenizer.flush());
    for (const chunk of chunks) expect(chunk).not.toContain('\uFFFD');
    // Multi-byte characters span several byte tokens: some pushes must have held text back.
    expect(chunks.filter((c) => c === '').length).toBeGreaterThan(0);
    const whole = tokenizer.decode([...prompt, ...generated]);
    expect(chunks.join('')).toBe(whole.slice(tokenizer.decode(prompt).length));
  });

  it('keeps the space SentencePiece strips from a text-initial token', () => {
    const tokenizer = fixtureTokenizer('llama2');
    const detokenizer = new IncrementalDetokenizer(tokenizer, tokenizer.encode('Hello'));
    const out = tokenizer.encode('world', false).map((id) => detokenizer.push(id)).join('');
    expect(out).toBe(' world');
  });

  it('releases an incomplete character at the end', () => {
    const tokenizer = fixtureTokenizer('llama2');
    const emojiBytes = tokenizer.encode('🦙', false).filter((id) => tokenizer.tokenText(id)?.startsWith('<0x'));
    expect(emojiBytes.length).toBe(4);
    const detokenizer = new IncrementalDetokenizer(tokenizer, tokenizer.encode('a'));
    expect(emojiBytes.slice(0, 2).map((id) => detokenizer.push(id)).join('')).toBe('');
    expect(detokenizer.flush()).toContain('\uFFFD');
  });
});

describe('StopStringMatcher', () => {
  it('releases text up to the stop string, holding possible beginnings', () => {
    const stop = new StopStringMatcher(['END', '\n\n']);
    expect(stop.push('hello E')).toEqual({ text: 'hello ', stopped: false });
    expect(stop.push('N')).toEqual({ text: '', stopped: false });
    expect(stop.push('Dless')).toEqual({ text: 'ENDless'.slice(0, 0), stopped: true });
  });
  it('lets held text go when it does not complete a stop string', () => {
    const stop = new StopStringMatcher(['END']);
    expect(stop.push('EN')).toEqual({ text: '', stopped: false });
    expect(stop.push('x')).toEqual({ text: 'ENx', stopped: false });
    expect(stop.push('E')).toEqual({ text: '', stopped: false });
    expect(stop.flush()).toBe('E');
  });
  it('finds the earliest of several stop strings within one chunk', () => {
    expect(new StopStringMatcher(['cd', 'b']).push('abcd')).toEqual({ text: 'a', stopped: true });
    expect(new StopStringMatcher([]).push('abc')).toEqual({ text: 'abc', stopped: false });
  });
});

describe('Generator', () => {
  const directory = readModelDirectory(DEFAULT_MODEL);
  const model = loadModel(directory, new CpuBackend());
  const expected = reference('stories260K');
  const promptIds = expected.prompt_ids;
  const greedy = { ...GREEDY, seed: 0 };
  const generator = new Generator(model, directory.tokenizer, directory.eosTokenIds);

  it('reads EOS ids from generation_config, config and tokenizer_config', () => {
    expect(directory.eosTokenIds).toEqual([2]);
  });

  it('stops on an end-of-sequence id and reports "stop"', async () => {
    const eos = expected.greedy_ids[5];
    const withEos = new Generator(model, directory.tokenizer, [eos]);
    const result = await withEos.generate({ promptIds, maxTokens: 50, sampling: greedy });
    expect(result.ids).toEqual(expected.greedy_ids.slice(0, expected.greedy_ids.indexOf(eos) + 1));
    expect(result.finishReason).toBe('stop');
  });

  it('stops at a stop string, excluding it from the text and the stream', async () => {
    const streamed: string[] = [];
    const result = await generator.generate({ promptIds, maxTokens: 50, sampling: greedy, stop: [' Lily'], onText: (t) => streamed.push(t) });
    expect(result.text).toBe(', there was a little girl named');
    expect(streamed.join('')).toBe(result.text);
    expect(result.finishReason).toBe('stop');
  });

  it('stops at max tokens and at the context length with "length"', async () => {
    const short = await generator.generate({ promptIds, maxTokens: 3, sampling: greedy });
    expect(short.ids).toEqual(expected.greedy_ids.slice(0, 3));
    expect(short.finishReason).toBe('length');
    const tight = new Generator(model, directory.tokenizer, directory.eosTokenIds, promptIds.length + 4);
    const result = await tight.generate({ promptIds, maxTokens: 100, sampling: greedy, ignoreEos: true });
    expect(result.ids).toEqual(expected.greedy_ids.slice(0, 4));
    expect(result.finishReason).toBe('length');
  });

  it('refuses a prompt that fills the context, saying by how much', async () => {
    const tight = new Generator(model, directory.tokenizer, directory.eosTokenIds, 4);
    await expect(tight.generate({ promptIds, maxTokens: 5, sampling: greedy })).rejects.toThrow(ContextLengthError);
    await expect(tight.generate({ promptIds, maxTokens: 5, sampling: greedy })).rejects.toThrow(/5 tokens but the context holds 4: 2 too many/);
    await expect(generator.generate({ promptIds: [1, 9999], maxTokens: 5, sampling: greedy })).rejects.toThrow(/outside the vocabulary/);
  });

  it('samples reproducibly from a seed', async () => {
    const run = (seed: number) => generator.generate({ promptIds, maxTokens: 40, sampling: { ...GREEDY, temperature: 1, topP: 0.95, repetitionPenalty: 1.1, seed }, ignoreEos: true });
    const [a, b, c] = [await run(11), await run(11), await run(12)];
    expect(a.ids).toEqual(b.ids);
    expect(a.ids).not.toEqual(c.ids);
    expect(a.timings.decodeTokensPerS).toBeGreaterThan(0);
  });

  it('stops when its signal is aborted', async () => {
    const controller = new AbortController();
    let chunks = 0;
    const run = generator.generate({
      promptIds, maxTokens: 200, sampling: greedy, ignoreEos: true, signal: controller.signal,
      onText: () => { if (++chunks === 3) controller.abort(); },
    });
    await expect(run).rejects.toThrow(/abort/i);
  });
});
