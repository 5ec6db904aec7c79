// Monarch and BLAST layers for decode and short prompts (reference: kernels/cpu/blr.ts), on
// adapters with subgroups: both steps stream their factor once per BATCH rows of x, like the
// subgroup GEMV. Each factor row (f16, padded to 8 halves) is one dot product per row of x, made by
// one subgroup whose lanes read 16 bytes at a time and finish with subgroupAdd, four rows at once.
// (Step 3 goes to the blocked subgroup GEMV, wgsl/gemv_subgroup.wgsl, where a block's outputs come
// in pairs.) What a row's dot product reads and where it goes depends on the mode:
//   0 BLAST steps 1 + 2 (up to 32 blocks): a workgroup takes `channels` consecutive channels q of every input block c
//     (factor rows c · rank + q, x's block c). The b × channels × BATCH products y stay in
//     workgroup memory, and z[a][n][q] = Σ_c S[a][c][q] · y[c][q][n] is written once: the b·N·r
//     intermediate never reaches memory (the paper's partial fusion, inside one workgroup).
//   1 Monarch step 1: factor row j (x's block j / rank) is z[j % b][n][j / b]: the block
//     permutation is the store's index.
//   2 step 3: output feature j = z[j / per_block][n] · factor row j (+ bias, + out), and
//   3 the same with Monarch's strided outputs: feature (j % per_block) · b + j / per_block.
// Needs the dot products' length (`width`: in/b for steps 1–2, rank for step 3) a multiple of 8.
// Stacked layers (several projections of the same x, their factors, couplings and z one after
// another): workgroup w takes layer params.layer + w / layer_groups; each layer's rows, couplings
// and z blocks are offset by one layer's worth.
// NORMED (a pipeline of its own, BLAST steps 1 + 2 only): the input is RMSNorm(x) · norm_weight.
// A BLAST workgroup reads every block of x (its channels of each input block), so it multiplies x
// by the norm weight as it loads it, sums x · x from the same loads (the first channel of each
// block counts its block), and scales z by 1 / rms at the store: RMSNorm(x) = x / rms(x), and
// steps 1–3 are linear. No pass over x before the factor streams, and no dispatch for the norm.
enable subgroups;
diagnostic(off, subgroup_uniformity);

struct Params {
  rows: u32,         // rows of x (tokens)
  width: u32,        // halves per dot product
  factor_rows: u32,  // blocks · rank (steps 1–2) or out_features (step 3)
  w_stride: u32,     // factor row stride in vec4<u32> (8 halves)
  rank: u32,
  blocks: u32,
  mode: u32,
  flags: u32,        // step 3: bit 0 bias, bit 1 accumulate into out
  group_rows: u32,   // factor rows per workgroup (BLAST: channels · blocks)
  channels: u32,     // BLAST: channels per workgroup
  per_block: u32,    // step 3: out_features / blocks
  x_stride: u32,     // floats per row of x: in_features (steps 1–2); unused by step 3 (z rows are rank wide)
  layer_groups: u32, // workgroups per layer
  layer: u32,        // the first workgroup's layer
  norm_eps: f32,     // NORMED
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // x (steps 1–2) or z (step 3)
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;   // the factor
@group(0) @binding(3) var<storage, read> aux: array<f32>;       // S (BLAST, b × b × rank) or the bias
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // z (b × rows × rank) or the output
@group(0) @binding(5) var<storage, read> norm_weight: array<vec4<f32>>; // NORMED: in_features

override NORMED: bool = false;
// Sums of squares per (subgroup, row of x): 64 subgroups (of 4 lanes) in the normed pipeline, 1 elsewhere.
override NORM_SUBGROUPS: u32 = 1u;
var<workgroup> norm_partial: array<f32, NORM_SUBGROUPS * BATCH>;

override BATCH: u32 = 1u;
const MAX_BATCH: u32 = 16u;
const WORKGROUP: u32 = 256u;
const MAX_GROUP_ROWS: u32 = 32u;
var<workgroup> y: array<f32, MAX_GROUP_ROWS * BATCH>;
// BLAST: the coupling of this workgroup's channels, S[a][c][q] at (a · b + c) · channels + q - q0,
// loaded up front so that its reads are contiguous runs and overlap the factor's. Up to 32 blocks.
const MAX_COUPLING: u32 = 1024u;
var<workgroup> s_tile: array<f32, MAX_COUPLING>;

// Eight f16 weights (one 16-byte load) as two vec4<f32>.
fn unpack8(packed: vec4<u32>) -> array<vec4<f32>, 2> {
  return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y)),
    vec4<f32>(unpack2x16float(packed.z), unpack2x16float(packed.w)));
}

