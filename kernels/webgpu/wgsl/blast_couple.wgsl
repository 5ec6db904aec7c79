// BLAST's step 2 for prefill (reference: kernels/cpu/blr.ts blockProject): z[a][n][q] =
// Σ_c S[a][c][q] · y[c][n][q], from the per-block products y (blocks × rows × rank, written by the
// tensor-core block GEMM) and the coupling S (blocks × blocks × rank). One invocation per (n, q)
// reads its b values of y once per MAX_BLOCKS output blocks and keeps that many sums in registers.
// z is written as z_scalar (composed in by the backend): f16 where the block GEMM of step 3 reads it
// as f16 (rank a multiple of 8; it rounds z to f16 for the tensor cores either way), else f32.

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
@group(0) @binding(3) var<storage, read_write> z: array<z_scalar>;

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
        z[(params.layer * b + a0 + a) * per_block + index] = z_scalar(acc[a]);
      }
    }
  }
}

// The same for up to TILE_BLOCKS blocks, a workgroup per (TILE_CHANNELS channels, TILE_ROWS rows):
// its channels' coupling (b × b × 8 values) staged in workgroup memory once, each invocation's b
// values of y loaded together, then b · b products from registers and the tile. (`main` read every
// coupling value from the caches once per row of x: 8 MB of y and z at 128 rows took ~30 µs on
// an H200, the coupling's re-reads being 134 MB.)
const TILE_CHANNELS: u32 = 8u;
const TILE_ROWS: u32 = 32u; // 256 / TILE_CHANNELS
const TILE_BLOCKS: u32 = 16u;
var<workgroup> s_tile: array<f32, TILE_BLOCKS * TILE_BLOCKS * TILE_CHANNELS>;

@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = params.blocks;
  let q0 = wid.x * TILE_CHANNELS;
  let channel = lid % TILE_CHANNELS;
  let q = q0 + channel;
  let n = wid.y * TILE_ROWS + lid / TILE_CHANNELS;
  // Tile value t = (a · b + c) · TILE_CHANNELS + channel is S[a][c][q0 + channel].
  let count = b * b * TILE_CHANNELS;
  for (var t = lid; t < count; t += 256u) {
    let qt = q0 + t % TILE_CHANNELS;
    var s = 0.0;
    if (qt < params.rank) {
      s = coupling[(params.layer * b * b + t / TILE_CHANNELS) * params.rank + qt];
    }
    s_tile[t] = s;
  }
  workgroupBarrier();
  if (n >= params.rows || q >= params.rank) {
    return;
  }
  let per_block = params.rows * params.rank;
  let index = n * params.rank + q;
  // Constant bounds (blocks past b skipped), so that the arrays stay in registers.
  var ys: array<f32, TILE_BLOCKS>;
  for (var c = 0u; c < TILE_BLOCKS; c++) {
    ys[c] = 0.0;
    if (c < b) {
      ys[c] = y[c * per_block + index];
    }
  }
  var acc: array<f32, TILE_BLOCKS>;
  for (var a = 0u; a < TILE_BLOCKS; a++) {
    acc[a] = 0.0;
    if (a < b) {
      for (var c = 0u; c < TILE_BLOCKS; c++) {
        if (c < b) {
          acc[a] += s_tile[(a * b + c) * TILE_CHANNELS + channel] * ys[c];
        }
      }
    }
  }
  for (var a = 0u; a < TILE_BLOCKS; a++) {
    if (a < b) {
      z[(params.layer * b + a) * per_block + index] = z_scalar(acc[a]);
    }
  }
}
