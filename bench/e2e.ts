// End-to-end benchmark: batch 1, a prompt of P random tokens, N new tokens, on full-size
// models with random weights made on the GPU (no download); prefill ms and decode tokens/s, with
// Hugging Face transformers measured from the same command (bench/hf_e2e.py) when it is there, and
// the bandwidth floor for decode (weight bytes / copy ceiling, measured by bench/copy-ceiling.ts in
// the same run on WebGPU) with decode's share of it.
//
//   npx tsx bench/e2e.ts [--models llama-3.2-1b,llama-2-7b,gpt2] [--variants dense,lowrank,monarch,blast]
//                        [--prompt 128] [--new 128] [--backend webgpu|cpu] [--hf-modes eager,static] [--no-hf]
//                        [--profile | --timeline] [--skip REGEX] [--kv-cache f16|f32] [--warmup S] [--out FILE]
// --variants: the dense model and/or its block low-rank versions at the paper's configurations
// (models/compress.ts presets), random factors made where the backend keeps its data.
// --profile times every WebGPU dispatch of one prefill and of the decode steps (one pass each, so
// the tok/s it prints are lower) and prints the GPU time per kernel. Each decode step's dispatches
// and the CPU time of recording and submitting it are printed too (the small models wait on that).
// --timeline times each step's compute pass as it runs (greedy decoding): the GPU's busy time a
// step, and the time it sat idle between steps (waiting on the CPU), with the longest such gap.
// --skip REGEX leaves the WebGPU kernels whose names match out of the greedy decode steps (their
// tokens are then meaningless): with --timeline, what the step's GPU time is without them, or with
// a negative lookahead (--skip '^(?!gemvPairedRope$|argmax$)') what one kind of kernel takes in place.
// --kv-cache: how the KV cache stores keys and values (default: the backend's, f16 on a GPU with
// shader-f16).
// --warmup S: seconds of greedy decoding before anything is timed (default 3), so that the GPU's
// clocks have left idle (an H200 takes ~1.5 s of work to reach full clock).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createBackend, isBackendKind } from '../kernels/select.ts';
import { WebGpuBackend } from '../kernels/webgpu/backend.ts';
import { GREEDY } from '../engine/sampler.ts';
import { kvValueBytes, type SampleParams } from '../kernels/backend.ts';
import { kvCacheOption } from '../cli/args.ts';
import { PREVIOUS_SAMPLE } from '../models/model.ts';
import { loadRandomModel } from '../models/random.ts';
import { copyCeilingGBs } from './copy-ceiling.ts';
import { median } from './timing.ts';
import { COMPRESS_PRESETS } from '../models/compress.ts';
import { benchModelConfig, COMPRESS_METHODS, type CompressMethod } from './bench-models.ts';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'llama-3.2-1b,llama-2-7b,gpt2' },
    variants: { type: 'string', default: 'dense' },
    prompt: { type: 'string', default: '128' },
    new: { type: 'string', default: '128' },
    warmup: { type: 'string', default: '3' },
    backend: { type: 'string', default: 'webgpu' },
    'hf-modes': { type: 'string', default: 'eager,static' },
    'no-hf': { type: 'boolean' },
    profile: { type: 'boolean' },
    timeline: { type: 'boolean' },
    skip: { type: 'string' },
    'kv-cache': { type: 'string' },
    out: { type: 'string', default: 'bench/out/e2e.json' },
  },
  strict: true,
});
const promptTokens = Number(values.prompt);
const newTokens = Number(values.new);
if (!isBackendKind(values.backend)) throw new Error(`--backend must be webgpu or cpu, got ${values.backend}`);

const kvCache = kvCacheOption(values['kv-cache'], 'e2e');
const skipped = values.skip === undefined ? undefined : new RegExp(values.skip);
if (skipped && values.backend !== 'webgpu') throw new Error('--skip leaves out WebGPU kernels: it needs --backend webgpu');
const warmupSeconds = Number(values.warmup);
if (!(warmupSeconds >= 0)) throw new Error(`--warmup takes seconds, 0 or more; got ${values.warmup}`);
const results = [];
let copyGBs: number | undefined;
/** Passes' [begin, end] (µs, in order) as busy and idle ms per step over `steps` steps, and the longest gap. */
function summariseTimeline(passes: [number, number][], steps: number): { busyMs: number; idleMs: number; longestGapMs: number } {
  let busy = 0;
  let idle = 0;
  let longest = 0;
  passes.forEach(([begin, end], i) => {
    busy += end - begin;
    if (i === 0) return;
    const gap = Math.max(0, begin - passes[i - 1][1]);
    idle += gap;
    longest = Math.max(longest, gap);
  });
  return { busyMs: busy / steps / 1e3, idleMs: idle / steps / 1e3, longestGapMs: longest / 1e3 };
}

