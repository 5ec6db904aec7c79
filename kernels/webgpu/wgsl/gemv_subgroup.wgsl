// Decode matmul with subgroup reductions, for in_features a multiple of 8 on adapters with the
// subgroups feature: out[r, o] = x[r, :] · W[o, :] + bias[o]. Each subgroup streams four weight
// rows (four 16-byte loads in flight per lane per iteration, x loaded once for all four); lanes
// stride over the row, so loops are long, and subgroupAdd finishes each dot product without
// workgroup barriers. Works for any subgroup size.
enable subgroups;
diagnostic(off, subgroup_uniformity);

struct Params {
  rows: u32,
  in_features: u32,
  out_features: u32,
  w_stride: u32, // vec4<u32> per weight row (= in_features / 8 here)
  has_bias: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WORKGROUP: u32 = 128u;
const ROWS_PER_WORKGROUP: u32 = 16u;

fn dot8(packed: vec4<u32>, low: vec4<f32>, high: vec4<f32>) -> f32 {
  let a = vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y));
  let b = vec4<f32>(unpack2x16float(packed.z), unpack2x16float(packed.w));
  return dot(a, low) + dot(b, high);
}

@compute @workgroup_size(WORKGROUP)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) subgroup_size: u32,
) {
  let subgroups = WORKGROUP / subgroup_size;
  let subgroup = lid / subgroup_size;
  let r = wid.y;
  let chunks = params.in_features / 8u;
  let x_base = r * chunks * 2u;
  let last = params.out_features - 1u;
  for (var block = subgroup * 4u; block < ROWS_PER_WORKGROUP; block += subgroups * 4u) {
    let first = wid.x * ROWS_PER_WORKGROUP + block;
    // Rows past the end read the last row again; their sums are never written.
    let w0 = min(first, last) * params.w_stride;
    let w1 = min(first + 1u, last) * params.w_stride;
    let w2 = min(first + 2u, last) * params.w_stride;
    let w3 = min(first + 3u, last) * params.w_stride;
    var acc = vec4<f32>(0.0);
    for (var c = lane; c < chunks; c += subgroup_size) {
      let low = x[x_base + 2u * c];
      let high = x[x_base + 2u * c + 1u];
      let p0 = w[w0 + c];
      let p1 = w[w1 + c];
      let p2 = w[w2 + c];
      let p3 = w[w3 + c];
      acc += vec4<f32>(dot8(p0, low, high), dot8(p1, low, high), dot8(p2, low, high), dot8(p3, low, high));
    }
    let total = subgroupAdd(acc);
    if (lane < 4u) {
      let o = first + lane;
      if (o < params.out_features) {
        var b = 0.0;
        if (params.has_bias == 1u) {
          b = bias[o];
        }
        out[r * params.out_features + o] = total[lane] + b;
      }
    }
  }
}
