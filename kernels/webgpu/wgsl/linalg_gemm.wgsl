// f32 batched GEMM on strided views, for factorising weights on the GPU (models/factorize_gpu.ts):
//   C[z](m, n) = alpha · Σ_k A[z](m, k) · sa(z, k, m) · B[z](k, n) · sb(z, k, n) + beta · C[z](m, n)
// Every operand is a view: element (z, row, col) of X lies at
//   x_off + (z / z_inner) · x_outer + (z % z_inner) · x_inner + row · x_row + col · x_col,
// so transposes, sub-blocks and two-level batches (BLAST's block pairs) need no copies. The
// optional scales (flags bits 0 and 1) multiply A's and B's elements as they are loaded:
//   s_off + (z / z_inner) · s_outer + (z % z_inner) · s_inner + (k / s_kblock) · s_per_kblock
//     + k · s_per_k + (m or n) · s_per_mn
// which is how BLAST's couplings s_ac enter its gradients without scaled copies of the factors.
// CPU reference: kernels/cpu/linalg.ts stridedGemm.
//
// Tiles of 64 × 64 outputs, 16 steps of k at a time, 256 invocations of 4 × 4 outputs. Tile loads
// run along whichever index of the operand is contiguous (flags bits 2 and 3), so that transposed
// views load whole cache lines too. (128 × 128 tiles of 8 × 8, 8 steps deep, ran at 3–16 TFLOP/s
// where these run at 15–22 on an H200: bench/linalg-gemm.ts, bench/RESULTS.md.)

struct Params {
  m: u32, n: u32, k: u32, z_inner: u32,
  alpha: f32, beta: f32, flags: u32, pad0: u32,
  a_off: u32, a_outer: u32, a_inner: u32, a_row: u32, a_col: u32,
  b_off: u32, b_outer: u32, b_inner: u32, b_row: u32, b_col: u32,
  c_off: u32, c_outer: u32, c_inner: u32, c_row: u32, c_col: u32,
  sa_off: u32, sa_outer: u32, sa_inner: u32, sa_kblock: u32, sa_per_kblock: u32, sa_per_k: u32, sa_per_mn: u32,
  sb_off: u32, sb_outer: u32, sb_inner: u32, sb_kblock: u32, sb_per_kblock: u32, sb_per_k: u32, sb_per_mn: u32,
  pad1: u32, pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> scales: array<f32>;

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;
const A_SCALED: u32 = 1u;
const B_SCALED: u32 = 2u;
/** A's tile loads run along k (A is contiguous in k); otherwise along m. */
const A_ALONG_K: u32 = 4u;
/** B's tile loads run along n (B is contiguous in n); otherwise along k. */
const B_ALONG_N: u32 = 8u;

var<workgroup> a_tile: array<f32, 1024>; // [DEPTH][TILE]
var<workgroup> b_tile: array<f32, 1024>; // [DEPTH][TILE]

fn batch_offset(z: u32, off: u32, outer: u32, inner: u32) -> u32 {
  return off + (z / params.z_inner) * outer + (z % params.z_inner) * inner;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let z = group.z;
  let m0 = group.y * TILE;
  let n0 = group.x * TILE;
  let a_base = batch_offset(z, params.a_off, params.a_outer, params.a_inner);
  let b_base = batch_offset(z, params.b_off, params.b_outer, params.b_inner);
  let c_base = batch_offset(z, params.c_off, params.c_outer, params.c_inner);
  let sa_base = batch_offset(z, params.sa_off, params.sa_outer, params.sa_inner);
  let sb_base = batch_offset(z, params.sb_off, params.sb_outer, params.sb_inner);
  let tm = (lid / 16u) * 4u;
  let tn = (lid % 16u) * 4u;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < params.k; k0 += DEPTH) {
    for (var e = lid; e < TILE * DEPTH; e += 256u) {
      // A's element (m0 + mm, k0 + kk) into a_tile[kk][mm].
      var mm = e % TILE;
      var kk = e / TILE;
      if ((params.flags & A_ALONG_K) != 0u) {
        mm = e / DEPTH;
        kk = e % DEPTH;
      }
      let row = m0 + mm;
      let col = k0 + kk;
      var value = 0.0;
      if (row < params.m && col < params.k) {
        value = a[a_base + row * params.a_row + col * params.a_col];
        if ((params.flags & A_SCALED) != 0u) {
          value *= scales[sa_base + (col / params.sa_kblock) * params.sa_per_kblock + col * params.sa_per_k + row * params.sa_per_mn];
        }
      }
      a_tile[kk * TILE + mm] = value;
      // B's element (k0 + kk, n0 + nn) into b_tile[kk][nn].
      var nn = e / DEPTH;
      kk = e % DEPTH;
      if ((params.flags & B_ALONG_N) != 0u) {
        nn = e % TILE;
        kk = e / TILE;
      }
      let k_index = k0 + kk;
      let n_index = n0 + nn;
      var b_value = 0.0;
      if (k_index < params.k && n_index < params.n) {
        b_value = b[b_base + k_index * params.b_row + n_index * params.b_col];
        if ((params.flags & B_SCALED) != 0u) {
          b_value *= scales[sb_base + (k_index / params.sb_kblock) * params.sb_per_kblock + k_index * params.sb_per_k + n_index * params.sb_per_mn];
        }
      }
      b_tile[kk * TILE + nn] = b_value;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < DEPTH; kk++) {
      let bv = vec4<f32>(b_tile[kk * TILE + tn], b_tile[kk * TILE + tn + 1u], b_tile[kk * TILE + tn + 2u], b_tile[kk * TILE + tn + 3u]);
      for (var i = 0u; i < 4u; i++) {
        acc[i] += a_tile[kk * TILE + tm + i] * bv;
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = m0 + tm + i;
    if (row >= params.m) {
      break;
    }
    for (var j = 0u; j < 4u; j++) {
      let col = n0 + tn + j;
      if (col < params.n) {
        let index = c_base + row * params.c_row + col * params.c_col;
        var value = params.alpha * acc[i][j];
        // beta = 0 overwrites without reading (C may hold anything, NaN included).
        if (params.beta != 0.0) {
          value += params.beta * c[index];
        }
        c[index] = value;
      }
    }
  }
}
