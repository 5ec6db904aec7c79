// How wgsl/gemv_subgroup.wgsl reads x (binding 1): straight from memory, nothing staged. A block
// low-rank layer fused into one dispatch composes its own pair of functions instead
// (kernels/webgpu/fused_block.ts), which stage each group's block of z in workgroup memory.

fn stage_input(base: u32, count: u32, group: u32, local: u32, threads: u32) {}

fn input_x(index: u32) -> vec4<f32> {
  return x[index];
}
