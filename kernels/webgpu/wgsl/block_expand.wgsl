// Step 3 of a Monarch or BLAST layer (reference: kernels/cpu/blr.ts blockExpand): out (rows ×
// out_features) = z_a · factor_aᵀ per output block a (+ bias; flags bit 1: added to out), the
// factor being (blocks · out_features / blocks) rows of rank halves (f16, rows padded to
// factor_stride words). Output p of block a is feature a · (out_features / blocks) + p, or
// p · blocks + a with flags bit 2 (Monarch's strided outputs). One invocation per output value.

struct Params {
  rows: u32,
  out_features: u32,
  rank: u32,
  blocks: u32,
  factor_stride: u32, // u32 words (two halves) per factor row
  flags: u32,         // bit 0: bias; bit 1: accumulate; bit 2: strided outputs
  layer: u32,         // of stacked layers: factor rows and z blocks from layer · (one layer's) on
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> factor: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let feature = gid.x;
  let n = gid.y;
  if (feature >= params.out_features || n >= params.rows) {
    return;
  }
  let b = params.blocks;
  let per_block = params.out_features / b;
  var a = feature / per_block;
  var p = feature % per_block;
  if ((params.flags & 4u) != 0u) {
    a = feature % b;
    p = feature / b;
  }
  let r = params.rank;
  let z_base = ((params.layer * b + a) * params.rows + n) * r;
  let f_base = (params.layer * params.out_features + a * per_block + p) * params.factor_stride;
  var sum = 0.0;
  var q = 0u;
  for (; q + 1u < r; q += 2u) {
    let pair = unpack2x16float(factor[f_base + q / 2u]);
    sum += z[z_base + q] * pair.x + z[z_base + q + 1u] * pair.y;
  }
  if (q < r) {
    sum += z[z_base + q] * unpack2x16float(factor[f_base + q / 2u]).x;
  }
  if ((params.flags & 1u) != 0u) {
    sum += bias[feature];
  }
  let index = n * params.out_features + feature;
  if ((params.flags & 2u) != 0u) {
    sum += out[index];
  }
  out[index] = sum;
}
