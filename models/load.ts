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

/** What both loaders start from: the config, the step sizes and a reader over the checkpoint. */
function openModel(directory: ModelDirectory, backend: Backend, options: LoadOptions) {
  const config = parseModelConfig(directory.config, `${directory.path}/config.json`);
  const maxStepTokens = Math.min(options.maxStepTokens ?? 256, config.maxPositions);
  const maxSequences = Math.max(1, options.maxSequences ?? 1);
  const source = directory.openTensors();
  try {
    const weights = new WeightReader(source, backend, options.onProgress, { config, maxRows: maxStepTokens });
    return { config, maxStepTokens, maxSequences, source, weights };
  } catch (error) {
    source.close();
    throw error;
  }
}

/** The model over `opened`, its layers read beforehand or (when absent) by the constructor. */
function assemble(opened: ReturnType<typeof openModel>, backend: Backend, layers?: (LlamaLayer | Gpt2Layer)[]): CausalLM {
  const { config, weights, maxStepTokens, maxSequences } = opened;
  return config.architecture === 'llama'
    ? new LlamaModel(config, weights, backend, maxStepTokens, maxSequences, layers as LlamaLayer[] | undefined)
    : new Gpt2Model(config, weights, backend, maxStepTokens, maxSequences, layers as Gpt2Layer[] | undefined);
}

export function loadModel(directory: ModelDirectory, backend: Backend, options: LoadOptions = {}): CausalLM {
  const opened = openModel(directory, backend, options);
  try {
    return assemble(opened, backend);
  } finally {
    opened.source.close();
  }
}

/**
 * loadModel, handing the event loop back after each layer: a server loading a large checkpoint
 * keeps answering (/health says 503) while it loads.
 */
export async function loadModelAsync(directory: ModelDirectory, backend: Backend, options: LoadOptions = {}): Promise<CausalLM> {
  const opened = openModel(directory, backend, options);
  try {
    const { config, weights } = opened;
    const readLayer = config.architecture === 'llama' ? readLlamaLayer : readGpt2Layer;
    const layers: (LlamaLayer | Gpt2Layer)[] = [];
    for (let l = 0; l < config.layers; l++) {
      layers.push(readLayer(weights, config, l));
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return assemble(opened, backend, layers);
  } finally {
    opened.source.close();
  }
}
