// Sampling on the GPU, the same choice as kernels/cpu/sample.ts, so only the token id crosses back.
// One workgroup per row (a step samples all its sequences in one dispatch). Tokens are ordered best
// first: larger (penalised) logit first, lower id on ties.
// The CPU sorts; this kernel never does. Each cut (top-k, top-p, the draw itself) is "the first
// token in that order where a running total (a count, or probability mass) reaches a goal",
// found by searching the 32-bit order key of the logit: each step sums the metric above 7 evenly
// spaced key thresholds at once, narrowing the key range 8-fold, so about 10 steps find the
// boundary key; equal logits are then split by id the same way (rare).
// Steps: penalise counted tokens, take order keys and the largest logit (step 0); greedy stops
// there. Otherwise each token's probability relative to the top's (its mass) is computed once, and
// tokens more than 40/T below the top get key 0 (dropped, the CPU's cut); that pass also counts what
// is allowed at first. The tokens allowed are then those at or before the top-k boundary, then at
// or before the top-p boundary of what is left, then with mass ≥ min-p; the draw is the first token
// whose running mass over the allowed ones exceeds draw × their total.
// Only a search's first step goes over every token. A key step keeps the ids of the tokens inside
// its key range in `list` (each invocation its own column: the tokens it visited, in its own
// order, so sums stay deterministic), each tagged with which of its 8 sub-ranges holds it. The
// range the step narrows to is one sub-range, so the next step reads the list but visits only the
// tokens of that tag, with the metric of the allowed tokens above them as a constant. A search
// thus visits about 1.15 vocabularies and reads one list of ids, where it visited 10 vocabularies.
// Full steps read keys and masses from `scratch` (1 MB for 128K tokens: L2-resident) 16 tokens per
// invocation per iteration, so one workgroup keeps enough loads in flight. Every step goes through
// one call of `scan` in a loop driven by a small state machine: shader compilers inline every call,
// and ten call sites of the step made a shader that took minutes to compile.

// One workgroup per row to sample: workgroup i takes row_params[header.first + i].
struct Header {
  count: u32,
  first: u32,
  _pad0: u32,
  _pad1: u32,
}

struct Params {
  count: u32,
  top_k: u32,               // 0: off
  flags: u32,               // bit 0: token_flags bound: penalise counted tokens, count the pick; bit 1: greedy
  inverse_temperature: f32, // 1 when greedy
  top_p: f32,               // 1: off
  min_p: f32,               // 0: off
  penalty: f32,             // repetition penalty, 1: off
  draw: f32,                // uniform in [0, 1)
  presence: f32,            // presence penalty, 0: off
  frequency: f32,           // frequency penalty, 0: off
  row: u32,                 // logits row (rows of `count`) and the result's entry
  flags_row: u32,           // token_flags row (rows of whole vec4s covering `count`)
}

@group(0) @binding(0) var<uniform> header: Header;
@group(0) @binding(5) var<storage, read> row_params: array<Params>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
// Per token: 1 if the prompt holds it, plus 2 per time the output does (kernels/backend.ts KVCache).
@group(0) @binding(2) var<storage, read_write> token_flags: array<vec4<u32>>;
// Per row: [0, quads): order keys, four tokens per element; [quads, 2·quads): masses (f32 bits).
@group(0) @binding(3) var<storage, read_write> scratch: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> result: array<u32>;
// Per row: THREADS columns of list_depth(quads) ids; invocation i's k-th id at [k · THREADS + i].
@group(0) @binding(6) var<storage, read_write> list: array<u32>;

// The largest power of two the adapter's workgroup limits allow (set by the backend).
override THREADS: u32 = 256u;
const LANES: u32 = 10u; // 0..7 summed; 8 min-reduced; 9 max-reduced
const UNROLL: u32 = 4u;
const NEGLIGIBLE_LOGIT_GAP: f32 = 40.0;
var<workgroup> partial: array<array<f32, LANES>, THREADS>;

