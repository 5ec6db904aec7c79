// Decode step time against batch size: S sequences (each with a prompt of P tokens already in the
// paged KV cache) take one token each per step, as the scheduler runs them; full-size model, random
// weights made on the device. --profile prints the GPU time per kernel of one step (one compute
// pass per dispatch, so its step times are longer).
//
//   npx tsx bench/batch-step.ts [--model llama-3.2-1b|llama-2-7b|gpt2] [--batches 1,8,32] [--prompt 64]
//                               [--steps 40] [--temperature 0] [--profile] [--out bench/out/batch-step.json]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { GREEDY } from '../engine/sampler.ts';
import { createBackend } from '../kernels/select.ts';
import { WebGpuBackend } from '../kernels/webgpu/backend.ts';
import type { StepEntry } from '../models/model.ts';
import { loadRandomModel } from '../models/random.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'llama-3.2-1b' },
    batches: { type: 'string', default: '1,8,32' },
    prompt: { type: 'string', default: '64' },
    steps: { type: 'string', default: '40' },
    temperature: { type: 'string', default: '0' },
    profile: { type: 'boolean' },
    out: { type: 'string', default: 'bench/out/batch-step.json' },
  },
  strict: true,
});
const batches = values.batches.split(',').map(Number);
const promptTokens = Number(values.prompt);
const steps = Number(values.steps);
const temperature = Number(values.temperature);
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const config = JSON.parse(fs.readFileSync(path.join(ROOT, 'bench', 'configs', `${values.model}.json`), 'utf8'));
const backend = values.profile ? await WebGpuBackend.create({ allowSoftware: true, profile: true }) : await createBackend('webgpu');
const most = Math.max(...batches);
const model = loadRandomModel(config, backend, { maxSequences: most, maxStepTokens: Math.max(256, promptTokens) });
const positions = promptTokens + steps + 1;
const perSequence = Math.ceil(positions / model.blockSize);
const cache = model.createKVCache(most * perSequence, most);
const sequences = Array.from({ length: most }, (_, s) => ({ slot: s, blockTable: Int32Array.from({ length: perSequence }, (_, i) => s * perSequence + i) }));
const params = { ...GREEDY, temperature, draw: 0.5 };
console.log(`# ${values.model} on ${backend.description}`);
console.log('batch | ms/step | tok/s   | per sequence tok/s');
const results = [];
for (const batch of batches) {
  // Prompts, one sequence at a time, then decode steps over all of them together.
  for (let s = 0; s < batch; s++) {
    await model.step(cache, [{ sequence: sequences[s], tokens: Int32Array.from({ length: promptTokens }, (_, i) => (7 * i + s) % 1000), startPosition: 0, sample: params }]);
  }
  const decode = async (step: number) => {
    const entries: StepEntry[] = sequences.slice(0, batch).map((sequence, s) => ({ sequence, tokens: Int32Array.of((step * 31 + s) % 1000), startPosition: promptTokens + step, sample: params }));
    await model.step(cache, entries);
  };
  await decode(0);
  if (values.profile && backend instanceof WebGpuBackend) backend.takeProfile();
  const start = performance.now();
  for (let step = 1; step <= steps; step++) await decode(step);
  const ms = (performance.now() - start) / steps;
  results.push({ batch, msPerStep: ms, tokensPerS: (1000 * batch) / ms });
  console.log(`${String(batch).padStart(5)} | ${ms.toFixed(2).padStart(7)} | ${((1000 * batch) / ms).toFixed(0).padStart(7)} | ${(1000 / ms).toFixed(0)}`);
  if (values.profile && backend instanceof WebGpuBackend) {
    const rows = [...backend.takeProfile()].sort((a, b) => b[1].ms - a[1].ms);
    for (const [kernel, p] of rows.slice(0, 12)) console.log(`    ${kernel.padEnd(24)} ${(p.calls / steps).toFixed(0).padStart(4)} calls  ${(p.ms / steps).toFixed(3)} ms/step`);
  }
}
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), model: values.model, backend: backend.description, promptTokens, temperature, results }, null, 2));
