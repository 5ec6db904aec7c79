// out = a + b, silu(a) · b, or gelu(a) (tanh form), elementwise. When the output overwrites `a`
// (a_is_out = 1) the kernel reads `a` from `out`: WebGPU forbids binding one buffer as both
// read-only and writable in a dispatch.

struct Params {
  count: u32,
  op: u32, // 0 add, 1 swiglu, 2 gelu
  a_is_out: u32,
  row_span: u32, // threads per grid row (workgroups in x × 256)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const GELU_C: f32 = 0.7978845608028654; // sqrt(2 / pi)

fn safe_tanh(y: f32) -> f32 {
  // tanh through exp, clamped so exp cannot overflow (some drivers' tanh returns NaN for large |y|)
  let e = exp(2.0 * clamp(y, -15.0, 15.0));
  return (e - 1.0) / (e + 1.0);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * params.row_span + gid.x;
  if (i >= params.count) {
    return;
  }
  var av: f32;
  if (params.a_is_out == 1u) {
    av = out[i];
  } else {
    av = a[i];
  }
  switch params.op {
    case 0u: {
      out[i] = av + b[i];
    }
    case 1u: {
      out[i] = av / (1.0 + exp(-av)) * b[i];
    }
    default: {
      out[i] = 0.5 * av * (1.0 + safe_tanh(GELU_C * (av + 0.044715 * av * av * av)));
    }
  }
}
