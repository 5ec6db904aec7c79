// A block low-rank layer's decode step in one dispatch: BLAST's steps 1–2 (wgsl/block_gemv.wgsl)
// and step 3 (the blocked pipeline of wgsl/gemv_subgroup.wgsl) as one module, the expansion's
// workgroups waiting inside the dispatch for the z values they read. Two dispatches cost a Dawn
// barrier and a second ramp and tail, ~3 µs a layer on an H200 (bench/handoff.ts, RESULTS.md).
//
// WGSL has no grid-wide barrier and its atomics are relaxed, so a "z is ready" flag would not say
// that z's values are visible. What the hand-off relies on holds for one location at a time:
//   - Tagged values: the coupling stores each z value whole, with one atomicStore into a buffer of
//     its own, its lowest mantissa bit replaced by this dispatch's parity (1 ulp of f32); a reader
//     loads it until the bit matches. A location's stores are seen in order, so a matching bit is
//     this dispatch's value. The reader clears the bit again, so what it gets does not depend on
//     the parity (≤ 1 ulp from z; the value also goes to z as it is, for any later reader).
//   - Tickets: each workgroup takes its index from an atomic counter as it starts (the last one
//     resets it), the projection's indices first. So every workgroup that an expansion workgroup
//     waits on has started, whatever order the hardware launches them in.
//   - Bounded waits: a wait gives up after WAIT_LIMIT reads (and counts itself in tickets[1]), so a
//     broken assumption gives wrong numbers, which the tests compare, never a hang.
// The backend keeps one tagged buffer per (z buffer, size), each use writing all of it, so the
// values in it before a dispatch all carry the other parity.
import { composeWgsl, namespaceWgsl } from './wgsl_source.ts';

/** The expansion's bindings are its own + this (its parameters at 16, its storage from 17). */
export const FUSED_EXPANSION_OFFSET = 16;
/** The glue's own bindings: its words (in the expansion's parameter slot), the tagged z, the tickets. */
export const FUSED_GLUE_BINDINGS = { words: 40, tagged: 41, tickets: 42 } as const;
/** Where the glue's four words sit in the expansion's 32-word parameter slot. */
export const FUSED_WORDS_AT = 24;
/** The largest rank staged: a workgroup holds one block of z (rank floats). */
export const FUSED_MAX_RANK = 1536;
/** Workgroup memory the glue adds: a block of z. */
export const FUSED_STAGE_BYTES = FUSED_MAX_RANK * 4;
/**
 * Output rows an expansion workgroup makes (two groups of 4): each workgroup reads its block of z
 * through atomics, ~1 µs per million loads on an H200, so fewer, wider workgroups (the backend
 * fuses only where a block's outputs are a multiple of this, so a workgroup's rows share a block).
 */
export const FUSED_EXPANSION_ROWS = 8;
const WAIT_LIMIT = 4_000_000;

/**
 * The fused module: `projection` (block_gemv.wgsl composed, without common/block_z_store.wgsl)
 * renamed with p_, `expansion` (gemv_subgroup.wgsl composed, without common/gemv_input.wgsl) with
 * e_, and the glue that supplies both their missing functions and the entry point `main`.
 */
export function fusedBlockSource(projection: string, expansion: string): string {
  return composeWgsl([namespaceWgsl(projection, 'p_', 0), namespaceWgsl(expansion, 'e_', FUSED_EXPANSION_OFFSET), GLUE]);
}

