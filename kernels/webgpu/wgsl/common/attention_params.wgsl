// The parameters of the attention kernels (composed in by kernels/webgpu/backend.ts).

struct Params {
  rows: u32,
  heads: u32,
  kv_heads: u32,
  head_dim: u32,
  capacity: u32,
  scale: f32,
  split_length: u32, // attention_vec4.wgsl: 0, or positions per split (flash-decoding)
  splits: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
