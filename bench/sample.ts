// What sampling a token on the GPU costs (wgsl/sample.wgsl), by vocabulary, logit distribution and
// sampling parameters: the GPU time of one `sample` dispatch (one row), from timestamp queries.
//
// Logits are random normal: "flat" (standard deviation 1, as a model with random weights gives:
// every token is a candidate) and "peaked" (standard deviation 4: a few tokens hold most of the
// mass, as a trained model's usually do). Token counts mark every 37th token as in the prompt and
// every 101st as output once, so penalties have work to do. Each round records `--calls` dispatches
// (draws spread over [0, 1)) in one submit and reads them; the table gives the median over rounds
// of the mean µs a call. The copy ceiling's 2 s of copying warms the GPU's clocks first.
//
//   npx tsx bench/sample.ts [--vocab 32000,50257,128256] [--calls 64] [--rounds 9] [--out FILE]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { flagStride, type SampleParams } from '../kernels/backend.ts';
import { WebGpuBackend } from '../kernels/webgpu/backend.ts';
import { Rng } from '../engine/rng.ts';
import { GREEDY } from '../engine/sampler.ts';
import { copyCeilingGBs } from './copy-ceiling.ts';
import { median } from './timing.ts';

const { values } = parseArgs({ options: {
  vocab: { type: 'string', default: '32000,50257,128256' }, calls: { type: 'string', default: '64' }, rounds: { type: 'string', default: '9' },
  out: { type: 'string', default: 'bench/out/sample.json' },
}, strict: true });
const vocabs = values.vocab.split(',').map(Number);
if (!vocabs.every((v) => Number.isInteger(v) && v >= 1)) throw new Error(`--vocab takes token counts, got ${values.vocab}`);
const calls = Number(values.calls);
const rounds = Number(values.rounds);
if (!(Number.isInteger(calls) && calls >= 1 && Number.isInteger(rounds) && rounds >= 1)) throw new Error('--calls and --rounds take counts from 1');

const backend = await WebGpuBackend.create({ allowSoftware: true, profile: true });
console.log(`device: ${backend.description}`);

const CASES: [string, Omit<SampleParams, 'draw'>][] = [
  ['greedy', { ...GREEDY }],
  ['T 1', { ...GREEDY, temperature: 1 }],
  ['T 0.8, top-p 0.95, penalty 1.1', { ...GREEDY, temperature: 0.8, topP: 0.95, repetitionPenalty: 1.1 }],
  ['T 0.7, top-k 40', { ...GREEDY, temperature: 0.7, topK: 40 }],
  ['T 1, min-p 0.05, presence 0.5', { ...GREEDY, temperature: 1, minP: 0.05, presencePenalty: 0.5 }],
];

/** Standard normal values times `scale`, from a fixed seed. */
function normals(count: number, scale: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: count }, () => scale * rng.normal());
}

const rows: { vocab: number; logits: string; case: string; us: number }[] = [];
await copyCeilingGBs(backend.gpu.device);
for (const vocab of vocabs) {
  const stride = flagStride(vocab);
  const flags = Int32Array.from({ length: stride }, (_, i) => (i < vocab ? (i % 37 === 0 ? 1 : 0) + (i % 101 === 0 ? 2 : 0) : 0));
  const flagTensor = backend.allocateIndices(stride);
  const out = backend.allocateIndices(1);
  for (const [distribution, scale] of [['flat', 1], ['peaked', 4]] as const) {
    const logits = backend.upload(normals(vocab, scale, vocab + scale));
    for (const [label, options] of CASES) {
      const run = async () => {
        backend.uploadIndices(flagTensor, flags); // the kernel counts each pick
        for (let i = 0; i < calls; i++) {
          backend.sample(out, logits, vocab, [{ row: 0, params: { ...options, draw: (i + 0.5) / calls }, flagsRow: 0 }], flagTensor);
        }
        await backend.readIndices(out, 1);
        const kernel = backend.takeProfile().get('sample');
        if (!kernel) throw new Error('no sample dispatch was timed');
        return (kernel.ms * 1000) / kernel.calls;
      };
      await run(); // compile and warm
      const samples: number[] = [];
      for (let r = 0; r < rounds; r++) samples.push(await run());
      rows.push({ vocab, logits: distribution, case: label, us: median(samples) });
    }
  }
}

console.log('\n| vocabulary | logits | sampling | µs a token |');
console.log('| ---: | --- | --- | ---: |');
for (const r of rows) console.log(`| ${r.vocab} | ${r.logits} | ${r.case} | ${r.us.toFixed(1)} |`);
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), device: backend.description, calls, rounds, rows }, null, 2));
console.log(`\nwrote ${values.out}`);
backend.dispose();
