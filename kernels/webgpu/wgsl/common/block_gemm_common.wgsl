// The block GEMM's parameters and epilogue (kernels/webgpu/gemm_subgroup_matrix.ts, layout
// 'blocks'): Monarch and BLAST steps on tensor cores, one GEMM per block in one dispatch.
// Step 1 multiplies x's block k (in_features = in/b columns from k · in/b) by the inner factor's
// rows k · rank onwards; step 3 multiplies z's block k (rows × rank) by the outer factor's rows
// k · out/b onwards. Where a result goes depends on the mode:
//   0 BLAST step 1: y[k][n][q], q the row within the block (wgsl/blast_couple.wgsl mixes the blocks);
//   1 Monarch step 1: factor row j goes to z[j % b][n][j / b] (the block permutation);
//   2 step 3: output feature j (+ bias, + out with flags bit 1);
//   3 step 3 with Monarch's strided outputs: feature (j % (out/b)) · b + j / (out/b).

struct Params {
  rows: u32,
  in_features: u32,     // K: the columns each block's GEMM sums over
  out_features: u32,    // factor rows, all blocks
  w_stride: u32,        // factor row stride in halves
  flags: u32,           // bit 0: bias; bit 1: accumulate into the output
  mode: u32,
  block_out: u32,       // factor rows per block
  tiles_per_block: u32, // column tiles per block (the grid's x is blocks × this)
  x_block: u32,         // where block k's x starts: k · x_block values (floats, or halves for an f16 x)
  x_row: u32,           // x's row stride in values
  rank: u32,
  blocks: u32,
  // Stacked layers (the backend runs them one dispatch each): this one's factor rows start at
  // layer · out_features, its x (z for step 3) at x_offset values, its z (Monarch step 1) at out_offset.
  layer: u32,
  x_offset: u32,
  out_offset: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;

// The block this workgroup multiplies (set first thing by the kernel).
var<private> block: u32;

// Step 3's output feature of factor row o (modes 2 and 3; split-K sums go there).
fn output_feature(o: u32) -> u32 {
  if (params.mode == 3u) {
    return (o % params.block_out) * params.blocks + o / params.block_out;
  }
  return o;
}

fn store(r: u32, o: u32, value: f32) {
  if (params.mode == 0u) {
    out0[(block * params.rows + r) * params.block_out + (o - block * params.block_out)] = value;
    return;
  }
  if (params.mode == 1u) {
    out0[params.out_offset + ((o % params.blocks) * params.rows + r) * params.rank + o / params.blocks] = value;
    return;
  }
  let feature = output_feature(o);
  var v = value;
  if ((params.flags & 1u) != 0u) {
    v += bias[feature];
  }
  let index = r * params.out_features + feature;
  if ((params.flags & 2u) != 0u) {
    v += out0[index];
  }
  out0[index] = v;
}
