// Decode matmul with subgroup reductions, for in_features a multiple of 8 on adapters with the
// subgroups feature: out[r, o] = x[r, :] · W[o, :] + bias[o]. A workgroup of 256 threads makes four
// outputs: two groups of subgroups take two weight rows each, and the subgroups of a group split
// the row (K) between them. Lanes read 16 bytes (8 halves) per row per iteration and reuse each x
// load for both rows; subgroupAdd, then a four-value combine in workgroup memory, finish the sums.
// The layout won a sweep (bench/gemv-sweep.ts) on an H200: 88–90% of copy bandwidth on Llama-7B
// MLP shapes. Works for any subgroup size from 4 to 128.
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
var<workgroup> norm_partial: array<f32, 64>;

const WORKGROUP: u32 = 256u;
const OUTPUTS_PER_WORKGROUP: u32 = 4u;
const ROWS_PER_GROUP: u32 = 2u;
var<workgroup> partial: array<f32, 128>; // (subgroups × ROWS_PER_GROUP) partial sums

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
  let r = wid.y;
  let chunks = params.in_features / 8u;
  let x_base = r * chunks * 2u;
  // A row past the end reads the last row again; its sum is never written.
  let last = params.out_features - 1u;
  let w0 = min(first, last) * params.w_stride;
  let w1 = min(first + 1u, last) * params.w_stride;
  var acc = vec2<f32>(0.0);
  var sum_squares = 0.0;
  for (var c = part * subgroup_size + lane; c < chunks; c += subgroup_size * split) {
    var low = x[x_base + 2u * c];
    var high = x[x_base + 2u * c + 1u];
    if (NORMED) {
      sum_squares += dot(low, low) + dot(high, high);
      low *= norm_weight[2u * c];
      high *= norm_weight[2u * c + 1u];
    }
    let p0 = w[w0 + c];
    let p1 = w[w1 + c];
    acc += vec2<f32>(dot8(p0, low, high), dot8(p1, low, high));
  }
  let total = subgroupAdd(acc);
  var squares = 0.0;
  if (NORMED) {
    squares = subgroupAdd(sum_squares);
  }
  if (lane == 0u) {
    partial[subgroup * ROWS_PER_GROUP] = total.x;
    partial[subgroup * ROWS_PER_GROUP + 1u] = total.y;
    norm_partial[subgroup] = squares;
  }
  workgroupBarrier();
  if (lid < OUTPUTS_PER_WORKGROUP) {
    let g = lid / ROWS_PER_GROUP;
    let j = lid % ROWS_PER_GROUP;
    let o = wid.x * OUTPUTS_PER_WORKGROUP + lid;
    if (o < params.out_features) {
      var sum = 0.0;
      var squares_total = 0.0;
      for (var p = 0u; p < split; p++) {
        sum += partial[(g * split + p) * ROWS_PER_GROUP + j];
        squares_total += norm_partial[g * split + p];
      }
      if (NORMED) {
        sum *= inverseSqrt(squares_total / f32(params.in_features) + params.norm_eps);
      }
      store(r, o, sum);
    }
  }
}