// The factor row that a workgroup's local row `local` is, and whether it exists.
fn factor_row(group: u32, local: u32) -> vec2<u32> {
  if (local >= params.group_rows) {
    return vec2<u32>(0u, 0u);
  }
  if (params.mode == 0u) {
    let q = group * params.channels + local % params.channels;
    return vec2<u32>((local / params.channels) * params.rank + q, u32(q < params.rank));
  }
  let row = group * params.group_rows + local;
  return vec2<u32>(row, u32(row < params.factor_rows));
}

// Where layer `layer`'s factor row `row`'s input starts for row 0 of x, in floats (row n adds
// n · row_step()): x is shared by the layers, z is theirs in turn.
fn input_offset(layer: u32, row: u32) -> u32 {
  if (params.mode <= 1u) {
    return (row / params.rank) * params.width;
  }
  return (layer * params.blocks + row / params.per_block) * params.rows * params.width;
}

fn row_step() -> u32 {
  return select(params.width, params.x_stride, params.mode <= 1u);
}

// Layer `layer`'s row `row`'s dot product with row n of x: stored where the mode puts it.
fn emit(layer: u32, local: u32, row: u32, n: u32, b: u32, total: f32) {
  if (params.mode == 0u) {
    y[local * BATCH + b] = total;
    return;
  }
  if (params.mode == 1u) {
    out[((layer * params.blocks + row % params.blocks) * params.rows + n) * params.rank + row / params.blocks] = total;
    return;
  }
  var feature = row;
  if (params.mode == 3u) {
    feature = (row % params.per_block) * params.blocks + row / params.per_block;
  }
  var v = total;
  if ((params.flags & 1u) != 0u) {
    v += aux[feature];
  }
  let index = n * params.per_block * params.blocks + feature;
  if ((params.flags & 2u) != 0u) {
    v += out[index];
  }
  out[index] = v;
}

// Each subgroup takes ROWS_AT_ONCE factor rows at a time, so that many 16-byte loads per lane are
// in flight together (one row at a time left the loads waiting on each other).
const ROWS_AT_ONCE: u32 = 4u;

