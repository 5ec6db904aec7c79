// A model directory + a backend → a ready CausalLM.
import type { Backend } from '../kernels/backend.ts';
import type { ModelDirectory } from '../weights/model-directory.ts';
import { parseModelConfig } from './config.ts';
import { Gpt2Model, readGpt2Layer, type Gpt2Layer } from './gpt2.ts';
import { LlamaModel, readLlamaLayer, type LlamaLayer } from './llama.ts';
import { WeightReader, type CausalLM } from './model.ts';

export interface LoadOptions {
  /** Rows per forward call (prefill chunk); activations are sized for it. */
  maxStepTokens?: number;
  /** Sequences one step may sample or read (continuous batching); 1 by default. */
  maxSequences?: number;
  /** Called after each tensor is read. */
  onProgress?: (loadedBytes: number, totalBytes: number) => void;
}

export function loadModel(directory: ModelDirectory, backend: Backend, options: LoadOptions = {}): CausalLM {
  const config = parseModelConfig(directory.config, `${directory.path}/config.json`);
  const maxStepTokens = Math.min(options.maxStepTokens ?? 256, config.maxPositions);
  const maxSequences = Math.max(1, options.maxSequences ?? 1);
  const source = directory.openTensors();
  try {
    const weights = new WeightReader(source, backend, options.onProgress, { config, maxRows: maxStepTokens });
    return config.architecture === 'llama'
      ? new LlamaModel(config, weights, backend, maxStepTokens, maxSequences)
      : new Gpt2Model(config, weights, backend, maxStepTokens, maxSequences);
  } finally {
    source.close();
  }
}

/**
 * loadModel, handing the event loop back after each layer: a server loading a large checkpoint
 * keeps answering (/health says 503) while it loads.
 */
export async function loadModelAsync(directory: ModelDirectory, backend: Backend, options: LoadOptions = {}): Promise<CausalLM> {
  const config = parseModelConfig(directory.config, `${directory.path}/config.json`);
  const maxStepTokens = Math.min(options.maxStepTokens ?? 256, config.maxPositions);
  const maxSequences = Math.max(1, options.maxSequences ?? 1);
  const source = directory.openTensors();
  const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
  try {
    const weights = new WeightReader(source, backend, options.onProgress, { config, maxRows: maxStepTokens });
    if (config.architecture === 'llama') {
      const layers: LlamaLayer[] = [];
      for (let l = 0; l < config.layers; l++) {
        layers.push(readLlamaLayer(weights, config, l));
        await yieldToEventLoop();
      }
      return new LlamaModel(config, weights, backend, maxStepTokens, maxSequences, layers);
    }
    const layers: Gpt2Layer[] = [];
    for (let l = 0; l < config.layers; l++) {
      layers.push(readGpt2Layer(weights, config, l));
      await yieldToEventLoop();
    }
    return new Gpt2Model(config, weights, backend, maxStepTokens, maxSequences, layers);
  } finally {
    source.close();
  }
}