// A list entry: the token's id, and in the top bits its tag (the sub-range of the step that kept it).
const TAG_SHIFT: u32 = 29u;
const ID_MASK: u32 = (1u << TAG_SHIFT) - 1u;

// Ids an invocation can keep: the tokens a full step gives it (kernels/webgpu/backend.ts sizes
// `list` the same way).
fn list_depth(quads: u32) -> u32 {
  return 4u * ((quads + THREADS - 1u) / THREADS);
}

// Larger logit ⇔ larger key (the sign-magnitude float made into an unsigned order); 0 is below all.
fn order_key(value: f32) -> u32 {
  let bits = bitcast<u32>(value);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn key_value(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, key >= 0x80000000u));
}

fn empty_lanes() -> array<f32, LANES> {
  var lanes = array<f32, LANES>();
  lanes[8] = 3.4e38;
  lanes[9] = -3.4e38;
  return lanes;
}

// Lanes 0..7 summed, 8 min, 9 max over the workgroup; every invocation gets the results.
fn workgroup_reduce(lid: u32, values: array<f32, LANES>) -> array<f32, LANES> {
  partial[lid] = values;
  workgroupBarrier();
  for (var stride = THREADS / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      for (var j = 0u; j < 8u; j++) {
        partial[lid][j] += partial[lid + stride][j];
      }
      partial[lid][8] = min(partial[lid][8], partial[lid + stride][8]);
      partial[lid][9] = max(partial[lid][9], partial[lid + stride][9]);
    }
    workgroupBarrier();
  }
  let totals = workgroupUniformLoad(&partial[0]);
  workgroupBarrier(); // partial is rewritten by the next reduction
  return totals;
}

// Which tokens are still allowed: not dropped (key 0), mass ≥ min_mass, and at or before the
// boundary token (limit_key, limit_index) in the order.
struct Allowed {
  min_mass: f32,
  limit_key: u32,
  limit_index: u32,
}

struct Token {
  key: u32,
  index: u32,
}

// What one step over the tokens computes (lanes as in workgroup_reduce).
const TOTALS: u32 = 0u;  // 0: allowed tokens, 1: their mass
const KEYS: u32 = 1u;    // j = 1..7: metric of allowed tokens with key ≥ low + (j << shift); 0: with key > high
const TIES: u32 = 2u;    // 0: metric with key > at, 1: tokens with key == at, 2: their metric, 8/9: their lowest/highest id
const IDS: u32 = 3u;     // j = 1..7: metric of allowed tokens with key == at and id < low + (j << shift)
const LOWEST: u32 = 4u;  // 8: the smallest allowed value
const LAST: u32 = 5u;    // 9: the highest id of an allowed token with key == at
const FIRST: u32 = 6u;   // 8: the lowest id of a token with key == at (no filter: greedy)

struct Pass {
  kind: u32,
  use_mass: bool,
  low: u32,
  shift: u32,
  at: u32,
  high: u32,        // KEYS: the top of the key range
  from_list: bool,  // visit the ids in `list` with tag `take`, not every token
  take: u32,
  keep: bool,       // rewrite `list` with the tokens this step keeps, tagged (KEYS; TIES over every token)
}

fn full_pass(kind: u32) -> Pass {
  return Pass(kind, false, 0u, 0u, 0u, 0u, false, 0u, false);
}

