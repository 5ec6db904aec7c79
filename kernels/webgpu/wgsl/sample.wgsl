// Sampling on the GPU, the same choice as kernels/cpu/sample.ts, so only the token id crosses back.
// One workgroup. Tokens are ordered best first: larger (penalised) logit first, lower id on ties.
// The CPU sorts; this kernel never does. Each cut (top-k, top-p, the draw itself) is "the first
// token in that order where a running total (a count, or probability mass) reaches a goal",
// found by searching the 32-bit order key of the logit: each pass over the vocabulary sums the
// metric above 7 evenly spaced key thresholds at once, narrowing the key range 8-fold, so about
// 11 passes find the boundary key; equal logits are then split by id the same way (rare).
// Steps: penalise flagged tokens and find the largest logit (pass 0); greedy stops there. Otherwise the tokens
// allowed are those within 40/T of the top (the CPU's cut), then at or before the top-k boundary,
// then at or before the top-p boundary of what is left, then with probability ≥ min-p × the top's;
// the draw is the first token whose running mass over the allowed ones exceeds draw × their total.
// Passes read the penalised logits from `scratch` (512 KB for 128K tokens: L2-resident).

struct Params {
  count: u32,
  top_k: u32,               // 0: off
  flags: u32,               // bit 0: token_flags bound: penalise flagged tokens, flag the pick; bit 1: greedy
  inverse_temperature: f32, // 1 when greedy
  top_p: f32,               // 1: off
  min_p: f32,               // 0: off
  penalty: f32,
  draw: f32,                // uniform in [0, 1)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> token_flags: array<u32>;
@group(0) @binding(3) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(4) var<storage, read_write> result: array<u32>;

const THREADS: u32 = 256u;
const LANES: u32 = 8u;
const NEGLIGIBLE_LOGIT_GAP: f32 = 40.0;
var<workgroup> partial: array<array<f32, LANES>, THREADS>;

// Larger logit ⇔ larger key (the sign-magnitude float made into an unsigned order).
fn order_key(value: f32) -> u32 {
  let bits = bitcast<u32>(value);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

// Each lane summed over the workgroup; every invocation gets the totals.
fn workgroup_sum(lid: u32, values: array<f32, LANES>) -> array<f32, LANES> {
  partial[lid] = values;
  workgroupBarrier();
  for (var stride = THREADS / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      for (var j = 0u; j < LANES; j++) {
        partial[lid][j] += partial[lid + stride][j];
      }
    }
    workgroupBarrier();
  }
  let totals = workgroupUniformLoad(&partial[0]);
  workgroupBarrier(); // partial is rewritten by the next reduction
  return totals;
}

// Lane 0: the maximum of `high`; lane 1: the minimum of `low`.
fn workgroup_extremes(lid: u32, high: f32, low: f32) -> vec2<f32> {
  partial[lid][0] = high;
  partial[lid][1] = low;
  workgroupBarrier();
  for (var stride = THREADS / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      partial[lid][0] = max(partial[lid][0], partial[lid + stride][0]);
      partial[lid][1] = min(partial[lid][1], partial[lid + stride][1]);
    }
    workgroupBarrier();
  }
  let totals = workgroupUniformLoad(&partial[0]);
  workgroupBarrier();
  return vec2<f32>(totals[0], totals[1]);
}

// Which tokens are still allowed: within the gap of the top, with probability ≥ min_mass (relative
// to the top's), and at or before the boundary token (limit_key, limit_index) in the order.
struct Allowed {
  top: f32,
  top_scaled: f32, // top × inverse temperature
  floor: f32,
  min_mass: f32,
  limit_key: u32,
  limit_index: u32,
}

struct Token {
  key: u32,
  index: u32,
}

// Probability relative to the top token's.
fn mass(a: Allowed, value: f32) -> f32 {
  return exp(value * params.inverse_temperature - a.top_scaled);
}

