// Continuous batching over a paged KV cache: many sequences share one model and one cache. Each
// step takes one token from every sequence that is decoding plus prompt chunks of sequences still
// being read (so a long prompt never stalls running streams for more than a chunk), runs them as
// one forward step, and hands each sampled token to its sequence. New requests join between steps;
// finished, failed and cancelled ones give their blocks and slot back at once.
import { logprobStride } from '../kernels/backend.ts';
import { rowLogprobs } from '../kernels/cpu/logprobs.ts';
import { PREVIOUS_SAMPLE, type CausalLM, type StepEntry, type StepResult } from '../models/model.ts';
import type { TextTokenizer } from '../weights/tokenizer.ts';
import { BusyCollector, fullCollection } from './collector.ts';
import { nativeMemory } from './native.ts';
import { checkRequest, promptTokenFlags, type FinishReason } from './generate.ts';
import { Sampler, type SamplingOptions } from './sampler.ts';
import { GeneratedText } from './stop.ts';

export interface TokenLogprob {
  id: number;
  /** Natural log of its probability under the model's distribution (before sampling's cuts and penalties). */
  logprob: number;
}

export interface GeneratedToken extends TokenLogprob {
  /** The most likely tokens at this step, best first (as many as the request's logprobs). */
  top?: TokenLogprob[];
}

export interface SequenceRequest {
  promptIds: number[];
  /** ≥ 1, or 0 with promptLogprobs: the prompt is read and scored, nothing generated. */
  maxTokens: number;
  sampling: SamplingOptions;
  stop?: string[];
  ignoreEos?: boolean;
  /** Report each token's logprob and this many top alternatives (0: the token's own only). */
  logprobs?: number;
  /**
   * Report the logprob of every prompt token after the first (what the model gave it, reading the
   * tokens before it) and this many top alternatives. Such a prompt is read in chunks no longer
   * than the rows of logits a step reads (the model's maxSequences, less what others take).
   */
  promptLogprobs?: number;
  /** The prompt's logprobs (promptLogprobs), once it has been read, before the first token's text. */
  onPrompt?: (tokens: GeneratedToken[]) => void;
  /** Cancels the sequence within one step; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Text as soon as it is final, with the tokens that completed it. */
  onText?: (text: string, tokens: GeneratedToken[]) => void;
}

export interface SequenceResult {
  promptTokens: number;
  ids: number[];
  /** Generated text, stop string excluded. */
  text: string;
  /** Every generated token with its logprob, when the request asked for logprobs. */
  tokens?: GeneratedToken[];
  /** Prompt tokens 1… with their logprobs, when the request asked for promptLogprobs. */
  promptTokenLogprobs?: GeneratedToken[];
  finishReason: FinishReason;
  timings: { queueMs: number; firstTokenMs: number; totalMs: number };
}

/** What a server watches: latencies and counts as they happen. */
export interface SchedulerObserver {
  firstToken?(milliseconds: number): void;
  interToken?(milliseconds: number): void;
  finished?(promptTokens: number, generatedTokens: number): void;
}

export interface SchedulerOptions {
  /** Sequences decoding at once. */
  maxBatch: number;
  /** Requests waiting beyond the running ones; more are refused (QueueFullError). */
  maxQueue: number;
  /** Positions per sequence (prompt + output). */
  contextLength: number;
  /** KV-cache blocks in all; by default enough for maxBatch sequences at full context. */
  blocks?: number;
  observer?: SchedulerObserver;
}

export class QueueFullError extends Error {
  constructor(readonly queued: number) {
    super(`the server is busy: ${queued} requests are already waiting`);
    this.name = 'QueueFullError';
  }
}

/** Hands out KV-cache blocks; a sequence reserves what it may need at admission and takes blocks as it grows. */
export class BlockAllocator {
  private readonly free: number[];
  private reservedUnallocated = 0;

  constructor(readonly total: number) {
    this.free = Array.from({ length: total }, (_, i) => total - 1 - i);
  }

  get used(): number {
    return this.total - this.free.length;
  }

