// The CPU implementation of every op in kernels/backend.ts, as plain functions over typed arrays.
// They are the CPU backend and the references that GPU kernels are tested against.
// Inner loops keep four independent accumulators so V8 can overlap the multiply-adds.

export function gatherRows(out: Float32Array, table: Float32Array, indices: Int32Array, rows: number, width: number): void {
  for (let r = 0; r < rows; r++) {
    const from = indices[r] * width;
    out.set(table.subarray(from, from + width), r * width);
  }
}

/** A row-major (rows × columns) matrix's transpose (Conv1D weights → out × in). */
export function transpose(values: ArrayLike<number>, rows: number, columns: number): Float32Array {
  const out = new Float32Array(rows * columns);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < columns; c++) out[c * rows + r] = values[r * columns + c];
  }
  return out;
}

export function rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, width: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const base = r * width;
    let sumSquares = 0;
    for (let i = 0; i < width; i++) sumSquares += x[base + i] * x[base + i];
    const scale = 1 / Math.sqrt(sumSquares / width + eps);
    for (let i = 0; i < width; i++) out[base + i] = x[base + i] * scale * weight[i];
  }
}

export function layerNorm(out: Float32Array, x: Float32Array, weight: Float32Array, bias: Float32Array, rows: number, width: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const base = r * width;
    let sum = 0;
    for (let i = 0; i < width; i++) sum += x[base + i];
    const mean = sum / width;
    let sumSquares = 0;
    for (let i = 0; i < width; i++) {
      const d = x[base + i] - mean;
      sumSquares += d * d;
    }
    const scale = 1 / Math.sqrt(sumSquares / width + eps);
    for (let i = 0; i < width; i++) out[base + i] = (x[base + i] - mean) * scale * weight[i] + bias[i];
  }
}

/**
 * out (rows × outFeatures) = x (rows × inFeatures) · weightᵀ (+ bias); weight is outFeatures ×
 * inFeatures. With `accumulate`, adds to what out holds (out += x · weightᵀ + bias).
 */
export function matmul(
  out: Float32Array, x: Float32Array, weight: Float32Array, bias: Float32Array | null,
  rows: number, inFeatures: number, outFeatures: number, accumulate = false,
): void {
  const keep = accumulate ? 1 : 0;
  const fullBlocks = rows & ~3;
  // Blocks of four rows: each weight load feeds four dot products.
  for (let o = 0; o < outFeatures; o++) {
    const w = o * inFeatures;
    const b = bias ? bias[o] : 0;
    for (let r = 0; r < fullBlocks; r += 4) {
      const x0 = r * inFeatures, x1 = x0 + inFeatures, x2 = x1 + inFeatures, x3 = x2 + inFeatures;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < inFeatures; i++) {
        const wi = weight[w + i];
        s0 += x[x0 + i] * wi;
        s1 += x[x1 + i] * wi;
        s2 += x[x2 + i] * wi;
        s3 += x[x3 + i] * wi;
      }
      out[r * outFeatures + o] = s0 + b + keep * out[r * outFeatures + o];
      out[(r + 1) * outFeatures + o] = s1 + b + keep * out[(r + 1) * outFeatures + o];
      out[(r + 2) * outFeatures + o] = s2 + b + keep * out[(r + 2) * outFeatures + o];
      out[(r + 3) * outFeatures + o] = s3 + b + keep * out[(r + 3) * outFeatures + o];
    }
  }
  // Remaining rows (all of them when decoding): four output features at a time share each x load.
  for (let r = fullBlocks; r < rows; r++) {
    const xr = r * inFeatures;
    const outRow = r * outFeatures;
    let o = 0;
    for (; o + 4 <= outFeatures; o += 4) {
      const w0 = o * inFeatures, w1 = w0 + inFeatures, w2 = w1 + inFeatures, w3 = w2 + inFeatures;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < inFeatures; i++) {
        const xi = x[xr + i];
        s0 += xi * weight[w0 + i];
        s1 += xi * weight[w1 + i];
        s2 += xi * weight[w2 + i];
        s3 += xi * weight[w3 + i];
      }
      out[outRow + o] = s0 + (bias ? bias[o] : 0) + keep * out[outRow + o];
      out[outRow + o + 1] = s1 + (bias ? bias[o + 1] : 0) + keep * out[outRow + o + 1];
      out[outRow + o + 2] = s2 + (bias ? bias[o + 2] : 0) + keep * out[outRow + o + 2];
      out[outRow + o + 3] = s3 + (bias ? bias[o + 3] : 0) + keep * out[outRow + o + 3];
    }
    for (; o < outFeatures; o++) {
      const w = o * inFeatures;
      let sum = 0;
      for (let i = 0; i < inFeatures; i++) sum += x[xr + i] * weight[w + i];
      out[outRow + o] = sum + (bias ? bias[o] : 0) + keep * out[outRow + o];
    }
  }
}