fn is_allowed(a: Allowed, index: u32, value: f32, key: u32, m: f32) -> bool {
  return value >= a.floor && m >= a.min_mass && (key > a.limit_key || (key == a.limit_key && index <= a.limit_index));
}

// The allowed token that comes last in the order: the smallest value, highest id among equals.
fn last_allowed(lid: u32, a: Allowed) -> Token {
  var lowest = 3.4e38;
  for (var i = lid; i < params.count; i += THREADS) {
    let value = scratch[i];
    if (is_allowed(a, i, value, order_key(value), mass(a, value))) {
      lowest = min(lowest, value);
    }
  }
  let smallest = workgroup_extremes(lid, 0.0, lowest).y;
  var last = -1.0;
  for (var i = lid; i < params.count; i += THREADS) {
    let value = scratch[i];
    if (value == smallest && is_allowed(a, i, value, order_key(value), mass(a, value))) {
      last = max(last, f32(i));
    }
  }
  return Token(order_key(smallest), u32(workgroup_extremes(lid, last, 0.0).x));
}

fn reaches(total: f32, goal: f32, strict: bool) -> bool {
  return select(total >= goal, total > goal, strict);
}

// Lane 0: how many allowed tokens; lane 1: their mass.
fn allowed_totals(lid: u32, a: Allowed) -> array<f32, LANES> {
  var sums = array<f32, LANES>();
  for (var i = lid; i < params.count; i += THREADS) {
    let value = scratch[i];
    let m = mass(a, value);
    if (is_allowed(a, i, value, order_key(value), m)) {
      sums[0] += 1.0;
      sums[1] += m;
    }
  }
  return workgroup_sum(lid, sums);
}

// The first allowed token, in the order, at which the running total of the metric (1 per token,
// or its mass) reaches `goal` (exceeds it when `strict`). The caller makes sure the total over
// all allowed tokens does.
fn boundary(lid: u32, a: Allowed, use_mass: bool, goal: f32, strict: bool) -> Token {
  // The largest key t whose total over allowed keys ≥ t reaches the goal: it lies in [low, high].
  var low = 0u;
  var high = order_key(a.top);
  loop {
    if (low >= high) { break; }
    let span = high - low;
    let shift = select(0u, 29u - countLeadingZeros(span), span >= 8u);
    var sums = array<f32, LANES>();
    for (var i = lid; i < params.count; i += THREADS) {
      let value = scratch[i];
      let key = order_key(value);
      let m = mass(a, value);
      if (key > low && is_allowed(a, i, value, key, m)) {
        let step = min((key - low) >> shift, LANES - 1u); // key ≥ low + j << shift for every j ≤ step
        let v = select(1.0, m, use_mass);
        for (var j = 1u; j < LANES; j++) {
          sums[j] += select(0.0, v, j <= step);
        }
      }
    }
    let totals = workgroup_sum(lid, sums);
    var new_low = low;
    var new_high = high;
    for (var j = 1u; j < LANES; j++) {
      let offset = j << shift;
      if (offset <= span) {
        if (reaches(totals[j], goal, strict)) {
          new_low = low + offset;
        } else {
          new_high = min(new_high, low + offset - 1u);
        }
      }
    }
    low = new_low;
    high = max(new_high, new_low);
  }
  let key = low;
  // Tokens with exactly that key: how many, the lowest id, and the total of the tokens before them.
  var before = array<f32, LANES>();
  var first = f32(params.count);
  var last = -1.0;
  for (var i = lid; i < params.count; i += THREADS) {
    let value = scratch[i];
    let k = order_key(value);
    let m = mass(a, value);
    if (k >= key && is_allowed(a, i, value, k, m)) {
      if (k == key) {
        before[1] += 1.0;
        first = min(first, f32(i));
        last = max(last, f32(i));
      } else {
        before[0] += select(1.0, m, use_mass);
      }
    }
  }
  let tie = workgroup_sum(lid, before);
  let ids = workgroup_extremes(lid, last, first);
  if (tie[1] == 0.0) {
    // Rounding kept the total short of the goal: the last allowed token in the order.
    return last_allowed(lid, a);
  }
  var found = u32(ids.y);
  if (tie[1] > 1.0) {
    // The first id among the tied tokens at which the total reaches the goal: in [first, last].
    var low_index = found;
    var high_index = u32(ids.x);
    loop {
      if (low_index >= high_index) { break; }
      let span = high_index - low_index;
      let shift = select(0u, 29u - countLeadingZeros(span), span >= 8u);
      var sums = array<f32, LANES>();
      for (var i = lid; i < params.count; i += THREADS) {
        let value = scratch[i];
        let k = order_key(value);
        let m = mass(a, value);
        if (k == key && is_allowed(a, i, value, k, m)) {
          // Lane j counts ids ≤ low_index + (j << shift) - 1.
          let v = select(1.0, m, use_mass);
          for (var j = 1u; j < LANES; j++) {
            sums[j] += select(0.0, v, i < low_index + (j << shift));
          }
        }
      }
      let totals = workgroup_sum(lid, sums);
      var new_low = low_index;
      var new_high = high_index;
      for (var j = LANES - 1u; j >= 1u; j--) {
        let offset = j << shift;
        if (offset <= span) {
          if (reaches(tie[0] + totals[j], goal, strict)) {
            new_high = low_index + offset - 1u;
          } else {
            new_low = max(new_low, low_index + offset);
          }
        }
      }
      low_index = new_low;
      high_index = max(new_high, new_low);
    }
    found = low_index;
  }
  return Token(key, found);
}

