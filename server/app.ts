// The OpenAI-compatible HTTP server: a thin fastify layer over the engine's scheduler. Schemas
// reject bad input before it reaches the engine; every failure is an OpenAI-style error body
// ({"error": {"message", "type", "param", "code"}}) with its status; nothing a request sends can
// take the process down. Prompts and outputs are never logged at info level.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { PassThrough } from 'node:stream';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { IncrementalDetokenizer } from '../engine/detokenizer.ts';
import { ContextLengthError } from '../engine/generate.ts';
import { randomSeed } from '../engine/rng.ts';
import type { SamplingOptions } from '../engine/sampler.ts';
import { QueueFullError, type GeneratedToken, type Scheduler, type SequenceRequest, type SequenceResult } from '../engine/scheduler.ts';
import type { TextTokenizer } from '../weights/tokenizer.ts';
import type { ChatMessage, ChatTemplate } from './chat.ts';
import { ServerMetrics } from './metrics.ts';
import { chatCompletionSchema, completionSchema, detokenizeSchema, tokenizeSchema, UNSUPPORTED_FIELDS } from './schemas.ts';

/** A loaded model as the server uses it. */
export interface ServedModel {
  /** The name clients put in "model". */
  name: string;
  scheduler: Scheduler;
  tokenizer: TextTokenizer;
  chatTemplate: ChatTemplate;
  /** Positions per sequence: prompt + output. */
  contextLength: number;
  /** Unix seconds. */
  created: number;
}

export interface AppOptions {
  /** The model, still loading: the server answers /health with 503 until it settles. */
  model: Promise<ServedModel>;
  /** Bearer token every /v1 route, /tokenize and /detokenize require; none when absent. */
  apiKey?: string;
  /** Largest request body in bytes (413 beyond). */
  bodyLimit?: number;
  logger?: FastifyServerOptions['logger'];
}

/** An error with its HTTP status and OpenAI error fields. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

function errorBody(error: ApiError) {
  return { error: { message: error.message, type: error.type, param: error.param, code: error.code } };
}

const STATUS_TYPES: Record<number, string> = { 401: 'authentication_error', 404: 'not_found_error', 413: 'invalid_request_error', 429: 'rate_limit_error', 503: 'service_unavailable' };

/** Any thrown value as an ApiError: fastify's own errors (validation, JSON, size) keep their status. */
function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof ContextLengthError) return new ApiError(400, error.message, 'invalid_request_error', 'messages', 'context_length_exceeded');
  if (error instanceof QueueFullError) return new ApiError(429, error.message, 'rate_limit_error', null, 'queue_full');
  const fastifyError = error as FastifyError;
  // fastify's own errors carry their status (some, such as a body over the limit, are RangeErrors).
  if (typeof fastifyError.statusCode !== 'number' && error instanceof RangeError) return new ApiError(400, error.message);
  if (fastifyError.validation) {
    const first = fastifyError.validation[0];
    const param = (first?.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.') || (first?.params as { missingProperty?: string } | undefined)?.missingProperty || null;
    return new ApiError(400, `invalid request: ${fastifyError.message}`, 'invalid_request_error', param, 'invalid_value');
  }
  const status = fastifyError.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new ApiError(status, fastifyError.message, STATUS_TYPES[status] ?? 'invalid_request_error', null, fastifyError.code ?? null);
  }
  return new ApiError(500, `internal error: ${(error as Error)?.message ?? String(error)}`, 'server_error');
}

type Body = Record<string, unknown>;

function checkUnsupported(body: Body): void {
  for (const [field, message] of Object.entries(UNSUPPORTED_FIELDS)) {
    const value = body[field];
    if (value === undefined || value === null) continue;
    if (Array.isArray(value) && value.length === 0) continue;
    if (typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length === 0) continue;
    if (field === 'response_format' && (value as { type?: unknown }).type === 'text') continue;
    throw new ApiError(400, message, 'invalid_request_error', field, 'unsupported_parameter');
  }
}

const MAX_SEED = 2 ** 32;

