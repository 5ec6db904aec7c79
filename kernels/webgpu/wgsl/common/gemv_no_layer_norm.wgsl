// wgsl/gemv_subgroup.wgsl's pipelines without LAYER_NORM: no norm bias is bound (see
// common/gemv_layer_norm.wgsl).

fn layer_norm_bias(index: u32) -> vec4<f32> {
  return vec4<f32>(0.0);
}
