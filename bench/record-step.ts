// What recording one decode step costs the CPU, with nothing else competing for it: steps run one
// at a time (each awaited before the next is recorded, so the GPU is idle while the CPU records),
// and the synchronous part of each (recording its dispatches and submitting them) is timed.
// The small models' decode is bound by this (bench/e2e.ts prints it for pipelined steps, where a
// software adapter's work competes with it).
//
//   npx tsx bench/record-step.ts [--model llama-3.2-1b|llama-2-7b|gpt2] [--variant dense|lowrank|monarch|blast] [--steps 200]
// Full-size random weights made on the GPU (bench/configs/), compressed at the paper's
// configurations (models/compress.ts presets). Prints the median and 10th percentile µs a step.
import { parseArgs } from 'node:util';
import { GREEDY } from '../engine/sampler.ts';
import { WebGpuBackend } from '../kernels/webgpu/backend.ts';
import { COMPRESS_PRESETS } from '../models/compress.ts';
import { PREVIOUS_SAMPLE } from '../models/model.ts';
import { loadRandomModel } from '../models/random.ts';
import { benchModelConfig, COMPRESS_METHODS, type CompressMethod } from './bench-models.ts';

const { values } = parseArgs({ options: {
  model: { type: 'string', default: 'llama-3.2-1b' }, variant: { type: 'string', default: 'dense' }, steps: { type: 'string', default: '200' },
}, strict: true });
const preset = values.model;
if (!(COMPRESS_PRESETS as readonly string[]).includes(preset)) throw new Error(`--model must be one of ${COMPRESS_PRESETS.join(', ')}`);
const variant = values.variant as 'dense' | CompressMethod;
if (variant !== 'dense' && !(COMPRESS_METHODS as readonly string[]).includes(variant)) throw new Error(`--variant must be dense, ${COMPRESS_METHODS.join(', ')}`);
const steps = Number(values.steps);
const { config } = benchModelConfig(preset, variant);

const backend = await WebGpuBackend.create({ allowSoftware: true });
const prompt = Int32Array.from({ length: 16 }, (_, i) => i + 1);
const model = loadRandomModel(config, backend, { seed: 1, maxStepTokens: prompt.length });
const cache = model.createCache(prompt.length + steps);
const params = { ...GREEDY, draw: 0 };
await model.forwardSample(cache, prompt, 0, params);
const warmUp = Math.min(20, steps >> 2);
const samples: number[] = [];
for (let i = 0; i < steps; i++) {
  const t0 = performance.now();
  const step = model.forwardSample(cache, PREVIOUS_SAMPLE, prompt.length + i, params);
  if (i >= warmUp) samples.push((performance.now() - t0) * 1000);
  await step;
}
samples.sort((a, b) => a - b);
const at = (q: number) => samples[Math.floor(q * (samples.length - 1))];
console.log(`${preset} ${variant} on ${backend.description}`);
console.log(`recording a decode step: median ${at(0.5).toFixed(0)} µs, 10th percentile ${at(0.1).toFixed(0)} µs (${backend.lastStep.dispatches} dispatches, ${samples.length} steps)`);
cache.release();
model.dispose();
backend.dispose();
