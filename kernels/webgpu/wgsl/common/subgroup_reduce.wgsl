// common/workgroup_reduce.wgsl's sum and max, made with subgroup operations where the adapter has
// them: each subgroup reduces its own values, its first lane writes one slot, and each subgroup
// then reduces the slots. Two barriers a call, where the tree through workgroup memory takes
// log2(REDUCE_SIZE) + 2 (12 for the wide decode attention's 1024 invocations). The same functions
// and contract: every invocation of the workgroup calls them, REDUCE_SIZE (a power of two, a
// multiple of the subgroup size) is the workgroup size. Invocations are numbered consecutively
// within a subgroup (lid / subgroup size is the subgroup), as wgsl/gemv_subgroup.wgsl assumes.
enable subgroups;
diagnostic(off, subgroup_uniformity);

override REDUCE_SIZE: u32 = 256u;
// One slot a subgroup: subgroups of at least 4 invocations.
var<workgroup> reduce_shared: array<f32, REDUCE_SIZE / 4u>;

fn workgroup_sum(value: f32, lid: u32) -> f32 {
  let size = subgroupAdd(1u);
  let partial = subgroupAdd(value);
  if (lid % size == 0u) {
    reduce_shared[lid / size] = partial;
  }
  workgroupBarrier();
  var total = 0.0;
  for (var i = lid % size; i < REDUCE_SIZE / size; i += size) {
    total += reduce_shared[i];
  }
  total = subgroupAdd(total);
  workgroupBarrier(); // every slot read before the next call writes them
  return total;
}

fn workgroup_max(value: f32, lid: u32) -> f32 {
  let size = subgroupAdd(1u);
  let partial = subgroupMax(value);
  if (lid % size == 0u) {
    reduce_shared[lid / size] = partial;
  }
  workgroupBarrier();
  var total = -3.4e38;
  for (var i = lid % size; i < REDUCE_SIZE / size; i += size) {
    total = max(total, reduce_shared[i]);
  }
  total = subgroupMax(total);
  workgroupBarrier();
  return total;
}