const GLUE = `
enable subgroups;
diagnostic(off, subgroup_uniformity);

struct FusedWords {
  skipped: array<vec4<u32>, ${FUSED_WORDS_AT / 4}>, // the expansion's own parameters
  projection_groups: u32, // the projection's workgroups' worth of work: the first claims
  claims: u32,            // all claims: projection_groups + ceil(expansion_groups / chunk)
  parity: u32,            // this dispatch's tag bit
  rmw_after: u32,         // loads before a wait turns to read-modify-writes
  max_pause: u32,         // the longest pause between a group's polls (steps of a dependent multiply-add)
  grid: u32,              // workgroups dispatched
  chunk: u32,             // expansion workgroups' worth of work a claim
  expansion_groups: u32,
}
@group(0) @binding(${FUSED_GLUE_BINDINGS.words}) var<uniform> fused: FusedWords;
@group(0) @binding(${FUSED_GLUE_BINDINGS.tagged}) var<storage, read_write> z_tagged: array<atomic<u32>>;
// [0] the claim counter, [1] waits that gave up, [2] workgroups finished.
@group(0) @binding(${FUSED_GLUE_BINDINGS.tickets}) var<storage, read_write> tickets: array<atomic<u32>>;

var<workgroup> staged: array<vec4<f32>, ${FUSED_MAX_RANK / 4}>;
var<workgroup> fused_ticket: u32;
var<private> stage_base: u32;

// The projection's z store (common/block_z_store.wgsl's, with the hand-off).
fn store_z(index: u32, value: f32) {
  p_out[index] = value;
  atomicStore(&z_tagged[index], (bitcast<u32>(value) & ~1u) | fused.parity);
}

// z value \`index\` of this dispatch, once its producer has stored it. Atomic loads, then, after
// rmw_after of them, read-modify-writes: lavapipe's compiler lifts a relaxed load out of the loop
// (so it never sees the store), while on a GPU many waiting read-modify-writes would contend with
// the producers' stores.
fn waited(index: u32) -> f32 {
  var bits = atomicLoad(&z_tagged[index]);
  var spins = 0u;
  while ((bits & 1u) != fused.parity && spins < ${WAIT_LIMIT}u) {
    if (spins < fused.rmw_after) {
      bits = atomicLoad(&z_tagged[index]);
    } else {
      bits = atomicOr(&z_tagged[index], 0u);
    }
    spins++;
  }
  if (spins == ${WAIT_LIMIT}u) {
    atomicAdd(&tickets[1], 1u);
  }
  // The tag bit cleared, whichever the parity: the same value every dispatch (1 ulp at most from z's).
  return bitcast<f32>(bits & ~1u);
}

// The expansion's x (common/gemv_input.wgsl's pair): the glue stages the workgroup's block of z
// (stage_block, below) before e_main; the expansion only says where its block starts.
fn stage_input(base: u32, count: u32, group: u32, group_local: u32, threads: u32) {
  stage_base = base;
}

fn input_x(index: u32) -> vec4<f32> {
  return staged[index - stage_base];
}

// Copies z's vec4s base.. base + count into workgroup memory as they arrive. First one invocation
// polls the block's last value, pausing longer between polls each time, so that waiting workgroups
// do not take the memory system from the projection's that still stream their factor.
fn stage_block(base: u32, count: u32, lid: u32) {
  if (lid == 0u) {
    let last = 4u * (base + count) - 1u;
    var pause = 16u;
    var polls = 0u;
    var sink = 1.0;
    while (polls < ${WAIT_LIMIT}u) {
      var bits: u32;
      if (polls < fused.rmw_after) {
        bits = atomicLoad(&z_tagged[last]);
      } else {
        bits = atomicOr(&z_tagged[last], 0u);
      }
      if ((bits & 1u) == fused.parity) {
        break;
      }
      for (var k = 0u; k < pause; k++) {
        sink = sink * 0.999 + 0.001;
      }
      pause = min(2u * pause, fused.max_pause);
      polls++;
    }
    if (sink == -1.0) {
      atomicAdd(&tickets[1], 0u); // never: keeps the pauses' arithmetic
    }
  }
  workgroupBarrier();
  for (var i = lid; i < count; i += 256u) {
    let at = 4u * (base + i);
    staged[i] = vec4<f32>(waited(at), waited(at + 1u), waited(at + 2u), waited(at + 3u));
  }
  workgroupBarrier();
}

// A persistent grid: fused.grid workgroups, each claiming work from one counter until there is none.
// Claims below projection_groups are projection workgroups' work; each later claim is chunk
// expansion workgroups' (8 rows each), made one after another, the block of z staged again only
// where it changes. A claim's expansion waits only on projection work claimed before it, by
// workgroups already running, so it never waits on a workgroup that has not started. The last
// workgroup to finish resets the counters ([0] claims, [2] finished) for the next dispatch.
@compute @workgroup_size(256)
fn main(
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) subgroup_size: u32,
) {
  let block_vec4s = e_params.in_features / 4u; // one block of z (one row)
  var staged_block = 0u; // 1 + the block of z in \`staged\`, 0 for none
  loop {
    if (lid == 0u) {
      fused_ticket = atomicAdd(&tickets[0], 1u);
    }
    let claim = workgroupUniformLoad(&fused_ticket);
    if (claim >= fused.claims) {
      break;
    }
    if (claim < fused.projection_groups) {
      p_main(vec3<u32>(claim, 0u, 0u), lid, lane, subgroup_size);
      workgroupBarrier();
      continue;
    }
    let first = (claim - fused.projection_groups) * fused.chunk;
    let end = min(first + fused.chunk, fused.expansion_groups);
    for (var e = first; e < end; e++) {
      let block = (e * ${FUSED_EXPANSION_ROWS}u) / e_params.per_block;
      if (block + 1u != staged_block) {
        stage_block(block * block_vec4s, block_vec4s, lid);
        staged_block = block + 1u;
      }
      e_main(vec3<u32>(e, 0u, 0u), lid, lane, subgroup_size);
      workgroupBarrier();
    }
  }
  if (lid == 0u) {
    let finished = atomicAdd(&tickets[2], 1u);
    if (finished + 1u == fused.grid) {
      atomicStore(&tickets[0], 0u);
      atomicStore(&tickets[2], 0u);
    }
  }
}
`;
