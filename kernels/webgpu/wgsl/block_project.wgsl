// Steps 1 and 2 of a Monarch or BLAST layer (reference: kernels/cpu/blr.ts blockProject):
// z (blocks × rows × rank) from x (rows × in_features) and the factor ((blocks · rank) rows of
// in_features / blocks halves, f16, rows padded to factor_stride words of two halves).
//   BLAST (mode 0): one invocation per (channel q, row n) computes x_c · factor_c[q] for every
//     input block c and adds coupling[a][c][q] times it into a register accumulator for every
//     output block a, so the b × rows × rank intermediate Y never reaches memory and z is written
//     once (the paper's partial fusion), MAX_BLOCKS output blocks at a time (more blocks than
//     that redo the products once per MAX_BLOCKS).
//   Monarch (mode 1): one invocation per (channel q, row n, output block a) computes the one
//     input-block channel that the Monarch permutation sends to (a, q), written straight to its
//     permuted place.
// A first, straightforward version: each invocation walks its factor rows alone.

struct Params {
  rows: u32,
  in_features: u32,
  rank: u32,
  blocks: u32,
  factor_stride: u32, // u32 words (two halves) per factor row
  mode: u32,          // 0 BLAST, 1 Monarch
  layer: u32,         // of stacked layers: factor rows, couplings and z blocks from layer · (one layer's) on
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> factor: array<u32>;
@group(0) @binding(3) var<storage, read> coupling: array<f32>;
@group(0) @binding(4) var<storage, read_write> z: array<f32>;

const MAX_BLOCKS: u32 = 16u;

// x_block(n) · factor row `row`, over the block's in_features / blocks inputs.
fn block_dot(n: u32, block: u32, row: u32) -> f32 {
  let width = params.in_features / params.blocks;
  let x_base = n * params.in_features + block * width;
  let f_base = (params.layer * params.blocks * params.rank + row) * params.factor_stride;
  var sum = 0.0;
  var m = 0u;
  for (; m + 1u < width; m += 2u) {
    let pair = unpack2x16float(factor[f_base + m / 2u]);
    sum += x[x_base + m] * pair.x + x[x_base + m + 1u] * pair.y;
  }
  if (m < width) {
    sum += x[x_base + m] * unpack2x16float(factor[f_base + m / 2u]).x;
  }
  return sum;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let q = gid.x;
  let n = gid.y;
  if (q >= params.rank || n >= params.rows) {
    return;
  }
  let r = params.rank;
  let b = params.blocks;
  let z_layer = params.layer * b * params.rows * r;
  let s_layer = params.layer * b * b * r;
  if (params.mode == 1u) {
    let a = gid.z;
    let flat = q * b + a;
    let source = flat / r;
    z[z_layer + (a * params.rows + n) * r + q] = block_dot(n, source, source * r + flat % r);
    return;
  }
  for (var a0 = 0u; a0 < b; a0 += MAX_BLOCKS) {
    var acc: array<f32, MAX_BLOCKS>;
    for (var a = 0u; a < MAX_BLOCKS; a++) {
      acc[a] = 0.0;
    }
    for (var c = 0u; c < b; c++) {
      let y = block_dot(n, c, c * r + q);
      for (var a = 0u; a < MAX_BLOCKS; a++) {
        if (a0 + a < b) {
          acc[a] += coupling[s_layer + ((a0 + a) * b + c) * r + q] * y;
        }
      }
    }
    for (var a = 0u; a < MAX_BLOCKS; a++) {
      if (a0 + a < b) {
        z[z_layer + ((a0 + a) * params.rows + n) * r + q] = acc[a];
      }
    }
  }
}