/** A profile's kernels, slowest first, per step over `steps` steps. */
function printProfile(title: string, profile: Map<string, { calls: number; ms: number }>, steps: number): void {
  const rows = [...profile].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((sum, [, p]) => sum + p.ms, 0) / steps;
  console.log(`  ${title} (timestamps; sum ${total.toFixed(2)} ms):`);
  for (const [kernel, p] of rows) console.log(`    ${kernel.padEnd(20)} ${(p.calls / steps).toFixed(0).padStart(4)} calls  ${(p.ms / steps).toFixed(3)} ms  ${((1000 * p.ms) / p.calls).toFixed(1)} µs each`);
}

const variants = values.variants.split(',');
for (const variant of variants) {
  if (variant !== 'dense' && !(COMPRESS_METHODS as readonly string[]).includes(variant)) throw new Error(`--variants takes dense, ${COMPRESS_METHODS.join(', ')}; got ${variant}`);
}
const runs = values.models.split(',').flatMap((model) => variants.map((variant) => ({ model, variant })))
  .filter(({ model, variant }) => variant === 'dense' || (COMPRESS_PRESETS as readonly string[]).includes(model));

for (const { model: modelName, variant } of runs) {
  const { config, configPath } = benchModelConfig(modelName, variant as 'dense' | CompressMethod);
  const name = variant === 'dense' ? modelName : `${modelName} ${variant}`;
  const backend = values.profile || values.timeline ? await WebGpuBackend.create({ allowSoftware: true, profile: values.profile, timeline: values.timeline, kvPrecision: kvCache }) : await createBackend(values.backend, undefined, kvCache);
  // The copy ceiling, once per run (the first WebGPU backend's device).
  if (copyGBs === undefined && backend instanceof WebGpuBackend) copyGBs = await copyCeilingGBs(backend.gpu.device);
  const loadStart = performance.now();
  const model = loadRandomModel(config, backend, { seed: 1, maxStepTokens: promptTokens });
  const vocab = model.config.vocabSize;
  const prompt = Int32Array.from({ length: promptTokens }, (_, i) => (i * 7919 + 13) % vocab);
  const cache = model.createCache(promptTokens + newTokens);
  await model.forward(cache, prompt, 0); // warm-up; also waits for the weights
  const loadMs = performance.now() - loadStart;

  // Decoding as blr generate does it: each token sampled on the device, step n + 1 submitted before
  // step n's id is read (pipelined). Greedy, and top-p sampling with a repetition penalty (the
  // sampling kernel's cost). `lastStep` (WebGPU) counts the dispatches of a step.
  // `recordMs` sums the CPU time of recording and submitting the steps (the synchronous part of
  // forwardSample): where it nears the step time, the CPU, not the GPU, sets the pace.
  let recordMs = 0;
  const decode = async (params: SampleParams): Promise<number> => {
    await model.forwardSample(cache, prompt, 0, params);
    // (--timeline: the prefill's passes are not the steps'.)
    if (values.timeline && backend instanceof WebGpuBackend) await backend.takeTimeline();
    recordMs = 0;
    const t0 = performance.now();
    let inFlight = model.forwardSample(cache, PREVIOUS_SAMPLE, promptTokens, params);
    recordMs += performance.now() - t0;
    for (let i = 1; i < newTokens - 1; i++) {
      const r0 = performance.now();
      const next = model.forwardSample(cache, PREVIOUS_SAMPLE, promptTokens + i, params);
      recordMs += performance.now() - r0;
      await inFlight;
      inFlight = next;
    }
    await inFlight;
    recordMs /= newTokens - 1;
    return ((newTokens - 1) * 1000) / (performance.now() - t0);
  };
  const greedy: SampleParams = { ...GREEDY, draw: 0 };
  const sampled: SampleParams = { ...GREEDY, temperature: 0.8, topP: 0.95, repetitionPenalty: 1.1, draw: 0.5 };
  // The GPU's clocks: an H200 idles at 345 MHz and takes ~1.5 s of work to reach 1980 MHz
  // (bench/RESULTS.md). Transformers' baseline warms up with three whole generations; so do these
  // numbers, with greedy decoding for --warmup seconds before anything is timed.
  // (Profile mode reads each step before the next: prefills there. The CPU has no clocks to wait for.)
  const warmupEnd = performance.now() + 1000 * warmupSeconds;
  while (backend.name !== 'cpu' && performance.now() < warmupEnd) await (values.profile ? model.forward(cache, prompt, 0) : decode(greedy));
  const prefillSamples: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await model.forward(cache, prompt, 0);
    prefillSamples.push(performance.now() - t0);
  }
  const decodeSamples: number[] = [];
  const recordSamples: number[] = [];
  const sampledSamples: number[] = [];
  const stats = (backend as { lastStep?: { dispatches: number; submits: number } }).lastStep;
  // --timeline: per greedy run, the GPU's busy and idle time a step and the longest idle gap (ms).
  const timelines: { busyMs: number; idleMs: number; longestGapMs: number }[] = [];
  if (!values.profile) {
    for (let run = 0; run < 3; run++) {
      if (values.timeline && backend instanceof WebGpuBackend) await backend.takeTimeline();
      if (skipped && backend instanceof WebGpuBackend) backend.setSkippedKernels(skipped);
      decodeSamples.push(await decode(greedy));
      if (backend instanceof WebGpuBackend) backend.setSkippedKernels(undefined);
      recordSamples.push(recordMs);
      if (values.timeline && backend instanceof WebGpuBackend) timelines.push(summariseTimeline(await backend.takeTimeline(), newTokens - 1));
    }
    for (let run = 0; run < 3; run++) sampledSamples.push(await decode(sampled));
  }
  if (values.profile && backend instanceof WebGpuBackend) {
    // One step at a time here: profile mode reads each step's timestamps before the next.
    backend.takeProfile(); // drop what the warm-up recorded
    await model.forward(cache, prompt, 0);
    printProfile(`${name} prefill (${promptTokens} tokens), GPU time by kernel`, backend.takeProfile(), 1);
    let token = await model.forwardSample(cache, prompt, 0, greedy);
    backend.takeProfile();
    const t0 = performance.now();
    for (let i = 0; i < newTokens - 1; i++) token = await model.forwardSample(cache, Int32Array.of(token), promptTokens + i, greedy);
    decodeSamples.push(((newTokens - 1) * 1000) / (performance.now() - t0));
    printProfile(`${name} decode, GPU time per step by kernel`, backend.takeProfile(), newTokens - 1);
    await model.forwardSample(cache, prompt, 0, sampled);
    backend.takeProfile();
    await model.forwardSample(cache, Int32Array.of(token), promptTokens, sampled);
    const sampleKernel = backend.takeProfile().get('sample');
    if (sampleKernel) console.log(`    sample (top-p 0.95, T 0.8, penalty 1.1): ${sampleKernel.ms.toFixed(3)} ms per step`);
  }
  cache.release();
  // What the GPU holds and a step streams: the parameters and any padding of stacked groups (f16).
  const weightBytes = (model.parameters + model.padding) * 2;
  const row: Record<string, unknown> = {
    model: name,
    parameters: model.parameters,
    padding: model.padding,
    backend: backend.description,
    kvCache: backend.kvPrecision,
    // Keys and values of every layer for one position.
    kvBytesPerPosition: 2 * model.config.layers * model.config.kvHeads * model.config.headDim * kvValueBytes(backend.kvPrecision),
    loadMs,
    prefillMs: median(prefillSamples),
    decodeTokensPerS: median(decodeSamples),
    sampledDecodeTokensPerS: sampledSamples.length > 0 ? median(sampledSamples) : undefined,
    decodeStep: stats ? { dispatches: stats.dispatches, submits: stats.submits, totalMs: 1000 / median(decodeSamples), recordMs: recordSamples.length > 0 ? median(recordSamples) : undefined } : undefined,
  };
  model.dispose();
  backend.dispose();
  if (!values['no-hf'] && values.backend === 'webgpu' && variant === 'dense') {
    const hf = spawnSync('python3', [path.join('bench', 'hf_e2e.py'), configPath, '--prompt', String(promptTokens), '--new', String(newTokens), '--modes', values['hf-modes']], { encoding: 'utf8' });
    if (hf.status === 0) row.hf = JSON.parse(hf.stdout.trim().split('\n').at(-1)!);
    else console.log(`(no transformers baseline for ${name}: ${(hf.stderr || hf.error?.message || '').trim().split('\n').at(-1)})`);
  }
  row.weightBytesF16 = weightBytes;
  if (copyGBs !== undefined) {
    // Decode's floor: every weight byte read once a step at the copy ceiling.
    row.copyCeilingGBs = copyGBs;
    row.floorMs = weightBytes / copyGBs / 1e6;
    row.floorShare = (row.floorMs as number) / (1000 / (row.decodeTokensPerS as number));
  }
  results.push(row);
  const sampledRate = row.sampledDecodeTokensPerS as number | undefined;
  if (model.padding > 0) console.log(`  ${(model.padding / 1e6).toFixed(1)}M zero values pad stacked groups of different ranks (in the weight bytes)`);
  console.log(`${name}: prefill ${(row.prefillMs as number).toFixed(2)} ms, decode ${(row.decodeTokensPerS as number).toFixed(1)} tok/s greedy${sampledRate ? `, ${sampledRate.toFixed(1)} tok/s top-p sampling` : ''} (load ${(loadMs / 1000).toFixed(1)} s)`);
  const step = row.decodeStep as { dispatches: number; submits: number; totalMs: number; recordMs?: number } | undefined;
  console.log(`  KV cache in ${backend.kvPrecision}: ${((row.kvBytesPerPosition as number) / 2 ** 10).toFixed(0)} KiB a position`);
  if (step) console.log(`  decode step: ${step.totalMs.toFixed(2)} ms, ${step.dispatches} dispatches in ${step.submits} submit${step.submits === 1 ? '' : 's'}${step.recordMs !== undefined ? `, recorded and submitted in ${step.recordMs.toFixed(3)} ms of CPU` : ''}`);
  if (row.floorMs !== undefined) console.log(`  bandwidth floor: ${(weightBytes / 1e9).toFixed(2)} GB at ${(copyGBs! / 1000).toFixed(2)} TB/s = ${(row.floorMs as number).toFixed(2)} ms a step; decode at ${((row.floorShare as number) * 100).toFixed(0)}% of it`);
  if (skipped) {
    row.skipped = values.skip;
    console.log(`  (greedy steps without the kernels matching ${values.skip}: their tokens are meaningless)`);
  }
  if (timelines.length > 0) {
    row.timeline = timelines;
    console.log(`  GPU timeline per run: ${timelines.map((t) => `busy ${t.busyMs.toFixed(2)} + idle ${t.idleMs.toFixed(2)} ms a step (longest gap ${t.longestGapMs.toFixed(1)} ms)`).join('; ')}`);
  }
}

