// out (rows × out_features) = x (rows × in_features) · Wᵀ + bias (or out += …), W in f16, f32 accumulation.
// W is stored two halves per u32, each row padded to a multiple of 8 halves (w_stride vec4s), so
// every row starts 16-byte aligned and the padding holds zeros.
//   gemv: decode (few rows): 32 threads per output feature stream its row with 16-byte loads.
//   gemm: prefill: 64 × 64 output tiles, 16-deep k slices staged in workgroup memory, 4 × 4 per thread.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

const GEMV_LANES: u32 = 32u;
const GEMV_OUTPUTS: u32 = 8u; // per workgroup of 256
var<workgroup> gemv_partial: array<f32, 256>;

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % GEMV_LANES;
  let o = wid.x * GEMV_OUTPUTS + lid / GEMV_LANES;
  let r = wid.y;
  let in_features = params.in_features;
  var sum = 0.0;
  if (o < params.out_features) {
    let w_base = o * params.w_stride;
    let x_base = r * in_features;
    let chunks = (in_features + 7u) / 8u;
    for (var c = lane; c < chunks; c += GEMV_LANES) {
      let packed = w[w_base + c];
      let w01 = unpack2x16float(packed.x);
      let w23 = unpack2x16float(packed.y);
      let w45 = unpack2x16float(packed.z);
      let w67 = unpack2x16float(packed.w);
      let k = c * 8u;
      if (k + 8u <= in_features) {
        let i = x_base + k;
        sum += x[i] * w01.x + x[i + 1u] * w01.y + x[i + 2u] * w23.x + x[i + 3u] * w23.y
             + x[i + 4u] * w45.x + x[i + 5u] * w45.y + x[i + 6u] * w67.x + x[i + 7u] * w67.y;
      } else {
        let ws = array<f32, 8>(w01.x, w01.y, w23.x, w23.y, w45.x, w45.y, w67.x, w67.y);
        for (var j = 0u; k + j < in_features; j++) {
          sum += x[x_base + k + j] * ws[j];
        }
      }
    }
  }
  gemv_partial[lid] = sum;
  workgroupBarrier();
  for (var stride = GEMV_LANES / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      gemv_partial[lid] += gemv_partial[lid + stride];
    }
    workgroupBarrier();
  }
  if (lane == 0u && o < params.out_features) {
    store(r, o, gemv_partial[lid]);
  }
}

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
var<workgroup> x_tile: array<f32, 1024>; // TILE_M × TILE_K
var<workgroup> w_tile: array<f32, 1024>; // TILE_N × TILE_K

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row0 = wid.y * TILE_M;
  let out0 = wid.x * TILE_N;
  let in_features = params.in_features;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < in_features; k0 += TILE_K) {
    for (var i = 0u; i < 4u; i++) {
      let index = lid + i * 256u;
      let r = row0 + index / TILE_K;
      let k = k0 + index % TILE_K;
      var value = 0.0;
      if (r < params.rows && k < in_features) {
        value = x[r * in_features + k];
      }
      x_tile[index] = value;
    }
    if (lid < 2u * TILE_N) {
      let n = lid / 2u;
      let part = lid % 2u;
      let o = out0 + n;
      let c = k0 / 8u + part;
      var packed = vec4<u32>(0u);
      if (o < params.out_features && c < params.w_stride) {
        packed = w[o * params.w_stride + c];
      }
      let base = n * TILE_K + part * 8u;
      let w01 = unpack2x16float(packed.x);
      let w23 = unpack2x16float(packed.y);
      let w45 = unpack2x16float(packed.z);
      let w67 = unpack2x16float(packed.w);
      w_tile[base] = w01.x;
      w_tile[base + 1u] = w01.y;
      w_tile[base + 2u] = w23.x;
      w_tile[base + 3u] = w23.y;
      w_tile[base + 4u] = w45.x;
      w_tile[base + 5u] = w45.y;
      w_tile[base + 6u] = w67.x;
      w_tile[base + 7u] = w67.y;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TILE_K; kk++) {
      var a: array<f32, 4>;
      var b: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        a[i] = x_tile[(local.y * 4u + i) * TILE_K + kk];
        b[i] = w_tile[(local.x * 4u + i) * TILE_K + kk];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i * 4u + j] += a[i] * b[j];
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let r = row0 + local.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let o = out0 + local.x * 4u + j;
      if (r < params.rows && o < params.out_features) {
        store(r, o, acc[i * 4u + j]);
      }
    }
  }
}
