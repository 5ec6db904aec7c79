// The CPU ops (the CPU backend, and the references GPU kernels will be tested against) against
// straightforward float64 math, on random inputs of awkward sizes.
import { describe, expect, it } from 'vitest';
import { Rng } from '../engine/rng.ts';
import { CpuBackend } from '../kernels/cpu/backend.ts';
import * as ops from '../kernels/cpu/ops.ts';
import { ropeInverseFrequencies, parseModelConfig } from '../models/config.ts';

const rng = new Rng(1234);
const random = (n: number, scale = 1) => Float32Array.from({ length: n }, () => scale * rng.normal());

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance = 2e-5) {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]) / Math.max(1, Math.abs(expected[i])));
  expect(worst).toBeLessThan(tolerance);
}

describe('cpu ops against float64 math', () => {
  it.each([[1, 1, 1], [1, 67, 13], [3, 5, 7], [4, 33, 9], [9, 130, 31], [13, 7, 65]])('matmul rows=%i in=%i out=%i with and without bias, and accumulating', (rows, inFeatures, outFeatures) => {
    const x = random(rows * inFeatures);
    const w = random(outFeatures * inFeatures);
    const b = random(outFeatures);
    const residual = random(rows * outFeatures);
    for (const [bias, accumulate] of [[null, false], [b, false], [b, true]] as const) {
      const out = accumulate ? residual.slice() : new Float32Array(rows * outFeatures);
      ops.matmul(out, x, w, bias, rows, inFeatures, outFeatures, accumulate);
      const expected = new Float64Array(rows * outFeatures);
      for (let r = 0; r < rows; r++) {
        for (let o = 0; o < outFeatures; o++) {
          let sum = (bias ? bias[o] : 0) + (accumulate ? residual[r * outFeatures + o] : 0);
          for (let i = 0; i < inFeatures; i++) sum += x[r * inFeatures + i] * w[o * inFeatures + i];
          expected[r * outFeatures + o] = sum;
        }
      }
      expectClose(out, expected);
    }
  });

  it('matmulSplit writes each projection of a concatenated matrix to its own tensor', async () => {
    const be = new CpuBackend();
    const rows = 3, inFeatures = 11, widths = [5, 2, 7];
    const x = random(rows * inFeatures), w = random(14 * inFeatures), bias = random(14);
    const outs = widths.map((width) => be.allocate(rows * width));
    be.matmulSplit(outs, be.upload(x), be.uploadMatrix(w, 14, inFeatures), be.upload(bias), rows, inFeatures, widths);
    let first = 0;
    for (const [i, width] of widths.entries()) {
      const expected = new Float32Array(rows * width);
      ops.matmul(expected, x, w.subarray(first * inFeatures, (first + width) * inFeatures), bias.subarray(first, first + width), rows, inFeatures, width);
      expect(Array.from(await be.read(outs[i], rows * width))).toEqual(Array.from(expected));
      first += width;
    }
  });

  it('rmsNorm and layerNorm', () => {
    const rows = 3, width = 37, eps = 1e-5;
    const x = random(rows * width, 3), w = random(width), b = random(width);
    const rms = new Float32Array(rows * width), ln = new Float32Array(rows * width);
    ops.rmsNorm(rms, x, w, rows, width, eps);
    ops.layerNorm(ln, x, w, b, rows, width, eps);
    const expectedRms: number[] = [], expectedLn: number[] = [];
    for (let r = 0; r < rows; r++) {
      const row = Array.from(x.subarray(r * width, (r + 1) * width));
      const meanSquare = row.reduce((s, v) => s + v * v, 0) / width;
      const mean = row.reduce((s, v) => s + v, 0) / width;
      const variance = row.reduce((s, v) => s + (v - mean) ** 2, 0) / width;
      row.forEach((v, i) => {
        expectedRms.push((v / Math.sqrt(meanSquare + eps)) * w[i]);
        expectedLn.push(((v - mean) / Math.sqrt(variance + eps)) * w[i] + b[i]);
      });
    }
    expectClose(rms, expectedRms);
    expectClose(ln, expectedLn);
  });

  it('swiglu, gelu (tanh form), add and gatherRows', () => {
    const n = 29;
    const g = random(n, 3), u = random(n, 3);
    const out = new Float32Array(n);
    ops.swiglu(out, g, u, n);
    expectClose(out, Array.from(g, (v, i) => (v / (1 + Math.exp(-v))) * u[i]));
    ops.gelu(out, g, n);
    expectClose(out, Array.from(g, (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)))));
    ops.add(out, g, u, n);
    expectClose(out, Array.from(g, (v, i) => v + u[i]));
    const table = random(5 * 3);
    const gathered = new Float32Array(2 * 3);
    ops.gatherRows(gathered, table, Int32Array.of(4, 1), 2, 3);
    expect(Array.from(gathered)).toEqual([...table.subarray(12, 15), ...table.subarray(3, 6)]);
  });

  it('rope rotates pairs (i, i + headDim/2) by position × frequency', () => {
    const heads = 3, headDim = 10, rows = 4, maxPositions = 40;
    const inv = Float32Array.from({ length: headDim / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / headDim));
    const { cos, sin } = ops.ropeTables(inv, maxPositions);
    const positions = Int32Array.of(0, 7, 8, 39);
    const x = random(rows * heads * headDim);
    const expected = Array.from(x);
    for (let r = 0; r < rows; r++) {
      for (let h = 0; h < heads; h++) {
        for (let i = 0; i < headDim / 2; i++) {
          const a = positions[r] * inv[i];
          const base = (r * heads + h) * headDim;
          const x1 = x[base + i], x2 = x[base + headDim / 2 + i];
          expected[base + i] = x1 * Math.cos(a) - x2 * Math.sin(a);
          expected[base + headDim / 2 + i] = x2 * Math.cos(a) + x1 * Math.sin(a);
        }
      }
    }
    ops.rope(x, positions, cos, sin, rows, heads, headDim);
    expectClose(x, expected);
  });

  it('grouped-query causal attention over a paged cache', () => {
    const heads = 6, kvHeads = 2, headDim = 5, blockSize = 3, blocks = 5, rows = 4;
    const slots = blocks * blockSize;
    const positions = Int32Array.of(3, 4, 5, 6);
    // Positions 0..6 live in blocks 4, 1, 3 (in that order): row entries first, then the table.
    const writePages = Int32Array.of(7, 7, 7, 7, 7, 7, 7, 4, 1, 3);
    const keys = new Float32Array(kvHeads * slots * headDim), values = new Float32Array(kvHeads * slots * headDim);
    // Fill positions 0..6 through writeKV, as the model does (earlier steps, then this one).
    const k = random(7 * kvHeads * headDim), v = random(7 * kvHeads * headDim);
    ops.writeKV(keys, values, k, v, Int32Array.from({ length: 7 }, (_, i) => i), writePages, 7, kvHeads, headDim, blockSize);
    expect(ops.pageSlot(writePages, 0, 4, blockSize)).toBe(4);
    expect(keys.subarray(4 * headDim, 5 * headDim)).toEqual(k.subarray(4 * kvHeads * headDim, 4 * kvHeads * headDim + headDim)); // position 4 → block 1, slot 4
    const q = random((rows + 1) * heads * headDim);
    const scale = 1 / Math.sqrt(headDim);
    const out = new Float32Array((rows + 1) * heads * headDim);
    // The call takes rows 1..4 (row 0 is another sequence's, left alone).
    const attendPages = Int32Array.of(0, 5, 5, 5, 5, 4, 1, 3);
    const attendPositions = Int32Array.of(0, ...positions);
    ops.attention(out, q, keys, values, attendPositions, attendPages, 1, rows, heads, kvHeads, headDim, blockSize, scale, { scores: new Float32Array(0), slots: new Int32Array(0) });
    const expected: number[] = new Array(heads * headDim).fill(0);
    for (let r = 0; r < rows; r++) {
      for (let h = 0; h < heads; h++) {
        const kv = Math.floor(h / (heads / kvHeads));
        const scores: number[] = [];
        const qBase = ((r + 1) * heads + h) * headDim;
        for (let t = 0; t <= positions[r]; t++) {
          let s = 0;
          for (let d = 0; d < headDim; d++) s += q[qBase + d] * k[(t * kvHeads + kv) * headDim + d];
          scores.push(s * scale);
        }
        const max = Math.max(...scores);
        const weights = scores.map((s) => Math.exp(s - max));
        const total = weights.reduce((a, b) => a + b, 0);
        for (let d = 0; d < headDim; d++) {
          expected.push(weights.reduce((sum, p, t) => sum + (p / total) * v[(t * kvHeads + kv) * headDim + d], 0));
        }
      }
    }
    expectClose(out, expected);
    expect(() => ops.writeKV(keys, values, k, v, Int32Array.of(9), Int32Array.of(1, 4, 1, 3), 1, kvHeads, headDim, blockSize)).toThrow(/outside the KV cache/);
  });
});