@compute @workgroup_size(WORKGROUP)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) subgroup_size: u32,
) {
  let subgroups = WORKGROUP / subgroup_size;
  let subgroup = lid / subgroup_size;
  let r0 = wid.y * BATCH;
  let chunks = params.width / 8u;
  let step = row_step();
  let layer = params.layer + wid.x / params.layer_groups;
  let group = wid.x % params.layer_groups;
  let layer_rows = layer * params.factor_rows;
  if (params.mode == 0u) {
    let count = params.blocks * params.blocks * params.channels;
    let s_layer = layer * params.blocks * params.blocks * params.rank;
    for (var t = lid; t < count; t += WORKGROUP) {
      let q = group * params.channels + t % params.channels;
      s_tile[t] = select(0.0, aux[s_layer + (t / params.channels) * params.rank + q], q < params.rank);
    }
  }
  var n_offset: array<u32, MAX_BATCH>;
  for (var b = 0u; b < BATCH; b++) {
    n_offset[b] = min(r0 + b, params.rows - 1u) * step;
  }
  // NORMED: this lane's part of each row of x's sum of squares.
  var squares: array<f32, MAX_BATCH>;
  for (var b = 0u; b < BATCH; b++) {
    squares[b] = 0.0;
  }
  for (var first = subgroup * ROWS_AT_ONCE; first < params.group_rows; first += subgroups * ROWS_AT_ONCE) {
    // A missing row reads row 0; its sums are dropped.
    let f0 = factor_row(group, first);
    let f1 = factor_row(group, first + 1u);
    let f2 = factor_row(group, first + 2u);
    let f3 = factor_row(group, first + 3u);
    let rows = vec4<u32>(f0.x * f0.y, f1.x * f1.y, f2.x * f2.y, f3.x * f3.y);
    let w_base = (rows + vec4<u32>(layer_rows)) * params.w_stride;
    let x_off = vec4<u32>(input_offset(layer, rows.x), input_offset(layer, rows.y), input_offset(layer, rows.z), input_offset(layer, rows.w)) / 4u;
    // Zeroed explicitly: a declaration in a loop body is not reliably re-zeroed everywhere (lavapipe
    // kept the previous rows' sums).
    var acc: array<vec4<f32>, MAX_BATCH>;
    for (var b = 0u; b < BATCH; b++) {
      acc[b] = vec4<f32>(0.0);
    }
    // NORMED: which of the four rows count their block's squares (its first channel, once per block).
    var counts = vec4<f32>(0.0);
    if (NORMED) {
      for (var k = 0u; k < ROWS_AT_ONCE; k++) {
        counts[k] = select(0.0, 1.0, first + k < params.group_rows && (first + k) % params.channels == 0u);
      }
    }
    for (var c = lane; c < chunks; c += subgroup_size) {
      let p0 = w[w_base.x + c];
      let p1 = w[w_base.y + c];
      let p2 = w[w_base.z + c];
      let p3 = w[w_base.w + c];
      // Unpacked once for every row of the batch.
      let u0 = unpack8(p0);
      let u1 = unpack8(p1);
      let u2 = unpack8(p2);
      let u3 = unpack8(p3);
      if (NORMED) {
        // The norm weight of each row's 8 inputs, once for every row of the batch.
        let g = array<vec4<f32>, 8>(norm_weight[x_off.x + 2u * c], norm_weight[x_off.x + 2u * c + 1u],
          norm_weight[x_off.y + 2u * c], norm_weight[x_off.y + 2u * c + 1u],
          norm_weight[x_off.z + 2u * c], norm_weight[x_off.z + 2u * c + 1u],
          norm_weight[x_off.w + 2u * c], norm_weight[x_off.w + 2u * c + 1u]);
        for (var b = 0u; b < BATCH; b++) {
          let n = n_offset[b] / 4u + 2u * c;
          let x0 = x[x_off.x + n];
          let x1 = x[x_off.x + n + 1u];
          let x2 = x[x_off.y + n];
          let x3 = x[x_off.y + n + 1u];
          let x4 = x[x_off.z + n];
          let x5 = x[x_off.z + n + 1u];
          let x6 = x[x_off.w + n];
          let x7 = x[x_off.w + n + 1u];
          squares[b] += dot(counts, vec4<f32>(dot(x0, x0) + dot(x1, x1), dot(x2, x2) + dot(x3, x3), dot(x4, x4) + dot(x5, x5), dot(x6, x6) + dot(x7, x7)));
          acc[b] += vec4<f32>(
            dot(u0[0], x0 * g[0]) + dot(u0[1], x1 * g[1]),
            dot(u1[0], x2 * g[2]) + dot(u1[1], x3 * g[3]),
            dot(u2[0], x4 * g[4]) + dot(u2[1], x5 * g[5]),
            dot(u3[0], x6 * g[6]) + dot(u3[1], x7 * g[7]));
        }
      } else {
        for (var b = 0u; b < BATCH; b++) {
          let n = n_offset[b] / 4u + 2u * c;
          acc[b] += vec4<f32>(
            dot(u0[0], x[x_off.x + n]) + dot(u0[1], x[x_off.x + n + 1u]),
            dot(u1[0], x[x_off.y + n]) + dot(u1[1], x[x_off.y + n + 1u]),
            dot(u2[0], x[x_off.z + n]) + dot(u2[1], x[x_off.z + n + 1u]),
            dot(u3[0], x[x_off.w + n]) + dot(u3[1], x[x_off.w + n + 1u]));
        }
      }
    }
    let exists = vec4<u32>(f0.y, f1.y, f2.y, f3.y);
    for (var b = 0u; b < BATCH; b++) {
      let total = subgroupAdd(acc[b]);
      let n = r0 + b;
      if (lane == 0u && (n < params.rows || params.mode == 0u)) {
        for (var k = 0u; k < ROWS_AT_ONCE; k++) {
          if (first + k < params.group_rows && (exists[k] == 1u || params.mode == 0u)) {
            emit(layer, first + k, rows[k], n, b, total[k]);
          }
        }
      }
    }
  }
  if (params.mode != 0u) {
    return;
  }
  if (NORMED) {
    for (var b = 0u; b < BATCH; b++) {
      let total = subgroupAdd(squares[b]);
      if (lane == 0u) {
        norm_partial[subgroup * BATCH + b] = total;
      }
    }
  }
  // BLAST's coupling: z[a][n][q] = Σ_c S[a][c][q] · y[c][q][n] for this workgroup's channels.
  workgroupBarrier();
  let count = params.blocks * params.channels * BATCH;
  for (var t = lid; t < count; t += WORKGROUP) {
    let b = t % BATCH;
    let qq = (t / BATCH) % params.channels;
    let a = t / (BATCH * params.channels);
    let q = group * params.channels + qq;
    let n = r0 + b;
    if (q < params.rank && n < params.rows) {
      var sum = 0.0;
      for (var c = 0u; c < params.blocks; c++) {
        sum += s_tile[(a * params.blocks + c) * params.channels + qq] * y[(c * params.channels + qq) * BATCH + b];
      }
      if (NORMED) {
        var squares_total = 0.0;
        for (var p = 0u; p < subgroups; p++) {
          squares_total += norm_partial[p * BATCH + b];
        }
        sum *= inverseSqrt(squares_total / f32(params.x_stride) + params.norm_eps);
      }
      out[((layer * params.blocks + a) * params.rows + n) * params.rank + q] = sum;
    }
  }
}
