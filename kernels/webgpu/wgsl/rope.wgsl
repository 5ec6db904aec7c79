// Rotates every head of q and of k in place: pairs (i, i + head_dim/2) by
// position · inverse_frequency[i], with cos/sin read from tables of (max_positions × head_dim/2).
// Heads 0..heads-1 of the grid are q's, the next kv_heads are k's: one dispatch for both.

struct Params {
  rows: u32,
  heads: u32,
  kv_heads: u32,
  head_dim: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<i32>;
@group(0) @binding(4) var<storage, read> cos_table: array<f32>;
@group(0) @binding(5) var<storage, read> sin_table: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let half = params.head_dim / 2u;
  let i = gid.x;
  let head = gid.y;
  let r = gid.z;
  if (i >= half || head >= params.heads + params.kv_heads || r >= params.rows) {
    return;
  }
  let table = u32(positions[r]) * half + i;
  let c = cos_table[table];
  let s = sin_table[table];
  if (head < params.heads) {
    let base = (r * params.heads + head) * params.head_dim;
    let x1 = q[base + i];
    let x2 = q[base + half + i];
    q[base + i] = x1 * c - x2 * s;
    q[base + half + i] = x2 * c + x1 * s;
  } else {
    let base = (r * params.kv_heads + head - params.heads) * params.head_dim;
    let x1 = k[base + i];
    let x2 = k[base + half + i];
    k[base + i] = x1 * c - x2 * s;
    k[base + half + i] = x2 * c + x1 * s;
  }
}