console.log(`\nbatch 1, prompt ${promptTokens} tokens, ${newTokens} new tokens; ${results[0]?.backend}`);
console.log('| model | params | weights GB (f16) | prefill ms | decode tok/s | % of floor | HF eager prefill ms | HF eager tok/s | HF static prefill ms | HF static tok/s |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of results) {
  const hf = (r.hf as { results?: Record<string, { prefill_ms: number; decode_tokens_per_s: number }> } | undefined)?.results ?? {};
  const cell = (mode: string, key: 'prefill_ms' | 'decode_tokens_per_s') => hf[mode]?.[key]?.toFixed(key === 'prefill_ms' ? 2 : 1) ?? '–';
  console.log(`| ${r.model} | ${((r.parameters as number) / 1e9).toFixed(2)}B | ${((r.weightBytesF16 as number) / 1e9).toFixed(2)} | ${(r.prefillMs as number).toFixed(2)} | ${(r.decodeTokensPerS as number).toFixed(1)} | ${r.floorShare === undefined ? '–' : `${((r.floorShare as number) * 100).toFixed(0)}%`} | ${cell('eager', 'prefill_ms')} | ${cell('eager', 'decode_tokens_per_s')} | ${cell('static', 'prefill_ms')} | ${cell('static', 'decode_tokens_per_s')} |`);
}
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), benchmark: 'e2e', promptTokens, newTokens, results }, null, 2) + '\n');
console.log(`wrote ${values.out}`);
