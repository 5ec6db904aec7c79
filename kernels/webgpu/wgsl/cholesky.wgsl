// Batched Cholesky factorisation and solves of symmetric positive definite systems, for
// factorising weights on the GPU (models/factorize_gpu.ts). Blocked by panels of NB columns; the
// host records, for each panel j (columns j0 .. j0 + w):
//   factor:  `panel` factors the diagonal block A_jj = L_jj L_jjᵀ in workgroup memory, writes
//            L_jj⁻¹ to `inverses` and the panel below it, L_ij = A_ij L_jj⁻ᵀ, over A_ij;
//            `update` subtracts L_ij L_kjᵀ from the trailing lower triangle (i ≥ k > j): the
//            rest of the panel's group of columns at once, the columns past the group once for
//            the whole group (kernels/webgpu/linalg.ts).
//   solve L Lᵀ X = Y (Y overwritten by X): forward, panel by panel, `diag_solve` Y_j ← L_jj⁻¹ Y_j
//            and `update` Y_i −= L_ij Y_j below it; backward, last panel first, Y_j ← L_jj⁻ᵀ Y_j
//            and Y_i −= L_jiᵀ Y_j above it.
// Only the lower triangle of A is read; the diagonal blocks keep A's values (solves use the
// inverses). CPU reference: kernels/cpu/linalg.ts choleskySolve.
//
// `update` is C(r, c) −= Σ_{t < w} P(r, t) · Q(c, t) on strided views, P and Q read from either
// binding (flags), C written in place: one binding holds what is written and what is read beside
// it (disjoint parts), since WebGPU forbids binding a buffer twice when one binding writes.

