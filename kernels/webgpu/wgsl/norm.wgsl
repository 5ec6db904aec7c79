// RMSNorm and LayerNorm over rows of `width`: one workgroup per row, a tree reduction in
// workgroup memory (portable: no subgroup operations needed).

struct Params {
  width: u32,
  eps: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

override WORKGROUP: u32 = REDUCE_SIZE;

@compute @workgroup_size(WORKGROUP)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let base = wid.x * params.width;
  var sum_squares = 0.0;
  for (var i = lid; i < params.width; i += WORKGROUP) {
    let v = x[base + i];
    sum_squares += v * v;
  }
  let scale = inverseSqrt(workgroup_sum(sum_squares, lid) / f32(params.width) + params.eps);
  for (var i = lid; i < params.width; i += WORKGROUP) {
    out[base + i] = x[base + i] * scale * weight[i];
  }
}

@compute @workgroup_size(WORKGROUP)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let base = wid.x * params.width;
  var sum = 0.0;
  for (var i = lid; i < params.width; i += WORKGROUP) {
    sum += x[base + i];
  }
  let mean = workgroup_sum(sum, lid) / f32(params.width);
  var sum_squares = 0.0;
  for (var i = lid; i < params.width; i += WORKGROUP) {
    let d = x[base + i] - mean;
    sum_squares += d * d;
  }
  let scale = inverseSqrt(workgroup_sum(sum_squares, lid) / f32(params.width) + params.eps);
  for (var i = lid; i < params.width; i += WORKGROUP) {
    out[base + i] = (x[base + i] - mean) * scale * weight[i] + bias[i];
  }
}
