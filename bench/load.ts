// Load test of the HTTP server: N concurrent streaming clients on loopback for T seconds each
// level, against `blr serve`'s app started in this process. Reports aggregate generated tokens/s,
// time to first token (p50/p99), errors, and resident memory before and after; writes JSON.
//
//   npx tsx bench/load.ts [--model DIR | --random llama-3.2-1b|llama-2-7b|gpt2] [--backend auto|cpu|webgpu]
//                         [--clients 1,8,32] [--seconds 20] [--max-tokens 128] [--prompt-tokens 64]
//                         [--max-batch 32] [--ctx 1024] [--temperature 0.8] [--idle-seconds 5]
//                         [--logprobs N] [--client-process] [--heap-snapshots DIR] [--out bench/out/load.json]
//
// --random serves a full-size model of that config with random weights made on the device (no
// download) and the matching tokenizer from tests/fixtures; prompts are random token ids. Every
// request streams with ignore_eos, so each generates exactly --max-tokens tokens, counted from the
// usage chunk. --logprobs N asks for each token's logprob and N alternatives. --client-process runs
// the clients in a child process (bench/load-client.ts) instead of on the server's event loop.
//
// Memory: the baseline is taken after a warm-up at the largest
// concurrency and a full collection; after the last level the server idles --idle-seconds with
// no request (as a server does between bursts), then the same collection, then the same figures.
// --heap-snapshots DIR writes V8 heap snapshots at both points (bench/heap-summary.ts compares them).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { DEFAULT_MODEL_DIR } from '../engine/load.ts';
import { nativeMemory } from '../engine/native.ts';
import { Scheduler } from '../engine/scheduler.ts';
import { createBackend, isBackendKind } from '../kernels/select.ts';
import { loadRandomModel } from '../models/random.ts';
import { buildApp, type ServedModel } from '../server/app.ts';
import { ChatTemplate } from '../server/chat.ts';
import { loadServedModel } from '../server/model.ts';
import { TextTokenizer } from '../weights/tokenizer.ts';
import { childClients, LoadClients, type Clients } from './load-client.ts';
import { collectGarbage, describeSnapshot, memorySnapshot } from './memory.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    random: { type: 'string' },
    backend: { type: 'string', default: 'auto' },
    clients: { type: 'string', default: '1,8,32' },
    seconds: { type: 'string', default: '20' },
    'max-tokens': { type: 'string', default: '128' },
    'prompt-tokens': { type: 'string', default: '64' },
    'max-batch': { type: 'string', default: '32' },
    ctx: { type: 'string', default: '1024' },
    temperature: { type: 'string', default: '0.8' },
    'idle-seconds': { type: 'string', default: '5' },
    'heap-snapshots': { type: 'string' },
    /** The clients in a child process (bench/load-client.ts), off the server's event loop. */
    'client-process': { type: 'boolean' },
    /** Ask for the logprobs of each generated token and this many alternatives (0–5; unset: none). */
    logprobs: { type: 'string' },
    out: { type: 'string', default: 'bench/out/load.json' },
  },
  strict: true,
});
if (!isBackendKind(values.backend)) throw new Error(`--backend must be auto, cpu or webgpu, got ${values.backend}`);
const levels = values.clients.split(',').map(Number);
const seconds = Number(values.seconds);
const maxTokens = Number(values['max-tokens']);
const promptTokens = Number(values['prompt-tokens']);
const maxBatch = Number(values['max-batch']);
const contextLength = Number(values.ctx);
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

const TOKENIZERS: Record<string, string> = { 'llama-3.2-1b': 'llama3', 'llama-2-7b': 'llama2', gpt2: 'gpt2' };

