// RMSNorm and LayerNorm for widths a multiple of 4 (every real model): norm.wgsl's algorithm with
// 16-byte loads and stores, so each thread walks a quarter as many steps.

struct Params {
  width: u32, // in vec4s here
  eps: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
// rms_norm_half's output: four halves per vec4 of x, for the tensor-core GEMM that reads x in f16
// (one pass where the norm and wgsl/to_half.wgsl took two).
@group(0) @binding(4) var<storage, read_write> out_half: array<vec2<u32>>;

override WORKGROUP: u32 = REDUCE_SIZE;

// 1 / rms of the row of x from `base` (every invocation of the workgroup gets it).
fn rms_scale(base: u32, lid: u32) -> f32 {
  var sum_squares = 0.0;
  for (var i = lid; i < params.width; i += WORKGROUP) {
    let v = x[base + i];
    sum_squares += dot(v, v);
  }
  return inverseSqrt(workgroup_sum(sum_squares, lid) / f32(params.width * 4u) + params.eps);
}

@compute @workgroup_size(WORKGROUP)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let base = wid.x * params.width;
  let scale = rms_scale(base, lid);
  for (var i = lid; i < params.width; i += WORKGROUP) {
    out[base + i] = x[base + i] * scale * weight[i];
  }
}

@compute @workgroup_size(WORKGROUP)
fn rms_norm_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let base = wid.x * params.width;
  let scale = rms_scale(base, lid);
  for (var i = lid; i < params.width; i += WORKGROUP) {
    let v = x[base + i] * scale * weight[i];
    out_half[base + i] = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
  }
}

@compute @workgroup_size(WORKGROUP)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let base = wid.x * params.width;
  let elements = f32(params.width * 4u);
  var sum = 0.0;
  for (var i = lid; i < params.width; i += WORKGROUP) {
    let v = x[base + i];
    sum += v.x + v.y + v.z + v.w;
  }
  let mean = workgroup_sum(sum, lid) / elements;
  var sum_squares = 0.0;
  for (var i = lid; i < params.width; i += WORKGROUP) {
    let d = x[base + i] - mean;
    sum_squares += dot(d, d);
  }
  let scale = inverseSqrt(workgroup_sum(sum_squares, lid) / elements + params.eps);
  for (var i = lid; i < params.width; i += WORKGROUP) {
    out[base + i] = (x[base + i] - mean) * scale * weight[i] + bias[i];
  }
}
