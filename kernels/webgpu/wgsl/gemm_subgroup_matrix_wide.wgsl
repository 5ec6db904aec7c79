// Prefill matmul on tensor cores, wide tiles, for in_features a multiple of 8:
// out (rows × out_features) = x · Wᵀ + bias with f16 × f16 → f32 subgroup matrices (16 × 16 × 16).
// A workgroup of 256 threads (eight subgroups of 32) makes a 128 × 128 output tile; subgroups sit
// 4 (rows) × 2 (columns), each owning 32 × 64 outputs as 2 × 4 result matrices. Per 32-deep k step
// the x tile (f32 read as vec4, rounded to f16) and the W tile (16-byte loads of 8 halves) are
// staged in workgroup memory. Each result matrix leaves through a 16 × 16 per-subgroup staging
// area so ragged edges are bounds-checked and the bias is added on the way out.
enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;

struct Params {
  rows: u32,
  in_features: u32,
  out_features: u32,
  w_stride: u32, // vec4<u32> (8 halves) per weight row
  has_bias: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const TILE: u32 = 128u;
const DEPTH: u32 = 32u;
var<workgroup> x_tile: array<f16, 4096>;  // TILE rows × DEPTH
var<workgroup> w_tile: array<f16, 4096>;  // TILE weight rows × DEPTH
var<workgroup> staging: array<f32, 2048>; // 8 subgroups × 16 × 16

alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;
alias Result = subgroup_matrix_result<f32, 16, 16>;

fn write_out(subgroup: u32, lane: u32, row0: u32, col0: u32) {
  // The subgroup's 32 lanes write its 16 × 16 staging area, 8 values each.
  for (var i = 0u; i < 8u; i++) {
    let index = lane + i * 32u;
    let r = row0 + index / 16u;
    let o = col0 + index % 16u;
    if (r < params.rows && o < params.out_features) {
      var b = 0.0;
      if (params.has_bias == 1u) {
        b = bias[o];
      }
      out[r * params.out_features + o] = staging[subgroup * 256u + index] + b;
    }
  }
}

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_id) subgroup: u32,
  @builtin(subgroup_invocation_id) lane: u32,
) {
  let row0 = wid.y * TILE;
  let out0 = wid.x * TILE;
  let sub_row = (subgroup / 2u) * 32u;
  let sub_col = (subgroup % 2u) * 64u;
  let x_row_vec4s = params.in_features / 4u;
  var acc: array<Result, 8>;
  for (var k0 = 0u; k0 < params.in_features; k0 += DEPTH) {
    // x tile: 128 rows × 8 vec4 = 1024 vec4, 4 per thread.
    for (var i = 0u; i < 4u; i++) {
      let index = lid + i * 256u;
      let m = index / 8u;
      let q = index % 8u;
      let r = row0 + m;
      let k = k0 + q * 4u;
      var v = vec4<f32>(0.0);
      if (r < params.rows && k < params.in_features) {
        v = x[r * x_row_vec4s + k / 4u];
      }
      let base = m * DEPTH + q * 4u;
      x_tile[base] = f16(v.x);
      x_tile[base + 1u] = f16(v.y);
      x_tile[base + 2u] = f16(v.z);
      x_tile[base + 3u] = f16(v.w);
    }
    // W tile: 128 rows × 4 vec4<u32> (8 halves each) = 512 loads, 2 per thread.
    for (var i = 0u; i < 2u; i++) {
      let index = lid + i * 256u;
      let n = index / 4u;
      let q = index % 4u;
      let o = out0 + n;
      let c = k0 / 8u + q;
      var p = vec4<u32>(0u);
      if (o < params.out_features && c < params.w_stride) {
        p = w[o * params.w_stride + c];
      }
      let base = n * DEPTH + q * 8u;
      let h0 = bitcast<vec2<f16>>(p.x);
      let h1 = bitcast<vec2<f16>>(p.y);
      let h2 = bitcast<vec2<f16>>(p.z);
      let h3 = bitcast<vec2<f16>>(p.w);
      w_tile[base] = h0.x;
      w_tile[base + 1u] = h0.y;
      w_tile[base + 2u] = h1.x;
      w_tile[base + 3u] = h1.y;
      w_tile[base + 4u] = h2.x;
      w_tile[base + 5u] = h2.y;
      w_tile[base + 6u] = h3.x;
      w_tile[base + 7u] = h3.y;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < DEPTH; kk += 16u) {
      let a0 = subgroupMatrixLoad<Left>(&x_tile, sub_row * DEPTH + kk, false, DEPTH);
      let a1 = subgroupMatrixLoad<Left>(&x_tile, (sub_row + 16u) * DEPTH + kk, false, DEPTH);
      for (var j = 0u; j < 4u; j++) {
        let b = subgroupMatrixLoad<Right>(&w_tile, (sub_col + j * 16u) * DEPTH + kk, true, DEPTH);
        acc[j] = subgroupMatrixMultiplyAccumulate(a0, b, acc[j]);
        acc[4u + j] = subgroupMatrixMultiplyAccumulate(a1, b, acc[4u + j]);
      }
    }
    workgroupBarrier();
  }
  for (var f = 0u; f < 8u; f++) {
    subgroupMatrixStore(&staging, subgroup * 256u, acc[f], false, 16u);
    workgroupBarrier();
    write_out(subgroup, lane, row0 + sub_row + (f / 4u) * 16u, out0 + sub_col + (f % 4u) * 16u);
    workgroupBarrier();
  }
}
