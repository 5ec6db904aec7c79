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
// Flags bit 2 (steps 1–2) says each quad of rows (four consecutive local rows from a multiple of
// 4) reads one block of x — BLAST with channels a multiple of 4, Monarch with a rank that is — so its x
// (and norm weight) is loaded once for the four (H200, Llama-2-7B shapes: ~10% less time).
// Stacked layers (several projections of the same x, their factors, couplings and z one after
// another): workgroup w takes layer params.layer + w / layer_groups; each layer's rows, couplings
// and z blocks are offset by one layer's worth.
// NORMED (a pipeline of its own, BLAST steps 1 + 2 only): the input is RMSNorm(x) · norm_weight.
// A BLAST workgroup reads every block of x (its channels of each input block), so it multiplies x
// by the norm weight as it loads it, sums x · x from the same loads (the first channel of each
// block counts its block), and scales z by 1 / rms at the store: RMSNorm(x) = x / rms(x), and
// steps 1–3 are linear. No pass over x before the factor streams, and no dispatch for the norm.
// LAYER_NORM (with NORMED, one row, flags bit 2: GPT-2's LayerNorm ahead of a BLAST c_attn or
// c_fc): the input is (x − mean) · s ⊙ weight + bias. Each factor row's dot products with
// x ⊙ weight, with the weight and with the bias come from the same loads, as do x's sum and sum of
// squares; the coupling then combines all three, z = s · (Σ S·y − mean · Σ S·y_weight) + Σ S·y_bias.
// The norm's bias is layer_norm_bias (binding 6, the backend's layerNormBias; zeros elsewhere).
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
  flags: u32,        // step 3: bit 0 bias, bit 1 accumulate into out; steps 1–2: bit 2 every quad's rows read one block of x
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
// NORMED: the norm weight (in_features); GATED: up (rows × in_features, as x).
@group(0) @binding(5) var<storage, read> norm_weight: array<vec4<f32>>;

override NORMED: bool = false;
override LAYER_NORM: bool = false;
// GATED (a pipeline of its own, steps 1–2, one row): the input is SwiGLU's silu(x) ⊙ up, up bound
// where the norm weight goes: a gated MLP's down projection combines its gate and up as it reads.
override GATED: bool = false;

// Input vec4 `index` of x (steps 1–2): as stored, or (GATED) silu(x) ⊙ up.
fn input4(index: u32) -> vec4<f32> {
  let v = x[index];
  if (GATED) {
    return v / (vec4<f32>(1.0) + exp(-v)) * norm_weight[index];
  }
  return v;
}
// Sums of squares per (subgroup, row of x): 64 subgroups (of 4 lanes) in the normed pipeline, 1 elsewhere.
override NORM_SUBGROUPS: u32 = 1u;
var<workgroup> norm_partial: array<f32, NORM_SUBGROUPS * BATCH>;
// LAYER_NORM: x's sums per (subgroup, row of x); each factor row's dot products with the norm's
// weight and bias (one slot elsewhere).
var<workgroup> sum_partial: array<f32, select(1u, NORM_SUBGROUPS * BATCH, LAYER_NORM)>;
var<workgroup> y_weight: array<f32, select(1u, MAX_GROUP_ROWS, LAYER_NORM)>;
var<workgroup> y_bias: array<f32, select(1u, MAX_GROUP_ROWS, LAYER_NORM)>;

override BATCH: u32 = 1u;
const MAX_BATCH: u32 = 16u;
const WORKGROUP: u32 = 256u;
const MAX_GROUP_ROWS: u32 = 64u;
var<workgroup> y: array<f32, MAX_GROUP_ROWS * BATCH>;
// BLAST: the coupling of this workgroup's channels, S[a][c][q] at (a · b + c) · channels + q - q0.
// Up to 32 blocks.
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