async function randomServedModel(name: string): Promise<ServedModel> {
  const config = JSON.parse(fs.readFileSync(path.join(ROOT, 'bench', 'configs', `${name}.json`), 'utf8'));
  const tokenizerName = TOKENIZERS[name];
  if (!tokenizerName) throw new Error(`--random takes ${Object.keys(TOKENIZERS).join(', ')}, got ${name}`);
  const read = (file: string) => JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(ROOT, 'tests', 'fixtures', 'tokenizers', file))).toString('utf8'));
  const tokenizer = new TextTokenizer(read(`${tokenizerName}.tokenizer.json.gz`), {});
  const backend = await createBackend(values.backend as 'auto', (notice) => console.error(notice));
  const model = loadRandomModel(config, backend, { maxSequences: maxBatch, maxStepTokens: Math.max(256, 2 * maxBatch) });
  const eos = [config.eos_token_id].flat().filter((id: unknown): id is number => typeof id === 'number');
  const context = Math.min(contextLength, model.config.maxPositions);
  return {
    name, tokenizer, contextLength: context, created: Math.floor(Date.now() / 1000),
    chatTemplate: new ChatTemplate({}),
    scheduler: new Scheduler(model, tokenizer, eos, { maxBatch, maxQueue: 1024, contextLength: context }),
  };
}

const modelPromise = values.random
  ? randomServedModel(values.random)
  : loadServedModel(values.model ?? DEFAULT_MODEL_DIR, { backend: values.backend, maxBatch, maxQueue: 1024, contextLength, name: 'model' });
const served = await modelPromise;
const app = buildApp({ model: modelPromise, logger: false });
const base = await app.listen({ host: '127.0.0.1', port: 0 });
const vocabSize = served.scheduler.model.config.vocabSize;
console.log(`# serving ${served.name} on ${served.scheduler.model.backend.description}; max batch ${maxBatch}, context ${served.contextLength}, ${served.scheduler.allocator.total} KV blocks${values.logprobs !== undefined ? `; requests ask for logprobs ${values.logprobs}` : ''}`);

const percentile = (values: number[], p: number) => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};

