// Rotates every head of q and of k in place: pairs (i, i + head_dim/2) by
// position · inverse_frequency[i], with cos/sin read from tables of (max_positions × head_dim/2).
// Heads 0..heads-1 of the grid are q's, the next kv_heads are k's: one dispatch for both. With
// store_kv, the rotated k and the v rows also go to their positions in one layer's KV cache
// (kv.wgsl's layout), so decoding needs no separate KV write.

struct Params {
  rows: u32,
  heads: u32,
  kv_heads: u32,
  head_dim: u32,
  store_kv: u32,
  capacity: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<i32>;
@group(0) @binding(4) var<storage, read> cos_table: array<f32>;
@group(0) @binding(5) var<storage, read> sin_table: array<f32>;
@group(0) @binding(6) var<storage, read> v: array<f32>;
@group(0) @binding(7) var<storage, read_write> keys: array<f32>;
@group(0) @binding(8) var<storage, read_write> values: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let half = params.head_dim / 2u;
  let i = gid.x;
  let head = gid.y;
  let r = gid.z;
  if (i >= half || head >= params.heads + params.kv_heads || r >= params.rows) {
    return;
  }
  let position = u32(positions[r]);
  let table = position * half + i;
  let c = cos_table[table];
  let s = sin_table[table];
  if (head < params.heads) {
    let base = (r * params.heads + head) * params.head_dim;
    let x1 = q[base + i];
    let x2 = q[base + half + i];
    q[base + i] = x1 * c - x2 * s;
    q[base + half + i] = x2 * c + x1 * s;
  } else {
    let kv_head = head - params.heads;
    let base = (r * params.kv_heads + kv_head) * params.head_dim;
    let x1 = k[base + i];
    let x2 = k[base + half + i];
    let y1 = x1 * c - x2 * s;
    let y2 = x2 * c + x1 * s;
    k[base + i] = y1;
    k[base + half + i] = y2;
    if (params.store_kv != 0u && position < params.capacity) {
      let cache = (kv_head * params.capacity + position) * params.head_dim;
      keys[cache + i] = y1;
      keys[cache + half + i] = y2;
      values[cache + i] = v[base + i];
      values[cache + half + i] = v[base + half + i];
    }
  }
}
