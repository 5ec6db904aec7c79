// out[r, :] = table[indices[r], :] for r < rows.
// The table's reader, load_table(row, column) -> f32, comes from the preamble: f16 matrix or f32.

struct Params {
  rows: u32,
  width: u32,
  table_stride: u32, // elements (f32) or u32 words (f16 pairs) per table row
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> indices: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let column = gid.x;
  let r = gid.y;
  if (r >= params.rows || column >= params.width) {
    return;
  }
  out[r * params.width + column] = load_table(u32(indices[r]), column);
}