const clientOptions = {
  base, model: served.name, promptTokens, vocabSize, maxTokens, temperature: Number(values.temperature),
  logprobs: values.logprobs !== undefined ? Number(values.logprobs) : undefined,
};
const clients: Clients = values['client-process'] ? await childClients(clientOptions) : new LoadClients(clientOptions);
// Warm-up: compile pipelines, allocate scratch; at the largest concurrency, so the scratch buffers
// have grown to their high-water marks before the baseline is taken: the figures after the run then
// show what a run leaves behind. Both are taken the same way: after --idle-seconds idle (when the
// scheduler has collected and released what its work freed), then after full collections.
await clients.warmUp(Math.max(...levels));
const idle = () => new Promise((resolve) => setTimeout(resolve, Number(values['idle-seconds']) * 1000));
await idle();
console.log(`collections before the baseline, JS heap in use after each: ${(await collectGarbage()).join(' → ')} MB`);
const memoryBefore = memorySnapshot();
const writeHeapSnapshot = (name: string) => {
  if (!values['heap-snapshots']) return;
  fs.mkdirSync(values['heap-snapshots'], { recursive: true });
  console.log(`wrote ${v8.writeHeapSnapshot(path.join(values['heap-snapshots'], `${name}.heapsnapshot`))}`);
};
writeHeapSnapshot('baseline');
console.log(`baseline: ${describeSnapshot(memoryBefore)}`);
const results = [];
console.log('clients | requests | errors | tokens | tok/s  | per stream tok/s | TTFT p50 ms | TTFT p99 ms | steps | rows/step | ms/step: record, wait, accept | collections (time) | RSS MB');
for (const level of levels) {
  const stepsBefore = { ...served.scheduler.stats };
  const collectionsBefore = { ...served.scheduler.collector.stats };
  const { outcomes, wallS } = await clients.level(level, seconds);
  const tokens = outcomes.reduce((n, o) => n + o.tokens, 0);
  const ttft = outcomes.filter((o) => o.ok).map((o) => o.firstTokenMs);
  const stats = served.scheduler.stats;
  const steps = stats.steps - stepsBefore.steps;
  const perStep = (key: 'recordMs' | 'waitMs' | 'acceptMs') => (stats[key] - stepsBefore[key]) / Math.max(1, steps);
  const row = {
    clients: level, requests: outcomes.length, errors: outcomes.filter((o) => !o.ok).length, tokens, seconds: wallS,
    tokensPerS: tokens / wallS, perStreamTokensPerS: tokens / wallS / level,
    ttftP50Ms: percentile(ttft, 50), ttftP99Ms: percentile(ttft, 99),
    steps, rowsPerStep: (stats.rows - stepsBefore.rows) / Math.max(1, steps),
    recordMsPerStep: perStep('recordMs'), waitMsPerStep: perStep('waitMs'), acceptMsPerStep: perStep('acceptMs'),
    // Full JS collections the scheduler ran (engine/collector.ts) and the share of the time they took.
    collections: served.scheduler.collector.stats.collections - collectionsBefore.collections,
    collectionShare: (served.scheduler.collector.stats.ms - collectionsBefore.ms) / (wallS * 1000),
    firstError: outcomes.find((o) => !o.ok)?.error,
    rssMB: memorySnapshot().rssMB,
  };
  results.push(row);
  console.log(`${String(level).padStart(7)} | ${String(row.requests).padStart(8)} | ${String(row.errors).padStart(6)} | ${String(tokens).padStart(6)} | ${row.tokensPerS.toFixed(1).padStart(6)} | ${row.perStreamTokensPerS.toFixed(1).padStart(16)} | ${row.ttftP50Ms.toFixed(1).padStart(11)} | ${row.ttftP99Ms.toFixed(1).padStart(11)} | ${String(steps).padStart(5)} | ${row.rowsPerStep.toFixed(1).padStart(9)} | ${row.recordMsPerStep.toFixed(2)}, ${row.waitMsPerStep.toFixed(2)}, ${row.acceptMsPerStep.toFixed(2)} | ${row.collections} (${(100 * row.collectionShare).toFixed(1)}%) | ${row.rssMB}`);
  if (row.firstError) console.log(`  first error: ${row.firstError}`);
}
// Idle (sockets close, the server has nothing to do), then collect, as before the first level.
await idle();
console.log(`collections after the run, JS heap in use after each: ${(await collectGarbage()).join(' → ')} MB`);
const memoryAfter = memorySnapshot();
writeHeapSnapshot('after');
const blocksUsedAfter = served.scheduler.allocator.used;
const single = results.find((r) => r.clients === 1);
const most = results.reduce((a, b) => (b.clients > a.clients ? b : a));
console.log(`memory before: ${describeSnapshot(memoryBefore)}`);
console.log(`memory after:  ${describeSnapshot(memoryAfter)}; KV blocks in use: ${blocksUsedAfter}`);
console.log(`the idle scheduler released freed memory ${served.scheduler.collector.stats.releases} times${nativeMemory() ? '' : ' (no native memory helper: engine/native/build.ts did not build it)'}`);
if (single && most.clients > 1) console.log(`aggregate at ${most.clients} clients: ${(most.tokensPerS / single.tokensPerS).toFixed(2)}x one stream`);
clients.close();
await app.close();
await served.scheduler.close();
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({
  date: new Date().toISOString(), model: served.name, backend: served.scheduler.model.backend.description, maxBatch, contextLength: served.contextLength,
  maxTokens, promptTokens, temperature: Number(values.temperature), logprobs: values.logprobs === undefined ? null : Number(values.logprobs), seconds, levels: results,
  memory: { before: memoryBefore, after: memoryAfter, idleSeconds: Number(values['idle-seconds']), kvBlocksUsedAfter: blocksUsedAfter },
}, null, 2));
console.log(`wrote ${values.out}`);