// Adds one token to the step's lanes. Returns 1 + its tag when a KEYS step (the sub-range
// holding it) or a TIES step (tag 0) keeps it for the next step, else 0.
fn visit(lanes: ptr<function, array<f32, LANES>>, p: Pass, a: Allowed, index: u32, key: u32, m: f32) -> u32 {
  if (p.kind == FIRST) {
    if (key == p.at) {
      (*lanes)[8] = min((*lanes)[8], f32(index));
    }
    return 0u;
  }
  let allowed = key != 0u && m >= a.min_mass && (key > a.limit_key || (key == a.limit_key && index <= a.limit_index));
  if (!allowed) {
    return 0u;
  }
  let v = select(1.0, m, p.use_mass);
  var kept = 0u;
  switch p.kind {
    case TOTALS: {
      (*lanes)[0] += 1.0;
      (*lanes)[1] += m;
    }
    case KEYS: {
      // key ≥ low + (j << shift) for every j ≤ step: the sub-range holding it
      let step = select(0u, min((key - p.low) >> p.shift, 7u), key > p.low);
      for (var j = 1u; j < 8u; j++) {
        (*lanes)[j] += select(0.0, v, j <= step);
      }
      if (key > p.high) {
        (*lanes)[0] += v;
      } else if (key >= p.low) {
        kept = 1u + step;
      }
    }
    case TIES: {
      if (key > p.at) {
        (*lanes)[0] += v;
      } else if (key == p.at) {
        (*lanes)[1] += 1.0;
        (*lanes)[2] += v;
        (*lanes)[8] = min((*lanes)[8], f32(index));
        (*lanes)[9] = max((*lanes)[9], f32(index));
        kept = 1u;
      }
    }
    case IDS: {
      if (key == p.at) {
        for (var j = 1u; j < 8u; j++) {
          (*lanes)[j] += select(0.0, v, index < p.low + (j << p.shift));
        }
      }
    }
    case LOWEST: {
      (*lanes)[8] = min((*lanes)[8], key_value(key));
    }
    default: { // LAST
      if (key == p.at) {
        (*lanes)[9] = max((*lanes)[9], f32(index));
      }
    }
  }
  return kept;
}

// One step: over every token (UNROLL vec4s of keys and masses loaded before any is used), or over
// the entries of `list` this invocation holds (UNROLL at once; the keys and masses of those tagged
// p.take loaded next). With p.keep the tokens the step keeps replace the list, tagged; `held` is
// how many entries this invocation holds.
fn scan(lid: u32, p: Pass, a: Allowed, count: u32, scratch_base: u32, list_base: u32, held: ptr<function, u32>) -> array<f32, LANES> {
  let quads = (count + 3u) / 4u;
  var lanes = empty_lanes();
  var written = 0u;
  if (p.from_list) {
    let entries = *held;
    for (var base = 0u; base < entries; base += UNROLL) {
      var ids: array<u32, UNROLL>;
      var taken: array<bool, UNROLL>;
      var keys: array<u32, UNROLL>;
      var masses: array<f32, UNROLL>;
      for (var u = 0u; u < UNROLL; u++) {
        if (base + u < entries) {
          ids[u] = list[list_base + (base + u) * THREADS + lid];
        }
      }
      for (var u = 0u; u < UNROLL; u++) {
        taken[u] = base + u < entries && (ids[u] >> TAG_SHIFT) == p.take;
        ids[u] &= ID_MASK;
        if (taken[u]) {
          keys[u] = scratch[scratch_base + ids[u] / 4u][ids[u] % 4u];
          masses[u] = bitcast<f32>(scratch[scratch_base + quads + ids[u] / 4u][ids[u] % 4u]);
        }
      }
      for (var u = 0u; u < UNROLL; u++) {
        if (taken[u]) {
          let tag = visit(&lanes, p, a, ids[u], keys[u], masses[u]);
          if (tag != 0u && p.keep) {
            // Slot `written` ≤ base + u was read already.
            list[list_base + written * THREADS + lid] = ids[u] | ((tag - 1u) << TAG_SHIFT);
            written++;
          }
        }
      }
    }
  } else {
    for (var base = lid; base < quads; base += UNROLL * THREADS) {
      var keys: array<vec4<u32>, UNROLL>;
      var masses: array<vec4<f32>, UNROLL>;
      for (var u = 0u; u < UNROLL; u++) {
        let q = base + u * THREADS;
        if (q < quads) {
          keys[u] = scratch[scratch_base + q];
          masses[u] = bitcast<vec4<f32>>(scratch[scratch_base + quads + q]);
        }
      }
      for (var u = 0u; u < UNROLL; u++) {
        let q = base + u * THREADS;
        for (var c = 0u; c < 4u; c++) {
          let index = q * 4u + c;
          if (q < quads && index < count) {
            let tag = visit(&lanes, p, a, index, keys[u][c], masses[u][c]);
            if (tag != 0u && p.keep) {
              list[list_base + written * THREADS + lid] = index | ((tag - 1u) << TAG_SHIFT);
              written++;
            }
          }
        }
      }
    }
  }
  if (p.keep) {
    *held = written;
  }
  return workgroup_reduce(lid, lanes);
}