// Layer `layer`'s row `row`'s dot product with row n of x: stored where the mode puts it (Monarch's
// step 1, mode 1, is placed four rows at a time by emit_quad).
fn emit(layer: u32, local: u32, row: u32, n: u32, b: u32, total: f32) {
  if (params.mode == 0u) {
    y[local * BATCH + b] = total;
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

// Each subgroup takes four factor rows at a time (a quad), so that four 16-byte loads per lane are
// in flight together (one row at a time left the loads waiting on each other; eight at a time,
// two quads, measured slower on an H200). Written out as vec4s: the same code over arrays indexed
// in loops ran 3x slower there.

// Four factor rows of a workgroup from local row `first`: which rows, whether they exist, where
// their factor rows and inputs start, and (NORMED) which of them count their block's squares (its
// first channel, once per block).
struct Quad {
  rows: vec4<u32>,
  exists: vec4<u32>,
  w_base: vec4<u32>,
  x_off: vec4<u32>,
  counts: vec4<f32>,
}

fn quad(group: u32, layer: u32, first: u32) -> Quad {
  var q: Quad;
  let step = vec4<u32>(0u, 1u, 2u, 3u);
  let local = vec4<u32>(first) + step;
  if ((params.flags & 4u) != 0u) {
    // The four rows are consecutive rows of one block (flags bit 2): one division finds them all.
    // (Index arithmetic, not the loads, bounded 256-wide rows: per quad this path has a division
    // where the general one below has twelve.)
    var block = 0u;
    var row0 = 0u;
    var exists = local < vec4<u32>(params.group_rows);
    var first_channel = false;
    if (params.mode == 0u) {
      block = first / params.channels;
      let channel = first - block * params.channels;
      let q0 = group * params.channels + channel;
      row0 = block * params.rank + q0;
      exists &= vec4<u32>(q0) + step < vec4<u32>(params.rank);
      first_channel = channel == 0u;
    } else {
      row0 = group * params.group_rows + first;
      block = row0 / params.rank;
      exists &= vec4<u32>(row0) + step < vec4<u32>(params.factor_rows);
    }
    // A missing row reads row 0; its sums are dropped.
    q.rows = select(vec4<u32>(0u), vec4<u32>(row0) + step, exists);
    q.exists = select(vec4<u32>(0u), vec4<u32>(1u), exists);
    q.w_base = (q.rows + vec4<u32>(layer * params.factor_rows)) * params.w_stride;
    q.x_off = vec4<u32>(block * params.width / 4u);
    q.counts = vec4<f32>(select(0.0, 1.0, NORMED && first_channel), 0.0, 0.0, 0.0);
    return q;
  }
  // A missing row reads row 0; its sums are dropped.
  let f0 = factor_row(group, first);
  let f1 = factor_row(group, first + 1u);
  let f2 = factor_row(group, first + 2u);
  let f3 = factor_row(group, first + 3u);
  q.rows = vec4<u32>(f0.x * f0.y, f1.x * f1.y, f2.x * f2.y, f3.x * f3.y);
  q.exists = vec4<u32>(f0.y, f1.y, f2.y, f3.y);
  q.w_base = (q.rows + vec4<u32>(layer * params.factor_rows)) * params.w_stride;
  q.x_off = vec4<u32>(input_offset(layer, q.rows.x), input_offset(layer, q.rows.y), input_offset(layer, q.rows.z), input_offset(layer, q.rows.w)) / 4u;
  let channels = vec4<u32>(max(params.channels, 1u));
  q.counts = select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<bool>(NORMED) & (local < vec4<u32>(params.group_rows)) & (local % channels == vec4<u32>(0u)));
  return q;
}

// One factor row's 8 halves (one 16-byte load) times x's 8 inputs from vec4 `xo` (times the norm
// weight's from `go`, NORMED), and (NORMED) those inputs' sum of squares.
fn row_dot(packed: vec4<u32>, xo: u32, go: u32) -> vec2<f32> {
  let u = unpack8(packed);
  let x0 = input4(xo);
  let x1 = input4(xo + 1u);
  if (NORMED) {
    return vec2<f32>(dot(u[0], x0 * norm_weight[go]) + dot(u[1], x1 * norm_weight[go + 1u]), dot(x0, x0) + dot(x1, x1));
  }
  return vec2<f32>(dot(u[0], x0) + dot(u[1], x1), 0.0);
}

// A quad's four rows' dot products with one row of x (vec4 offset `n` from each row's input), and
// the squares its counting rows add.
// (LAYER_NORM, flags bit 2 only: also x's sum in the second vector's y, and the four rows' dot
// products with the norm's weight and bias as the third and fourth.)
fn quad_dots(q: Quad, p0: vec4<u32>, p1: vec4<u32>, p2: vec4<u32>, p3: vec4<u32>, n: u32, c: u32) -> array<vec4<f32>, 4> {
  if ((params.flags & 4u) != 0u) {
    // The four rows read one block of x (flags bit 2, steps 1–2): its inputs loaded once.
    let x0 = input4(q.x_off.x + n);
    let x1 = input4(q.x_off.x + n + 1u);
    var g0 = x0;
    var g1 = x1;
    var squares = 0.0;
    var sum = 0.0;
    let u0 = unpack8(p0);
    let u1 = unpack8(p1);
    let u2 = unpack8(p2);
    let u3 = unpack8(p3);
    var with_weight = vec4<f32>(0.0);
    var with_bias = vec4<f32>(0.0);
    if (NORMED) {
      let w0 = norm_weight[q.x_off.x + 2u * c];
      let w1 = norm_weight[q.x_off.x + 2u * c + 1u];
      g0 = x0 * w0;
      g1 = x1 * w1;
      squares = q.counts.x * (dot(x0, x0) + dot(x1, x1));
      if (LAYER_NORM) {
        sum = q.counts.x * dot(x0 + x1, vec4<f32>(1.0));
        let e0 = layer_norm_bias(q.x_off.x + 2u * c);
        let e1 = layer_norm_bias(q.x_off.x + 2u * c + 1u);
        with_weight = vec4<f32>(dot(u0[0], w0) + dot(u0[1], w1), dot(u1[0], w0) + dot(u1[1], w1), dot(u2[0], w0) + dot(u2[1], w1), dot(u3[0], w0) + dot(u3[1], w1));
        with_bias = vec4<f32>(dot(u0[0], e0) + dot(u0[1], e1), dot(u1[0], e0) + dot(u1[1], e1), dot(u2[0], e0) + dot(u2[1], e1), dot(u3[0], e0) + dot(u3[1], e1));
      }
    }
    return array<vec4<f32>, 4>(vec4<f32>(dot(u0[0], g0) + dot(u0[1], g1), dot(u1[0], g0) + dot(u1[1], g1),
      dot(u2[0], g0) + dot(u2[1], g1), dot(u3[0], g0) + dot(u3[1], g1)), vec4<f32>(squares, sum, 0.0, 0.0), with_weight, with_bias);
  }
  let s0 = row_dot(p0, q.x_off.x + n, q.x_off.x + 2u * c);
  let s1 = row_dot(p1, q.x_off.y + n, q.x_off.y + 2u * c);
  let s2 = row_dot(p2, q.x_off.z + n, q.x_off.z + 2u * c);
  let s3 = row_dot(p3, q.x_off.w + n, q.x_off.w + 2u * c);
  return array<vec4<f32>, 4>(vec4<f32>(s0.x, s1.x, s2.x, s3.x), vec4<f32>(dot(q.counts, vec4<f32>(s0.y, s1.y, s2.y, s3.y))), vec4<f32>(0.0), vec4<f32>(0.0));
}

// BLAST's coupling value t = at.x · channels + at.y (block pair, channel) of this workgroup's tile (0 past its end).
fn coupling_value(t: u32, at: vec2<u32>, count: u32, group: u32, layer: u32) -> f32 {
  let q = group * params.channels + at.y;
  if (t >= count || q >= params.rank) {
    return 0.0;
  }
  return aux[layer * params.blocks * params.blocks * params.rank + at.x * params.rank + q];
}

// (pair, channel) of the tile value WORKGROUP further on, `step` being WORKGROUP as (pairs, channels).
fn next_coupling(at: vec2<u32>, step: vec2<u32>) -> vec2<u32> {
  let next = at + step;
  if (next.y >= params.channels) {
    return vec2<u32>(next.x + 1u, next.y - params.channels);
  }
  return next;
}

// Each thread's share of the coupling tile (MAX_COUPLING values over the workgroup).
const COUPLING_PER_THREAD: u32 = 4u;
const_assert MAX_COUPLING == COUPLING_PER_THREAD * WORKGROUP;

// Lane 0 stores a quad's sums for row b of the batch.
fn emit_quad(layer: u32, q: Quad, first: u32, n: u32, b: u32, total: vec4<f32>) {
  if (params.mode == 1u && n < params.rows) {
    // Monarch's rows are consecutive (missing ones only at the end): one division places the four.
    var rest = q.rows.x % params.blocks;
    var column = q.rows.x / params.blocks;
    for (var k = 0u; k < 4u; k++) {
      if (first + k < params.group_rows && q.exists[k] == 1u) {
        out[((layer * params.blocks + rest) * params.rows + n) * params.rank + column] = total[k];
      }
      rest += 1u;
      if (rest == params.blocks) {
        rest = 0u;
        column += 1u;
      }
    }
    return;
  }
  if (n < params.rows || params.mode == 0u) {
    for (var k = 0u; k < 4u; k++) {
      if (first + k < params.group_rows && (q.exists[k] == 1u || params.mode == 0u)) {
        emit(layer, first + k, q.rows[k], n, b, total[k]);
      }
    }
  }
}

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
  // BLAST's coupling tile: read into registers before the factor, stored to workgroup memory after
  // it, so that its reads' latency overlaps the factor's instead of coming first.
  let coupling_count = select(0u, params.blocks * params.blocks * params.channels, params.mode == 0u);
  // Value lid + k · WORKGROUP of the tile is (block pair, channel) = (pair, channel) stepped k times
  // by (pairs_step, channel_step): two divisions per thread where each value's own took two.
  // (Written out: a vector indexed in a loop may be kept in memory.)
  var s_reg = vec4<f32>(0.0);
  if (params.mode == 0u) {
    let channels = params.channels;
    let pair0 = lid / channels;
    let at0 = vec2<u32>(pair0, lid - pair0 * channels);
    let pairs_step = WORKGROUP / channels;
    let step = vec2<u32>(pairs_step, WORKGROUP - pairs_step * channels);
    let at1 = next_coupling(at0, step);
    let at2 = next_coupling(at1, step);
    let at3 = next_coupling(at2, step);
    s_reg = vec4<f32>(coupling_value(lid, at0, coupling_count, group, layer), coupling_value(lid + WORKGROUP, at1, coupling_count, group, layer),
      coupling_value(lid + 2u * WORKGROUP, at2, coupling_count, group, layer), coupling_value(lid + 3u * WORKGROUP, at3, coupling_count, group, layer));
  }
  var n_offset: array<u32, MAX_BATCH>;
  for (var b = 0u; b < BATCH; b++) {
    n_offset[b] = min(r0 + b, params.rows - 1u) * step;
  }
  // NORMED: this lane's part of each row of x's sum of squares.
  var squares: array<f32, MAX_BATCH>;
  var sums: array<f32, MAX_BATCH>;
  for (var b = 0u; b < BATCH; b++) {
    squares[b] = 0.0;
    sums[b] = 0.0;
  }
  for (var first = subgroup * 4u; first < params.group_rows; first += subgroups * 4u) {
    let q = quad(group, layer, first);
    // Zeroed explicitly: a declaration in a loop body is not reliably re-zeroed everywhere (lavapipe
    // kept the previous rows' sums).
    var acc: array<vec4<f32>, MAX_BATCH>;
    for (var b = 0u; b < BATCH; b++) {
      acc[b] = vec4<f32>(0.0);
    }
    // LAYER_NORM (one row): the quad's dot products with the norm's weight and bias.
    var acc_weight = vec4<f32>(0.0);
    var acc_bias = vec4<f32>(0.0);
    for (var c = lane; c < chunks; c += subgroup_size) {
      // Every row's load first, then the sums (unpacked once for every row of the batch).
      let p0 = w[q.w_base.x + c];
      let p1 = w[q.w_base.y + c];
      let p2 = w[q.w_base.z + c];
      let p3 = w[q.w_base.w + c];
      for (var b = 0u; b < BATCH; b++) {
        let dots = quad_dots(q, p0, p1, p2, p3, n_offset[b] / 4u + 2u * c, c);
        acc[b] += dots[0];
        squares[b] += dots[1].x;
        sums[b] += dots[1].y;
        acc_weight += dots[2];
        acc_bias += dots[3];
      }
    }
    for (var b = 0u; b < BATCH; b++) {
      let total = subgroupAdd(acc[b]);
      if (lane == 0u) {
        emit_quad(layer, q, first, r0 + b, b, total);
      }
    }
    if (LAYER_NORM) {
      let total_weight = subgroupAdd(acc_weight);
      let total_bias = subgroupAdd(acc_bias);
      if (lane == 0u) {
        for (var k = 0u; k < 4u; k++) {
          if (first + k < params.group_rows) {
            y_weight[first + k] = total_weight[k];
            y_bias[first + k] = total_bias[k];
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
      if (LAYER_NORM) {
        let total_sum = subgroupAdd(sums[b]);
        if (lane == 0u) {
          sum_partial[subgroup * BATCH + b] = total_sum;
        }
      }
    }
  }
  for (var k = 0u; k < COUPLING_PER_THREAD; k++) {
    let t = lid + k * WORKGROUP;
    if (t < coupling_count) {
      s_tile[t] = s_reg[k];
    }
  }
  // BLAST's coupling: z[a][n][q] = Σ_c S[a][c][q] · y[c][q][n] for this workgroup's channels.
  workgroupBarrier();
  let count = params.blocks * params.channels * BATCH;
  for (var t = lid; t < count; t += WORKGROUP) {
    let b = t % BATCH;
    let a = (t / BATCH) / params.channels;
    let qq = t / BATCH - a * params.channels;
    let q = group * params.channels + qq;
    let n = r0 + b;
    if (q < params.rank && n < params.rows) {
      var sum = 0.0;
      var sum_weight = 0.0;
      var sum_bias = 0.0;
      for (var c = 0u; c < params.blocks; c++) {
        let s_value = s_tile[(a * params.blocks + c) * params.channels + qq];
        sum += s_value * y[(c * params.channels + qq) * BATCH + b];
        if (LAYER_NORM) {
          sum_weight += s_value * y_weight[c * params.channels + qq];
          sum_bias += s_value * y_bias[c * params.channels + qq];
        }
      }
      if (NORMED) {
        var squares_total = 0.0;
        var x_total = 0.0;
        for (var p = 0u; p < subgroups; p++) {
          squares_total += norm_partial[p * BATCH + b];
          if (LAYER_NORM) {
            x_total += sum_partial[p * BATCH + b];
          }
        }
        let n = f32(params.x_stride);
        if (LAYER_NORM) {
          let mean = x_total / n;
          sum = inverseSqrt(max(squares_total / n - mean * mean, 0.0) + params.norm_eps) * (sum - mean * sum_weight) + sum_bias;
        } else {
          sum *= inverseSqrt(squares_total / n + params.norm_eps);
        }
      }
      out[((layer * params.blocks + a) * params.rows + n) * params.rank + q] = sum;
    }
  }
}
