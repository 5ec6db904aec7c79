// Causal grouped-query attention for prefill (many query rows, head_dim a multiple of 4 up to 128):
// one workgroup per (query head, block of QUERIES rows), walking the cache in tiles of TILE
// positions staged in workgroup memory, so each key and value is read once per block instead of
// once per query row (attention_vec4.wgsl's one-row workgroups re-read the cache for every row).
// Online softmax per row, as in the other attention kernels; a row stops at its own position.
// 256 invocations: QUERIES rows × 16 lanes. For each tile a lane scores one position of its row
// (a full dot product against the staged q row), then accumulates two vec4 columns of its row's
// output over the tile's positions. Workgroup memory: 26 KiB (fits the 32 KiB many adapters give).
// The rows of one call are one sequence's (a prefill chunk): the tiles come through the pages of
// the block's first row (common/kv_pages.wgsl).

@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<kv_scalar>>;
@group(0) @binding(3) var<storage, read> values: array<vec4<kv_scalar>>;
@group(0) @binding(4) var<storage, read> positions: array<i32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> pages: array<i32>;

const QUERIES: u32 = 16u;
const LANES: u32 = 16u;          // per query row
const TILE: u32 = LANES;         // positions per tile: one per lane
const MAX_COLUMNS: u32 = 32u;    // head_dim ≤ 128
const ROW: u32 = MAX_COLUMNS + 1u; // staged rows padded by one vec4, so lanes reading different rows spread over banks
const LOWEST: f32 = -3.0e38;

var<workgroup> q_tile: array<vec4<f32>, QUERIES * ROW>;
var<workgroup> k_tile: array<vec4<f32>, TILE * ROW>;
var<workgroup> v_tile: array<vec4<f32>, TILE * ROW>;
var<workgroup> p_tile: array<f32, QUERIES * TILE>;
var<workgroup> lengths: array<u32, QUERIES>;
var<workgroup> block_length: u32;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wid.x;
  let kv = head / (params.heads / params.kv_heads);
  let columns = params.head_dim / 4u;
  let row0 = wid.y * QUERIES; // relative to first_row
  let query = lid / LANES;
  let lane = lid % LANES;
  let r = row0 + query;

  if (lane == 0u) {
    var length = 0u;
    if (r < params.rows) {
      length = u32(positions[params.first_row + r]) + 1u;
    }
    lengths[query] = length;
  }
  // Stage the block's q rows (zeros past the last row).
  for (var i = lid; i < QUERIES * MAX_COLUMNS; i += 256u) {
    let qr = row0 + i / MAX_COLUMNS;
    let c = i % MAX_COLUMNS;
    var value = vec4<f32>(0.0);
    if (qr < params.rows && c < columns) {
      value = q[((params.first_row + qr) * params.heads + head) * columns + c];
    }
    q_tile[(i / MAX_COLUMNS) * ROW + c] = value;
  }
  workgroupBarrier();
  if (lid == 0u) {
    var longest = 0u;
    for (var i = 0u; i < QUERIES; i++) {
      longest = max(longest, lengths[i]);
    }
    block_length = longest;
  }
  let end = workgroupUniformLoad(&block_length);
  let length = lengths[query];
  let kv_base = kv * params.slots * columns;

  var running_max = LOWEST;
  var running_sum = 0.0;
  var acc0 = vec4<f32>(0.0); // columns lane and lane + 16
  var acc1 = vec4<f32>(0.0);
  for (var start = 0u; start < end; start += TILE) {
    // Stage TILE key and value rows.
    for (var i = lid; i < TILE * MAX_COLUMNS; i += 256u) {
      let t = start + i / MAX_COLUMNS;
      let c = i % MAX_COLUMNS;
      var k = vec4<f32>(0.0);
      var v = vec4<f32>(0.0);
      if (t < end && c < columns) {
        let slot = page_slot(params.first_row + row0, t, params.block_size);
        k = vec4<f32>(keys[kv_base + slot * columns + c]);
        v = vec4<f32>(values[kv_base + slot * columns + c]);
      }
      k_tile[(i / MAX_COLUMNS) * ROW + c] = k;
      v_tile[(i / MAX_COLUMNS) * ROW + c] = v;
    }
    workgroupBarrier();
    // The score of position start + lane for this lane's row.
    var dot4 = vec4<f32>(0.0);
    for (var c = 0u; c < columns; c++) {
      dot4 += q_tile[query * ROW + c] * k_tile[lane * ROW + c];
    }
    var score = LOWEST;
    if (start + lane < length) {
      score = (dot4.x + dot4.y + dot4.z + dot4.w) * params.scale;
    }
    p_tile[query * TILE + lane] = score;
    workgroupBarrier();
    // The row's tile maximum, then its weights.
    var tile_max = LOWEST;
    for (var j = 0u; j < TILE; j++) {
      tile_max = max(tile_max, p_tile[query * TILE + j]);
    }
    let new_max = max(running_max, tile_max);
    workgroupBarrier(); // every lane has read the scores before they become weights
    var p = 0.0;
    if (start + lane < length) {
      p = exp(score - new_max);
    }
    p_tile[query * TILE + lane] = p;
    workgroupBarrier();
    let correction = exp(running_max - new_max);
    var tile_sum = 0.0;
    var total0 = vec4<f32>(0.0);
    var total1 = vec4<f32>(0.0);
    for (var j = 0u; j < TILE; j++) {
      let weight = p_tile[query * TILE + j];
      tile_sum += weight;
      total0 += weight * v_tile[j * ROW + lane];
      total1 += weight * v_tile[j * ROW + lane + LANES];
    }
    running_sum = running_sum * correction + tile_sum;
    running_max = new_max;
    acc0 = acc0 * correction + total0;
    acc1 = acc1 * correction + total1;
    workgroupBarrier(); // the tiles are restaged next
  }
  if (r < params.rows && length > 0u) {
    let base = ((params.first_row + r) * params.heads + head) * columns;
    if (lane < columns) {
      out[base + lane] = acc0 / running_sum;
    }
    if (lane + LANES < columns) {
      out[base + lane + LANES] = acc1 / running_sum;
    }
  }
}
