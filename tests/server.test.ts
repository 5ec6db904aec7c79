// The HTTP server: routes through app.inject, and end to end over a real socket with the official
// openai client. The served model is stories260K on the CPU backend; expected outputs come from
// the engine run directly (Generator: one sequence, its own cache).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Generator, type GenerationResult } from '../engine/generate.ts';
import { Rng } from '../engine/rng.ts';
import { GREEDY } from '../engine/sampler.ts';
import { CpuBackend } from '../kernels/cpu/backend.ts';
import { loadModel } from '../models/load.ts';
import { buildApp, type ServedModel } from '../server/app.ts';
import { ChatTemplate } from '../server/chat.ts';
import { loadServedModel } from '../server/model.ts';
import { readModelDirectory } from '../weights/model-directory.ts';
import { DEFAULT_MODEL, FIXTURES, ROOT, runBlr } from './helpers.ts';

const directory = readModelDirectory(DEFAULT_MODEL);
const generator = new Generator(loadModel(directory, new CpuBackend()), directory.tokenizer, directory.eosTokenIds);
const NAME = 'stories260K';

/** What the engine alone gives for a prompt (greedy unless told). */
async function alone(prompt: string | number[], maxTokens: number, sampling = { ...GREEDY, seed: 0 }, stop?: string[]) {
  const promptIds = typeof prompt === 'string' ? directory.tokenizer.encode(prompt) : prompt;
  return generator.generate({ promptIds, maxTokens, sampling, stop });
}

const served = (maxBatch = 8, maxQueue = 8) => loadServedModel(DEFAULT_MODEL, { backend: 'cpu', maxBatch, maxQueue, name: NAME });

