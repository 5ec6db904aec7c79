// Decode matmul with subgroup reductions, for in_features a multiple of 8 on adapters with the
// subgroups feature: out[r, o] = x[r, :] · W[o, :] + bias[o]. A workgroup of 256 threads makes four
// outputs (eight in the batched pipelines): two groups of subgroups take ROWS_PER_GROUP weight rows
// each, and the subgroups of a group split the row (K) between them. Lanes read 16 bytes (8 halves)
// per row per iteration and reuse each x load for all the group's rows; subgroupAdd, then a combine
// in workgroup memory, finish the sums.
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
// NORM_WEIGHT (with NORMED, false in pipelines of their own): whether x is scaled by norm_weight.
// A model that folds a norm's weight into the columns of the projections that read the norm
// (models/model.ts) hands them a weight of ones, and the backend takes these pipelines for it: no
// norm weight loaded or multiplied per weight load (H200, Llama-2-7B decode: q|k|v 31.6 → 29.1 µs,
// gate|up 49.4 → 46.6 µs, bench/RESULTS.md).
override NORM_WEIGHT: bool = true;
// LAYER_NORM (with NORMED, a pipeline of its own): LayerNorm instead, (x − mean) · s ⊙ weight +
// bias with s = 1 / sqrt(var + eps). The loop sums w · (x ⊙ weight), w · weight and w · bias per
// output row, and x and x · x per row of x, from the same loads; then out = s · (Σ w·(x ⊙ weight) −
// mean · Σ w·weight) + Σ w·bias. The norm's bias comes from layer_norm_bias (binding 8, composed
// in by the backend's layerNormBias; zeros in the other pipelines, which do not bind it).
override LAYER_NORM: bool = false;
// BLOCKED (a third kind of pipeline): step 3 of a Monarch or BLAST layer (wgsl/block_gemv.wgsl
// has the others): output feature o reads x's block o / per_block (x is blocks × rows × in), and
// with params.strided goes to feature (o % per_block) · blocks + o / per_block. A group's two rows
// share a block (the backend takes this pipeline for even per_block only). Stacked layers (z's
// blocks and the factor's rows one layer after another) need nothing more: output o's block is
// o / per_block all the same, and the outputs split over out0..out2 by width.
override BLOCKED: bool = false;

// PAIRED (one row of x; normed, or blocked): a group's two rows are a pair p, rows
// (p / S) · 2S + p % S and that + S for S = params.pair_span, and their two sums go together to
// store_pair, defined by the epilogue composed in: common/gemv_pair_swiglu.wgsl (a gated MLP's
// gate|up, S its width: silu(gate) · up) or common/gemv_pair_rope.wgsl (q|k|v, S = head_dim / 2:
// RoPE and the KV cache store). The grid covers the pairs, GROUPS a workgroup.
override PAIRED: bool = false;

override BATCH: u32 = 1u;
const MAX_BATCH: u32 = 16u;

// Weight rows per group of subgroups (2 or 4): every x load serves that many. With several rows of
// x, x's bytes through the caches are 2 · BATCH / ROWS_PER_GROUP times the weights' (the two groups
// each read all of it); batched pipelines take 4 (a few percent faster). Each (weight row, x row)
// sum is added up in the same order whatever the pipeline: a row gets the same result batched or
// alone.
override ROWS_PER_GROUP: u32 = 2u;
const MAX_ROWS_PER_GROUP: u32 = 4u;
const WORKGROUP: u32 = 256u;
const GROUPS: u32 = 2u;
// The most subgroups a workgroup has: WORKGROUP / the adapter's smallest subgroup size (the backend
// sets it; 64 covers subgroups of 4). Sized by it, the batch-16 pipeline's sums take 2.5 KB with
// subgroups of 32 where 64 slots took 20 KB, over the 16 KB every adapter offers.
override SUBGROUP_SLOTS: u32 = 64u;
// Partial sums: (subgroup, weight row of its group, row of x); sums of squares: (subgroup, row of x).
var<workgroup> partial: array<f32, SUBGROUP_SLOTS * ROWS_PER_GROUP * BATCH>;
var<workgroup> norm_partial: array<f32, SUBGROUP_SLOTS * BATCH>;
// LAYER_NORM's further sums (one slot elsewhere): w · weight and w · bias per (subgroup, weight
// row, row of x); x per (subgroup, row of x).
override LN_SLOTS: u32 = select(1u, SUBGROUP_SLOTS * ROWS_PER_GROUP * BATCH, LAYER_NORM);
var<workgroup> partial_weight: array<f32, LN_SLOTS>;
var<workgroup> partial_bias: array<f32, LN_SLOTS>;
var<workgroup> sum_partial: array<f32, select(1u, SUBGROUP_SLOTS * BATCH, LAYER_NORM)>;

