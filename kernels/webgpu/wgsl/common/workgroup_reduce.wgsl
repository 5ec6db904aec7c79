// Sum and max over a workgroup of REDUCE_SIZE invocations through workgroup memory (portable: no
// subgroup operations). Composed into kernels by kernels/webgpu/backend.ts; every invocation of
// the workgroup must call them (they contain barriers). REDUCE_SIZE, a power of two, is the
// kernels' workgroup size too (the backend may set it per pipeline).

override REDUCE_SIZE: u32 = 256u;
var<workgroup> reduce_shared: array<f32, REDUCE_SIZE>;

fn workgroup_sum(value: f32, lid: u32) -> f32 {
  reduce_shared[lid] = value;
  workgroupBarrier();
  for (var stride = REDUCE_SIZE / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      reduce_shared[lid] += reduce_shared[lid + stride];
    }
    workgroupBarrier();
  }
  let result = reduce_shared[0];
  workgroupBarrier();
  return result;
}

fn workgroup_max(value: f32, lid: u32) -> f32 {
  reduce_shared[lid] = value;
  workgroupBarrier();
  for (var stride = REDUCE_SIZE / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      reduce_shared[lid] = max(reduce_shared[lid], reduce_shared[lid + stride]);
    }
    workgroupBarrier();
  }
  let result = reduce_shared[0];
  workgroupBarrier();
  return result;
}
