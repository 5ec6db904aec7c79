// Flash-decoding's second step: merges the per-split partial results of attention_vec4.wgsl.
// One workgroup per (query head, row); invocation c owns output vec4 c. Split s contributes its
// weighted values and sum scaled by exp(max_s - max), where max is the largest over the splits
// (an empty split has max -3e38 and contributes nothing).

@group(0) @binding(1) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wid.x;
  let local_row = wid.y;
  let r = params.first_row + local_row;
  let columns = params.head_dim / 4u;
  if (lid >= columns) {
    return;
  }
  let first = (local_row * params.heads + head) * params.splits;
  var top = -3.4e38;
  for (var s = 0u; s < params.splits; s++) {
    top = max(top, partials[(first + s) * (columns + 1u) + columns].x);
  }
  var acc = vec4<f32>(0.0);
  var sum = 0.0;
  for (var s = 0u; s < params.splits; s++) {
    let base = (first + s) * (columns + 1u);
    let stats = partials[base + columns];
    let weight = exp(stats.x - top);
    acc += weight * partials[base + lid];
    sum += weight * stats.y;
  }
  out[(r * params.heads + head) * columns + lid] = acc / sum;
}
