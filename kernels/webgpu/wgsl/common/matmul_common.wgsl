// Shared by every matmul kernel (composed in by kernels/webgpu/backend.ts): the parameters, the
// bias and output bindings, the epilogue that writes a result, and the 8-half dot product of the
// GEMVs. Each kernel declares its own x (binding 1) and W (binding 2) views.

struct Params {
  rows: u32,
  in_features: u32,
  out_features: u32,
  w_stride: u32, // weight row stride: vec4<u32> (8 halves) units, or halves for the tensor-core kernel
  flags: u32,    // bit 0: add bias; bit 1: accumulate into the output; bit 2: stacked (see store); bit 3: GELU (see store) (RMSNorm: the normed GEMV pipeline)
  width0: u32,   // output features that go to out0; the next width1 go to out1, the rest to out2
  width1: u32,
  norm_eps: f32, // for the normed GEMV pipeline (wgsl/gemv_subgroup.wgsl NORMED)
  // For the blocked GEMV pipeline (wgsl/gemv_subgroup.wgsl BLOCKED, a block low-rank layer's last step):
  per_block: u32, // output features per block; block k's rows read x's block k (x is blocks × rows × in)
  blocks: u32,
  strided: u32,   // 1: block k's output p is feature p · blocks + k (Monarch)
  // For the paired GEMV pipelines (wgsl/gemv_subgroup.wgsl PAIRED, common/gemv_pair_*.wgsl):
  pair_span: u32,     // a pair's second row is its first + pair_span (SwiGLU: the gate's width; RoPE: head_dim / 2)
  kv_block_size: u32, // RoPE's KV cache store: the cache's block size and slots (common/kv_pages.wgsl)
  kv_slots: u32,
  sin_offset: u32,    // RoPE: where the sines start in the rotary table (after the cosines)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// One matrix of concatenated rows (q|k|v, gate|up) writes its three row ranges to three
// tensors in one dispatch; a plain matmul uses out0 alone.
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;
@group(0) @binding(5) var<storage, read_write> out1: array<f32>;
@group(0) @binding(6) var<storage, read_write> out2: array<f32>;

// Writes output feature o of row r: bias (flags bit 0), GELU (flags bit 3: GPT-2's gelu_new, tanh
// form, on the biased value — a GPT-2 MLP's c_fc needs no dispatch of its own for it), then as `put`.
fn store(r: u32, o: u32, value: f32) {
  var v = biased(o, value);
  if ((params.flags & 8u) != 0u) {
    v = gelu_tanh(v);
  }
  put(r, o, v);
}

const GELU_C: f32 = 0.7978845608028654; // sqrt(2 / pi)

// gelu(v), tanh approximation, as wgsl/elementwise.wgsl makes it: tanh through exp, its argument
// clamped so exp cannot overflow (some drivers' tanh returns NaN for large arguments).
fn gelu_tanh(v: f32) -> f32 {
  let e = exp(2.0 * clamp(GELU_C * (v + 0.044715 * v * v * v), -15.0, 15.0));
  return 0.5 * v * (1.0 + (e - 1.0) / (e + 1.0));
}

fn biased(o: u32, value: f32) -> f32 {
  if ((params.flags & 1u) != 0u) {
    return value + bias[o];
  }
  return value;
}

// Writes output feature o of row r as it is: accumulated into what the output already holds
// (flags bit 1: residual connections, out += x · Wᵀ), or with flags bit 2 (stacked), the three row
// ranges all to out0, one after another, each rows × its width.
fn put(r: u32, o: u32, value: f32) {
  var v = value;
  if ((params.flags & 4u) != 0u) {
    let width2 = params.out_features - params.width0 - params.width1;
    var index = r * params.width0 + o;
    if (o >= params.width0 + params.width1) {
      index = params.rows * (params.width0 + params.width1) + r * width2 + (o - params.width0 - params.width1);
    } else if (o >= params.width0) {
      index = params.rows * params.width0 + r * params.width1 + (o - params.width0);
    }
    out0[index] = v;
    return;
  }
  let accumulate = (params.flags & 2u) != 0u;
  if (o < params.width0) {
    let index = r * params.width0 + o;
    if (accumulate) {
      v += out0[index];
    }
    out0[index] = v;
  } else if (o < params.width0 + params.width1) {
    let index = r * params.width1 + (o - params.width0);
    if (accumulate) {
      v += out1[index];
    }
    out1[index] = v;
  } else {
    let width2 = params.out_features - params.width0 - params.width1;
    let index = r * width2 + (o - params.width0 - params.width1);
    if (accumulate) {
      v += out2[index];
    }
    out2[index] = v;
  }
}

// Eight f16 weights (one 16-byte load) against eight f32 activations.
fn dot8(packed: vec4<u32>, low: vec4<f32>, high: vec4<f32>) -> f32 {
  let a = vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y));
  let b = vec4<f32>(unpack2x16float(packed.z), unpack2x16float(packed.w));
  return dot(a, low) + dot(b, high);
}
