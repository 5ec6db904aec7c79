// Stores rows of k and v (rows × kv_heads·head_dim) at their positions in their pages of one
// layer's cache (common/kv_pages.wgsl), in the cache's element type
// (kv_scalar: f16 or f32, composed in by kernels/webgpu/backend.ts kvCacheWgsl).

struct Params {
  rows: u32,
  kv_heads: u32,
  head_dim: u32,
  block_size: u32,
  slots: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<i32>;
@group(0) @binding(4) var<storage, read> pages: array<i32>;
@group(0) @binding(5) var<storage, read_write> keys: array<kv_scalar>;
@group(0) @binding(6) var<storage, read_write> values: array<kv_scalar>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let d = gid.x;
  let head = gid.y;
  let r = gid.z;
  if (d >= params.head_dim || head >= params.kv_heads || r >= params.rows) {
    return;
  }
  let slot = page_slot(r, u32(positions[r]), params.block_size);
  if (slot >= params.slots) {
    return;
  }
  let row_index = (r * params.kv_heads + head) * params.head_dim + d;
  let cache_index = (head * params.slots + slot) * params.head_dim + d;
  keys[cache_index] = kv_scalar(k[row_index]);
  values[cache_index] = kv_scalar(v[row_index]);
}
