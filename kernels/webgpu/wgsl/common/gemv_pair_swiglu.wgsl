// The paired GEMV's epilogue for a gated MLP (wgsl/gemv_subgroup.wgsl PAIRED): the matrix holds
// the gate's rows, then the up projection's (pair_span = width0 = their width), and a pair is gate
// row i with up row i, so out0[r, i] = silu(gate_i) · up_i is written where the two sums meet: no
// SwiGLU pass after the matmul. Composed into every gemv_subgroup pipeline (it declares nothing);
// only the paired SwiGLU pipeline calls it.

fn store_pair(r: u32, first_row: u32, first: f32, second: f32) {
  let gate = biased(first_row, first);
  let up = biased(first_row + params.pair_span, second);
  out0[r * params.pair_span + first_row] = gate / (1.0 + exp(-gate)) * up;
}
