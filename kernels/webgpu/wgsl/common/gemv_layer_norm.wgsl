// The LayerNorm bias of wgsl/gemv_subgroup.wgsl's LAYER_NORM pipeline (binding 8), composed into
// that pipeline only; the others compose common/gemv_no_layer_norm.wgsl.

@group(0) @binding(8) var<storage, read> norm_bias: array<vec4<f32>>;

fn layer_norm_bias(index: u32) -> vec4<f32> {
  return norm_bias[index];
}
