// Model directory → a ready Generator: read config and tokenizer, pick a backend, load weights.
import { fileURLToPath } from 'node:url';
import type { KVPrecision } from '../kernels/backend.ts';
import { createBackend, type BackendKind } from '../kernels/select.ts';
import { loadModelAsync } from '../models/load.ts';
import type { CausalLM } from '../models/model.ts';
import { readModelDirectory, type ModelDirectory } from '../weights/model-directory.ts';
import { Generator } from './generate.ts';

/** stories260K, converted from llama2.c's checkpoint by `blr convert`, shipped in the repository. */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../assets/stories260K', import.meta.url));

export interface EngineOptions {
  backend?: BackendKind;
  /** How the KV cache stores keys and values (default: f16 on a GPU that has it, else f32). */
  kvCache?: KVPrecision;
  /** Positions per sequence; defaults to the model's max_position_embeddings. */
  contextLength?: number;
  /** Sequences one step may serve (continuous batching), and tokens a step may hold. */
  maxSequences?: number;
  maxStepTokens?: number;
  onProgress?: (loadedBytes: number, totalBytes: number) => void;
  /** One-line messages a person should see (a backend fallback). */
  onNotice?: (message: string) => void;
}

export interface Engine {
  directory: ModelDirectory;
  model: CausalLM;
  generator: Generator;
  loadMs: number;
}

export async function loadEngine(modelPath: string = DEFAULT_MODEL_DIR, options: EngineOptions = {}): Promise<Engine> {
  const start = performance.now();
  const directory = readModelDirectory(modelPath);
  const backend = await createBackend(options.backend ?? 'auto', options.onNotice, options.kvCache);
  const model = await loadModelAsync(directory, backend, { onProgress: options.onProgress, maxSequences: options.maxSequences, maxStepTokens: options.maxStepTokens });
  const contextLength = Math.min(options.contextLength ?? model.config.maxPositions, model.config.maxPositions);
  const generator = new Generator(model, directory.tokenizer, directory.eosTokenIds, contextLength);
  return { directory, model, generator, loadMs: performance.now() - start };
}
