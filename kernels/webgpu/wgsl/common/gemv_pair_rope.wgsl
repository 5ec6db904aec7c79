// The paired GEMV's epilogue for attention's q|k|v matrix (wgsl/gemv_subgroup.wgsl PAIRED, one
// row of x): pair_span = head_dim / 2, so a pair is (i, i + head_dim/2) of one head, the two values
// RoPE rotates together (rope.wgsl). q and k are rotated by position · inverse_frequency[i]
// (cosines and sines from the rotary table) and written to out0 / out1, v to out2 as it is, and the
// rotated k and the v rows also go to their slots in this layer's KV cache: the matmul, RoPE and the
// cache write in one dispatch. Bindings 8–12 are this pipeline's alone.

@group(0) @binding(8) var<storage, read> positions: array<i32>;
@group(0) @binding(9) var<storage, read> rotary: array<f32>;
@group(0) @binding(10) var<storage, read> pages: array<i32>;
@group(0) @binding(11) var<storage, read_write> keys: array<kv_scalar>;
@group(0) @binding(12) var<storage, read_write> values: array<kv_scalar>;

fn store_pair(r: u32, first_row: u32, first: f32, second: f32) {
  let half = params.pair_span;
  let head_dim = 2u * half;
  let i = first_row % head_dim;
  let second_row = first_row + half;
  var a = biased(first_row, first);
  var b = biased(second_row, second);
  let position = u32(positions[r]);
  let kv_start = params.width0;
  let v_start = params.width0 + params.width1;
  if (first_row < v_start) {
    let table = position * half + i;
    let c = rotary[table];
    let s = rotary[params.sin_offset + table];
    let x1 = a;
    a = x1 * c - b * s;
    b = b * c + x1 * s;
  }
  put(r, first_row, a);
  put(r, second_row, b);
  if (first_row < kv_start) {
    return;
  }
  let slot = page_slot(r, position, params.kv_block_size);
  if (slot >= params.kv_slots) {
    return;
  }
  if (first_row < v_start) {
    let cache = ((first_row - kv_start) / head_dim * params.kv_slots + slot) * head_dim + i;
    keys[cache] = kv_scalar(a);
    keys[cache + half] = kv_scalar(b);
  } else {
    let cache = ((first_row - v_start) / head_dim * params.kv_slots + slot) * head_dim + i;
    values[cache] = kv_scalar(a);
    values[cache + half] = kv_scalar(b);
  }
}
