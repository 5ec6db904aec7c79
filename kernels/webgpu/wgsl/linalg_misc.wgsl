// The small kernels around linalg_gemm.wgsl and cholesky.wgsl when factorising weights on the GPU
// (models/factorize_gpu.ts). `stats` holds scalars that stay on the GPU between dispatches: the
// squared error, ε, the iteration and its step size, and the error of every iteration (read back
// for progress), so that an iteration records the same dispatches every time. CPU reference:
// kernels/cpu/linalg.ts.

struct Params {
  count: u32, slot: u32, factor: f32, mode: u32,
  r: u32, blocks: u32, x_row: u32, diag_scale: f32,
  x_off: u32, x_batch: u32, y_off: u32, y_batch: u32,
  out_off: u32, out_batch: u32, eps_slot: u32, eps_factor: f32,
  y_row: u32, pad0: u32, pad1: u32, pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> first: array<f32>;
@group(0) @binding(2) var<storage, read_write> second: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;

/** stats: [error², ε, iteration, step, history of error² from HISTORY on]. */
const ITERATION: u32 = 2u;
const STEP: u32 = 3u;
const HISTORY: u32 = 8u;
/** finish: also append the sum to the history at the current iteration. */
const RECORD: u32 = 1u;

/** Partial sums of squares of first[x_off .. x_off + count), one per workgroup, to out[out_off + group]. */
@compute @workgroup_size(256)
fn sum_squares(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  var sum = 0.0;
  for (var e = group.x * 256u + lid; e < params.count; e += groups.x * 256u) {
    let x = first[params.x_off + e];
    sum += x * x;
  }
  let total = workgroup_sum(sum, lid);
  if (lid == 0u) {
    out[params.out_off + group.x] = total;
  }
}

/** stats[slot] = Σ first[0 .. count), stats[slot + 1] = factor · √ of it (ε from an error²). */
@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_index) lid: u32) {
  var sum = 0.0;
  for (var e = lid; e < params.count; e += 256u) {
    sum += first[e];
  }
  let total = workgroup_sum(sum, lid);
  if (lid == 0u) {
    stats[params.slot] = total;
    stats[params.slot + 1u] = params.factor * sqrt(total);
    if ((params.mode & RECORD) != 0u) {
      stats[HISTORY + u32(stats[ITERATION])] = total;
    }
  }
}

/** Next iteration: its step size 1 − iteration / iterations (factor = iterations). */
@compute @workgroup_size(1)
fn advance() {
  let iteration = stats[ITERATION] + 1.0;
  stats[ITERATION] = iteration;
  stats[STEP] = 1.0 - iteration / params.factor;
}

/**
 * Gram matrices (r × r each, out[out_off + z · out_batch ..]), with diag_scale · and
 * + eps_factor · stats[eps_slot] on the diagonal:
 *   mode 0: first's matrix z;
 *   mode 1 (BLAST's U step, z = a): Σ_c diag(s_ac) first_c diag(s_ac), s in second from y_off;
 *   mode 2 (V step, z = c): Σ_a diag(s_ac) first_a diag(s_ac);
 *   mode 3 (couplings, z = (a, c) from x_off, y_off): first's matrix a ∘ second's matrix c.
 */
@compute @workgroup_size(256)
fn gram(@builtin(global_invocation_id) id: vec3<u32>, @builtin(workgroup_id) group: vec3<u32>) {
  let r = params.r;
  let e = id.x;
  if (e >= r * r) {
    return;
  }
  let z = group.y;
  let k = e / r;
  let l = e % r;
  let b = params.blocks;
  var value = 0.0;
  // Modes 1 and 2 read first's b matrices from 0 (x_off unused).
  if (params.mode == 0u) {
    value = first[params.x_off + z * params.x_batch + e];
  } else if (params.mode == 3u) {
    value = first[params.x_off + (z / b) * params.x_batch + e] * second[params.y_off + (z % b) * params.y_batch + e];
  } else {
    for (var t = 0u; t < b; t++) {
      // mode 1: a = z, c = t; mode 2: a = t, c = z.
      let pair = select(t * b + z, z * b + t, params.mode == 1u);
      let s = params.y_off + pair * r;
      value += second[s + k] * second[s + l] * first[t * r * r + e];
    }
  }
  if (k == l) {
    value = value * params.diag_scale + params.eps_factor * stats[params.eps_slot];
  }
  out[params.out_off + z * params.out_batch + e] = value;
}

/** out[out_off + e] += factor · stats[slot] · first[x_off + e] for e < count. */
@compute @workgroup_size(256)
fn axpy(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let scale = params.factor * stats[params.slot];
  for (var e = id.x; e < params.count; e += groups.x * 256u) {
    out[params.out_off + e] += scale * first[params.x_off + e];
  }
}

