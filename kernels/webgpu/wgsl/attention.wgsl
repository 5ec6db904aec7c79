// Causal grouped-query attention over one layer's KV cache. One workgroup per (query head, row):
// positions are taken in chunks of 256, one per thread, with an online softmax (running max and
// sum rescale earlier chunks), so any context length works with fixed workgroup memory. Positions
// are found through the row's pages (common/kv_pages.wgsl).

@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<kv_scalar>;
@group(0) @binding(3) var<storage, read> values: array<kv_scalar>;
@group(0) @binding(4) var<storage, read> positions: array<i32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read> pages: array<i32>;

override CHUNK: u32 = REDUCE_SIZE; // positions per chunk, one per invocation
const LOWEST: f32 = -3.0e38;
var<workgroup> q_shared: array<f32, CHUNK>;
var<workgroup> p_shared: array<f32, CHUNK>;
var<workgroup> slot_shared: array<u32, CHUNK>; // the chunk's positions' slots
var<workgroup> length_shared: u32;


@compute @workgroup_size(CHUNK)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wid.x;
  let r = params.first_row + wid.y;
  let kv = head / (params.heads / params.kv_heads);
  let head_dim = params.head_dim;
  let q_base = (r * params.heads + head) * head_dim;
  if (lid == 0u) {
    length_shared = u32(positions[r]) + 1u;
  }
  if (lid < head_dim) {
    q_shared[lid] = q[q_base + lid];
  }
  let length = workgroupUniformLoad(&length_shared);
  let kv_base = kv * params.slots * head_dim;

  var running_max = LOWEST;
  var running_sum = 0.0;
  var acc = 0.0;
  for (var start = 0u; start < length; start += CHUNK) {
    let t = start + lid;
    var score = LOWEST;
    if (t < length) {
      let slot = page_slot(r, t, params.block_size);
      slot_shared[lid] = slot;
      let k_base = kv_base + slot * head_dim;
      var s = 0.0;
      for (var d = 0u; d < head_dim; d++) {
        s += q_shared[d] * f32(keys[k_base + d]);
      }
      score = s * params.scale;
    }
    let new_max = max(running_max, workgroup_max(score, lid));
    var p = 0.0;
    if (t < length) {
      p = exp(score - new_max);
    }
    p_shared[lid] = p;
    let chunk_sum = workgroup_sum(p, lid); // its barriers also publish p_shared and slot_shared
    let correction = exp(running_max - new_max);
    running_sum = running_sum * correction + chunk_sum;
    running_max = new_max;
    if (lid < head_dim) {
      var a = acc * correction;
      let count = min(CHUNK, length - start);
      for (var j = 0u; j < count; j++) {
        a += p_shared[j] * f32(values[kv_base + slot_shared[j] * head_dim + lid]);
      }
      acc = a;
    }
    workgroupBarrier(); // p_shared and slot_shared are rewritten by the next chunk
  }
  if (lid < head_dim) {
    out[q_base + lid] = acc / running_sum;
  }
}