  get available(): number {
    return this.free.length - this.reservedUnallocated;
  }

  reserve(blocks: number): boolean {
    if (blocks > this.available) return false;
    this.reservedUnallocated += blocks;
    return true;
  }

  /** A reserved block, now in use. */
  take(): number {
    const block = this.free.pop();
    if (block === undefined || this.reservedUnallocated === 0) throw new Error('KV block taken without a reservation');
    this.reservedUnallocated--;
    return block;
  }

  /** Returns a sequence's blocks and the part of its reservation it never took. */
  release(blocks: number[], unusedReservation: number): void {
    this.free.push(...blocks);
    this.reservedUnallocated -= unusedReservation;
  }
}

type Phase = 'prefill' | 'decode';

/** A step's entries and the sequence each belongs to. */
interface PlannedStep {
  entries: StepEntry[];
  owners: Sequence[];
}

interface SubmittedStep extends PlannedStep {
  result: Promise<StepResult>;
}

class Sequence {
  readonly blockTable: number[] = [];
  readonly ids: number[] = [];
  readonly tokens: GeneratedToken[] = [];
  readonly promptLogprobs: GeneratedToken[] = [];
  /** Prompt tokens already in the cache. */
  prefilled = 0;
  phase: Phase = 'prefill';
  text = '';
  readonly sampler: Sampler;
  readonly output: GeneratedText;
  readonly eos: Set<number>;
  /** Positions this sequence may fill. */
  readonly capacity: number;
  readonly reservedBlocks: number;
  readonly enqueuedAt = performance.now();
  admittedAt = 0;
  firstTokenAt = 0;
  lastTokenAt = 0;
  slot = -1;
  resolve: (result: SequenceResult) => void = () => undefined;
  reject: (error: unknown) => void = () => undefined;

  constructor(
    readonly request: SequenceRequest,
    tokenizer: TextTokenizer,
    eosTokenIds: readonly number[],
    contextLength: number,
    blockSize: number,
  ) {
    this.sampler = new Sampler(request.sampling);
    this.output = new GeneratedText(tokenizer, request.promptIds, request.stop ?? []);
    this.eos = new Set(request.ignoreEos ? [] : eosTokenIds);
    this.capacity = Math.min(contextLength, request.promptIds.length + request.maxTokens);
    this.reservedBlocks = Math.ceil(this.capacity / blockSize);
  }

  /** The next position to fill. */
  get position(): number {
    return this.prefilled + Math.max(0, this.ids.length - 1);
  }
}

export class Scheduler {
  readonly allocator: BlockAllocator;
  private readonly cache;
  private readonly queue: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private readonly freeSlots: number[];
  private wake: (() => void) | undefined;
  private stopped = false;
  private observer: SchedulerObserver | undefined;
  private readonly loop: Promise<void>;
  /**
   * For benchmarks: steps run, rows they held, and where their time went: recording and submitting
   * (recordMs), waiting for the results (waitMs), and handing tokens to their sequences (acceptMs).
   */
  readonly stats = { steps: 0, rows: 0, recordMs: 0, waitMs: 0, acceptMs: 0 };
  /** Full JS collections while busy on WebGPU (engine/collector.ts says why). */
  readonly collector: BusyCollector;

  constructor(
    readonly model: CausalLM,
    readonly tokenizer: TextTokenizer,
    readonly eosTokenIds: readonly number[],
    readonly options: SchedulerOptions,
  ) {
    if (options.maxBatch > model.maxSequences) throw new RangeError(`the model was loaded for ${model.maxSequences} sequences per step, not ${options.maxBatch}`);
    // Decoding rows come first in a step; prompts need room beside them.
    if (options.maxBatch >= model.maxStepTokens) throw new RangeError(`a step of ${model.maxStepTokens} tokens leaves no room for prompts beside ${options.maxBatch} decoding sequences`);
    const perSequence = Math.ceil(options.contextLength / model.blockSize);
    this.allocator = new BlockAllocator(options.blocks ?? options.maxBatch * perSequence);
    if (this.allocator.total < perSequence) throw new RangeError(`${this.allocator.total} KV blocks cannot hold one sequence of ${options.contextLength} positions (${perSequence} blocks)`);
    this.cache = model.createKVCache(this.allocator.total, options.maxBatch);
    this.freeSlots = Array.from({ length: options.maxBatch }, (_, i) => options.maxBatch - 1 - i);
    this.observer = options.observer;
    const collect = model.backend.leavesNativeGarbage ? fullCollection() : null;
    const native = nativeMemory();
    this.collector = new BusyCollector(collect, { release: collect && native ? () => native.trim() : null });
    this.loop = this.run();
  }