@compute @workgroup_size(THREADS)
fn main(@builtin(local_invocation_index) lid: u32) {
  let penalise = (params.flags & 1u) != 0u;
  // Pass 0: penalised logits into scratch, and the largest.
  var top = -3.4e38;
  for (var i = lid; i < params.count; i += THREADS) {
    var value = logits[i];
    if (penalise && token_flags[i] != 0u) {
      value = select(value * params.penalty, value / params.penalty, value > 0.0);
    }
    scratch[i] = value;
    top = max(top, value);
  }
  storageBarrier();
  top = workgroup_extremes(lid, top, 0.0).x;

  var picked: u32;
  if ((params.flags & 2u) != 0u) {
    var first = f32(params.count);
    for (var i = lid; i < params.count; i += THREADS) {
      if (scratch[i] == top) {
        first = min(first, f32(i));
      }
    }
    picked = u32(workgroup_extremes(lid, 0.0, first).y);
  } else {
    let top_scaled = top * params.inverse_temperature;
    var a = Allowed(top, top_scaled, top - NEGLIGIBLE_LOGIT_GAP / params.inverse_temperature, 0.0, 0u, 0xffffffffu);
    var totals = allowed_totals(lid, a);
    if (params.top_k > 0u && totals[0] > f32(params.top_k)) {
      let b = boundary(lid, a, false, f32(params.top_k), false);
      a.limit_key = b.key;
      a.limit_index = b.index;
      totals = allowed_totals(lid, a);
    }
    if (params.top_p < 1.0) {
      let b = boundary(lid, a, true, params.top_p * totals[1], false);
      a.limit_key = b.key;
      a.limit_index = b.index;
    }
    if (params.min_p > 0.0) {
      a.min_mass = params.min_p; // the top token's mass is 1
    }
    totals = allowed_totals(lid, a);
    let goal = params.draw * totals[1];
    if (goal < totals[1]) {
      picked = boundary(lid, a, true, goal, true).index;
    } else {
      // Rounding left no token above the draw: the last allowed one, as the CPU takes.
      picked = boundary(lid, a, true, totals[1], false).index;
    }
  }
  if (lid == 0u) {
    result[0] = picked;
    if (penalise) {
      token_flags[picked] = 1u;
    }
  }
}
