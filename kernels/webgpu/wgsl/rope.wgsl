// Rotates each head of x in place: pairs (i, i + head_dim/2) by position · inverse_frequency[i],
// with cos/sin read from tables of (max_positions × head_dim/2).

struct Params {
  rows: u32,
  heads: u32,
  head_dim: u32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<i32>;
@group(0) @binding(3) var<storage, read> cos_table: array<f32>;
@group(0) @binding(4) var<storage, read> sin_table: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let half = params.head_dim / 2u;
  let i = gid.x;
  let head = gid.y;
  let r = gid.z;
  if (i >= half || head >= params.heads || r >= params.rows) {
    return;
  }
  let table = u32(positions[r]) * half + i;
  let c = cos_table[table];
  let s = sin_table[table];
  let base = (r * params.heads + head) * params.head_dim;
  let x1 = x[base + i];
  let x2 = x[base + half + i];
  x[base + i] = x1 * c - x2 * s;
  x[base + half + i] = x2 * c + x1 * s;
}
