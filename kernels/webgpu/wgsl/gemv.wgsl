// Decode matmul for in_features a multiple of 8: out[r, o] = x[r, :] · W[o, :] + bias[o].
// Each workgroup streams four weight rows at once: every thread keeps four 16-byte loads (8 halves
// each) in flight per iteration and reuses each x load four times; a tree reduction in workgroup
// memory (portable: no subgroup operations) finishes the four dot products.

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

const WORKGROUP: u32 = 256u;
const ROWS: u32 = 4u;
var<workgroup> partial: array<vec4<f32>, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let first = wid.x * ROWS;
  let r = wid.y;
  let chunks = params.in_features / 8u;
  let x_base = r * chunks * 2u;
  // Rows past the end read the last row again; their sums are never written.
  let last = params.out_features - 1u;
  let w0 = min(first, last) * params.w_stride;
  let w1 = min(first + 1u, last) * params.w_stride;
  let w2 = min(first + 2u, last) * params.w_stride;
  let w3 = min(first + 3u, last) * params.w_stride;
  var acc = vec4<f32>(0.0);
  for (var c = lid; c < chunks; c += WORKGROUP) {
    let low = x[x_base + 2u * c];
    let high = x[x_base + 2u * c + 1u];
    let p0 = w[w0 + c];
    let p1 = w[w1 + c];
    let p2 = w[w2 + c];
    let p3 = w[w3 + c];
    acc += vec4<f32>(dot8(p0, low, high), dot8(p1, low, high), dot8(p2, low, high), dot8(p3, low, high));
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      partial[lid] += partial[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid < ROWS) {
    let o = first + lid;
    if (o < params.out_features) {
      store(r, o, partial[0][lid]);
    }
  }
}
