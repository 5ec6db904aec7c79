// Decode matmul with subgroup reductions, for in_features a multiple of 8 on adapters with the
// subgroups feature: out[r, o] = x[r, :] · W[o, :] + bias[o]. A workgroup of 256 threads makes four
// outputs: two groups of subgroups take two weight rows each, and the subgroups of a group split
// the row (K) between them. Lanes read 16 bytes (8 halves) per row per iteration and reuse each x
// load for both rows; subgroupAdd, then a four-value combine in workgroup memory, finish the sums.
// The layout won a sweep (bench/gemv-sweep.ts) on an H200: 88–90% of copy bandwidth on Llama-7B
// MLP shapes. Works for any subgroup size from 4 to 128.
//
// BATCH (an override, 1 to MAX_BATCH): a workgroup takes BATCH rows of x, so each weight load
// serves that many rows and a step of up to BATCH tokens streams the weights once (small batches,
// short prompts below the tensor-core GEMM's). The grid's y covers the rows BATCH at a time.
enable subgroups;
diagnostic(off, subgroup_uniformity);

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

// NORMED (a second pipeline, for flags bit 2): the input is RMSNorm(x) · norm_weight. Since
// RMSNorm(x) = x · s with one scale s per row, the loop sums w · (x ⊙ norm_weight) and, from the
// same x loads, x · x; each group of subgroups covers all of K, so the group's sum of squares gives
// s at the end. The weights start streaming at once (no pass over x first), and neither pipeline
// carries the other's code.
override NORMED: bool = false;
@group(0) @binding(7) var<storage, read> norm_weight: array<vec4<f32>>;
// BLOCKED (a third kind of pipeline): step 3 of a Monarch or BLAST layer (wgsl/block_gemv.wgsl
// has the others): output feature o reads x's block o / per_block (x is blocks × rows × in), and
// with params.strided goes to feature (o % per_block) · blocks + o / per_block. A group's two rows
// share a block (the backend takes this pipeline for even per_block only). Stacked layers (z's
// blocks and the factor's rows one layer after another) need nothing more: output o's block is
// o / per_block all the same, and the outputs split over out0..out2 by width.
override BLOCKED: bool = false;

override BATCH: u32 = 1u;
const MAX_BATCH: u32 = 16u;

const WORKGROUP: u32 = 256u;
const OUTPUTS_PER_WORKGROUP: u32 = 4u;
const ROWS_PER_GROUP: u32 = 2u;
// Partial sums: (subgroup, weight row of its group, row of x); sums of squares: (subgroup, row of x).
var<workgroup> partial: array<f32, 128u * BATCH>;
var<workgroup> norm_partial: array<f32, 64u * BATCH>;

@compute @workgroup_size(WORKGROUP)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) subgroup_size: u32,
) {
  let subgroups = WORKGROUP / subgroup_size;
  let split = subgroups / 2u; // subgroups per pair of rows
  let subgroup = lid / subgroup_size;
  let group = subgroup / split;
  let part = subgroup % split;
  let first = wid.x * OUTPUTS_PER_WORKGROUP + group * ROWS_PER_GROUP;
  let r0 = wid.y * BATCH;
  let chunks = params.in_features / 8u;
  // A row past the end reads the last row again; its sum is never written.
  let last = params.out_features - 1u;
  let w0 = min(first, last) * params.w_stride;
  let w1 = min(first + 1u, last) * params.w_stride;
  var x_base: array<u32, MAX_BATCH>;
  var x_block = 0u;
  if (BLOCKED) {
    x_block = (min(first, last) / params.per_block) * params.rows;
  }
  for (var b = 0u; b < BATCH; b++) {
    x_base[b] = (x_block + min(r0 + b, params.rows - 1u)) * chunks * 2u;
  }
  var acc: array<vec2<f32>, MAX_BATCH>;
  var sum_squares: array<f32, MAX_BATCH>;
  for (var c = part * subgroup_size + lane; c < chunks; c += subgroup_size * split) {
    let p0 = w[w0 + c];
    let p1 = w[w1 + c];
    // Unpacked once for every row of the batch.
    let w0_low = vec4<f32>(unpack2x16float(p0.x), unpack2x16float(p0.y));
    let w0_high = vec4<f32>(unpack2x16float(p0.z), unpack2x16float(p0.w));
    let w1_low = vec4<f32>(unpack2x16float(p1.x), unpack2x16float(p1.y));
    let w1_high = vec4<f32>(unpack2x16float(p1.z), unpack2x16float(p1.w));
    for (var b = 0u; b < BATCH; b++) {
      var low = x[x_base[b] + 2u * c];
      var high = x[x_base[b] + 2u * c + 1u];
      if (NORMED) {
        sum_squares[b] += dot(low, low) + dot(high, high);
        low *= norm_weight[2u * c];
        high *= norm_weight[2u * c + 1u];
      }
      acc[b] += vec2<f32>(dot(w0_low, low) + dot(w0_high, high), dot(w1_low, low) + dot(w1_high, high));
    }
  }
  for (var b = 0u; b < BATCH; b++) {
    let total = subgroupAdd(acc[b]);
    var squares = 0.0;
    if (NORMED) {
      squares = subgroupAdd(sum_squares[b]);
    }
    if (lane == 0u) {
      partial[(subgroup * ROWS_PER_GROUP) * BATCH + b] = total.x;
      partial[(subgroup * ROWS_PER_GROUP + 1u) * BATCH + b] = total.y;
      norm_partial[subgroup * BATCH + b] = squares;
    }
  }
  workgroupBarrier();
  if (lid < OUTPUTS_PER_WORKGROUP * BATCH) {
    let output = lid / BATCH;
    let b = lid % BATCH;
    let g = output / ROWS_PER_GROUP;
    let j = output % ROWS_PER_GROUP;
    let o = wid.x * OUTPUTS_PER_WORKGROUP + output;
    let r = r0 + b;
    if (o < params.out_features && r < params.rows) {
      var sum = 0.0;
      var squares_total = 0.0;
      for (var p = 0u; p < split; p++) {
        sum += partial[((g * split + p) * ROWS_PER_GROUP + j) * BATCH + b];
        squares_total += norm_partial[(g * split + p) * BATCH + b];
      }
      if (NORMED) {
        sum *= inverseSqrt(squares_total / f32(params.in_features) + params.norm_eps);
      }
      var feature = o;
      if (BLOCKED && params.strided == 1u) {
        // Within its layer (stacked layers each have blocks · per_block outputs).
        let layer_out = params.per_block * params.blocks;
        let local = o % layer_out;
        feature = o - local + (local % params.per_block) * params.blocks + local / params.per_block;
      }
      store(r, feature, sum);
    }
  }
}
