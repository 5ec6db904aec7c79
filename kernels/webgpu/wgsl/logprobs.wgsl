// Log-probabilities on the GPU (reference: kernels/cpu/logprobs.ts), so that a request for
// logprobs reads back 2 + 2·top values a row instead of the row's logits (128K floats for Llama 3).
// One workgroup per row: each invocation scans a strided share of the row once, keeping a running
// maximum and sum of exponentials (online softmax) and its own best `top` values, best first (its
// ids rise, so a later equal value never passes an earlier one); a tree reduction combines the
// sums, and `top` rounds of an argmax over the invocations' next candidates pick the overall best.
// Invocation i % WORKGROUP owns token i, so the round's winner knows it was picked.
// out row r: next (as a float: the step's sampled ids come back with these), log_softmax(row)[next],
// then (id, log-probability) × top; next = next_tokens[r], or sampled[r] where that is negative.

struct Params {
  count: u32, // logits per row
  top: u32,   // ≤ MAX_TOP
  stride: u32, // out values per row: 2 + 2 · top
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> next_tokens: array<i32>;
@group(0) @binding(3) var<storage, read> sampled: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WORKGROUP: u32 = 256u;
const MAX_TOP: u32 = 20u;
const LOWEST: f32 = -3.4e38;
const NONE: u32 = 0xffffffffu;
var<workgroup> shared_value: array<f32, WORKGROUP>;
var<workgroup> shared_sum: array<f32, WORKGROUP>;
var<workgroup> shared_id: array<u32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let row = wid.x;
  let base = row * params.count;
  var maximum = LOWEST;
  var sum = 0.0;
  var best_value: array<f32, MAX_TOP>;
  var best_id: array<u32, MAX_TOP>;
  var held = 0u;
  for (var i = lid; i < params.count; i += WORKGROUP) {
    let v = logits[base + i];
    if (v > maximum) {
      sum = sum * exp(maximum - v) + 1.0;
      maximum = v;
    } else {
      sum += exp(v - maximum);
    }
    if (params.top > 0u && (held < params.top || v > best_value[held - 1u])) {
      // Append, or replace the last; then move up past the strictly smaller.
      var place = held;
      if (held == params.top) {
        place = held - 1u;
      } else {
        held += 1u;
      }
      while (place > 0u && best_value[place - 1u] < v) {
        best_value[place] = best_value[place - 1u];
        best_id[place] = best_id[place - 1u];
        place -= 1u;
      }
      best_value[place] = v;
      best_id[place] = i;
    }
  }
  // log Σ exp over the row: combine (maximum, sum) pairs.
  shared_value[lid] = maximum;
  shared_sum[lid] = sum;
  workgroupBarrier();
  for (var half = WORKGROUP / 2u; half > 0u; half >>= 1u) {
    if (lid < half) {
      let m = max(shared_value[lid], shared_value[lid + half]);
      shared_sum[lid] = shared_sum[lid] * exp(shared_value[lid] - m) + shared_sum[lid + half] * exp(shared_value[lid + half] - m);
      shared_value[lid] = m;
    }
    workgroupBarrier();
  }
  let log_normaliser = shared_value[0] + log(shared_sum[0]);
  let out_base = row * params.stride;
  if (lid == 0u) {
    var next = next_tokens[row];
    if (next < 0) {
      next = sampled[row];
    }
    let token = min(u32(max(next, 0)), params.count - 1u);
    out[out_base] = f32(token);
    out[out_base + 1u] = logits[base + token] - log_normaliser;
  }
  workgroupBarrier();
  // The best `top`: each round, every invocation offers its next candidate.
  var taken = 0u;
  for (var k = 0u; k < params.top; k++) {
    var value = LOWEST;
    var id = NONE;
    if (taken < held) {
      value = best_value[taken];
      id = best_id[taken];
    }
    shared_value[lid] = value;
    shared_id[lid] = id;
    workgroupBarrier();
    for (var half = WORKGROUP / 2u; half > 0u; half >>= 1u) {
      if (lid < half) {
        let v = shared_value[lid + half];
        let j = shared_id[lid + half];
        if (v > shared_value[lid] || (v == shared_value[lid] && j < shared_id[lid])) {
          shared_value[lid] = v;
          shared_id[lid] = j;
        }
      }
      workgroupBarrier();
    }
    let winner = shared_id[0];
    let winning = shared_value[0];
    if (winner != NONE && winner % WORKGROUP == lid) {
      taken += 1u;
    }
    if (lid == 0u) {
      out[out_base + 2u + 2u * k] = select(f32(winner), -1.0, winner == NONE);
      out[out_base + 3u + 2u * k] = winning - log_normaliser;
    }
    workgroupBarrier();
  }
}
