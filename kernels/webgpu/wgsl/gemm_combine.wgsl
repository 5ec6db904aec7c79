// Split-K GEMM, second pass: adds the partial sums of the splits (partials: splits × rows ×
// out_features, from the tensor-core kernel run with a grid z of `splits`) and writes each result
// through the matmul epilogue (bias, residual, split outputs). One invocation per output value;
// the splits count rides in params.flags bits 8 to 15.

@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = id.x + id.y * groups.x * 256u;
  let total = params.rows * params.out_features;
  if (index >= total) {
    return;
  }
  let splits = (params.flags >> 8u) & 255u;
  var sum = 0.0;
  for (var s = 0u; s < splits; s++) {
    sum += partials[s * total + index];
  }
  store(index / params.out_features, index % params.out_features, sum);
}
