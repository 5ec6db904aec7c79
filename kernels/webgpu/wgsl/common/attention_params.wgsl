// The parameters of the attention kernels (composed in by kernels/webgpu/backend.ts).

struct Params {
  rows: u32,
  heads: u32,
  kv_heads: u32,
  head_dim: u32,
  slots: u32,        // positions per head of a layer's cache (blocks × block_size)
  scale: f32,
  split_length: u32, // attention_vec4.wgsl: 0, or positions per split (flash-decoding)
  splits: u32,
  block_size: u32,
  first_row: u32,    // the call's rows are first_row.. of q, out, positions and pages
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
