// Rotates every head of q and of k in place: pairs (i, i + head_dim/2) by
// position · inverse_frequency[i], with cos and sin read from one table: (max_positions ×
// head_dim/2) cosines, then as many sines from sin_offset on.
// Heads 0..heads-1 of the grid are q's, the next kv_heads are k's: one dispatch for both. With
// store_kv, the rotated k and the v rows also go to their positions in their pages of one layer's
// KV cache (kv.wgsl, common/kv_pages.wgsl), so decoding needs no separate KV write.

struct Params {
  rows: u32,
  heads: u32,
  kv_heads: u32,
  head_dim: u32,
  store_kv: u32,
  block_size: u32,
  slots: u32,
  sin_offset: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<i32>;
@group(0) @binding(4) var<storage, read> rotary: array<f32>;
@group(0) @binding(5) var<storage, read> pages: array<i32>;
@group(0) @binding(6) var<storage, read> v: array<f32>;
@group(0) @binding(7) var<storage, read_write> keys: array<kv_scalar>;
@group(0) @binding(8) var<storage, read_write> values: array<kv_scalar>;

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
  let c = rotary[table];
  let s = rotary[params.sin_offset + table];
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
    if (params.store_kv == 0u) {
      return;
    }
    let slot = page_slot(r, position, params.block_size);
    if (slot < params.slots) {
      let cache = (kv_head * params.slots + slot) * params.head_dim;
      keys[cache + i] = kv_scalar(y1);
      keys[cache + half + i] = kv_scalar(y2);
      values[cache + i] = kv_scalar(v[base + i]);
      values[cache + half + i] = kv_scalar(v[base + half + i]);
    }
  }
}