/**
 * out[out_off + z · r + k] = Σ_{q < count} first[x_off + z · x_batch + k · x_row + q]
 *   · second[y_off + (z mod blocks) · y_batch + k · y_row + q]: one row's dot product per workgroup
 *   (x = k, y = z).
 */
@compute @workgroup_size(256)
fn diag_dot(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let k = group.x;
  let z = group.y;
  let x_base = params.x_off + z * params.x_batch + k * params.x_row;
  let y_base = params.y_off + (z % params.blocks) * params.y_batch + k * params.y_row;
  var sum = 0.0;
  for (var q = lid; q < params.count; q += 256u) {
    sum += first[x_base + q] * second[y_base + q];
  }
  let total = workgroup_sum(sum, lid);
  if (lid == 0u) {
    out[params.out_off + z * params.r + k] = total;
  }
}

/**
 * Balances products U V (U: count × r in out, V: r × x_row in second; matrix z of each at
 * z · count · r and z · r · x_row, z = workgroup y) component by component: u_k and v_k scaled to
 * equal norms, √(‖u_k‖ ‖v_k‖) each, as √S on both sides of an SVD. One workgroup per k.
 */
@compute @workgroup_size(256)
fn balance(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let k = group.x;
  let r = params.r;
  let u_base = group.y * params.count * r + k;
  let v_base = (group.y * r + k) * params.x_row;
  var u_sum = 0.0;
  for (var p = lid; p < params.count; p += 256u) {
    let x = out[u_base + p * r];
    u_sum += x * x;
  }
  var v_sum = 0.0;
  for (var q = lid; q < params.x_row; q += 256u) {
    let x = second[v_base + q];
    v_sum += x * x;
  }
  let u_norm = sqrt(workgroup_sum(u_sum, lid));
  let v_norm = sqrt(workgroup_sum(v_sum, lid));
  if (u_norm == 0.0 || v_norm == 0.0) {
    return;
  }
  let f = sqrt(v_norm / u_norm);
  for (var p = lid; p < params.count; p += 256u) {
    out[u_base + p * r] *= f;
  }
  for (var q = lid; q < params.x_row; q += 256u) {
    second[v_base + q] /= f;
  }
}

/**
 * One round of one-sided Jacobi on the rows of out (r rows of `count`), rotating the rows of second
 * (r × x_row) alike, for matrix z = workgroup y of each (at z · r · count and z · r · x_row): the
 * round's pairs (round robin, round `slot` of r' − 1, r' = r rounded up to even: the last index
 * fixed, the others turning) are disjoint, one per workgroup x. A pair whose rows are not yet
 * orthogonal is rotated to make them so; after enough sweeps the rows of out are orthogonal (row
 * k = σ_k z_kᵀ) and second holds the rotations applied.
 */
@compute @workgroup_size(256)
fn jacobi_round(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let even = params.r + (params.r & 1u);
  let turning = even - 1u;
  let round = params.slot;
  let k = group.x;
  var p = even - 1u;
  var q = round % turning;
  if (k > 0u) {
    p = (round + k) % turning;
    q = (round + turning - k) % turning;
  }
  if (p >= params.r || q >= params.r) {
    return;
  }
  let n = params.count;
  let x_base = group.y * params.r * n;
  let y_base = group.y * params.r * params.x_row;
  var alpha = 0.0;
  var beta = 0.0;
  var gamma = 0.0;
  for (var e = lid; e < n; e += 256u) {
    let x = out[x_base + p * n + e];
    let y = out[x_base + q * n + e];
    alpha += x * x;
    beta += y * y;
    gamma += x * y;
  }
  alpha = workgroup_sum(alpha, lid);
  beta = workgroup_sum(beta, lid);
  gamma = workgroup_sum(gamma, lid);
  if (abs(gamma) <= 1e-7 * sqrt(alpha * beta) || gamma == 0.0) {
    return;
  }
  let zeta = (beta - alpha) / (2.0 * gamma);
  let t = select(-1.0, 1.0, zeta >= 0.0) / (abs(zeta) + sqrt(1.0 + zeta * zeta));
  let c = 1.0 / sqrt(1.0 + t * t);
  let s = c * t;
  for (var e = lid; e < n; e += 256u) {
    let x = out[x_base + p * n + e];
    let y = out[x_base + q * n + e];
    out[x_base + p * n + e] = c * x - s * y;
    out[x_base + q * n + e] = s * x + c * y;
  }
  let m = params.x_row;
  for (var e = lid; e < m; e += 256u) {
    let x = second[y_base + p * m + e];
    let y = second[y_base + q * m + e];
    second[y_base + p * m + e] = c * x - s * y;
    second[y_base + q * m + e] = s * x + c * y;
  }
}