  /** Who hears of latencies and finished sequences from now on. */
  setObserver(observer: SchedulerObserver | undefined): void {
    this.observer = observer;
  }

  get queued(): number {
    return this.queue.length;
  }

  get active(): number {
    return this.running.length;
  }

  /**
   * Queues a request; resolves when it finishes. Throws at once (ContextLengthError, RangeError,
   * QueueFullError) when it can never run or the queue is full.
   */
  submit(request: SequenceRequest): Promise<SequenceResult> {
    if (this.stopped) return Promise.reject(new Error('the scheduler has stopped'));
    // A request that scores its prompt may ask for no tokens after it.
    checkRequest(request.promptIds, request.maxTokens, this.model.config.vocabSize, this.options.contextLength, request.promptLogprobs !== undefined ? 0 : 1);
    // Requests that would wait with this one (queued ones take the free slots at the next step).
    const waiting = this.queue.length + 1 - this.freeSlots.length;
    if (waiting > this.options.maxQueue) throw new QueueFullError(waiting - 1);
    const sequence = new Sequence(request, this.tokenizer, this.eosTokenIds, this.options.contextLength, this.model.blockSize);
    const done = new Promise<SequenceResult>((resolve, reject) => {
      sequence.resolve = resolve;
      sequence.reject = reject;
    });
    this.queue.push(sequence);
    request.signal?.addEventListener('abort', () => this.wake?.(), { once: true });
    this.wake?.();
    return done;
  }

