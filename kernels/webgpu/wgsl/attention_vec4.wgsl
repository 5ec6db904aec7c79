// Causal grouped-query attention for head_dim a multiple of 4 (every real model): the same
// algorithm as attention.wgsl — one workgroup per (query head, row), positions in chunks of CHUNK
// (the workgroup size), online softmax — with its two inner loops made parallel and vectorised,
// and split over the cache for decoding (flash-decoding): with split_length > 0, workgroup z takes
// positions [z·split_length, (z + 1)·split_length) and writes its unnormalised partial result with
// its running max and sum; attention_combine.wgsl merges the splits. The inner loops:
//   scores: SCORE_THREADS threads per position, each reading its slice of the key 16 bytes at a
//   time, four loads in flight;
//   weighted values: all CHUNK threads work, as (head_dim / 4) column groups × stripes of
//   positions, each reading 16-byte pieces of value rows (coalesced across a column group), the
//   stripes then summed in workgroup memory.
// Two pipelines: 256 threads (split or not), and a wide one (REDUCE_SIZE 1024, SCORE_THREADS 4)
// that takes a decode row's whole cache in one workgroup while the cache is short: four times the
// positions in flight per workgroup, so no split and no second dispatch to merge splits.

@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<kv_scalar>>;
@group(0) @binding(3) var<storage, read> values: array<vec4<kv_scalar>>;
@group(0) @binding(4) var<storage, read> positions: array<i32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
// Per (row, head, split): head_dim / 4 vec4s of weighted values, then (max, sum, 0, 0).
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> pages: array<i32>;

override CHUNK: u32 = REDUCE_SIZE; // positions per chunk, one per invocation
const LOWEST: f32 = -3.0e38;
var<workgroup> q_shared: array<vec4<f32>, 64>;   // head_dim ≤ 256
var<workgroup> p_shared: array<f32, CHUNK>;
var<workgroup> slot_shared: array<u32, CHUNK>;
var<workgroup> length_shared: u32;
override SCORE_THREADS: u32 = 8u;                       // threads per position while scoring (≥ 4)
override SCORE_POSITIONS: u32 = CHUNK / SCORE_THREADS;  // positions per scoring pass
// Shared by the two inner loops, one after the other: the scores' (position, slice) partial sums;
// then each thread's partial weighted values (the stripes), four floats a thread. Scalars only: no
// two threads write one vector. (256 threads: 8 KB, within WebGPU's default 16 KB with the rest;
// the wide pipeline's 1024 threads: 16 KB, 29 KB in all with the tree reductions' 4 KB, 26 KB with
// common/subgroup_reduce.wgsl's 1 KB.)
var<workgroup> work: array<f32, CHUNK * SCORE_THREADS>;


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
  // Scoring: SCORE_THREADS threads per position, each over a slice of its columns with four loads
  // in flight, SCORE_POSITIONS positions a pass; the slices' sums meet in workgroup memory.
  let slice = lid % SCORE_THREADS;
  let slice_position = lid / SCORE_THREADS;
  for (var start = begin; start < end; start += CHUNK) {
    let count = min(CHUNK, end - start); // positions in this chunk
    for (var round = 0u; round * SCORE_POSITIONS < count; round++) {
      let j = round * SCORE_POSITIONS + slice_position;
      var part = 0.0;
      if (j < count) {
        let slot = page_slot(r, start + j, params.block_size);
        if (slice == 0u) {
          slot_shared[j] = slot;
        }
        let k_base = kv_base + slot * columns;
        var s = vec4<f32>(0.0);
        for (var c = slice; c < columns; c += 4u * SCORE_THREADS) {
          // Columns c, c + 8, c + 16, c + 24: loaded together (a column past the row reads its
          // last column and counts zero).
          let c1 = c + SCORE_THREADS;
          let c2 = c + 2u * SCORE_THREADS;
          let c3 = c + 3u * SCORE_THREADS;
          let last = columns - 1u;
          let k0 = vec4<f32>(keys[k_base + c]);
          let k1 = vec4<f32>(keys[k_base + min(c1, last)]);
          let k2 = vec4<f32>(keys[k_base + min(c2, last)]);
          let k3 = vec4<f32>(keys[k_base + min(c3, last)]);
          s += k0 * q_shared[c];
          s += select(vec4<f32>(0.0), k1 * q_shared[min(c1, last)], c1 < columns);
          s += select(vec4<f32>(0.0), k2 * q_shared[min(c2, last)], c2 < columns);
          s += select(vec4<f32>(0.0), k3 * q_shared[min(c3, last)], c3 < columns);
        }
        part = s.x + s.y + s.z + s.w;
      }
      work[j * SCORE_THREADS + slice] = part;
    }
    workgroupBarrier();
    let t = start + lid;
    var score = LOWEST;
    if (lid < count) {
      var s = 0.0;
      for (var k = 0u; k < SCORE_THREADS; k++) {
        s += work[lid * SCORE_THREADS + k];
      }
      score = s * params.scale;
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
      // Four positions' values loaded together, then the rest one at a time.
      var j = stripe;
      for (; j + 3u * stripe_count < count; j += 4u * stripe_count) {
        let j1 = j + stripe_count;
        let j2 = j + 2u * stripe_count;
        let j3 = j + 3u * stripe_count;
        let v0 = vec4<f32>(values[kv_base + slot_shared[j] * columns + column]);
        let v1 = vec4<f32>(values[kv_base + slot_shared[j1] * columns + column]);
        let v2 = vec4<f32>(values[kv_base + slot_shared[j2] * columns + column]);
        let v3 = vec4<f32>(values[kv_base + slot_shared[j3] * columns + column]);
        partial += p_shared[j] * v0 + p_shared[j1] * v1 + p_shared[j2] * v2 + p_shared[j3] * v3;
      }
      for (; j < count; j += stripe_count) {
        partial += p_shared[j] * vec4<f32>(values[kv_base + slot_shared[j] * columns + column]);
      }
    }
    // (Every thread read its scores from `work` before the barriers of workgroup_max and _sum.)
    work[4u * lid] = partial.x;
    work[4u * lid + 1u] = partial.y;
    work[4u * lid + 2u] = partial.z;
    work[4u * lid + 3u] = partial.w;
    workgroupBarrier();
    if (lid < columns) {
      var total = vec4<f32>(0.0);
      for (var s = 0u; s < stripe_count; s++) {
        let at = 4u * (s * columns + lid);
        total += vec4<f32>(work[at], work[at + 1u], work[at + 2u], work[at + 3u]);
      }
      acc = acc * correction + total;
    }
    workgroupBarrier(); // p_shared, slot_shared and work are rewritten by the next chunk
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