@compute @workgroup_size(WORKGROUP)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) subgroup_size: u32,
) {
  let outputs_per_workgroup = GROUPS * ROWS_PER_GROUP;
  let subgroups = WORKGROUP / subgroup_size;
  let split = subgroups / GROUPS; // subgroups per group of rows
  let subgroup = lid / subgroup_size;
  let group = subgroup / split;
  let part = subgroup % split;
  let first = wid.x * outputs_per_workgroup + group * ROWS_PER_GROUP;
  let r0 = wid.y * BATCH;
  let chunks = params.in_features / 8u;
  // A row past the end reads the last row again; its sum is never written.
  let last = params.out_features - 1u;
  var w_base: array<u32, MAX_ROWS_PER_GROUP>;
  for (var j = 0u; j < ROWS_PER_GROUP; j++) {
    w_base[j] = min(first + j, last) * params.w_stride;
  }
  var first_row = first;
  if (PAIRED) {
    first_row = pair_row(wid.x * GROUPS + group);
    w_base[0] = min(first_row, last) * params.w_stride;
    w_base[1] = min(first_row + params.pair_span, last) * params.w_stride;
  }
  var x_base: array<u32, MAX_BATCH>;
  var x_block = 0u;
  if (BLOCKED) {
    // (Paired, the backend keeps both rows of a pair in one block: per_block a multiple of 2 · pair_span.)
    x_block = (min(first_row, last) / params.per_block) * params.rows;
  }
  for (var b = 0u; b < BATCH; b++) {
    x_base[b] = (x_block + min(r0 + b, params.rows - 1u)) * chunks * 2u;
  }
  var acc: array<array<f32, MAX_ROWS_PER_GROUP>, MAX_BATCH>;
  var sum_squares: array<f32, MAX_BATCH>;
  // LAYER_NORM: Σ w · weight and Σ w · bias per weight row (the same for every row of x), Σ x per row of x.
  var acc_weight: array<f32, MAX_ROWS_PER_GROUP>;
  var acc_bias: array<f32, MAX_ROWS_PER_GROUP>;
  var sum_x: array<f32, MAX_BATCH>;
  for (var c = part * subgroup_size + lane; c < chunks; c += subgroup_size * split) {
    // Each weight row's 8 halves, unpacked once for every row of the batch.
    var w_low: array<vec4<f32>, MAX_ROWS_PER_GROUP>;
    var w_high: array<vec4<f32>, MAX_ROWS_PER_GROUP>;
    for (var j = 0u; j < ROWS_PER_GROUP; j++) {
      let packed = w[w_base[j] + c];
      w_low[j] = vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y));
      w_high[j] = vec4<f32>(unpack2x16float(packed.z), unpack2x16float(packed.w));
    }
    if (LAYER_NORM) {
      let g_low = norm_weight[2u * c];
      let g_high = norm_weight[2u * c + 1u];
      let e_low = layer_norm_bias(2u * c);
      let e_high = layer_norm_bias(2u * c + 1u);
      for (var j = 0u; j < ROWS_PER_GROUP; j++) {
        acc_weight[j] += dot(w_low[j], g_low) + dot(w_high[j], g_high);
        acc_bias[j] += dot(w_low[j], e_low) + dot(w_high[j], e_high);
      }
    }
    for (var b = 0u; b < BATCH; b++) {
      var low = x[x_base[b] + 2u * c];
      var high = x[x_base[b] + 2u * c + 1u];
      if (NORMED) {
        sum_squares[b] += dot(low, low) + dot(high, high);
        if (LAYER_NORM) {
          sum_x[b] += dot(low + high, vec4<f32>(1.0));
        }
        if (NORM_WEIGHT) {
          low *= norm_weight[2u * c];
          high *= norm_weight[2u * c + 1u];
        }
      }
      for (var j = 0u; j < ROWS_PER_GROUP; j++) {
        acc[b][j] += dot(w_low[j], low) + dot(w_high[j], high);
      }
    }
  }
  for (var b = 0u; b < BATCH; b++) {
    var squares = 0.0;
    if (NORMED) {
      squares = subgroupAdd(sum_squares[b]);
    }
    for (var j = 0u; j < ROWS_PER_GROUP; j++) {
      let total = subgroupAdd(acc[b][j]);
      if (lane == 0u) {
        partial[(subgroup * ROWS_PER_GROUP + j) * BATCH + b] = total;
      }
    }
    if (lane == 0u) {
      norm_partial[subgroup * BATCH + b] = squares;
    }
    if (LAYER_NORM) {
      let total_x = subgroupAdd(sum_x[b]);
      if (lane == 0u) {
        sum_partial[subgroup * BATCH + b] = total_x;
      }
    }
  }
  if (LAYER_NORM) {
    for (var j = 0u; j < ROWS_PER_GROUP; j++) {
      let total_weight = subgroupAdd(acc_weight[j]);
      let total_bias = subgroupAdd(acc_bias[j]);
      if (lane == 0u) {
        for (var b = 0u; b < BATCH; b++) {
          partial_weight[(subgroup * ROWS_PER_GROUP + j) * BATCH + b] = total_weight;
          partial_bias[(subgroup * ROWS_PER_GROUP + j) * BATCH + b] = total_bias;
        }
      }
    }
  }
  workgroupBarrier();
  if (PAIRED) {
    let pair = wid.x * GROUPS + lid;
    if (lid < GROUPS && pair < params.out_features / 2u) {
      var sums = vec2<f32>(0.0);
      var squares_total = 0.0;
      for (var p = 0u; p < split; p++) {
        sums += vec2<f32>(partial[(lid * split + p) * 2u], partial[(lid * split + p) * 2u + 1u]);
        squares_total += norm_partial[lid * split + p];
      }
      if (NORMED) {
        sums *= inverseSqrt(squares_total / f32(params.in_features) + params.norm_eps);
      }
      store_pair(wid.y, pair_row(pair), sums.x, sums.y);
    }
    return;
  }
  if (lid < outputs_per_workgroup * BATCH) {
    let output = lid / BATCH;
    let b = lid % BATCH;
    let g = output / ROWS_PER_GROUP;
    let j = output % ROWS_PER_GROUP;
    let o = wid.x * outputs_per_workgroup + output;
    let r = r0 + b;
    if (o < params.out_features && r < params.rows) {
      var sum = 0.0;
      var squares_total = 0.0;
      var x_total = 0.0;
      var weight_total = 0.0;
      var bias_total = 0.0;
      for (var p = 0u; p < split; p++) {
        let at = ((g * split + p) * ROWS_PER_GROUP + j) * BATCH + b;
        sum += partial[at];
        squares_total += norm_partial[(g * split + p) * BATCH + b];
        if (LAYER_NORM) {
          x_total += sum_partial[(g * split + p) * BATCH + b];
          weight_total += partial_weight[at];
          bias_total += partial_bias[at];
        }
      }
      if (LAYER_NORM) {
        let n = f32(params.in_features);
        let mean = x_total / n;
        let variance = max(squares_total / n - mean * mean, 0.0);
        sum = inverseSqrt(variance + params.norm_eps) * (sum - mean * weight_total) + bias_total;
      } else if (NORMED) {
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

// The first row of pair p (PAIRED): pairs run along each 2 · pair_span rows' first half.
fn pair_row(p: u32) -> u32 {
  return (p / params.pair_span) * 2u * params.pair_span + p % params.pair_span;
}