describe('RoPE frequencies', () => {
  const base = {
    model_type: 'llama', vocab_size: 10, hidden_size: 64, intermediate_size: 8, num_hidden_layers: 1,
    num_attention_heads: 2, rope_theta: 500000,
  };
  it('linear scaling divides every frequency by the factor', () => {
    const plain = ropeInverseFrequencies(parseModelConfig(base));
    const linear = ropeInverseFrequencies(parseModelConfig({ ...base, rope_scaling: { type: 'linear', factor: 4 } }));
    plain.forEach((f, i) => expect(linear[i]).toBeCloseTo(f / 4, 10));
  });
  it('llama3 scaling keeps high frequencies, divides low ones, blends the middle', () => {
    const scaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    const plain = ropeInverseFrequencies(parseModelConfig(base));
    const scaled = ropeInverseFrequencies(parseModelConfig({ ...base, rope_scaling: scaling }));
    let kept = 0, divided = 0, blended = 0;
    plain.forEach((f, i) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < 8192 / 4) { expect(scaled[i]).toBe(f); kept++; }
      else if (wavelen > 8192) { expect(scaled[i]).toBeCloseTo(f / 8, 12); divided++; }
      else { expect(scaled[i]).toBeLessThan(f); expect(scaled[i]).toBeGreaterThan(f / 8); blended++; }
    });
    expect(kept).toBeGreaterThan(0);
    expect(divided).toBeGreaterThan(0);
    expect(blended).toBeGreaterThan(0);
  });
});
