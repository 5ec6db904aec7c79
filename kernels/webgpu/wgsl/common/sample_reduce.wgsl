// wgsl/sample.wgsl's reduction of its lanes, portable: a tree through workgroup memory.
var<workgroup> partial: array<array<f32, LANES>, THREADS>;

// Lanes 0..7 summed, 8 min, 9 max over the workgroup; every invocation gets the results.
fn workgroup_reduce(lid: u32, values: array<f32, LANES>) -> array<f32, LANES> {
  partial[lid] = values;
  workgroupBarrier();
  for (var stride = THREADS / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      for (var j = 0u; j < 8u; j++) {
        partial[lid][j] += partial[lid + stride][j];
      }
      partial[lid][8] = min(partial[lid][8], partial[lid + stride][8]);
      partial[lid][9] = max(partial[lid][9], partial[lid + stride][9]);
    }
    workgroupBarrier();
  }
  let totals = workgroupUniformLoad(&partial[0]);
  workgroupBarrier(); // partial is rewritten by the next reduction
  return totals;
}
