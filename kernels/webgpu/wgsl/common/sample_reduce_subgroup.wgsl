// wgsl/sample.wgsl's reduction of its lanes, with subgroup operations where the adapter has them:
// each subgroup reduces its lanes and its first invocation writes one slot; the first subgroup
// reduces the slots and its first invocation writes the totals, which every invocation then loads
// as uniform values. Two barriers a call where common/sample_reduce.wgsl's tree takes
// log2(THREADS) + 2. Invocations are numbered consecutively within a subgroup (lid / subgroup size
// is the subgroup), as common/subgroup_reduce.wgsl assumes.
enable subgroups;
diagnostic(off, subgroup_uniformity);

// One slot a subgroup: subgroups of at least 4 invocations.
var<workgroup> slots: array<array<f32, LANES>, THREADS / 4u>;
var<workgroup> totals_shared: array<f32, LANES>;

fn subgroup_lanes(values: array<f32, LANES>) -> array<f32, LANES> {
  var out: array<f32, LANES>;
  for (var j = 0u; j < 8u; j++) {
    out[j] = subgroupAdd(values[j]);
  }
  out[8] = subgroupMin(values[8]);
  out[9] = subgroupMax(values[9]);
  return out;
}

// Lanes 0..7 summed, 8 min, 9 max over the workgroup; every invocation gets the results.
fn workgroup_reduce(lid: u32, values: array<f32, LANES>) -> array<f32, LANES> {
  let size = subgroupAdd(1u);
  let mine = subgroup_lanes(values);
  if (lid % size == 0u) {
    slots[lid / size] = mine;
  }
  workgroupBarrier();
  if (lid < size) {
    var gathered = empty_lanes();
    for (var i = lid; i < THREADS / size; i += size) {
      for (var j = 0u; j < 8u; j++) {
        gathered[j] += slots[i][j];
      }
      gathered[8] = min(gathered[8], slots[i][8]);
      gathered[9] = max(gathered[9], slots[i][9]);
    }
    let totals = subgroup_lanes(gathered);
    if (lid == 0u) {
      totals_shared = totals;
    }
  }
  // The slots are read before any invocation passes this barrier, so the next call may write them.
  return workgroupUniformLoad(&totals_shared);
}
