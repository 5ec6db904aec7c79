// A model directory → a ServedModel: the engine loaded for continuous batching, its scheduler and
// its chat template.
import path from 'node:path';
import { loadEngine } from '../engine/load.ts';
import { Scheduler } from '../engine/scheduler.ts';
import { kvValueBytes, type KVPrecision } from '../kernels/backend.ts';
import type { BackendKind } from '../kernels/select.ts';
import type { ServedModel } from './app.ts';
import { ChatTemplate } from './chat.ts';

export interface ServeOptions {
  backend: BackendKind;
  /** How the KV cache stores keys and values (default: the backend's). */
  kvCache?: KVPrecision;
  /** Sequences decoding at once. */
  maxBatch: number;
  /** Requests waiting beyond the batch before 429. */
  maxQueue: number;
  /** Positions per sequence; default: the model's, at most DEFAULT_CONTEXT. */
  contextLength?: number;
  /** KV-cache blocks; default: enough for maxBatch sequences of the full context. */
  kvBlocks?: number;
  /** The name clients send as "model"; default: the directory's name. */
  name?: string;
  onProgress?: (loadedBytes: number, totalBytes: number) => void;
  onNotice?: (message: string) => void;
}

/** The default context when --ctx is not given: long enough for chat, short enough that the KV cache fits. */
export const DEFAULT_CONTEXT = 4096;
/**
 * The most KV-cache memory the default --kv-blocks takes: max-batch full-context sequences, or
 * fewer blocks when those would need more (Llama-2-7B: 0.5 MiB a position with the f16 cache a GPU
 * keeps, so 16 GiB hold eight 4096-token sequences; 1 MiB in f32).
 */
export const DEFAULT_KV_BYTES = 16 * 2 ** 30;

export async function loadServedModel(directory: string, options: ServeOptions): Promise<ServedModel> {
  // Tokens per step: every decoding sequence plus room for a prompt chunk.
  const maxStepTokens = Math.max(256, 2 * options.maxBatch);
  const engine = await loadEngine(directory, {
    backend: options.backend,
    kvCache: options.kvCache,
    contextLength: options.contextLength ?? DEFAULT_CONTEXT,
    maxSequences: options.maxBatch,
    maxStepTokens,
    onProgress: options.onProgress,
    onNotice: options.onNotice,
  });
  const contextLength = engine.generator.contextLength;
  const { layers, kvHeads, headDim } = engine.model.config;
  const blockBytes = engine.model.blockSize * layers * kvHeads * headDim * kvValueBytes(engine.model.backend.kvPrecision) * 2;
  const perSequence = Math.ceil(contextLength / engine.model.blockSize);
  let blocks = options.kvBlocks ?? options.maxBatch * perSequence;
  if (options.kvBlocks === undefined && blocks * blockBytes > DEFAULT_KV_BYTES) {
    blocks = Math.max(perSequence, Math.floor(DEFAULT_KV_BYTES / blockBytes));
    options.onNotice?.(`the KV cache holds ${blocks} blocks (${(blocks * blockBytes / 2 ** 30).toFixed(1)} GiB), fewer than ${options.maxBatch} full-context sequences need: set --kv-blocks, --ctx or --max-batch to change it`);
  }
  const scheduler = new Scheduler(engine.model, engine.directory.tokenizer, engine.directory.eosTokenIds, {
    maxBatch: options.maxBatch, maxQueue: options.maxQueue, contextLength, blocks,
  });
  return {
    name: options.name ?? path.basename(path.resolve(directory)),
    scheduler,
    tokenizer: engine.directory.tokenizer,
    chatTemplate: new ChatTemplate(engine.directory.tokenizerConfig),
    contextLength,
    created: Math.floor(Date.now() / 1000),
  };
}
