// Causal grouped-query attention for head_dim a multiple of 4 (every real model): the same
// algorithm as attention.wgsl — one workgroup per (query head, row), positions in chunks of 256,
// online softmax — with its two inner loops made parallel and vectorised, and split over the cache
// for decoding (flash-decoding): with split_length > 0, workgroup z takes positions
// [z·split_length, (z + 1)·split_length) and writes its unnormalised partial result with its
// running max and sum; attention_combine.wgsl merges the splits. The inner loops:
//   scores: a thread per position reads its key 16 bytes at a time, four loads in flight;
//   weighted values: all 256 threads work, as (head_dim / 4) column groups × stripes of positions,
//   each reading 16-byte pieces of value rows (coalesced across a column group), the stripes then
//   summed in workgroup memory.

@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> values: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> positions: array<i32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
// Per (row, head, split): head_dim / 4 vec4s of weighted values, then (max, sum, 0, 0).
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> pages: array<i32>;

const CHUNK: u32 = REDUCE_SIZE; // positions per chunk, one per invocation
const LOWEST: f32 = -3.0e38;
var<workgroup> q_shared: array<vec4<f32>, 64>;   // head_dim ≤ 256
var<workgroup> p_shared: array<f32, CHUNK>;
var<workgroup> slot_shared: array<u32, CHUNK>;
var<workgroup> stripes: array<vec4<f32>, CHUNK>; // per-thread partial weighted values
var<workgroup> length_shared: u32;


@compute @workgroup_size(CHUNK)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wid.x;
  let local_row = wid.y;
  let r = params.first_row + local_row;
  let split = wid.z;
  let kv = head / (params.heads / params.kv_heads);
  let columns = params.head_dim / 4u;          // vec4s per head row
  let q_base = (r * params.heads + head) * columns;
  if (lid == 0u) {
    length_shared = u32(positions[r]) + 1u;
  }
  if (lid < columns) {
    q_shared[lid] = q[q_base + lid];
  }
  let length = workgroupUniformLoad(&length_shared);
  var begin = 0u;
  var end = length;
  if (params.split_length > 0u) {
    begin = min(length, split * params.split_length);
    end = min(length, begin + params.split_length);
  }
  let kv_base = kv * params.slots * columns;
  // Weighted-value work split: column group `column`, stripe `stripe` of `stripe_count`.
  let stripe_count = CHUNK / columns;
  let column = lid % columns;
  let stripe = lid / columns;

  var running_max = LOWEST;
  var running_sum = 0.0;
  var acc = vec4<f32>(0.0); // output columns, held by threads lid < columns
  for (var start = begin; start < end; start += CHUNK) {
    let t = start + lid;
    var score = LOWEST;
    if (t < end) {
      let slot = page_slot(r, t, params.block_size);
      slot_shared[lid] = slot;
      let k_base = kv_base + slot * columns;
      var s = vec4<f32>(0.0);
      var c = 0u;
      for (; c + 4u <= columns; c += 4u) {
        let k0 = keys[k_base + c];
        let k1 = keys[k_base + c + 1u];
        let k2 = keys[k_base + c + 2u];
        let k3 = keys[k_base + c + 3u];
        s += k0 * q_shared[c] + k1 * q_shared[c + 1u] + k2 * q_shared[c + 2u] + k3 * q_shared[c + 3u];
      }
      for (; c < columns; c++) {
        s += keys[k_base + c] * q_shared[c];
      }
      score = (s.x + s.y + s.z + s.w) * params.scale;
    }
    let new_max = max(running_max, workgroup_max(score, lid));
    var p = 0.0;
    if (t < end) {
      p = exp(score - new_max);
    }
    p_shared[lid] = p;
    let chunk_sum = workgroup_sum(p, lid); // its barriers also publish p_shared and slot_shared
    let correction = exp(running_max - new_max);
    running_sum = running_sum * correction + chunk_sum;
    running_max = new_max;

    var partial = vec4<f32>(0.0);
    if (stripe < stripe_count) {
      let count = min(CHUNK, end - start);
      for (var j = stripe; j < count; j += stripe_count) {
        partial += p_shared[j] * values[kv_base + slot_shared[j] * columns + column];
      }
    }
    stripes[lid] = partial;
    workgroupBarrier();
    if (lid < columns) {
      var total = vec4<f32>(0.0);
      for (var s = 0u; s < stripe_count; s++) {
        total += stripes[s * columns + lid];
      }
      acc = acc * correction + total;
    }
    workgroupBarrier(); // p_shared, slot_shared and stripes are rewritten by the next chunk
  }
  if (params.split_length == 0u) {
    if (lid < columns) {
      out[q_base + lid] = acc / running_sum;
    }
    return;
  }
  let partial_base = ((local_row * params.heads + head) * params.splits + split) * (columns + 1u);
  if (lid < columns) {
    partials[partial_base + lid] = acc;
  }
  if (lid == 0u) {
    partials[partial_base + columns] = vec4<f32>(running_max, running_sum, 0.0, 0.0);
  }
}