  /** Stops taking requests, fails those not finished, and frees the cache. */
  async close(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    // On a GPU, decoding is pipelined while the batch is steady: step n + 1 (each sequence fed the
    // token step n samples for it, on the device) is submitted before step n's ids are read, so
    // recording overlaps the GPU's work. A sequence that step n ends wasted its part of step n + 1
    // (its blocks are reused only by steps submitted later, which run later). The CPU backend runs a
    // step as it is recorded, so there nothing is submitted ahead.
    const pipelined = this.model.backend.name !== 'cpu';
    let inFlight: SubmittedStep | undefined;
    while (!this.stopped) {
      this.dropCancelled();
      this.admit();
      if (!inFlight) {
        if (this.running.length === 0) {
          this.collector.idle();
          await new Promise<void>((resolve) => (this.wake = resolve));
          this.wake = undefined;
          continue;
        }
        inFlight = this.submitStep(this.buildStep());
      }
      let next: SubmittedStep | undefined;
      try {
        if (pipelined && inFlight && this.continues(inFlight)) next = this.submitStep(this.continuation(inFlight));
        // With work queued on the GPU, which runs while this thread collects.
        this.collector.busy();
        await this.process(inFlight);
      } catch (error) {
        // A failed step (a device error) fails its sequences, not the server.
        for (const sequence of [...this.running]) this.finish(sequence, error);
        await next?.result.catch(() => undefined);
        next = undefined;
      }
      inFlight = next;
      // Let request handlers (new submissions, disconnects, writes) run between steps.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    await inFlight?.result.catch(() => undefined);
    this.collector.stop();
    const error = new Error('the server is shutting down');
    for (const sequence of [...this.running, ...this.queue.splice(0)]) this.finish(sequence, error);
    this.cache.release();
  }

  private dropCancelled(): void {
    for (const sequence of [...this.running, ...this.queue]) {
      const signal = sequence.request.signal;
      if (signal?.aborted) this.finish(sequence, signal.reason ?? new Error('cancelled'));
    }
  }

  /** Moves queued requests into the batch while there are slots and blocks, first come first served. */
  private admit(): void {
    while (this.queue.length > 0 && this.freeSlots.length > 0) {
      const next = this.queue[0];
      if (!this.allocator.reserve(next.reservedBlocks)) break;
      this.queue.shift();
      next.slot = this.freeSlots.pop()!;
      next.admittedAt = performance.now();
      if (next.sampler.penalises) {
        this.model.backend.uploadIndices(this.cache.tokenFlags, promptTokenFlags(next.request.promptIds, this.cache.flagStride), next.slot * this.cache.flagStride);
      }
      this.running.push(next);
    }
  }

  private ensureBlocks(sequence: Sequence, positions: number): void {
    while (sequence.blockTable.length * this.model.blockSize < positions) sequence.blockTable.push(this.allocator.take());
  }

  /** The next step from what the sequences hold: a token from each decoding one, then prompt chunks. */
  private buildStep(): PlannedStep {
    const entries: StepEntry[] = [];
    const owners: Sequence[] = [];
    for (const sequence of this.running) {
      if (sequence.phase !== 'decode') continue;
      const position = sequence.position;
      this.ensureBlocks(sequence, position + 1);
      entries.push({
        sequence: { slot: sequence.slot, blockTable: sequence.blockTable },
        tokens: Int32Array.of(sequence.ids[sequence.ids.length - 1]),
        startPosition: position,
        sample: sequence.sampler.next(),
        logprobs: sequence.request.logprobs !== undefined ? { top: sequence.request.logprobs } : undefined,
      });
      owners.push(sequence);
    }
    // Then prompt chunks in arrival order, as many tokens as the step has room for (and, for a
    // prompt whose logprobs are wanted, as many as the rows of logits left).
    let budget = this.model.maxStepTokens - entries.length;
    let outputRows = this.model.maxSequences - entries.length;
    for (const sequence of this.running) {
      if (sequence.phase !== 'prefill' || budget <= 0 || outputRows <= 0) continue;
      const prompt = sequence.request.promptIds;
      const rowLogits = sequence.request.promptLogprobs !== undefined;
      const count = Math.min(budget, prompt.length - sequence.prefilled, rowLogits ? outputRows : Infinity);
      const last = sequence.prefilled + count === prompt.length;
      const samples = last && sequence.request.maxTokens > 0;
      const sampledLogprobs = samples && sequence.request.logprobs !== undefined;
      this.ensureBlocks(sequence, sequence.prefilled + count);
      const start = sequence.prefilled;
      entries.push({
        sequence: { slot: sequence.slot, blockTable: sequence.blockTable },
        tokens: Int32Array.from(prompt.slice(start, start + count)),
        startPosition: start,
        sample: samples ? sequence.sampler.next() : undefined,
        rowLogits,
        // A scored prompt's rows each give the logprob of the prompt token after them (none after the last).
        logprobs: rowLogits || sampledLogprobs ? {
          top: Math.max(rowLogits ? sequence.request.promptLogprobs! : 0, sampledLogprobs ? sequence.request.logprobs! : 0),
          nextTokens: rowLogits ? Int32Array.from({ length: count }, (_, i) => prompt[start + i + 1] ?? -1) : undefined,
        } : undefined,
      });
      owners.push(sequence);
      budget -= count;
      outputRows -= rowLogits ? count : samples ? 1 : 0;
    }
    return { entries, owners };
  }

  /**
   * Whether the step after `step` can be submitted before its ids are read: every running
   * sequence is in it and samples there, nobody waits to join, and each has room for one more token.
   */
  private continues(step: SubmittedStep): boolean {
    if (this.queue.length > 0 || step.owners.length !== this.running.length || step.entries.some((e) => !e.sample)) return false;
    return step.owners.every((sequence, i) => {
      const entry = step.entries[i];
      const nextPosition = entry.startPosition + (entry.tokens as Int32Array).length;
      const generated = sequence.ids.length + 1; // with the token `step` samples
      return this.running.includes(sequence) && generated < sequence.request.maxTokens && nextPosition + 1 < sequence.capacity;
    });
  }

  /** The step after `step`: each of its sequences fed the token `step` samples for it, on the device. */
  private continuation(step: SubmittedStep): PlannedStep {
    const entries = step.entries.map((entry, i) => {
      const sequence = step.owners[i];
      const position = entry.startPosition + (entry.tokens as Int32Array).length;
      this.ensureBlocks(sequence, position + 1);
      return {
        sequence: entry.sequence,
        tokens: PREVIOUS_SAMPLE,
        startPosition: position,
        sample: sequence.sampler.next(),
        logprobs: sequence.request.logprobs !== undefined ? { top: sequence.request.logprobs } : undefined,
      } satisfies StepEntry;
    });
    return { entries, owners: step.owners };
  }

  private submitStep(step: PlannedStep): SubmittedStep {
    const start = performance.now();
    const result = this.model.step(this.cache, step.entries);
    result.catch(() => undefined); // awaited in process
    this.stats.recordMs += performance.now() - start;
    this.stats.steps++;
    this.stats.rows += step.entries.reduce((n, e) => n + (e.tokens === PREVIOUS_SAMPLE ? 1 : e.tokens.length), 0);
    return { ...step, result };
  }

  /** Waits for a step's ids and hands each sampled token to its sequence (if it is still running). */
  private async process(step: SubmittedStep): Promise<void> {
    const waitStart = performance.now();
    const result = await step.result;
    const acceptStart = performance.now();
    this.stats.waitMs += acceptStart - waitStart;
    let output = 0;
    step.entries.forEach((entry, i) => {
      const sequence = step.owners[i];
      const rows = entry.rowLogits ? (entry.tokens as Int32Array).length : entry.sample || entry.logits || entry.logprobs ? 1 : 0;
      const first = output;
      output += rows;
      const k = output - 1;
      if (!this.running.includes(sequence)) return; // finished or cancelled meanwhile
      if (entry.rowLogits && result.logprobs) this.scorePrompt(sequence, entry.startPosition, rows, result.logprobs, first);
      if (!entry.sample) {
        sequence.prefilled += (entry.tokens as Int32Array).length;
        // All of a prompt that asked for no tokens after it: scored, done.
        if (sequence.prefilled === sequence.request.promptIds.length) {
          sequence.request.onPrompt?.(sequence.promptLogprobs);
          this.complete(sequence, 'length');
        }
        return;
      }
      if (sequence.phase === 'prefill') {
        sequence.prefilled = sequence.request.promptIds.length;
        sequence.phase = 'decode';
        if (sequence.request.promptLogprobs !== undefined) sequence.request.onPrompt?.(sequence.promptLogprobs);
      }
      const wanted = sequence.request.logprobs;
      const token = result.logprobs && wanted !== undefined ? logprobToken(result.logprobs, k, result.ids[k], wanted) : null;
      this.accept(sequence, result.ids[k], token);
    });
    this.stats.acceptMs += performance.now() - acceptStart;
  }

  /** The logprobs of the prompt tokens that follow `rows` rows from `start`: the step's outputs from `firstOutput`. */
  private scorePrompt(sequence: Sequence, start: number, rows: number, logprobs: StepLogprobs, firstOutput: number): void {
    const { promptIds, promptLogprobs } = sequence.request;
    for (let r = 0; r < rows && start + r + 1 < promptIds.length; r++) {
      sequence.promptLogprobs.push(logprobToken(logprobs, firstOutput + r, promptIds[start + r + 1], promptLogprobs ?? 0));
    }
  }

  /** A sampled token: record it, release the text it completes, and finish the sequence when it is done. */
  private accept(sequence: Sequence, id: number, token: GeneratedToken | null): void {
    const now = performance.now();
    if (sequence.ids.length === 0) {
      sequence.firstTokenAt = now;
      this.observer?.firstToken?.(now - sequence.enqueuedAt);
    } else {
      this.observer?.interToken?.(now - sequence.lastTokenAt);
    }
    sequence.lastTokenAt = now;
    sequence.ids.push(id);
    // End of sequence: counted as generated, but neither text nor a reported token.
    if (sequence.eos.has(id)) return this.complete(sequence, 'stop');
    const pending: GeneratedToken[] = [];
    if (token) {
      sequence.tokens.push(token);
      pending.push(token);
    }
    const released = sequence.output.push(id);
    this.emit(sequence, released.text, pending);
    if (released.stopped) return this.complete(sequence, 'stop', true);
    // The next token would sit at position prompt + ids.length - 1 + 1.
    const full = sequence.ids.length >= sequence.request.maxTokens || sequence.request.promptIds.length + sequence.ids.length >= sequence.capacity;
    if (full) this.complete(sequence, 'length');
  }

  private emit(sequence: Sequence, text: string, tokens: GeneratedToken[]): void {
    if (!text && tokens.length === 0) return;
    sequence.text += text;
    sequence.request.onText?.(text, tokens);
  }

  private complete(sequence: Sequence, reason: FinishReason, stoppedByString = false): void {
    let finishReason = reason;
    if (!stoppedByString) {
      const tail = sequence.output.finish();
      if (tail.stopped) finishReason = 'stop';
      this.emit(sequence, tail.text, []);
    }
    const now = performance.now();
    this.observer?.finished?.(sequence.request.promptIds.length, sequence.ids.length);
    this.finish(sequence, undefined, {
      promptTokens: sequence.request.promptIds.length,
      ids: sequence.ids,
      text: sequence.text,
      tokens: sequence.request.logprobs !== undefined ? sequence.tokens : undefined,
      promptTokenLogprobs: sequence.request.promptLogprobs !== undefined ? sequence.promptLogprobs : undefined,
      finishReason,
      timings: { queueMs: sequence.admittedAt - sequence.enqueuedAt, firstTokenMs: sequence.firstTokenAt - sequence.enqueuedAt, totalMs: now - sequence.enqueuedAt },
    });
  }

  /** Takes a sequence out of the batch or queue, gives back its blocks and slot, and settles it. */
  private finish(sequence: Sequence, error: unknown, result?: SequenceResult): void {
    const running = this.running.indexOf(sequence);
    if (running !== -1) {
      this.running.splice(running, 1);
      const unused = sequence.reservedBlocks - sequence.blockTable.length;
      this.allocator.release(sequence.blockTable.splice(0), unused);
      this.freeSlots.push(sequence.slot);
    } else {
      const queued = this.queue.indexOf(sequence);
      if (queued !== -1) this.queue.splice(queued, 1);
    }
    if (result) sequence.resolve(result);
    else sequence.reject(error);
  }
}

/** log_softmax of the logits at `id`, and the `top` most likely tokens (best first, lower id on ties). */
export function tokenLogprobs(logits: Float32Array, id: number, top: number): GeneratedToken {
  const values = new Float64Array(logprobStride(top));
  rowLogprobs(logits, id, top, values);
  return logprobToken({ top, values }, 0, id, top);
}

/** A step's logprobs (StepResult), or one row made on the CPU in float64. */
interface StepLogprobs {
  top: number;
  values: ArrayLike<number>;
}

/** Output k's token `id` with the first `top` alternatives of those the step computed. */
function logprobToken(logprobs: StepLogprobs, k: number, id: number, top: number): GeneratedToken {
  const at = k * logprobStride(logprobs.top);
  const token: GeneratedToken = { id, logprob: logprobs.values[at + 1] };
  if (top > 0) {
    token.top = Array.from({ length: Math.min(top, logprobs.top) }, (_, j) => ({ id: Math.round(logprobs.values[at + 2 + 2 * j]), logprob: logprobs.values[at + 3 + 2 * j] }));
  }
  return token;
}
