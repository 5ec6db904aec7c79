// Shared by every matmul kernel (composed in by kernels/webgpu/backend.ts): the parameters, the
// bias and output bindings, the epilogue that writes a result, and the 8-half dot product of the
// GEMVs. Each kernel declares its own x (binding 1) and W (binding 2) views.

struct Params {
  rows: u32,
  in_features: u32,
  out_features: u32,
  w_stride: u32, // weight row stride: vec4<u32> (8 halves) units, or halves for the tensor-core kernel
  flags: u32,    // bit 0: add bias; bit 1: accumulate into out
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Bias (flags bit 0), then accumulate into what `out` already holds (flags bit 1: residual
// connections, out += x · Wᵀ).
fn store(index: u32, o: u32, value: f32) {
  var v = value;
  if ((params.flags & 1u) != 0u) {
    v += bias[o];
  }
  if ((params.flags & 2u) != 0u) {
    v += out[index];
  }
  out[index] = v;
}

// Eight f16 weights (one 16-byte load) against eight f32 activations.
fn dot8(packed: vec4<u32>, low: vec4<f32>, high: vec4<f32>) -> f32 {
  let a = vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y));
  let b = vec4<f32>(unpack2x16float(packed.z), unpack2x16float(packed.w));
  return dot(a, low) + dot(b, high);
}