describe('server routes (app.inject)', () => {
  const model = served();
  const app = buildApp({ model, apiKey: undefined, bodyLimit: 64 * 1024 });
  const json = (url: string, payload: unknown) => app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(payload) });
  afterAll(async () => {
    await app.close();
    await (await model).scheduler.close();
  });

  it('answers /health 503 while the model loads, 200 once it has, and 503 with the reason if it failed', async () => {
    let finish!: (m: ServedModel) => void;
    const loading = buildApp({ model: new Promise<ServedModel>((resolve) => (finish = resolve)) });
    expect((await loading.inject('/health')).statusCode).toBe(503);
    const early = await loading.inject({ method: 'POST', url: '/v1/completions', payload: { model: NAME, prompt: 'a' } });
    expect(early.statusCode).toBe(503);
    expect(early.json().error.code).toBe('model_loading');
    finish(await model);
    await new Promise((resolve) => setImmediate(resolve));
    expect((await loading.inject('/health')).json()).toEqual({ status: 'ok', model: NAME });
    await loading.close();
    const failed = buildApp({ model: Promise.reject(new Error('model.safetensors: tensor "x" is missing')) });
    await new Promise((resolve) => setImmediate(resolve));
    const health = await failed.inject('/health');
    expect(health.statusCode).toBe(503);
    expect(health.json().error).toMatch(/tensor "x"/);
    await failed.close();
  });

  it('lists the model', async () => {
    const response = await app.inject('/v1/models');
    expect(response.json().data).toEqual([expect.objectContaining({ id: NAME, object: 'model', max_model_len: 512 })]);
    expect((await app.inject('/v1/models/other')).statusCode).toBe(404);
  });

  it('completes a prompt exactly as the engine does, with usage; echo prepends the prompt', async () => {
    const expected = await alone('Once upon a time', 24);
    const body = (await json('/v1/completions', { model: NAME, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 })).json();
    expect(body.object).toBe('text_completion');
    expect(body.choices[0].text).toBe(expected.text);
    expect(body.choices[0].finish_reason).toBe('length');
    expect(body.usage).toEqual({ prompt_tokens: expected.promptIds.length, completion_tokens: 24, total_tokens: expected.promptIds.length + 24 });
    const echoed = (await json('/v1/completions', { model: NAME, prompt: 'Once upon a time', max_tokens: 24, temperature: 0, echo: true })).json();
    expect(echoed.choices[0].text).toBe(`Once upon a time${expected.text}`);
  });

  it('scores the prompt with echo and logprobs: the prompt\'s tokens, their logprobs and offsets, then the generated ones', async () => {
    const prompt = 'Lily and Ben saw a big tree. 🦙';
    const promptIds = directory.tokenizer.encode(prompt);
    const plain = (await json('/v1/completions', { model: NAME, prompt, max_tokens: 5, temperature: 0, logprobs: 2 })).json().choices[0];
    const echoed = (await json('/v1/completions', { model: NAME, prompt, max_tokens: 5, temperature: 0, logprobs: 2, echo: true })).json().choices[0];
    expect(echoed.text).toBe(prompt + plain.text);
    const lp = echoed.logprobs;
    const n = promptIds.length;
    expect(lp.tokens.length).toBe(n + 5);
    // The first token (BOS here) has no logprob; it keeps its name but takes no room in the text.
    expect(lp.token_logprobs[0]).toBeNull();
    expect(lp.top_logprobs[0]).toBeNull();
    expect(lp.tokens[0]).toBe('<s>');
    for (const value of lp.token_logprobs.slice(1, n)) expect(value).toBeLessThanOrEqual(0);
    for (const top of lp.top_logprobs.slice(1, n)) expect(Object.keys(top).length).toBeGreaterThanOrEqual(1);
    // Offsets cut the echoed text into the tokens' texts.
    lp.tokens.slice(1).forEach((token: string, i: number) => expect(echoed.text.slice(lp.text_offset[i + 1], lp.text_offset[i + 2] ?? echoed.text.length)).toBe(token));
    // The generated part is what logprobs alone give, offset by the prompt's length.
    expect(lp.tokens.slice(n)).toEqual(plain.logprobs.tokens);
    expect(lp.token_logprobs.slice(n)).toEqual(plain.logprobs.token_logprobs);
    expect(lp.text_offset.slice(n)).toEqual(plain.logprobs.text_offset.map((o: number) => o + prompt.length));
    // Streamed: the echo comes first, scored, then the generated tokens.
    const streamed = await json('/v1/completions', { model: NAME, prompt, max_tokens: 5, temperature: 0, logprobs: 2, echo: true, stream: true });
    const chunks = streamed.body.split('\n\n').filter((e: string) => e.startsWith('data: {')).map((e: string) => JSON.parse(e.slice(6)));
    expect(chunks[0].choices[0].text).toBe(prompt);
    expect(chunks[0].choices[0].logprobs).toEqual({ tokens: lp.tokens.slice(0, n), token_logprobs: lp.token_logprobs.slice(0, n), top_logprobs: lp.top_logprobs.slice(0, n), text_offset: lp.text_offset.slice(0, n) });
    expect(chunks.map((c: { choices: { text: string }[] }) => c.choices[0]?.text ?? '').join('')).toBe(echoed.text);
    // max_tokens 0: the prompt alone, scored the same; or echoed without logprobs; never without echo.
    const only = (await json('/v1/completions', { model: NAME, prompt, max_tokens: 0, logprobs: 2, echo: true })).json();
    expect(only.choices[0]).toMatchObject({ text: prompt, finish_reason: 'length' });
    expect(only.choices[0].logprobs).toEqual({ tokens: lp.tokens.slice(0, n), token_logprobs: lp.token_logprobs.slice(0, n), top_logprobs: lp.top_logprobs.slice(0, n), text_offset: lp.text_offset.slice(0, n) });
    expect(only.usage).toEqual({ prompt_tokens: n, completion_tokens: 0, total_tokens: n });
    const echoOnly = (await json('/v1/completions', { model: NAME, prompt, max_tokens: 0, echo: true, stream: true })).body.split('\n\n').filter((e: string) => e.startsWith('data: {')).map((e: string) => JSON.parse(e.slice(6)));
    expect(echoOnly[0].choices[0]).toEqual({ index: 0, text: prompt, logprobs: null, finish_reason: null });
    expect(echoOnly[echoOnly.length - 1].choices[0]).toMatchObject({ text: '', finish_reason: 'length' });
    const refused = await json('/v1/completions', { model: NAME, prompt, max_tokens: 0 });
    expect(refused.statusCode).toBe(400);
    expect(refused.json().error).toMatchObject({ param: 'max_tokens', message: expect.stringMatching(/needs echo/) });
  });

  it('takes prompts as strings, lists of strings, token ids and lists of them; n choices each', async () => {
    const ids = directory.tokenizer.encode('The dog');
    const dog = await alone(ids, 10);
    const once = await alone('Once upon a time', 10);
    const body = (await json('/v1/completions', { model: NAME, prompt: ['The dog', 'Once upon a time'], max_tokens: 10, temperature: 0, n: 2 })).json();
    expect(body.choices.map((c: { index: number }) => c.index)).toEqual([0, 1, 2, 3]);
    expect(body.choices.map((c: { text: string }) => c.text)).toEqual([dog.text, dog.text, once.text, once.text]);
    expect(body.usage.prompt_tokens).toBe(ids.length + once.promptIds.length);
    expect(body.usage.completion_tokens).toBe(40);
    const fromIds = (await json('/v1/completions', { model: NAME, prompt: [ids, once.promptIds], max_tokens: 10, temperature: 0 })).json();
    expect(fromIds.choices.map((c: { text: string }) => c.text)).toEqual([dog.text, once.text]);
    expect((await json('/v1/completions', { model: NAME, prompt: ids, max_tokens: 10, temperature: 0 })).json().choices[0].text).toBe(dog.text);
  });

  it('streams a chat reply as server-sent events: role first, content deltas, finish reason, usage, [DONE]', async () => {
    const messages = [{ role: 'user', content: 'Tell me about a cat.' }];
    const promptIds = directory.tokenizer.encode(new ChatTemplate(directory.tokenizerConfig).render(messages), false);
    const expected = await alone(promptIds, 12);
    const response = await json('/v1/chat/completions', { model: NAME, messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
    expect(response.headers['content-type']).toMatch(/^text\/event-stream/);
    const events = response.body.split('\n\n').filter(Boolean);
    expect(events[events.length - 1]).toBe('data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => {
      expect(e.startsWith('data: ')).toBe(true);
      return JSON.parse(e.slice(6));
    });
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    const content = chunks.slice(1, -2).map((c) => c.choices[0].delta.content).join('');
    expect(content).toBe(expected.text);
    expect(chunks[chunks.length - 2].choices[0]).toMatchObject({ delta: {}, finish_reason: 'length' });
    expect(chunks[chunks.length - 1]).toMatchObject({ choices: [], usage: { prompt_tokens: promptIds.length, completion_tokens: 12 } });
    for (const chunk of chunks) expect(chunk.object).toBe('chat.completion.chunk');
  });

  it('renders the default chat template for models without one, and a model\'s own (Llama 3\'s)', () => {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi!' }];
    expect(new ChatTemplate(directory.tokenizerConfig).render(messages)).toBe('<s>system: Be brief.\nuser: Hi!\nassistant:');
    const llama3 = JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(FIXTURES, 'tokenizers', 'llama3.tokenizer_config.json.gz'))).toString('utf8'));
    expect(new ChatTemplate(llama3).render(messages)).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  it('tokenizes and detokenizes', async () => {
    const tokens = (await json('/tokenize', { prompt: 'Once upon a time' })).json();
    expect(tokens.tokens).toEqual(directory.tokenizer.encode('Once upon a time'));
    expect(tokens.count).toBe(tokens.tokens.length);
    expect((await json('/detokenize', { tokens: tokens.tokens })).json().prompt).toBe('Once upon a time');
    const chat = (await json('/tokenize', { messages: [{ role: 'user', content: 'Hi' }] })).json();
    expect(chat.tokens).toEqual(directory.tokenizer.encode('<s>user: Hi\nassistant:', false));
    expect(chat.tokens[0]).toBe(1); // the template's <s> is the BOS token, not its characters
  });

  // Each case: a request and the status and error type it must get.
  const tooLongPrompt = 'Once upon a time there was a dog. '.repeat(80);
  const cases: [string, () => Promise<{ statusCode: number; json: () => { error: { type: string; message: string; param: string | null } }; headers: Record<string, unknown> }>, number, string, RegExp?][] = [
    ['malformed JSON', () => app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload: '{"model": "x", ' }), 400, 'invalid_request_error', /not valid JSON/],
    ['invalid UTF-8', () => app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload: Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]) }), 400, 'invalid_request_error', /UTF-8/],
    ['a huge number', () => app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload: `{"model": "${NAME}", "prompt": "a", "max_tokens": 1e400}` }), 400, 'invalid_request_error', /max_tokens/],
    ['a huge seed', () => json('/v1/completions', { model: NAME, prompt: 'a', seed: 1e300 }), 400, 'invalid_request_error', /seed/],
    ['max_tokens as a string', () => json('/v1/completions', { model: NAME, prompt: 'a', max_tokens: '5' }), 400, 'invalid_request_error', /max_tokens/],
    ['temperature out of range', () => json('/v1/completions', { model: NAME, prompt: 'a', temperature: 3 }), 400, 'invalid_request_error', /temperature/],
    ['no prompt', () => json('/v1/completions', { model: NAME }), 400, 'invalid_request_error', /prompt/],
    ['a prompt of the wrong type', () => json('/v1/completions', { model: NAME, prompt: { text: 'a' } }), 400, 'invalid_request_error', /prompt/],
    ['a token id outside the vocabulary', () => json('/v1/completions', { model: NAME, prompt: [1, 70000] }), 400, 'invalid_request_error', /outside the vocabulary/],
    ['a prompt longer than the context', () => json('/v1/completions', { model: NAME, prompt: tooLongPrompt, max_tokens: 1 }), 400, 'invalid_request_error', /context holds 512 tokens, but the prompt is \d+ tokens: \d+ too many/],
    ['prompt + max_tokens past the context', () => json('/v1/completions', { model: NAME, prompt: 'a', max_tokens: 600 }), 400, 'invalid_request_error', /too many; lower max_tokens/],
    ['an unknown model', () => json('/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'a' }] }), 404, 'invalid_request_error', /gpt-4o/],
    ['no messages', () => json('/v1/chat/completions', { model: NAME, messages: [] }), 400, 'invalid_request_error', /messages/],
    ['an unknown role', () => json('/v1/chat/completions', { model: NAME, messages: [{ role: 'wizard', content: 'a' }] }), 400, 'invalid_request_error', /role/],
    ['tools', () => json('/v1/chat/completions', { model: NAME, messages: [{ role: 'user', content: 'a' }], tools: [{ type: 'function', function: { name: 'f' } }] }), 400, 'invalid_request_error', /tools/],
    ['top_logprobs without logprobs', () => json('/v1/chat/completions', { model: NAME, messages: [{ role: 'user', content: 'a' }], top_logprobs: 2 }), 400, 'invalid_request_error', /logprobs/],
    ['n too large', () => json('/v1/completions', { model: NAME, prompt: 'a', n: 1000 }), 400, 'invalid_request_error', /n/],
    ['a body over the size limit', () => json('/v1/completions', { model: NAME, prompt: 'a'.repeat(70 * 1024) }), 413, 'invalid_request_error'],
    ['an unknown route', () => app.inject('/v1/engines'), 404, 'not_found_error'],
    ['detokenizing an unknown id', () => json('/detokenize', { tokens: [1, 99999] }), 400, 'invalid_request_error', /outside the vocabulary/],
  ];
  it.each(cases)('refuses %s with an OpenAI-style error', async (_label, send, status, type, message) => {
    const response = await send();
    expect(response.statusCode).toBe(status);
    const { error } = response.json();
    expect(error.type).toBe(type);
    expect(Object.keys(error).sort()).toEqual(['code', 'message', 'param', 'type']);
    if (message) expect(error.message).toMatch(message);
  });

  it('survives random JSON bodies: never a 5xx, healthy after', async () => {
    const rng = new Rng(2024);
    const pick = <T>(items: T[]): T => items[Math.floor(rng.next() * items.length)];
    const randomValue = (depth: number): unknown => {
      const kind = pick(['number', 'string', 'bool', 'null', 'array', 'object', 'big', 'int']);
      if (kind === 'number') return (rng.next() - 0.5) * 10 ** Math.floor(rng.next() * 12);
      if (kind === 'int') return Math.floor((rng.next() - 0.3) * 50);
      if (kind === 'big') return pick([1e308, -1e308, 2 ** 63, Number.MAX_SAFE_INTEGER, -0]);
      if (kind === 'string') return pick(['', 'a', 'Once upon a time', '\u0000', '🦙'.repeat(20), NAME, 'user', '</s>']);
      if (kind === 'bool') return rng.next() < 0.5;
      if (kind === 'null' || depth > 2) return null;
      if (kind === 'array') return Array.from({ length: Math.floor(rng.next() * 4) }, () => randomValue(depth + 1));
      return randomObject(depth + 1);
    };
    const keys = ['model', 'prompt', 'messages', 'max_tokens', 'temperature', 'top_p', 'top_k', 'min_p', 'seed', 'stop', 'n', 'stream', 'logprobs', 'top_logprobs', 'echo', 'presence_penalty', 'frequency_penalty', 'stream_options', 'role', 'content', 'tokens', 'user'];
    const randomObject = (depth: number): Record<string, unknown> => Object.fromEntries(Array.from({ length: 1 + Math.floor(rng.next() * 6) }, () => [pick(keys), randomValue(depth)]));
    const statuses = new Set<number>();
    for (let i = 0; i < 150; i++) {
      const body = randomObject(0);
      if (rng.next() < 0.7) body.model = NAME;
      if (rng.next() < 0.3) body.max_tokens = 1 + Math.floor(rng.next() * 4);
      if (typeof body.n === 'number' && body.n > 2) body.n = 2;
      const url = pick(['/v1/completions', '/v1/chat/completions', '/tokenize', '/detokenize']);
      const response = await json(url, body);
      statuses.add(response.statusCode);
      expect(response.statusCode, `${url} ${JSON.stringify(body)} → ${response.body}`).toBeLessThan(500);
      if (response.statusCode >= 400) expect(response.json().error.message).toBeTruthy();
    }
    expect([...statuses].some((s) => s >= 400)).toBe(true);
    expect((await app.inject('/health')).statusCode).toBe(200);
    expect((await model).scheduler.allocator.used).toBe(0);
  });

  it('asks for a bearer key when it has one', async () => {
    const locked = buildApp({ model, apiKey: 'sesame' });
    const ask = (authorization?: string) => locked.inject({ method: 'GET', url: '/v1/models', headers: authorization ? { authorization } : {} });
    expect((await ask()).statusCode).toBe(401);
    expect((await ask()).json().error.type).toBe('authentication_error');
    expect((await ask('Bearer wrong')).statusCode).toBe(401);
    expect((await ask('Bearer sesame')).statusCode).toBe(200);
    expect((await locked.inject('/health')).statusCode).toBe(200);
    await locked.close();
  });

  it('refuses with 429 and Retry-After past its queue', async () => {
    const small = served(1, 0);
    const busy = buildApp({ model: small });
    // A long sequence holds the only place in the batch; the queue holds nothing.
    const { scheduler } = await small;
    const hold = new AbortController();
    const holder = scheduler.submit({ promptIds: [1, 2, 3], maxTokens: 400, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true, signal: hold.signal });
    holder.catch(() => undefined);
    const second = await busy.inject({ method: 'POST', url: '/v1/completions', payload: { model: NAME, prompt: 'Once upon a time', max_tokens: 5 } });
    expect(second.statusCode).toBe(429);
    expect(second.headers['retry-after']).toBe('1');
    expect(second.json().error.type).toBe('rate_limit_error');
    hold.abort();
    await expect(holder).rejects.toThrow();
    expect((await busy.inject({ method: 'POST', url: '/v1/completions', payload: { model: NAME, prompt: 'Once upon a time', max_tokens: 5 } })).statusCode).toBe(200);
    await busy.close();
    await scheduler.close();
  });
});

