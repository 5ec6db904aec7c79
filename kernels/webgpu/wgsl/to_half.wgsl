// Activations to f16 ahead of the tensor-core GEMM (which multiplies in f16 anyway): four f32 in,
// four halves out (two words) per invocation. Reading half the bytes lets that kernel keep its
// prefetched x tile in half the registers, which is worth more than this pass costs.

struct Params {
  count: u32,    // vec4s to convert
  row_span: u32, // invocations per grid row (workgroups in x × 256)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec2<u32>>;
// swiglu_half: x is a gated MLP's gate, and what goes to f16 is silu(x) ⊙ up (one pass where
// SwiGLU and the conversion took two).
@group(0) @binding(3) var<storage, read> up: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * params.row_span + gid.x;
  if (i < params.count) {
    let v = x[i];
    out[i] = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
  }
}

@compute @workgroup_size(256)
fn swiglu_half(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * params.row_span + gid.x;
  if (i < params.count) {
    let g = x[i];
    let v = g / (vec4<f32>(1.0) + exp(-g)) * up[i];
    out[i] = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
  }
}