/** The index of the largest of the first `count` values (the lowest index among equal maxima). */
export function argmax(values: Float32Array, count = values.length): number {
  let best = 0;
  for (let i = 1; i < count; i++) if (values[i] > values[best]) best = i;
  return best;
}

export function add(out: Float32Array, a: Float32Array, b: Float32Array, elements: number): void {
  for (let i = 0; i < elements; i++) out[i] = a[i] + b[i];
}

export function swiglu(out: Float32Array, gate: Float32Array, up: Float32Array, elements: number): void {
  for (let i = 0; i < elements; i++) {
    const g = gate[i];
    out[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
}

const GELU_C = Math.sqrt(2 / Math.PI);
export function gelu(out: Float32Array, x: Float32Array, elements: number): void {
  for (let i = 0; i < elements; i++) {
    const v = x[i];
    out[i] = 0.5 * v * (1 + Math.tanh(GELU_C * (v + 0.044715 * v * v * v)));
  }
}

/** cos/sin tables (maxPositions × inverseFrequencies.length), angles rounded to f32 as torch does. */
export function ropeTables(inverseFrequencies: Float32Array, maxPositions: number): { cos: Float32Array; sin: Float32Array } {
  const half = inverseFrequencies.length;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * inverseFrequencies[i]);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

export function rope(
  x: Float32Array, positions: Int32Array, cos: Float32Array, sin: Float32Array,
  rows: number, heads: number, headDim: number,
): void {
  const half = headDim >> 1;
  for (let r = 0; r < rows; r++) {
    const table = positions[r] * half;
    for (let h = 0; h < heads; h++) {
      const base = (r * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const c = cos[table + i], s = sin[table + i];
        const x1 = x[base + i], x2 = x[base + half + i];
        x[base + i] = x1 * c - x2 * s;
        x[base + half + i] = x2 * c + x1 * s;
      }
    }
  }
}

/** The paged cache's slot of position `position` of row `row` (backend.ts KVPages). */
export function pageSlot(pages: Int32Array, row: number, position: number, blockSize: number): number {
  return pages[pages[row] + Math.floor(position / blockSize)] * blockSize + (position % blockSize);
}

/**
 * The cache layout, per layer: (kvHeads × slots × headDim), slots = blocks × blockSize, so one
 * head's keys for the consecutive positions of a block are contiguous.
 */
export function writeKV(
  keys: Float32Array, values: Float32Array, k: Float32Array, v: Float32Array,
  positions: Int32Array, pages: Int32Array, rows: number, kvHeads: number, headDim: number, blockSize: number,
): void {
  const slots = keys.length / (kvHeads * headDim);
  for (let r = 0; r < rows; r++) {
    const p = positions[r];
    const slot = p < 0 ? -1 : pageSlot(pages, r, p, blockSize);
    if (!(slot >= 0 && slot < slots)) throw new RangeError(`position ${p} of row ${r} is outside the KV cache's blocks`);
    for (let h = 0; h < kvHeads; h++) {
      const from = (r * kvHeads + h) * headDim;
      const to = (h * slots + slot) * headDim;
      keys.set(k.subarray(from, from + headDim), to);
      values.set(v.subarray(from, from + headDim), to);
    }
  }
}

/** Attention of rows firstRow..firstRow+rows-1 over their sequences' pages (backend.ts `attention`). */
export function attention(
  out: Float32Array, q: Float32Array, keys: Float32Array, values: Float32Array,
  positions: Int32Array, pages: Int32Array, firstRow: number, rows: number, heads: number, kvHeads: number, headDim: number, blockSize: number,
  scale: number, scratch: { scores: Float32Array; slots: Int32Array },
): void {
  const group = heads / kvHeads;
  const d4 = headDim & ~3;
  const slotCount = keys.length / (kvHeads * headDim);
  for (let r = firstRow; r < firstRow + rows; r++) {
    const length = positions[r] + 1;
    if (scratch.scores.length < length) {
      scratch.scores = new Float32Array(length);
      scratch.slots = new Int32Array(length);
    }
    const { scores, slots } = scratch;
    // Each position's offset in a head's rows, looked up once per row.
    for (let t = 0; t < length; t++) slots[t] = pageSlot(pages, r, t, blockSize) * headDim;
    for (let h = 0; h < heads; h++) {
      const qBase = (r * heads + h) * headDim;
      const kvBase = Math.floor(h / group) * slotCount * headDim;
      let max = -Infinity;
      for (let t = 0; t < length; t++) {
        const kBase = kvBase + slots[t];
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        let d = 0;
        for (; d < d4; d += 4) {
          s0 += q[qBase + d] * keys[kBase + d];
          s1 += q[qBase + d + 1] * keys[kBase + d + 1];
          s2 += q[qBase + d + 2] * keys[kBase + d + 2];
          s3 += q[qBase + d + 3] * keys[kBase + d + 3];
        }
        for (; d < headDim; d++) s0 += q[qBase + d] * keys[kBase + d];
        const score = (s0 + s1 + (s2 + s3)) * scale;
        scores[t] = score;
        if (score > max) max = score;
      }
      let sum = 0;
      for (let t = 0; t < length; t++) {
        const e = Math.exp(scores[t] - max);
        scores[t] = e;
        sum += e;
      }
      const inverseSum = 1 / sum;
      // Four output dimensions at a time, accumulated in registers across positions.
      const outBase = (r * heads + h) * headDim;
      let d = 0;
      for (; d < d4; d += 4) {
        let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (let t = 0; t < length; t++) {
          const v = kvBase + slots[t] + d;
          const p = scores[t];
          a0 += p * values[v];
          a1 += p * values[v + 1];
          a2 += p * values[v + 2];
          a3 += p * values[v + 3];
        }
        out[outBase + d] = a0 * inverseSum;
        out[outBase + d + 1] = a1 * inverseSum;
        out[outBase + d + 2] = a2 * inverseSum;
        out[outBase + d + 3] = a3 * inverseSum;
      }
      for (; d < headDim; d++) {
        let a = 0;
        for (let t = 0; t < length; t++) a += scores[t] * values[kvBase + slots[t] + d];
        out[outBase + d] = a * inverseSum;
      }
    }
  }
}

/** The hash random.wgsl uses (a PCG output permutation), in u32 arithmetic. */
function hash(value: number): number {
  let h = (Math.imul(value, 747796405) + 2891336453) >>> 0;
  h = Math.imul(((h >>> ((h >>> 28) + 4)) ^ h) >>> 0, 277803737) >>> 0;
  return ((h >>> 22) ^ h) >>> 0;
}

/**
 * scale × approximately normal values from a hash of (seed, element index): the same values
 * random.wgsl makes on the GPU, so both backends build the same random model from a seed.
 */
export function randomNormalMatrix(rows: number, columns: number, scale: number, seed: number): Float32Array {
  const out = new Float32Array(rows * columns);
  const uniform = (value: number) => (hash(value) >>> 8) / 16777216;
  for (let i = 0; i < out.length; i++) {
    const key = Math.imul(hash((i ^ seed) >>> 0), 4) >>> 0;
    const sum = uniform(key) + uniform((key + 1) >>> 0) + uniform((key + 2) >>> 0) + uniform((key + 3) >>> 0);
    out[i] = scale * ((sum - 2) * 1.7320508);
  }
  return out;
}

/**
 * Multiplies column c of a row-major matrix (values.length / scale.length rows) by scale[c], in
 * place: a norm weight folded into the projections that read the norm (models/model.ts at load,
 * CpuBackend.scaleColumns). Row by row, without a division per value.
 */
export function scaleColumns(values: Float32Array, scale: Float32Array): void {
  const columns = scale.length;
  for (let row = 0; row < values.length; row += columns) {
    for (let c = 0; c < columns; c++) values[row + c] *= scale[c];
  }
}
