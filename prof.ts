import { WebGpuBackend } from './kernels/webgpu/backend.ts';
import { loadRandomModel } from './models/random.ts';
const backend = await WebGpuBackend.create({ allowSoftware: true });
const config = { model_type: 'llama', vocab_size: 1000, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 32, num_attention_heads: 4, num_key_value_heads: 4, max_position_embeddings: 512 };
const model = loadRandomModel(config, backend, { maxStepTokens: 16 });
const cache = model.createCache(300);
const read = backend.read.bind(backend);
let recordMs = 0, stepStart = 0;
(backend as any).read = (t: any, n: number) => { recordMs += performance.now() - stepStart; return read(t, n); };
await model.forward(cache, Int32Array.of(1), 0);
for (const rep of [0, 1]) {
  recordMs = 0;
  const t0 = performance.now();
  for (let p = 1; p < 101; p++) { stepStart = performance.now(); await model.forward(cache, Int32Array.of(5), p); }
  const total = performance.now() - t0;
  console.log(`per step: total ${(total / 100).toFixed(3)} ms, JS recording ${(recordMs / 100).toFixed(3)} ms`);
}
process.exit(0);