/** The request's sampling fields as SamplingOptions (OpenAI's defaults: temperature 1, top_p 1). */
function samplingOptions(body: Body, seed: number): SamplingOptions {
  const pick = (key: string, fallback: number) => (typeof body[key] === 'number' ? (body[key] as number) : fallback);
  const topK = pick('top_k', 0);
  return {
    temperature: pick('temperature', 1),
    topK: topK < 0 ? 0 : topK,
    topP: pick('top_p', 1),
    minP: pick('min_p', 0),
    repetitionPenalty: pick('repetition_penalty', 1),
    presencePenalty: pick('presence_penalty', 0),
    frequencyPenalty: pick('frequency_penalty', 0),
    seed,
  };
}

/** Choice j's seed: the request's (any 64-bit integer, folded to 32 bits) plus j, or a random one. */
function choiceSeed(body: Body, choice: number): number {
  if (typeof body.seed !== 'number') return randomSeed();
  return (((body.seed % MAX_SEED) + MAX_SEED + choice) % MAX_SEED) >>> 0;
}

function stopStrings(body: Body): string[] {
  const value = body.stop;
  if (typeof value === 'string') return value ? [value] : [];
  return Array.isArray(value) ? (value as string[]).filter((s) => s.length > 0) : [];
}

function newId(prefix: string): string {
  return `${prefix}-${randomBytes(12).toString('hex')}`;
}

interface TokenTexts {
  text: string;
  logprob: number;
  top: { text: string; logprob: number }[];
}

/**
 * The texts of generated tokens and their alternatives for logprobs, each as it reads after the
 * token before it (`before` for the first: decoders such as SentencePiece's drop a word's leading
 * space at the start of a text). A lone byte-fallback piece may not be whole UTF-8.
 */
function tokenTexts(tokenizer: TextTokenizer, tokens: GeneratedToken[], before: number): TokenTexts[] {
  return tokens.map((token, i) => {
    const previous = i === 0 ? before : tokens[i - 1].id;
    const prefix = tokenizer.decode([previous], false).length;
    const text = (id: number) => tokenizer.decode([previous, id], false).slice(prefix);
    return { text: text(token.id), logprob: token.logprob, top: (token.top ?? []).map((t) => ({ text: text(t.id), logprob: t.logprob })) };
  });
}

interface Choice {
  index: number;
  promptIds: number[];
  request: SequenceRequest;
}

