// Fills an f16 matrix (rows × columns, rows padded to row_stride_words u32s of two halves) with
// scale × an approximately normal value from a hash of (seed, element index), zeros in the padding.
// For benchmarks at full model size: weights are made on the GPU, never pass through JS.
// scale_columns multiplies such a matrix's column c by column_scale[c] (a norm weight folded into
// the projection that reads the norm, as models/model.ts folds a checkpoint's before upload).

struct Params {
  rows: u32,
  columns: u32,
  row_stride_words: u32,
  seed: u32,
  scale: f32,
  grid_width: u32, // threads per row of the dispatch grid
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> matrix: array<u32>;
@group(0) @binding(2) var<storage, read> column_scale: array<f32>;

fn hash(value: u32) -> u32 {
  var h = value * 747796405u + 2891336453u;
  h = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
  return (h >> 22u) ^ h;
}

fn uniform01(value: u32) -> f32 {
  return f32(hash(value) >> 8u) / 16777216.0;
}

fn normal(index: u32) -> f32 {
  // Irwin–Hall: the sum of four uniforms, centred and scaled to unit variance.
  let key = hash(index ^ params.seed) * 4u;
  let sum = uniform01(key) + uniform01(key + 1u) + uniform01(key + 2u) + uniform01(key + 3u);
  return (sum - 2.0) * 1.7320508;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let word = gid.y * params.grid_width + gid.x;
  if (word >= params.rows * params.row_stride_words) {
    return;
  }
  let row = word / params.row_stride_words;
  let column = (word % params.row_stride_words) * 2u;
  var pair = vec2<f32>(0.0);
  if (column < params.columns) {
    pair.x = params.scale * normal(row * params.columns + column);
  }
  if (column + 1u < params.columns) {
    pair.y = params.scale * normal(row * params.columns + column + 1u);
  }
  matrix[word] = pack2x16float(pair);
}

@compute @workgroup_size(256)
fn scale_columns(@builtin(global_invocation_id) gid: vec3<u32>) {
  let word = gid.y * params.grid_width + gid.x;
  if (word >= params.rows * params.row_stride_words) {
    return;
  }
  let column = (word % params.row_stride_words) * 2u;
  if (column >= params.columns) {
    return; // the padding stays zero
  }
  var pair = unpack2x16float(matrix[word]);
  pair.x *= column_scale[column];
  if (column + 1u < params.columns) {
    pair.y *= column_scale[column + 1u];
  }
  matrix[word] = pack2x16float(pair);
}