struct Params {
  n: u32, j0: u32, w: u32, flags: u32,
  pad0: u32, mat_batch: u32, inv_off: u32, inv_batch: u32,
  rows: u32, cols: u32, pad1: u32, pad2: u32,
  c_off: u32, c_batch: u32, c_row: u32, c_col: u32,
  p_off: u32, p_batch: u32, p_row: u32, p_col: u32,
  q_off: u32, q_batch: u32, q_row: u32, q_col: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
/** The matrices being factored (panel), or the right-hand sides (diag_solve), or C (update). */
@group(0) @binding(1) var<storage, read_write> target_data: array<f32>;
/** The factored matrices, when `update` works on right-hand sides. */
@group(0) @binding(2) var<storage, read> other: array<f32>;
/** L_jj⁻¹ of every panel of every matrix, NB × NB each. */
@group(0) @binding(3) var<storage, read_write> inverses: array<f32>;

const NB: u32 = 32u;
const LOWER_ONLY: u32 = 1u;
const P_IN_TARGET: u32 = 2u;
const Q_IN_TARGET: u32 = 4u;
/** P's tile loads run along t (contiguous in t); otherwise along r. Likewise Q's along t or c. */
const P_ALONG_T: u32 = 8u;
const Q_ALONG_T: u32 = 16u;
/** diag_solve with L_jj⁻ᵀ (backward). */
const TRANSPOSED: u32 = 32u;

var<workgroup> diagonal: array<f32, 1024>; // [NB][NB]
var<workgroup> lower_inverse: array<f32, 1024>; // [NB][NB]

@compute @workgroup_size(256)
fn panel(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let z = group.y;
  let n = params.n;
  let j0 = params.j0;
  let w = params.w;
  let base = z * params.mat_batch;
  // The diagonal block's lower triangle, padded to NB × NB with the identity.
  for (var e = lid; e < NB * NB; e += 256u) {
    let r = e / NB;
    let col = e % NB;
    var value = select(0.0, 1.0, r == col);
    if (r < w && col <= r) {
      value = target_data[base + (j0 + r) * n + j0 + col];
    }
    diagonal[e] = value;
  }
  for (var k = 0u; k < NB; k++) {
    workgroupBarrier();
    // Regularised systems are positive definite; the floor only keeps rounding from taking a root of < 0.
    let pivot = sqrt(max(diagonal[k * NB + k], 1e-30));
    workgroupBarrier();
    if (lid >= k && lid < NB) {
      diagonal[lid * NB + k] = select(diagonal[lid * NB + k] / pivot, pivot, lid == k);
    }
    workgroupBarrier();
    for (var e = lid; e < NB * NB; e += 256u) {
      let r = e / NB;
      let col = e % NB;
      if (col > k && r >= col) {
        diagonal[e] -= diagonal[r * NB + k] * diagonal[col * NB + k];
      }
    }
  }
  workgroupBarrier();
  // L_jj⁻¹ by forward substitution, one column per invocation.
  if (lid < NB) {
    for (var i = 0u; i < NB; i++) {
      var value = 0.0;
      if (i >= lid) {
        var sum = select(0.0, 1.0, i == lid);
        for (var t = lid; t < i; t++) {
          sum -= diagonal[i * NB + t] * lower_inverse[t * NB + lid];
        }
        value = sum / diagonal[i * NB + i];
      }
      lower_inverse[i * NB + lid] = value;
    }
  }
  workgroupBarrier();
  if (group.x == 0u) {
    for (var e = lid; e < NB * NB; e += 256u) {
      inverses[params.inv_off + z * params.inv_batch + e] = lower_inverse[e];
    }
  }
  // One row of the panel below the diagonal block per invocation: L_ij = A_ij L_jj⁻ᵀ.
  let row = j0 + w + group.x * 256u + lid;
  if (row < n) {
    let at = base + row * n + j0;
    var x: array<f32, NB>;
    for (var t = 0u; t < w; t++) {
      x[t] = target_data[at + t];
    }
    for (var col = 0u; col < w; col++) {
      var sum = 0.0;
      for (var t = 0u; t <= col; t++) {
        sum += x[t] * lower_inverse[col * NB + t];
      }
      target_data[at + col] = sum;
    }
  }
}

/** Y_j ← L_jj⁻¹ Y_j (or L_jj⁻ᵀ Y_j), one right-hand side per invocation; Y is the view c_*. */
@compute @workgroup_size(256)
fn diag_solve(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let z = group.y;
  for (var e = lid; e < NB * NB; e += 256u) {
    lower_inverse[e] = inverses[params.inv_off + z * params.inv_batch + e];
  }
  workgroupBarrier();
  let column = group.x * 256u + lid;
  if (column >= params.cols) {
    return;
  }
  let base = params.c_off + z * params.c_batch + column * params.c_col + params.j0 * params.c_row;
  let w = params.w;
  var y: array<f32, NB>;
  for (var t = 0u; t < w; t++) {
    y[t] = target_data[base + t * params.c_row];
  }
  let transposed = (params.flags & TRANSPOSED) != 0u;
  for (var i = 0u; i < w; i++) {
    var sum = 0.0;
    if (transposed) {
      for (var t = i; t < w; t++) {
        sum += lower_inverse[t * NB + i] * y[t];
      }
    } else {
      for (var t = 0u; t <= i; t++) {
        sum += lower_inverse[i * NB + t] * y[t];
      }
    }
    target_data[base + i * params.c_row] = sum;
  }
}

var<workgroup> p_tile: array<f32, 1024>; // [16][64]: P(r0 + rr, t0 + tt) at tt * 64 + rr
var<workgroup> q_tile: array<f32, 1024>; // [16][64]

/** A value of P or Q, from the binding the flag (P_IN_TARGET or Q_IN_TARGET) names. */
fn load_operand(index: u32, in_target_flag: u32) -> f32 {
  if ((params.flags & in_target_flag) != 0u) {
    return target_data[index];
  }
  return other[index];
}

struct TileEntry {
  at: u32,
  value: f32,
}

/**
 * Entry e of a [16][64] operand tile from t0: its slot (t · 64 + i) and the operand's value at row
 * outer0 + i, column t0 + t (zero past `limit` rows or w columns). With along_t the 1024 entries run
 * along t first (an operand whose columns lie together in memory).
 */
fn operand_entry(e: u32, outer0: u32, limit: u32, t0: u32, base: u32, row: u32, col: u32, along_t: bool, in_target_flag: u32) -> TileEntry {
  var i = e % 64u;
  var t = e / 64u;
  if (along_t) {
    i = e / 16u;
    t = e % 16u;
  }
  var value = 0.0;
  if (outer0 + i < limit && t0 + t < params.w) {
    value = load_operand(base + (outer0 + i) * row + (t0 + t) * col, in_target_flag);
  }
  return TileEntry(t * 64u + i, value);
}

/** C(r, c) −= Σ_{t < w} P(r, t) Q(c, t) for r < rows, c < cols (tiles right of the diagonal skipped with LOWER_ONLY). */
@compute @workgroup_size(256)
fn update(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  if ((params.flags & LOWER_ONLY) != 0u && group.x > group.y) {
    return;
  }
  let z = group.z;
  let r0 = group.y * 64u;
  let c0 = group.x * 64u;
  let p_base = params.p_off + z * params.p_batch;
  let q_base = params.q_off + z * params.q_batch;
  let tr = (lid / 16u) * 4u;
  let tc = (lid % 16u) * 4u;
  var acc: array<vec4<f32>, 4>;
  for (var t0 = 0u; t0 < params.w; t0 += 16u) {
    for (var e = lid; e < 1024u; e += 256u) {
      let p = operand_entry(e, r0, params.rows, t0, p_base, params.p_row, params.p_col, (params.flags & P_ALONG_T) != 0u, P_IN_TARGET);
      p_tile[p.at] = p.value;
      let q = operand_entry(e, c0, params.cols, t0, q_base, params.q_row, params.q_col, (params.flags & Q_ALONG_T) != 0u, Q_IN_TARGET);
      q_tile[q.at] = q.value;
    }
    workgroupBarrier();
    for (var tt = 0u; tt < 16u; tt++) {
      let qv = vec4<f32>(q_tile[tt * 64u + tc], q_tile[tt * 64u + tc + 1u], q_tile[tt * 64u + tc + 2u], q_tile[tt * 64u + tc + 3u]);
      for (var i = 0u; i < 4u; i++) {
        acc[i] += p_tile[tt * 64u + tr + i] * qv;
      }
    }
    workgroupBarrier();
  }
  let c_base = params.c_off + z * params.c_batch;
  for (var i = 0u; i < 4u; i++) {
    let r = r0 + tr + i;
    if (r >= params.rows) {
      break;
    }
    for (var j = 0u; j < 4u; j++) {
      let col = c0 + tc + j;
      if (col < params.cols) {
        let index = c_base + r * params.c_row + col * params.c_col;
        target_data[index] -= acc[i][j];
      }
    }
  }
}