/** Usage over all choices: prompts counted once per prompt, as OpenAI does. */
function usage(prompts: number[][], results: SequenceResult[]) {
  const promptTokens = prompts.reduce((n, p) => n + p.length, 0);
  const completionTokens = results.reduce((n, r) => n + r.ids.length, 0);
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

export function buildApp(options: AppOptions): FastifyInstance {
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.bodyLimit ?? 4 * 1024 * 1024,
    // Wrong types are errors, not coerced; unknown fields stay for checkUnsupported to see.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false } },
    genReqId: () => randomBytes(8).toString('hex'),
  });

  let model: ServedModel | undefined;
  let loadError: Error | undefined;
  options.model.then(
    (loaded) => {
      model = loaded;
    },
    (error: Error) => {
      loadError = error;
      app.log.error({ err: error }, 'model failed to load');
    },
  );
  const metrics = new ServerMetrics(() => model && {
    running: model.scheduler.active,
    queued: model.scheduler.queued,
    blocksUsed: model.scheduler.allocator.used,
    blocksFree: model.scheduler.allocator.total - model.scheduler.allocator.used,
    collections: model.scheduler.collector.stats.collections,
    collectionSeconds: model.scheduler.collector.stats.ms / 1000,
    memoryReleases: model.scheduler.collector.stats.releases,
  });
  const observer = {
    firstToken: (ms: number) => metrics.timeToFirstToken.observe(ms / 1000),
    interToken: (ms: number) => metrics.interTokenLatency.observe(ms / 1000),
    finished: (promptTokens: number, generated: number) => {
      metrics.promptTokens.inc({}, promptTokens);
      metrics.generatedTokens.inc({}, generated);
    },
  };
  options.model.then((loaded) => loaded.scheduler.setObserver(observer), () => undefined);

  // JSON bodies must be valid UTF-8: decoding with replacement characters would change the prompt.
  const parseJson = app.getDefaultJsonParser('error', 'ignore');
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      done(new ApiError(400, 'the request body is not valid UTF-8', 'invalid_request_error', null, 'invalid_encoding'), undefined);
      return;
    }
    parseJson(request, text, (error, value) => {
      if (error) done(new ApiError(400, `the request body is not valid JSON: ${error.message}`, 'invalid_request_error', null, 'invalid_json'), undefined);
      else done(null, value);
    });
  });

  app.setErrorHandler((error, request, reply) => {
    const apiError = toApiError(error);
    if (apiError.status >= 500) request.log.error({ err: error }, 'request failed');
    if (apiError.status === 429) void reply.header('retry-after', '1');
    void reply.status(apiError.status).send(errorBody(apiError));
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send(errorBody(new ApiError(404, `no route ${request.method} ${request.url.split('?')[0]}`, 'not_found_error', null, 'unknown_route')));
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.requests.inc({ endpoint: request.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
  });

  const protectedRoute = (url: string) => url.startsWith('/v1/') || url === '/tokenize' || url === '/detokenize';
  const expectedKey = options.apiKey ? Buffer.from(`Bearer ${options.apiKey}`) : undefined;
  app.addHook('onRequest', async (request) => {
    if (!expectedKey || !protectedRoute(request.url.split('?')[0])) return;
    const given = Buffer.from(request.headers.authorization ?? '');
    if (given.length !== expectedKey.length || !timingSafeEqual(given, expectedKey)) {
      throw new ApiError(401, 'incorrect or missing API key: send "Authorization: Bearer <key>"', 'authentication_error', null, 'invalid_api_key');
    }
  });

  /** The loaded model, or a 503 while it loads (or failed to). */
  const ready = (): ServedModel => {
    if (model) return model;
    if (loadError) throw new ApiError(503, `the model failed to load: ${loadError.message}`, 'service_unavailable', null, 'model_load_failed');
    throw new ApiError(503, 'the model is still loading', 'service_unavailable', null, 'model_loading');
  };
  const checkModelName = (served: ServedModel, body: Body) => {
    if (typeof body.model === 'string' && body.model !== served.name) {
      throw new ApiError(404, `the model "${body.model}" does not exist; this server serves "${served.name}"`, 'invalid_request_error', 'model', 'model_not_found');
    }
  };

  app.get('/health', async (_request, reply) => {
    if (model) return { status: 'ok', model: model.name };
    void reply.status(503);
    return loadError ? { status: 'failed', error: loadError.message } : { status: 'loading' };
  });

  app.get('/metrics', async (_request, reply) => {
    void reply.type('text/plain; version=0.0.4; charset=utf-8');
    return metrics.render();
  });

  app.get('/v1/models', async () => {
    const served = ready();
    return { object: 'list', data: [{ id: served.name, object: 'model', created: served.created, owned_by: 'blr', max_model_len: served.contextLength }] };
  });

  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    const served = ready();
    if (request.params.id !== served.name) throw new ApiError(404, `the model "${request.params.id}" does not exist`, 'invalid_request_error', 'model', 'model_not_found');
    return { id: served.name, object: 'model', created: served.created, owned_by: 'blr', max_model_len: served.contextLength };
  });

  /**
   * Runs every choice through the scheduler; settles when all are done. Choices are submitted
   * together (so a full queue refuses the request before any of it runs) and cancelled together
   * when the client goes away.
   */
  const runChoices = (served: ServedModel, choices: Choice[], request: FastifyRequest, reply: FastifyReply): { results: Promise<SequenceResult[]>; abort: AbortController } => {
    const abort = new AbortController();
    const onClose = () => {
      if (!reply.raw.writableFinished) abort.abort(new ApiError(499, 'the client closed the connection'));
    };
    reply.raw.on('close', onClose);
    const submitted: Promise<SequenceResult>[] = [];
    try {
      for (const choice of choices) submitted.push(served.scheduler.submit({ ...choice.request, signal: abort.signal }));
    } catch (error) {
      abort.abort(error);
      submitted.forEach((p) => p.catch(() => undefined));
      reply.raw.off('close', onClose);
      throw error;
    }
    const results = Promise.all(submitted).finally(() => reply.raw.off('close', onClose));
    // One failure cancels the rest.
    results.catch((error) => abort.abort(error));
    submitted.forEach((p) => p.catch(() => undefined));
    return { results, abort };
  };

  const logFinished = (request: FastifyRequest, prompts: number[][], results: SequenceResult[]) => {
    const u = usage(prompts, results);
    request.log.info({ promptTokens: u.prompt_tokens, completionTokens: u.completion_tokens, choices: results.length, firstTokenMs: Math.round(Math.max(...results.map((r) => r.timings.firstTokenMs))), totalMs: Math.round(Math.max(...results.map((r) => r.timings.totalMs))) }, 'generation finished');
  };

  /** Checks a prompt (and the tokens it may add) against the context, as OpenAI's API does. */
  const checkContext = (served: ServedModel, promptIds: number[], maxTokens: number | undefined, param: string) => {
    if (promptIds.length >= served.contextLength) {
      throw new ApiError(400, `this model's context holds ${served.contextLength} tokens, but the prompt is ${promptIds.length} tokens: ${promptIds.length - served.contextLength + 1} too many (one position is needed for the reply)`, 'invalid_request_error', param, 'context_length_exceeded');
    }
    if (maxTokens !== undefined && promptIds.length + maxTokens > served.contextLength) {
      throw new ApiError(400, `this model's context holds ${served.contextLength} tokens, but ${promptIds.length + maxTokens} were requested (${promptIds.length} in the prompt, ${maxTokens} to generate): ${promptIds.length + maxTokens - served.contextLength} too many; lower max_tokens`, 'invalid_request_error', 'max_tokens', 'context_length_exceeded');
    }
    const bad = promptIds.find((id) => id >= served.tokenizer.vocabSize);
    if (bad !== undefined) throw new ApiError(400, `prompt token id ${bad} is outside the vocabulary (0..${served.tokenizer.vocabSize - 1})`, 'invalid_request_error', param, 'invalid_value');
  };

  /** Sends an SSE stream: `data: {json}` events, then `data: [DONE]`. */
  const sse = (reply: FastifyReply) => {
    const stream = new PassThrough();
    void reply.header('content-type', 'text/event-stream; charset=utf-8').header('cache-control', 'no-cache').header('x-accel-buffering', 'no');
    void reply.send(stream);
    return {
      event: (data: unknown) => {
        if (!stream.writableEnded) stream.write(`data: ${JSON.stringify(data)}\n\n`);
      },
      end: () => {
        if (!stream.writableEnded) stream.end('data: [DONE]\n\n');
      },
    };
  };

  // ---- POST /v1/completions ----

  app.post('/v1/completions', { schema: { body: completionSchema } }, async (request, reply) => {
    const served = ready();
    const body = request.body as Body;
    checkModelName(served, body);
    checkUnsupported(body);
    const prompt = body.prompt as string | string[] | number[] | number[][];
    const prompts: number[][] = typeof prompt === 'string'
      ? [served.tokenizer.encode(prompt)]
      : typeof prompt[0] === 'string'
        ? (prompt as string[]).map((p) => served.tokenizer.encode(p))
        : typeof prompt[0] === 'number' ? [prompt as number[]] : (prompt as number[][]);
    const maxTokens = typeof body.max_tokens === 'number' ? body.max_tokens : 16;
    prompts.forEach((ids, i) => {
      if (ids.length === 0) throw new ApiError(400, `prompt ${i} has no tokens`, 'invalid_request_error', 'prompt', 'invalid_value');
      checkContext(served, ids, maxTokens, 'prompt');
    });
    const logprobs = typeof body.logprobs === 'number' ? body.logprobs : undefined;
    const echo = body.echo === true;
    if (maxTokens === 0 && !echo) throw new ApiError(400, 'max_tokens 0 needs echo: it returns the prompt (scored, with logprobs) and generates nothing', 'invalid_request_error', 'max_tokens', 'invalid_value');
    // Echo with logprobs scores the prompt too (as evaluation harnesses use it); so does max_tokens
    // 0, which runs the prompt only (its logprobs reported when asked for).
    const promptLogprobs = echo && (logprobs !== undefined || maxTokens === 0) ? logprobs ?? 0 : undefined;
    const n = typeof body.n === 'number' ? body.n : 1;
    const stop = stopStrings(body);
    const choices: Choice[] = prompts.flatMap((promptIds, p) => Array.from({ length: n }, (_, j) => ({
      index: p * n + j,
      promptIds,
      request: { promptIds, maxTokens, sampling: samplingOptions(body, choiceSeed(body, j)), stop, logprobs, promptLogprobs, ignoreEos: body.ignore_eos === true },
    })));
    const id = newId('cmpl');
    const created = Math.floor(Date.now() / 1000);
    const echoText = (c: Choice) => (echo ? served.tokenizer.decode(c.promptIds) : '');
    // Legacy logprobs: parallel lists, and text offsets into the choice's text.
    const logprobsObject = (tokens: GeneratedToken[], before: number, offset: number) => {
      const texts = tokenTexts(served.tokenizer, tokens, before);
      const offsets: number[] = [];
      let at = offset;
      for (const { text } of texts) {
        offsets.push(at);
        at += text.length;
      }
      return {
        tokens: texts.map((t) => t.text),
        token_logprobs: texts.map((t): number | null => t.logprob),
        top_logprobs: texts.map((t): Record<string, number> | null => Object.fromEntries(t.top.map((top) => [top.text, top.logprob]))),
        text_offset: offsets,
      };
    };
    // The echoed prompt's: its first token has no logprob. Texts and offsets follow the echoed text
    // (decoded as a whole, as streams are); a special token it leaves out (BOS) keeps its name and
    // takes no room.
    const promptLogprobsObject = (promptIds: number[], scored: GeneratedToken[]) => {
      const detokenizer = new IncrementalDetokenizer(served.tokenizer);
      const pieces = promptIds.map((tokenId) => detokenizer.push(tokenId));
      pieces[pieces.length - 1] += detokenizer.flush();
      const tops = tokenTexts(served.tokenizer, scored, promptIds[0]);
      const offsets: number[] = [];
      let at = 0;
      for (const piece of pieces) {
        offsets.push(at);
        at += piece.length;
      }
      return {
        tokens: promptIds.map((tokenId, i) => (pieces[i] === '' && served.tokenizer.decode([tokenId]) === '' ? served.tokenizer.decode([tokenId], false) : pieces[i])),
        token_logprobs: [null, ...scored.map((t) => t.logprob)],
        top_logprobs: [null, ...tops.map((t) => Object.fromEntries(t.top.map((top) => [top.text, top.logprob])))],
        text_offset: offsets,
      };
    };
    type LogprobsObject = ReturnType<typeof promptLogprobsObject>;
    const joined = (a: LogprobsObject, b: LogprobsObject): LogprobsObject => ({
      tokens: [...a.tokens, ...b.tokens], token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
      top_logprobs: [...a.top_logprobs, ...b.top_logprobs], text_offset: [...a.text_offset, ...b.text_offset],
    });

    if (body.stream === true) {
      const includeUsage = (body.stream_options as { include_usage?: boolean } | null | undefined)?.include_usage === true;
      const textOffsets = choices.map((c) => echoText(c).length);
      const lastIds = choices.map((c) => c.promptIds[c.promptIds.length - 1]);
      // Text arrives from the scheduler's loop, never before the stream below is open.
      let events!: ReturnType<typeof sse>;
      for (const c of choices) {
        // A scored prompt's echo goes out once it has been read, with its logprobs when asked for.
        if (promptLogprobs !== undefined) {
          c.request.onPrompt = (scored) => events.event({
            id, object: 'text_completion', created, model: served.name,
            choices: [{ index: c.index, text: echoText(c), logprobs: logprobs !== undefined ? promptLogprobsObject(c.promptIds, scored) : null, finish_reason: null }],
          });
        }
        c.request.onText = (text, tokens) => {
          const lp = logprobs !== undefined ? logprobsObject(tokens, lastIds[c.index], textOffsets[c.index]) : null;
          if (tokens.length > 0) lastIds[c.index] = tokens[tokens.length - 1].id;
          textOffsets[c.index] += text.length;
          events.event({ id, object: 'text_completion', created, model: served.name, choices: [{ index: c.index, text, logprobs: lp, finish_reason: null }] });
        };
      }
      const { results } = runChoices(served, choices, request, reply);
      events = sse(reply);
      if (echo && promptLogprobs === undefined) for (const c of choices) events.event({ id, object: 'text_completion', created, model: served.name, choices: [{ index: c.index, text: echoText(c), logprobs: null, finish_reason: null }] });
      void streamEnd(results, (all) => {
        all.forEach((r, i) => events.event({ id, object: 'text_completion', created, model: served.name, choices: [{ index: choices[i].index, text: '', logprobs: null, finish_reason: r.finishReason }] }));
        if (includeUsage) events.event({ id, object: 'text_completion', created, model: served.name, choices: [], usage: usage(prompts, all) });
        logFinished(request, prompts, all);
      }, events, request);
      return reply;
    }

    const { results } = runChoices(served, choices, request, reply);
    const all = await results;
    logFinished(request, prompts, all);
    return {
      id, object: 'text_completion', created, model: served.name,
      choices: all.map((r, i) => ({
        index: choices[i].index,
        text: echoText(choices[i]) + r.text,
        logprobs: logprobs === undefined
          ? null
          : echo
            ? joined(promptLogprobsObject(choices[i].promptIds, r.promptTokenLogprobs ?? []), logprobsObject(r.tokens ?? [], choices[i].promptIds[choices[i].promptIds.length - 1], echoText(choices[i]).length))
            : logprobsObject(r.tokens ?? [], choices[i].promptIds[choices[i].promptIds.length - 1], echoText(choices[i]).length),
        finish_reason: r.finishReason,
      })),
      usage: usage(prompts, all),
    };
  });

  /** Ends a stream after its results: a failure mid-stream becomes an error event (the status is already sent). */
  async function streamEnd(results: Promise<SequenceResult[]>, finish: (all: SequenceResult[]) => void, events: ReturnType<typeof sse>, request: FastifyRequest): Promise<void> {
    try {
      finish(await results);
    } catch (error) {
      const apiError = toApiError(error);
      if (apiError.status !== 499) {
        request.log.warn({ err: error }, 'stream failed');
        events.event(errorBody(apiError));
      }
    }
    events.end();
  }

  // ---- POST /v1/chat/completions ----

  const chatMessages = (body: Body): ChatMessage[] => (body.messages as Body[]).map((m) => {
    const content = m.content;
    const text = typeof content === 'string' ? content : Array.isArray(content) ? (content as { text: string }[]).map((part) => part.text).join('') : '';
    return { role: m.role as string, content: text, ...(typeof m.name === 'string' ? { name: m.name } : {}) };
  });

  const renderChat = (served: ServedModel, messages: ChatMessage[]): number[] => {
    let text: string;
    try {
      text = served.chatTemplate.render(messages);
    } catch (error) {
      throw new ApiError(400, `the model's chat template rejected the messages: ${(error as Error).message}`, 'invalid_request_error', 'messages', 'invalid_value');
    }
    // The template writes the special tokens itself (as transformers' apply_chat_template).
    return served.tokenizer.encode(text, false);
  };

  app.post('/v1/chat/completions', { schema: { body: chatCompletionSchema } }, async (request, reply) => {
    const served = ready();
    const body = request.body as Body;
    checkModelName(served, body);
    checkUnsupported(body);
    const promptIds = renderChat(served, chatMessages(body));
    const requested = typeof body.max_completion_tokens === 'number' ? body.max_completion_tokens : typeof body.max_tokens === 'number' ? body.max_tokens : undefined;
    checkContext(served, promptIds, requested, 'messages');
    // Without a limit, the reply may fill the context.
    const maxTokens = requested ?? served.contextLength - promptIds.length;
    const wantsLogprobs = body.logprobs === true;
    const topLogprobs = typeof body.top_logprobs === 'number' ? body.top_logprobs : 0;
    if (topLogprobs > 0 && !wantsLogprobs) throw new ApiError(400, 'top_logprobs needs logprobs: true', 'invalid_request_error', 'top_logprobs', 'invalid_value');
    const n = typeof body.n === 'number' ? body.n : 1;
    const stop = stopStrings(body);
    const choices: Choice[] = Array.from({ length: n }, (_, j) => ({
      index: j,
      promptIds,
      request: { promptIds, maxTokens, sampling: samplingOptions(body, choiceSeed(body, j)), stop, logprobs: wantsLogprobs ? topLogprobs : undefined, ignoreEos: body.ignore_eos === true },
    }));
    const id = newId('chatcmpl');
    const created = Math.floor(Date.now() / 1000);
    const logprobEntry = (t: { text: string; logprob: number }) => ({ token: t.text, logprob: t.logprob, bytes: [...Buffer.from(t.text, 'utf8')] });
    const logprobsObject = (tokens: GeneratedToken[], before: number) => ({
      content: tokenTexts(served.tokenizer, tokens, before).map((t) => ({ ...logprobEntry(t), top_logprobs: t.top.map(logprobEntry) })),
    });
    const lastPromptId = promptIds[promptIds.length - 1];

    if (body.stream === true) {
      const includeUsage = (body.stream_options as { include_usage?: boolean } | null | undefined)?.include_usage === true;
      const chunk = (choice: Record<string, unknown>) => ({ id, object: 'chat.completion.chunk', created, model: served.name, choices: [choice] });
      // Text arrives from the scheduler's loop, never before the stream below is open.
      let events!: ReturnType<typeof sse>;
      for (const c of choices) {
        let before = lastPromptId;
        c.request.onText = (text, tokens) => {
          events.event(chunk({ index: c.index, delta: { content: text }, logprobs: wantsLogprobs ? logprobsObject(tokens, before) : null, finish_reason: null }));
          if (tokens.length > 0) before = tokens[tokens.length - 1].id;
        };
      }
      const { results } = runChoices(served, choices, request, reply);
      events = sse(reply);
      for (const c of choices) events.event(chunk({ index: c.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }));
      void streamEnd(results, (all) => {
        all.forEach((r, i) => events.event(chunk({ index: choices[i].index, delta: {}, logprobs: null, finish_reason: r.finishReason })));
        if (includeUsage) events.event({ id, object: 'chat.completion.chunk', created, model: served.name, choices: [], usage: usage([promptIds], all) });
        logFinished(request, [promptIds], all);
      }, events, request);
      return reply;
    }

    const { results } = runChoices(served, choices, request, reply);
    const all = await results;
    logFinished(request, [promptIds], all);
    return {
      id, object: 'chat.completion', created, model: served.name,
      choices: all.map((r, i) => ({
        index: choices[i].index,
        message: { role: 'assistant', content: r.text },
        logprobs: wantsLogprobs ? logprobsObject(r.tokens ?? [], lastPromptId) : null,
        finish_reason: r.finishReason,
      })),
      usage: usage([promptIds], all),
    };
  });

  // ---- tokenizer routes (vLLM's shapes) ----

  app.post('/tokenize', { schema: { body: tokenizeSchema } }, async (request) => {
    const served = ready();
    const body = request.body as Body;
    checkModelName(served, body);
    const tokens = typeof body.prompt === 'string'
      ? served.tokenizer.encode(body.prompt, body.add_special_tokens !== false)
      : renderChat(served, chatMessages(body));
    return { tokens, count: tokens.length, max_model_len: served.contextLength };
  });

  app.post('/detokenize', { schema: { body: detokenizeSchema } }, async (request) => {
    const served = ready();
    const body = request.body as Body;
    checkModelName(served, body);
    const tokens = body.tokens as number[];
    const bad = tokens.find((t) => t >= served.tokenizer.vocabSize);
    if (bad !== undefined) throw new ApiError(400, `token id ${bad} is outside the vocabulary (0..${served.tokenizer.vocabSize - 1})`, 'invalid_request_error', 'tokens', 'invalid_value');
    return { prompt: served.tokenizer.decode(tokens) };
  });

  return app;
}
