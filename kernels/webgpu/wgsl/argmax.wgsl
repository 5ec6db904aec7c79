// Greedy sampling on the GPU: the index of the largest of `count` logits (the lowest index among
// equal maxima, as the CPU sampler picks), so only that id crosses back to the CPU.
// One workgroup of 1024 per row (rows row, row + 1, ...): each invocation scans a strided share
// four values at a time, then a tree reduction in workgroup memory.

struct Params {
  count: u32,
  row: u32, // the first logits row (rows of `count`) and its result's entry
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<u32>;

const WORKGROUP: u32 = 1024u;
var<workgroup> best_value: array<f32, WORKGROUP>;
var<workgroup> best_index: array<u32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let row = params.row + wid.x;
  var value = -3.4e38;
  var index = 0xffffffffu;
  let base = row * params.count;
  for (var q = lid; q * 4u < params.count; q += WORKGROUP) {
    // Four values per invocation per step, all loaded before any is compared; strict comparisons:
    // the first (lowest) index of a maximum stays.
    var v = vec4<f32>(-3.4e38);
    for (var j = 0u; j < 4u; j++) {
      if (q * 4u + j < params.count) {
        v[j] = logits[base + q * 4u + j];
      }
    }
    for (var j = 0u; j < 4u; j++) {
      let i = q * 4u + j;
      if (i < params.count && v[j] > value) {
        value = v[j];
        index = i;
      }
    }
  }
  best_value[lid] = value;
  best_index[lid] = index;
  workgroupBarrier();
  for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      let v = best_value[lid + stride];
      let j = best_index[lid + stride];
      if (v > best_value[lid] || (v == best_value[lid] && j < best_index[lid])) {
        best_value[lid] = v;
        best_index[lid] = j;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    result[row] = select(best_index[0], 0u, best_index[0] == 0xffffffffu);
  }
}