describe('server over a real socket with the openai client', () => {
  let app: ReturnType<typeof buildApp>;
  let baseURL: string;
  let client: OpenAI;
  const model = served(8, 16);

  beforeAll(async () => {
    app = buildApp({ model, apiKey: 'test-key' });
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    baseURL = `${address}/v1`;
    client = new OpenAI({ baseURL, apiKey: 'test-key', maxRetries: 0 });
    await model;
  });
  afterAll(async () => {
    await app.close();
    await (await model).scheduler.close();
  });

  it('completes and chats, streaming and not', async () => {
    const expected = await alone('Once upon a time', 20);
    const completion = await client.completions.create({ model: NAME, prompt: 'Once upon a time', max_tokens: 20, temperature: 0 });
    expect(completion.choices[0].text).toBe(expected.text);
    let streamed = '';
    for await (const chunk of await client.completions.create({ model: NAME, prompt: 'Once upon a time', max_tokens: 20, temperature: 0, stream: true })) {
      streamed += chunk.choices[0]?.text ?? '';
    }
    expect(streamed).toBe(expected.text);

    const messages = [{ role: 'user' as const, content: 'Tell me about a cat.' }];
    const chat = await client.chat.completions.create({ model: NAME, messages, max_tokens: 15, temperature: 0 });
    expect(chat.choices[0].message.role).toBe('assistant');
    let chatStreamed = '';
    let finish: string | null = null;
    let usageSeen = false;
    for await (const chunk of await client.chat.completions.create({ model: NAME, messages, max_tokens: 15, temperature: 0, stream: true, stream_options: { include_usage: true } })) {
      chatStreamed += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usageSeen = chunk.usage.completion_tokens === 15;
    }
    expect(chatStreamed).toBe(chat.choices[0].message.content);
    expect(finish).toBe('length');
    expect(usageSeen).toBe(true);
  });

  it('stops at stop strings, repeats itself for a seed, and reports logprobs', async () => {
    const stopped = await client.completions.create({ model: NAME, prompt: 'Once upon a time', max_tokens: 50, temperature: 0, stop: [' Lily', 'zzz'] });
    expect(stopped.choices[0].text).toBe(', there was a little girl named');
    expect(stopped.choices[0].finish_reason).toBe('stop');

    const sampled = (seed: number) => client.chat.completions.create({ model: NAME, messages: [{ role: 'user', content: 'A story' }], max_tokens: 25, temperature: 1, seed });
    const [a, b, c] = [await sampled(7), await sampled(7), await sampled(8)];
    expect(a.choices[0].message.content).toBe(b.choices[0].message.content);
    expect(a.choices[0].message.content).not.toBe(c.choices[0].message.content);

    const withLogprobs = await client.chat.completions.create({ model: NAME, messages: [{ role: 'user', content: 'A story' }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 3 });
    const content = withLogprobs.choices[0].logprobs!.content!;
    expect(content.length).toBe(5);
    for (const entry of content) {
      expect(entry.logprob).toBeLessThanOrEqual(0);
      expect(entry.top_logprobs.length).toBe(3);
      expect(entry.top_logprobs[0].logprob).toBeCloseTo(entry.logprob, 5); // greedy: the most likely
      expect(entry.top_logprobs[0].logprob).toBeGreaterThanOrEqual(entry.top_logprobs[1].logprob);
    }
    expect(content.map((e) => e.token).join('')).toBe(withLogprobs.choices[0].message.content);
    const legacy = await client.completions.create({ model: NAME, prompt: 'Once upon a time', max_tokens: 4, temperature: 0, logprobs: 2 });
    expect(legacy.choices[0].logprobs!.tokens!.join('')).toBe(legacy.choices[0].text);
    expect(legacy.choices[0].logprobs!.text_offset).toEqual([0, ...legacy.choices[0].logprobs!.tokens!.slice(0, -1).map((_, i, all) => all.slice(0, i + 1).join('').length)]);
    // As evaluation harnesses score text: echo, one token, logprobs of every prompt token.
    const scored = await client.completions.create({ model: NAME, prompt: 'Once upon a time', max_tokens: 1, temperature: 0, logprobs: 1, echo: true });
    const promptLength = directory.tokenizer.encode('Once upon a time').length;
    expect(scored.choices[0].text.startsWith('Once upon a time')).toBe(true);
    expect(scored.choices[0].logprobs!.token_logprobs!.length).toBe(promptLength + 1);
    expect(scored.choices[0].logprobs!.token_logprobs![0]).toBeNull();
    expect(scored.choices[0].logprobs!.token_logprobs!.slice(1).every((v) => typeof v === 'number' && v <= 0)).toBe(true);
  });

  it('gives each of 8 simultaneous greedy streams exactly the tokens it gives alone', async () => {
    const prompts = ['Once upon a time', 'The dog ran', 'Lily had a red ball', 'One day', 'Tom and Sue', 'The sun', 'A little bird', 'Mom said'];
    const lengths = [30, 22, 41, 17, 35, 26, 12, 38];
    const expected: GenerationResult[] = [];
    for (const [i, prompt] of prompts.entries()) expected.push(await alone(prompt, lengths[i])); // the Generator runs one sequence at a time
    const texts = await Promise.all(prompts.map(async (prompt, i) => {
      let text = '';
      const stream = await client.completions.create({ model: NAME, prompt, max_tokens: lengths[i], temperature: 0, stream: true });
      for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
      return text;
    }));
    texts.forEach((text, i) => expect(text).toBe(expected[i].text));
  });

  it('frees a stream\'s KV blocks when its client disconnects mid-stream (seen in /metrics)', async () => {
    const metric = async (name: string) => {
      const text = await (await fetch(baseURL.replace('/v1', '/metrics'))).text();
      return Number(text.match(new RegExp(`^${name} (\\S+)$`, 'm'))![1]);
    };
    expect(await metric('blr_kv_cache_blocks_used')).toBe(0);
    expect(await metric('blr_resident_memory_bytes')).toBeGreaterThan(10 * 2 ** 20);
    expect(await metric('blr_full_collections_total')).toBe(0); // the CPU backend needs none
    const { scheduler } = await model;
    let seenBlocks = 0;
    await new Promise<void>((resolve, reject) => {
      const request = http.request(`${baseURL}/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer test-key' } }, (response) => {
        let events = 0;
        response.on('data', async () => {
          if (++events === 5) {
            seenBlocks = await metric('blr_kv_cache_blocks_used');
            request.destroy();
            resolve();
          }
        });
        response.on('error', () => undefined);
      });
      request.on('error', (error) => (request.destroyed ? undefined : reject(error)));
      request.end(JSON.stringify({ model: NAME, prompt: 'Once upon a time', max_tokens: 400, temperature: 0, ignore_eos: true, stream: true }));
    });
    expect(seenBlocks).toBeGreaterThan(0);
    for (let i = 0; i < 200 && scheduler.active > 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(scheduler.active).toBe(0);
    expect(await metric('blr_kv_cache_blocks_used')).toBe(0);
    expect(await metric('blr_running_sequences')).toBe(0);
    expect(await metric('blr_generation_tokens_total')).toBeGreaterThan(0);
  });

  it('refuses a wrong key through the client as an authentication error', async () => {
    const wrong = new OpenAI({ baseURL, apiKey: 'nope', maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toMatchObject({ status: 401 });
  });
});

describe('blr serve (subprocess)', () => {
  it('listens, reports healthy once loaded, and stops on SIGTERM', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [path.join(ROOT, 'cli', 'blr.mjs'), 'serve', '--port', '0', '--backend', 'cpu', '--max-batch', '4', '--kv-cache', 'f16'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const address = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (data) => {
        output += data;
        const match = output.match(/"address":"(http:[^"]+)"/);
        if (match) resolve(match[1]);
      });
      child.on('exit', (code) => reject(new Error(`exited ${code}: ${output}`)));
    });
    let health = await fetch(`${address}/health`);
    for (let i = 0; i < 100 && health.status !== 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      health = await fetch(`${address}/health`);
    }
    expect(await health.json()).toEqual({ status: 'ok', model: 'stories260K' });
    const models = await (await fetch(`${address}/v1/models`)).json();
    expect(models.data[0].id).toBe('stories260K');
    const secret = 'Zebra quartz prompt';
    const completion = await (await fetch(`${address}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'stories260K', prompt: secret, max_tokens: 8, temperature: 0 }) })).json();
    const exit = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    // JSON log lines with request ids and token counts; neither the prompt nor the output is in them.
    const lines = output.trim().split('\n').map((line) => JSON.parse(line));
    expect(lines.find((l) => l.msg === 'model loaded; ready')).toMatchObject({ kvCache: 'f16', kvBlocks: 4 * Math.ceil((directory.config as { max_position_embeddings: number }).max_position_embeddings / 16) });
    const finished = lines.find((l) => l.msg === 'generation finished');
    expect(finished).toMatchObject({ promptTokens: directory.tokenizer.encode(secret).length, completionTokens: 8 });
    expect(typeof finished.reqId).toBe('string');
    expect(output).not.toContain(secret);
    expect(output).not.toContain(completion.choices[0].text.trim());
  });

  it('refuses bad options with a usage error', () => {
    const result = runBlr(['serve', '--max-batch', '0']);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/--max-batch must be an integer/);
    const kv = runBlr(['serve', '--kv-cache', 'bf16']);
    expect(kv.status).toBe(2);
    expect(kv.stderr).toMatch(/--kv-cache must be one of f32, f16, got "bf16"/);
  });
});