fn reaches(total: f32, goal: f32, strict: bool) -> bool {
  return select(total >= goal, total > goal, strict);
}

// One step of the key search: the largest key t whose total over allowed keys ≥ t reaches the
// goal lies in [low, high]; 7 thresholds spaced 1 << shift apart were measured.
fn shift_for(span: u32) -> u32 {
  return select(0u, 29u - countLeadingZeros(span), span >= 8u);
}

// A search for the first allowed token (in the order) where the running total of the metric
// reaches `goal`: first its key, then, among tokens with that key, its id.
struct Search {
  use_mass: bool,
  goal: f32,
  strict: bool,
  low: u32,
  high: u32,
  key: u32,
  before: f32, // the metric of the tokens before those with `key`
  above: f32,  // the metric of the allowed tokens above the key range
  take: u32,   // the tag of the list's entries in the key range
}

// Stages, in the CPU's order; each starts with a TOTALS step over what is allowed so far.
const STAGE_TOP_K: u32 = 0u;
const STAGE_TOP_P: u32 = 1u;
const STAGE_DRAW: u32 = 2u;
const STAGE_DONE: u32 = 3u;

@compute @workgroup_size(THREADS)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  // This workgroup's row, and where its part of `scratch` starts.
  let params = row_params[header.first + wid.x];
  let scratch_base = wid.x * 2u * ((params.count + 3u) / 4u);
  let flagged = (params.flags & 1u) != 0u;
  let quads = (params.count + 3u) / 4u;
  let list_base = wid.x * THREADS * list_depth(quads);
  // Pass 0: penalised logits as order keys, and the largest logit.
  var top = -3.4e38;
  let logits_base = params.row * params.count;
  let flags_base = params.flags_row * quads;
  for (var q = lid; q < quads; q += THREADS) {
    var values = vec4<f32>(-3.4e38);
    for (var c = 0u; c < 4u; c++) {
      if (q * 4u + c < params.count) {
        values[c] = logits[logits_base + q * 4u + c];
      }
    }
    if (flagged) {
      let counts = token_flags[flags_base + q];
      if (params.penalty != 1.0) {
        let seen = counts != vec4<u32>(0u);
        values = select(values, select(values * params.penalty, values / params.penalty, values > vec4<f32>(0.0)), seen);
      }
      let outputs = vec4<f32>(counts >> vec4<u32>(1u));
      values -= select(vec4<f32>(0.0), vec4<f32>(params.presence) + params.frequency * outputs, outputs > vec4<f32>(0.0));
    }
    var keys = vec4<u32>(0u);
    for (var c = 0u; c < 4u; c++) {
      if (q * 4u + c < params.count) {
        keys[c] = order_key(values[c]);
        top = max(top, values[c]);
      }
    }
    scratch[scratch_base + q] = keys;
  }
  storageBarrier();
  top = workgroup_reduce(lid, array<f32, LANES>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, top))[9];
  let top_key = order_key(top);
  let greedy = (params.flags & 2u) != 0u;
  let floor_key = order_key(top - NEGLIGIBLE_LOGIT_GAP / params.inverse_temperature);
  // Sampling's first step, TOTALS over every token not dropped, is summed by the masses' pass.
  var totals = empty_lanes();
  if (!greedy) {
    // Masses, once; tokens below the cut get key 0.
    let top_scaled = top * params.inverse_temperature;
    for (var q = lid; q < quads; q += THREADS) {
      var keys = scratch[scratch_base + q];
      var masses = vec4<f32>(0.0);
      for (var c = 0u; c < 4u; c++) {
        if (keys[c] >= floor_key && q * 4u + c < params.count) {
          masses[c] = exp(key_value(keys[c]) * params.inverse_temperature - top_scaled);
          totals[0] += 1.0;
          totals[1] += masses[c];
        } else {
          keys[c] = 0u;
        }
      }
      scratch[scratch_base + q] = keys;
      scratch[scratch_base + quads + q] = bitcast<vec4<u32>>(masses);
    }
    storageBarrier();
    totals = workgroup_reduce(lid, totals);
  }

  var a = Allowed(0.0, 0u, 0xffffffffu);
  var step = full_pass(select(TOTALS, FIRST, greedy));
  step.at = top_key;
  var stage = STAGE_TOP_K;
  var s = Search(false, 0.0, false, 0u, 0u, 0u, 0.0, 0.0, 0u);
  var found = Token(0u, 0u);
  var picked = 0u;
  var held = 0u; // entries this invocation holds in `list`
  var summed = !greedy; // `totals` is the first step's
  loop {
    var lanes = totals;
    if (!summed) {
      lanes = scan(lid, step, a, params.count, scratch_base, list_base, &held);
    }
    summed = false;
    // Steps over the list leave out the allowed tokens above the key range.
    if (step.from_list && step.kind == KEYS) {
      for (var j = 1u; j < 8u; j++) {
        lanes[j] += s.above;
      }
    } else if (step.from_list && step.kind == TIES) {
      lanes[0] += s.above;
    }
    var finished = false; // a search found its token
    var through = -1.0;   // the metric of the allowed tokens up to the one found, where one step gave it
    switch step.kind {
      case FIRST: {
        picked = u32(lanes[8]);
        stage = STAGE_DONE;
      }
      case TOTALS: {
        var searching = false;
        if (stage == STAGE_TOP_K && params.top_k > 0u && lanes[0] > f32(params.top_k)) {
          s = Search(false, f32(params.top_k), false, 0u, 0u, 0u, 0.0, 0.0, 0u);
          searching = true;
        } else if (stage <= STAGE_TOP_P && params.top_p < 1.0) {
          stage = STAGE_TOP_P;
          s = Search(true, params.top_p * lanes[1], false, 0u, 0u, 0u, 0.0, 0.0, 0u);
          searching = true;
        } else if (stage <= STAGE_TOP_P && params.min_p > 0.0) {
          // min-p changes what is allowed: count again.
          stage = STAGE_DRAW;
          a.min_mass = params.min_p; // the top token's mass is 1
          step = full_pass(TOTALS);
        } else {
          stage = STAGE_DRAW;
          let goal = params.draw * lanes[1];
          if (goal < lanes[1]) {
            s = Search(true, goal, true, 0u, 0u, 0u, 0.0, 0.0, 0u);
            searching = true;
          } else {
            // Rounding left no token above the draw: the last allowed one, as the CPU takes.
            step = full_pass(LOWEST);
          }
        }
        if (searching) {
          // Every allowed token's key is at or above the last cut's.
          s.low = max(floor_key, a.limit_key);
          s.high = top_key;
          // The search's first step goes over every token and keeps those in its range.
          if (s.low < s.high) {
            step = Pass(KEYS, s.use_mass, s.low, shift_for(s.high - s.low), 0u, s.high, false, 0u, true);
          } else {
            s.key = s.low;
            step = Pass(TIES, s.use_mass, 0u, 0u, s.key, 0u, false, 0u, true);
          }
        }
      }
      case KEYS: {
        // Totals fall as thresholds rise: the range narrows to the sub-range between the last
        // threshold that reaches the goal and the next, whose tag the step gave its tokens.
        let span = s.high - s.low;
        var new_low = s.low;
        var new_high = s.high;
        var take = 0u;
        var above = s.above + lanes[0];
        for (var j = 1u; j < 8u; j++) {
          let offset = j << step.shift;
          if (offset <= span) {
            if (reaches(lanes[j], s.goal, s.strict)) {
              new_low = s.low + offset;
              take = j;
            } else if (s.low + offset - 1u < new_high) {
              new_high = s.low + offset - 1u;
              above = lanes[j];
            }
          }
        }
        s.low = new_low;
        s.high = max(new_high, new_low);
        s.above = above;
        s.take = take;
        if (s.low < s.high) {
          step = Pass(KEYS, s.use_mass, s.low, shift_for(s.high - s.low), 0u, s.high, true, take, true);
        } else {
          s.key = s.low;
          step = Pass(TIES, s.use_mass, 0u, 0u, s.key, 0u, true, take, false);
        }
      }
      case TIES: {
        if (lanes[1] == 0.0) {
          // Rounding kept the total short of the goal: the last allowed token in the order.
          step = full_pass(LOWEST);
        } else if (lanes[1] == 1.0 || lanes[8] == lanes[9]) {
          found = Token(s.key, u32(lanes[8]));
          finished = true;
          through = lanes[0] + lanes[2];
        } else {
          // Equal logits: the first id among them at which the total reaches the goal.
          s.before = lanes[0];
          s.low = u32(lanes[8]);
          s.high = u32(lanes[9]);
          step = Pass(IDS, s.use_mass, s.low, shift_for(s.high - s.low), s.key, 0u, true, s.take, false);
        }
      }
      case IDS: {
        let span = s.high - s.low;
        var new_low = s.low;
        var new_high = s.high;
        for (var j = 7u; j >= 1u; j--) {
          let offset = j << step.shift;
          if (offset <= span) {
            if (reaches(s.before + lanes[j], s.goal, s.strict)) {
              new_high = s.low + offset - 1u;
            } else {
              new_low = max(new_low, s.low + offset);
            }
          }
        }
        s.low = new_low;
        s.high = max(new_high, new_low);
        if (s.low < s.high) {
          step = Pass(IDS, s.use_mass, s.low, shift_for(s.high - s.low), s.key, 0u, true, s.take, false);
        } else {
          found = Token(s.key, s.low);
          finished = true;
        }
      }
      case LOWEST: {
        s.key = order_key(lanes[8]);
        step = full_pass(LAST);
        step.at = s.key;
      }
      default: { // LAST
        found = Token(s.key, u32(lanes[9]));
        finished = true;
      }
    }
    if (finished) {
      if (stage == STAGE_DRAW) {
        picked = found.index;
        stage = STAGE_DONE;
      } else {
        // The cut: tokens after `found` in the order are dropped; count what is left.
        a.limit_key = found.key;
        a.limit_index = found.index;
        if (stage == STAGE_TOP_P && params.min_p > 0.0) {
          a.min_mass = params.min_p;
        }
        // After top-p's cut (no min-p), what is left is the mass up to the token found: the draw
        // needs no step to count it.
        let counted = stage == STAGE_TOP_P && params.min_p == 0.0 && through >= 0.0;
        stage = select(STAGE_DRAW, STAGE_TOP_P, stage == STAGE_TOP_K);
        step = full_pass(TOTALS);
        if (counted) {
          totals = empty_lanes();
          totals[1] = through;
          summed = true;
        }
      }
    }
    if (stage == STAGE_DONE) {
      break;
    }
  }
  if (lid == 0u) {
    result[params.row] = picked;
    if (flagged) {
      token_flags[flags_base + picked / 4u][picked % 4u] += 2u;
    }
  }
}
