// CPU decode benchmark: greedy generation of N tokens after a short prompt, repeated; prints a
// table of prefill time and decode tokens/s (median and best) and writes the numbers as JSON.
//
//   npx tsx bench/cpu-decode.ts [--model DIR] [--tokens 256] [--repeats 7] [--out FILE]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL_DIR, loadEngine } from '../engine/load.ts';
import { GREEDY } from '../engine/sampler.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: DEFAULT_MODEL_DIR },
    prompt: { type: 'string', default: 'Once upon a time' },
    tokens: { type: 'string', default: '256' },
    repeats: { type: 'string', default: '7' },
    out: { type: 'string', default: 'bench/out/cpu-decode.json' },
  },
  strict: true,
});
const tokens = Number(values.tokens);
const repeats = Number(values.repeats);

const engine = await loadEngine(values.model, { backend: 'cpu' });
const { generator, directory, model } = engine;
const promptIds = directory.tokenizer.encode(values.prompt);
const run = () => generator.generate({ promptIds, maxTokens: tokens, sampling: { ...GREEDY, seed: 0 }, ignoreEos: true });

await run(); // warm-up: lets V8 optimise the kernels before timing
const runs = [];
for (let i = 0; i < repeats; i++) {
  const result = await run();
  runs.push({ prefillMs: result.timings.prefillMs, decodeTokensPerS: result.timings.decodeTokensPerS, generated: result.ids.length });
}
const sorted = runs.map((r) => r.decodeTokensPerS).sort((a, b) => a - b);
const median = (xs: number[]) => xs[Math.floor(xs.length / 2)];
const summary = {
  date: new Date().toISOString(),
  benchmark: 'cpu-decode',
  model: path.relative(process.cwd(), directory.path) || directory.path,
  parameters: model.parameters,
  backend: model.backend.description,
  cpu: os.cpus()[0]?.model?.trim(),
  cores: os.cpus().length,
  node: process.version,
  promptTokens: promptIds.length,
  generatedTokens: tokens,
  repeats,
  decodeTokensPerS: { median: median(sorted), best: sorted[sorted.length - 1], worst: sorted[0] },
  prefillMs: { median: median(runs.map((r) => r.prefillMs).sort((a, b) => a - b)) },
  runs,
};

const row = (cells: string[]) => `| ${cells.join(' | ')} |`;
console.log(row(['model', 'prompt tokens', 'generated', 'prefill ms (median)', 'decode tok/s (median)', 'decode tok/s (best)']));
console.log(row(['---', '---:', '---:', '---:', '---:', '---:']));
console.log(row([summary.model, String(promptIds.length), String(tokens), summary.prefillMs.median.toFixed(2),
  summary.decodeTokensPerS.median.toFixed(0), summary.decodeTokensPerS.best.toFixed(0)]));
console.log(`${summary.backend}; ${summary.cores} cores; node ${summary.node}`);
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify(summary, null, 2) + '\n');
console.log(`wrote ${values.out}`);
