// What recording a dispatch costs the CPU: a decode step records one dispatch per kernel call
// (100–330 of them), and where the model is small the GPU finishes a step before the CPU has
// recorded the next (bench/e2e.ts prints both). This times, on the CPU, `calls` dispatches of a
// trivial kernel recorded into one pass and submitted, in several ways of binding them:
//   - bindings: how many storage buffers the kernel binds (Dawn tracks each one's usage per dispatch);
//   - offsets: the parameters bound at a dynamic offset (as the backend does: a Uint32Array with
//     start and length, or a plain array), or at a fixed one;
//   - pipeline: setPipeline before every dispatch, or once.
// Phases: encoding (setPipeline/setBindGroup/dispatchWorkgroups), then end + finish + submit.
//
//   npx tsx bench/record-cost.ts [--calls 256] [--rounds 9] [--out FILE]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openGpu } from '../kernels/webgpu/gpu.ts';

const { values } = parseArgs({ options: {
  calls: { type: 'string', default: '256' }, rounds: { type: 'string', default: '9' }, out: { type: 'string', default: 'bench/out/record-cost.json' },
}, strict: true });
const calls = Number(values.calls);
const rounds = Number(values.rounds);
const gpu = await openGpu({ allowSoftware: true });
const device = gpu.device;
console.log(`device: ${gpu.description}`);

/** A kernel binding the parameters and `storage` buffers, the last one written. */
function kernel(storage: number, dynamic: boolean): { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout } {
  const reads = Array.from({ length: storage - 1 }, (_, i) => `@group(0) @binding(${i + 1}) var<storage, read> in${i}: array<f32>;`).join('\n');
  const sum = Array.from({ length: storage - 1 }, (_, i) => `in${i}[0]`).join(' + ');
  const module = device.createShaderModule({ code: `
struct Params { count: u32 }
@group(0) @binding(0) var<uniform> params: Params;
${reads}
@group(0) @binding(${storage}) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(32)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < params.count) { out[id.x] = ${sum || '0.0'}; }
}` });
  const layout = device.createBindGroupLayout({ entries: [
    { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: dynamic } },
    ...Array.from({ length: storage }, (_, i) => ({ binding: i + 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: (i === storage - 1 ? 'storage' : 'read-only-storage') as GPUBufferBindingType } })),
  ] });
  const pipeline = device.createComputePipeline({ layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }), compute: { module, entryPoint: 'main' } });
  return { pipeline, layout };
}

const uniform = device.createBuffer({ size: 256 * calls, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(uniform, 0, new Uint32Array(64 * calls).fill(1));
const buffers = Array.from({ length: 16 }, () => device.createBuffer({ size: 1024, usage: GPUBufferUsage.STORAGE }));

interface Row { case: string; encodeUs: number; submitUs: number }
const rows: Row[] = [];
for (const storage of [2, 5, 9]) {
  for (const offsetKind of ['typed', 'array', 'static'] as const) {
    const dynamic = offsetKind !== 'static';
    const { pipeline, layout } = kernel(storage, dynamic);
    // Two pipelines alike, so "pipeline every dispatch" really switches.
    const other = kernel(storage, dynamic).pipeline;
    // Dispatch i writes buffer i % 2 ^ 1 and reads the others: a chain, as in a step.
    const groups = Array.from({ length: calls }, (_, i) => device.createBindGroup({ layout, entries: [
      { binding: 0, resource: { buffer: uniform, offset: dynamic ? 0 : 256 * i, size: 16 } },
      ...Array.from({ length: storage }, (_, b) => ({ binding: b + 1, resource: { buffer: buffers[b === storage - 1 ? (i % 2) : 2 + ((b + i) % 14)] } })),
    ] }));
    for (const switching of [false, true]) {
      const offsets = new Uint32Array(1);
      const offsetList = [0];
      const encode: number[] = [];
      const submit: number[] = [];
      for (let round = 0; round < rounds + 2; round++) {
        const t0 = performance.now();
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        for (let i = 0; i < calls; i++) {
          if (switching) pass.setPipeline(i % 2 ? other : pipeline);
          if (offsetKind === 'typed') {
            offsets[0] = 256 * i;
            pass.setBindGroup(0, groups[i], offsets, 0, 1);
          } else if (offsetKind === 'array') {
            offsetList[0] = 256 * i;
            pass.setBindGroup(0, groups[i], offsetList);
          } else {
            pass.setBindGroup(0, groups[i]);
          }
          pass.dispatchWorkgroups(1);
        }
        const t1 = performance.now();
        pass.end();
        device.queue.submit([encoder.finish()]);
        const t2 = performance.now();
        await device.queue.onSubmittedWorkDone();
        if (round >= 2) {
          encode.push(((t1 - t0) * 1000) / calls);
          submit.push(((t2 - t1) * 1000) / calls);
        }
      }
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
      rows.push({ case: `${storage} storage buffers, ${{ typed: 'dynamic offset (Uint32Array, start, length)', array: 'dynamic offset (array)', static: 'static offset' }[offsetKind]}, ${switching ? 'pipeline every dispatch' : 'one pipeline'}`, encodeUs: median(encode), submitUs: median(submit) });
    }
  }
}

console.log(`\n${calls} dispatches recorded and submitted, CPU µs per dispatch (median of ${rounds}):`);
console.log('| case | encode | end + finish + submit | total |');
console.log('| --- | ---: | ---: | ---: |');
for (const r of rows) console.log(`| ${r.case} | ${r.encodeUs.toFixed(2)} | ${r.submitUs.toFixed(2)} | ${(r.encodeUs + r.submitUs).toFixed(2)} |`);
fs.mkdirSync(path.dirname(values.out), { recursive: true });
fs.writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), device: gpu.description, calls, rounds, rows }, null, 2) + '\n');
process.exit(0);
