// Perplexity of models on text the first (dense) model wrote: the quality measure for block
// low-rank compression. The held-out text is sampled from the first model (temperature 1, seeded),
// then every model scores it token by token on the CPU backend.
//
//   npx tsx bench/perplexity.ts DENSE_DIR [OTHER_DIR ...] [--tokens 512] [--seed 1] [--prompt TEXT]
import { GREEDY } from '../engine/sampler.ts';
import { parseArgs } from 'node:util';
import { Generator } from '../engine/generate.ts';
import { CpuBackend } from '../kernels/cpu/backend.ts';
import { loadModel } from '../models/load.ts';
import { readModelDirectory } from '../weights/model-directory.ts';

const { values, positionals } = parseArgs({
  options: { tokens: { type: 'string', default: '512' }, seed: { type: 'string', default: '1' }, prompt: { type: 'string', default: 'Once upon a time' } },
  allowPositionals: true,
  strict: true,
});
if (positionals.length < 1) throw new Error('usage: bench/perplexity.ts DENSE_DIR [OTHER_DIR ...]');

const reference = readModelDirectory(positionals[0]);
const promptIds = reference.tokenizer.encode(values.prompt);
const generator = new Generator(loadModel(reference, new CpuBackend()), reference.tokenizer, reference.eosTokenIds);
const sample = await generator.generate({
  promptIds, maxTokens: Number(values.tokens),
  sampling: { ...GREEDY, temperature: 1, seed: Number(values.seed) }, ignoreEos: true,
});
const text = [...promptIds, ...sample.ids];
console.log(`held-out text: ${text.length} tokens sampled from ${positionals[0]} (T 1, seed ${values.seed})`);

console.log('| model | parameters | perplexity | vs dense |');
console.log('| --- | ---: | ---: | ---: |');
let densePerplexity = 0;
for (const directory of positionals) {
  const model = loadModel(readModelDirectory(directory), new CpuBackend());
  const cache = model.createCache(text.length);
  let nll = 0;
  for (let p = 0; p + 1 < text.length; p++) {
    const logits = await model.forward(cache, Int32Array.of(text[p]), p);
    let max = -Infinity;
    for (const l of logits) max = Math.max(max, l);
    let sum = 0;
    for (const l of logits) sum += Math.exp(l - max);
    nll -= logits[text[p + 1]] - max - Math.log(sum);
  }
  cache.release();
  const perplexity = Math.exp(nll / (text.length - 1));
  if (directory === positionals[0]) densePerplexity = perplexity;
  console.log(`| ${directory} | ${model.parameters.toLocaleString('en-US')} | ${perplexity.toFixed(3)} | ${(perplexity / densePerplexity).toFixed(3)}x |`);
}
