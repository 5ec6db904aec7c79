// BLAST's step 2 for prefill (reference: kernels/cpu/blr.ts blockProject): z[a][n][q] =
// Σ_c S[a][c][q] · y[c][n][q], from the per-block products y (blocks × rows × rank, written by the
// tensor-core block GEMM) and the coupling S (blocks × blocks × rank). One invocation per (n, q)
// reads its b values of y once per MAX_BLOCKS output blocks and keeps that many sums in registers.

struct Params {
  rows: u32,
  rank: u32,
  blocks: u32,
  grid_width: u32, // invocations per row of the grid
  layer: u32,      // of stacked layers: its couplings and z blocks from layer · (one layer's) on; y is this layer's
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> coupling: array<f32>;
@group(0) @binding(3) var<storage, read_write> z: array<f32>;

const MAX_BLOCKS: u32 = 16u;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let index = gid.y * params.grid_width + gid.x;
  let per_block = params.rows * params.rank;
  if (index >= per_block) {
    return;
  }
  let q = index % params.rank;
  let b = params.blocks;
  for (var a0 = 0u; a0 < b; a0 += MAX_BLOCKS) {
    var acc: array<f32, MAX_BLOCKS>;
    for (var a = 0u; a < MAX_BLOCKS; a++) {
      acc[a] = 0.0;
    }
    for (var c = 0u; c < b; c++) {
      let v = y[c * per_block + index];
      for (var a = 0u; a < MAX_BLOCKS; a++) {
        if (a0 + a < b) {
          acc[a] += coupling[((params.layer * b + a0 + a) * b + c) * params.rank + q] * v;
        }
      }
    }
    for (var a = 0u; a < MAX_BLOCKS; a++) {
      if (a0 + a < b) {
        z[(params.layer * b + a0 + a) * per_block + index] = acc[a];
      }
    }
  }
}
