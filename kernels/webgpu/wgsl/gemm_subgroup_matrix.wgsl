// Prefill matmul on tensor cores through subgroup matrices (f16 × f16 → f32, 16 × 16 × 16):
// out (rows × out_features) = x · Wᵀ + bias. A workgroup of 128 threads (four subgroups of 32)
// makes a 64 × 64 output tile; each subgroup owns a 32 × 32 quadrant as 2 × 2 result matrices.
// Per 32-deep k step, x (f32, rounded to f16) and W (f16) tiles are staged in workgroup memory;
// W is row-major (out × in), so Wᵀ loads as a column-major right matrix. Results go through
// workgroup memory so ragged edges (rows, out_features not multiples of 64) are bounds-checked.
enable f16;
enable chromium_experimental_subgroup_matrix;

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<vec2<f16>>;

const TILE: u32 = 64u;
const DEPTH: u32 = 32u;
var<workgroup> x_tile: array<f16, 2048>;   // TILE rows × DEPTH, row-major
var<workgroup> w_tile: array<f16, 2048>;   // TILE weight rows × DEPTH, row-major
var<workgroup> out_tile: array<f32, 4096>; // TILE × TILE

alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;
alias Result = subgroup_matrix_result<f32, 16, 16>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) subgroup: u32) {
  let row0 = wid.y * TILE;
  let out0 = wid.x * TILE;
  let quadrant_row = (subgroup / 2u) * 32u;
  let quadrant_col = (subgroup % 2u) * 32u;
  var acc00 = Result();
  var acc01 = Result();
  var acc10 = Result();
  var acc11 = Result();
  for (var k0 = 0u; k0 < params.in_features; k0 += DEPTH) {
    // x tile: 64 × 32 values, 16 per thread.
    for (var i = 0u; i < 16u; i++) {
      let index = lid + i * 128u;
      let r = row0 + index / DEPTH;
      let k = k0 + index % DEPTH;
      var value = 0.0;
      if (r < params.rows && k < params.in_features) {
        value = x[r * params.in_features + k];
      }
      x_tile[index] = f16(value);
    }
    // W tile: 64 rows × 32 halves as 16 pairs per row, 8 pairs per thread.
    for (var i = 0u; i < 8u; i++) {
      let index = lid + i * 128u;
      let n = index / 16u;
      let pair = index % 16u;
      let o = out0 + n;
      let k = k0 + pair * 2u;
      var value = vec2<f16>(0.0h);
      if (o < params.out_features && k < params.w_stride) {
        value = w[(o * params.w_stride + k) / 2u];
      }
      w_tile[n * DEPTH + pair * 2u] = value.x;
      w_tile[n * DEPTH + pair * 2u + 1u] = value.y;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < DEPTH; kk += 16u) {
      let a0 = subgroupMatrixLoad<Left, row_major>(&x_tile, quadrant_row * DEPTH + kk, DEPTH);
      let a1 = subgroupMatrixLoad<Left, row_major>(&x_tile, (quadrant_row + 16u) * DEPTH + kk, DEPTH);
      let b0 = subgroupMatrixLoad<Right, col_major>(&w_tile, quadrant_col * DEPTH + kk, DEPTH);
      let b1 = subgroupMatrixLoad<Right, col_major>(&w_tile, (quadrant_col + 16u) * DEPTH + kk, DEPTH);
      acc00 = subgroupMatrixMultiplyAccumulate(a0, b0, acc00);
      acc01 = subgroupMatrixMultiplyAccumulate(a0, b1, acc01);
      acc10 = subgroupMatrixMultiplyAccumulate(a1, b0, acc10);
      acc11 = subgroupMatrixMultiplyAccumulate(a1, b1, acc11);
    }
    workgroupBarrier();
  }
  subgroupMatrixStore<row_major>(&out_tile, quadrant_row * TILE + quadrant_col, acc00, TILE);
  subgroupMatrixStore<row_major>(&out_tile, quadrant_row * TILE + quadrant_col + 16u, acc01, TILE);
  subgroupMatrixStore<row_major>(&out_tile, (quadrant_row + 16u) * TILE + quadrant_col, acc10, TILE);
  subgroupMatrixStore<row_major>(&out_tile, (quadrant_row + 16u) * TILE + quadrant_col + 16u, acc11, TILE);
  workgroupBarrier();
  for (var i = 0u; i < 32u; i++) {
    let index = lid + i * 128u;
    let r = row0 + index / TILE;
    let o = out0 + index % TILE;
    if (r < params.rows && o < params.out_features) {
      store(r, o, out_tile[index]);
    }
  }
}
