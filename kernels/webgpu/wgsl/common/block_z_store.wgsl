// How wgsl/block_gemv.wgsl's BLAST coupling stores z (binding 4, out): as it is. A block low-rank
// layer fused into one dispatch composes its own store_z (kernels/webgpu/fused_block.ts), which
// also hands each value to the expansion's workgroups.

fn store_z(index: u32, value: f32) {
  out[index] = value;
}
