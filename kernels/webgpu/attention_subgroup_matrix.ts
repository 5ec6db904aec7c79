// Causal grouped-query attention for prefill on tensor cores (subgroup matrices, f16 × f16 → f32,
// 16 × 16 × 16): the job of wgsl/attention_prefill.wgsl, with its two products — scores Q·Kᵀ and
// weighted values P·V — as matrix multiplies. WGSL cannot index a list of matrices by a loop
// variable, so this function writes the kernel for one head_dim (a multiple of 16), a statement per
// matrix, as kernels/webgpu/gemm_subgroup_matrix.ts does for the GEMM.
//
// A workgroup takes one query head and ROWS = 16 · subgroups query rows of one sequence (a prefill
// chunk); subgroup s owns rows 16s..16s+15 and keeps their q (scaled, in f16) as head_dim / 16 left
// matrices. The cache is walked in tiles of TILE positions, staged in workgroup memory as f16 (as
// the cache is, or rounded from an f32 cache), up to the block's longest row; a row's positions
// past its own are masked.
// Two passes over the tiles, so that no partial output is ever rescaled (a result matrix has no
// per-row scaling in WGSL):
//   1. scores only: each row's maximum m and its sum l = Σ exp(s − m), kept by the two lanes that own
//      the row (each takes half of the tile's positions);
//   2. scores again, p = exp(s − m) / l written as f16, and O += P · V accumulated in result
//      matrices, which hold the finished output at the end.
// Scores pass through workgroup memory (16 × TILE floats a subgroup) between the matrix multiply and
// the lanes' softmax. Precision: q, k, v and p are rounded to f16; sums are f32.
// Composed after wgsl/common/attention_params.wgsl, wgsl/common/kv_pages.wgsl and the cache's element
// type (`kv_scalar`, kernels/webgpu/backend.ts kvCacheWgsl; an f16 cache is read as packed u32s); bindings as
// attention_prefill.wgsl's. Assumes subgroups of 32 (as the tensor-core GEMM does).

import type { KVPrecision } from '../backend.ts';

/** Key positions per staged tile. */
export const ATTENTION_TENSOR_TILE = 32;
/** Subgroups (of 16 query rows each) per workgroup. */
export const ATTENTION_TENSOR_SUBGROUPS = 4;
/** Query rows per workgroup. */
export const ATTENTION_TENSOR_ROWS = 16 * ATTENTION_TENSOR_SUBGROUPS;
/** The head dims the backend builds this kernel for (others take the scalar prefill kernel). */
export const ATTENTION_TENSOR_HEAD_DIMS = [64, 128] as const;

const SUBGROUP = 32;
const PAD_HALVES = 8;

/** Workgroup memory the kernel declares, in bytes. */
export function attentionTensorWorkgroupBytes(headDim: number): number {
  const stride = headDim + PAD_HALVES;
  const stage = Math.max(ATTENTION_TENSOR_ROWS, 2 * ATTENTION_TENSOR_TILE) * stride * 2;
  const scores = ATTENTION_TENSOR_SUBGROUPS * 16 * ATTENTION_TENSOR_TILE * 4;
  const probs = ATTENTION_TENSOR_SUBGROUPS * 16 * (ATTENTION_TENSOR_TILE + PAD_HALVES) * 2;
  return stage + scores + probs + (ATTENTION_TENSOR_ROWS + 4) * 4;
}

/** `kv`: the cache's element type (Backend.kvPrecision): an f16 cache is loaded 8 halves at a time. */
export function attentionSubgroupMatrixSource(headDim: number, kv: KVPrecision = 'f32'): string {
  if (headDim % 16 !== 0 || headDim < 16) throw new RangeError(`the tensor-core attention takes head_dim a multiple of 16, got ${headDim}`);
  const subgroups = ATTENTION_TENSOR_SUBGROUPS;
  const tile = ATTENTION_TENSOR_TILE;
  const rows = ATTENTION_TENSOR_ROWS;
  const threads = subgroups * SUBGROUP;
  const stride = headDim + PAD_HALVES; // halves a staged q or key row
  const tileStride = tile + PAD_HALVES; // halves a row of weights
  const slices = headDim / 16; // q's left matrices; O's result matrices
  const keyMatrices = tile / 16; // a tile's scores: result matrices per subgroup
  const columns = headDim / 4; // vec4s per row of q and of the output
  const half = kv === 'f16';
  // A load of the cache: 16 bytes, 8 halves (as a vec4<u32>) of an f16 cache or a vec4 of an f32 one.
  const width = half ? 8 : 4;
  const units = headDim / width; // loads per key or value row
  const unit = half ? 'vec4<u32>' : 'vec4<f32>';
  const stashKV = half ? 'stash8' : 'stash_f32';
  const positionsPerLane = tile / 2;
  if (threads % units !== 0 || (tile * units) % threads !== 0) throw new RangeError(`head_dim ${headDim}: ${threads} threads cannot share a tile's loads evenly`);
  const loads = (tile * units) / threads; // loads of keys (and of values) a thread stages per tile
  const positionStep = threads / units; // positions between a thread's loads
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);

  // Loads of the tile at `start` into registers, in the cache's type (zeros past `end`); stores of
  // them into workgroup memory as f16, a position a row: Kᵀ is then read column-major, V row-major.
  // (Converting as they load made each load wait for the one before: 7B prefill of 2048 tokens
  // 194 → 228 ms with an f32 cache, H200.)
  const fetch = (indent: string, start: string, withValues: boolean) => range(loads).flatMap((i) => [
    `${indent}{`,
    `${indent}  let t = ${start} + own_position + ${i * positionStep}u;`,
    `${indent}  k${i} = ${unit}();`,
    ...(withValues ? [`${indent}  v${i} = ${unit}();`] : []),
    `${indent}  if (t < end) {`,
    `${indent}    let at = kv_base + page_slot(page_row, t, params.block_size) * ${units}u + own_column;`,
    `${indent}    k${i} = keys[at];`,
    ...(withValues ? [`${indent}    v${i} = values[at];`] : []),
    `${indent}  }`,
    `${indent}}`,
  ]);
  const stash = (indent: string, withValues: boolean) => range(loads).flatMap((i) => [
    `${indent}${stashKV}((own_position + ${i * positionStep}u) * ${stride}u + ${width}u * own_column, k${i});`,
    ...(withValues ? [`${indent}${stashKV}((${tile}u + own_position + ${i * positionStep}u) * ${stride}u + ${width}u * own_column, v${i});`] : []),
  ]);
  // Scores of this subgroup's rows against the staged keys, into `scores`.
  const score = (indent: string) => [
    ...range(keyMatrices).map((n) => `${indent}var s${n} = Result();`),
    ...range(slices).flatMap((k) => range(keyMatrices).map((n) =>
      `${indent}s${n} = subgroupMatrixMultiplyAccumulate(q${k}, subgroupMatrixLoad<Right, col_major>(&stage, ${n * 16 * stride + k * 16}u, ${stride}u), s${n});`)),
    ...range(keyMatrices).map((n) => `${indent}subgroupMatrixStore<row_major>(&scores, score_base + ${n * 16}u, s${n}, ${tile}u);`),
  ];
  // `body` for each of this lane's positions j of the tile (valid: within its row's length), taken
  // from j = row on so that the 32 lanes read 32 different banks of the scores.
  const eachPosition = (body: string[]) => [
    `    for (var i = 0u; i < ${positionsPerLane}u; i++) {`,
    `      let j = (i + row) % ${positionsPerLane}u;`,
    '      let valid = start + first + j < length;',
    ...body.map((line) => `      ${line}`),
    '    }',
  ];
  // One pass over the tiles (`body` after the scores are in `scores`). (Loading the next tile into
  // registers during this one's products, as the GEMM does, measured 7–18% slower at 1024 rows on
  // an H200 — more registers, fewer workgroups resident — and 7–14% faster at 256.)
  const walk = (withValues: boolean, body: string[]) => [
    `  for (var start = 0u; start < end; start += ${tile}u) {`,
    ...fetch('    ', 'start', withValues),
    ...stash('    ', withValues),
    '    workgroupBarrier();',
    ...score('    '),
    '    workgroupBarrier();',
    ...body,
    '    workgroupBarrier(); // the tiles (and weights) are rewritten next',
    '  }',
  ];

  return [
    `// Generated by kernels/webgpu/attention_subgroup_matrix.ts: head_dim ${headDim}, ${rows} query rows a workgroup, tiles of ${tile} positions.`,
    'enable f16;',
    'enable subgroups;',
    'enable chromium_experimental_subgroup_matrix;',
    '',
    '@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;',
    `@group(0) @binding(2) var<storage, read> keys: array<${unit}>;`,
    `@group(0) @binding(3) var<storage, read> values: array<${unit}>;`,
    '@group(0) @binding(4) var<storage, read> positions: array<i32>;',
    '@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;',
    '@group(0) @binding(6) var<storage, read> pages: array<i32>;',
    '',
    'alias Left = subgroup_matrix_left<f16, 16, 16>;',
    'alias Right = subgroup_matrix_right<f16, 16, 16>;',
    'alias Result = subgroup_matrix_result<f32, 16, 16>;',
    'const LOWEST: f32 = -3.0e38;',
    '',
    `// The block's q rows at the start; then a tile of keys (rows 0..${tile - 1}) and of values (rows ${tile}..${2 * tile - 1}), ${stride} halves a row.`,
    `var<workgroup> stage: array<f16, ${Math.max(rows, 2 * tile) * stride}>;`,
    `var<workgroup> scores: array<f32, ${subgroups * 16 * tile}>;`,
    `var<workgroup> probs: array<f16, ${subgroups * 16 * tileStride}>;`,
    `// Each row's length (position + 1), then the block's longest. Every workgroup variable is a multiple`,
    '// of 16 bytes: matrix loads and stores need 16-byte aligned addresses, and a lone u32 among them',
    '// shifted every matrix by one element on an H200.',
    `var<workgroup> lengths: array<u32, ${rows + 4}>;`,
    '',
    'fn stash(at: u32, h: vec4<f16>) {',
    '  stage[at] = h.x;',
    '  stage[at + 1u] = h.y;',
    '  stage[at + 2u] = h.z;',
    '  stage[at + 3u] = h.w;',
    '}',
    ...(half ? [
      '// Eight halves of the cache, packed two to a u32.',
      'fn stash8(at: u32, packed: vec4<u32>) {',
      '  stash(at, vec4<f16>(bitcast<vec2<f16>>(packed.x), bitcast<vec2<f16>>(packed.y)));',
      '  stash(at + 4u, vec4<f16>(bitcast<vec2<f16>>(packed.z), bitcast<vec2<f16>>(packed.w)));',
      '}',
    ] : [
      'fn stash_f32(at: u32, v: vec4<f32>) {',
      '  stash(at, vec4<f16>(v));',
      '}',
    ]),
    '',
    `@compute @workgroup_size(${threads})`,
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,',
    '        @builtin(subgroup_id) subgroup: u32, @builtin(subgroup_invocation_id) lane: u32) {',
    '  let head = wid.x;',
    '  let kv = head / (params.heads / params.kv_heads);',
    `  let row0 = wid.y * ${rows}u; // relative to first_row`,
    `  let kv_base = kv * params.slots * ${units}u;`,
    '  let page_row = params.first_row + row0; // the rows of a call are one sequence\'s',
    `  let own_position = lid / ${units}u; // this thread's first position of a tile, and its load of the row`,
    `  let own_column = lid % ${units}u;`,
    `  if (lid < ${rows}u) {`,
    '    var length = 0u;',
    '    if (row0 + lid < params.rows) {',
    '      length = u32(positions[params.first_row + row0 + lid]) + 1u;',
    '    }',
    '    lengths[lid] = length;',
    '  }',
    '  // The block\'s q rows, scaled, as f16 (zeros past the call\'s rows).',
    `  for (var i = lid; i < ${rows * columns}u; i += ${threads}u) {`,
    `    let r = i / ${columns}u;`,
    `    let c = i % ${columns}u;`,
    '    var v = vec4<f32>(0.0);',
    '    if (row0 + r < params.rows) {',
    `      v = q[((params.first_row + row0 + r) * params.heads + head) * ${columns}u + c] * params.scale;`,
    '    }',
    `    stash(r * ${stride}u + 4u * c, vec4<f16>(v));`,
    '  }',
    '  workgroupBarrier();',
    '  if (lid == 0u) {',
    '    var longest = 0u;',
    `    for (var i = 0u; i < ${rows}u; i++) {`,
    '      longest = max(longest, lengths[i]);',
    '    }',
    `    lengths[${rows}u] = longest;`,
    '  }',
    ...range(slices).map((k) => `  let q${k} = subgroupMatrixLoad<Left, row_major>(&stage, subgroup * ${16 * stride}u + ${k * 16}u, ${stride}u);`),
    '  // (Its barrier also keeps the tiles from overwriting q before every subgroup has loaded it.)',
    `  let end = workgroupUniformLoad(&lengths[${rows}u]);`,
    `  let score_base = subgroup * ${16 * tile}u;`,
    '  // The row this lane scores (with the lane beside it), and its half of each tile\'s positions.',
    '  let row = lane / 2u;',
    `  let first = (lane % 2u) * ${positionsPerLane}u;`,
    '  let length = lengths[subgroup * 16u + row];',
    `  let lane_scores = score_base + row * ${tile}u + first;`,
    `  let lane_probs = subgroup * ${16 * tileStride}u + row * ${tileStride}u + first;`,
    ...range(loads).map((i) => `  var k${i}: ${unit};`),
    ...range(loads).map((i) => `  var v${i}: ${unit};`),
    '',
    '  // Pass 1: each row\'s maximum score and its sum of exponentials.',
    '  var m = LOWEST;',
    '  var l = 0.0;',
    ...walk(false, [
      '    var tile_max = LOWEST;',
      ...eachPosition(['if (valid) {', '  tile_max = max(tile_max, scores[lane_scores + j]);', '}']),
      '    tile_max = max(tile_max, subgroupShuffleXor(tile_max, 1u));',
      '    let new_m = max(m, tile_max);',
      '    var sum = 0.0;',
      ...eachPosition(['if (valid) {', '  sum += exp(scores[lane_scores + j] - new_m);', '}']),
      '    sum += subgroupShuffleXor(sum, 1u);',
      '    l = l * exp(m - new_m) + sum;',
      '    m = new_m;',
    ]),
    '  let inverse = select(0.0, 1.0 / l, l > 0.0);',
    '',
    '  // Pass 2: the weights, normalised, and O = P · V.',
    ...range(slices).map((n) => `  var o${n} = Result();`),
    ...walk(true, [
      ...eachPosition(['var p = 0.0;', 'if (valid) {', '  p = exp(scores[lane_scores + j] - m) * inverse;', '}', 'probs[lane_probs + j] = f16(p);']),
      '    workgroupBarrier();',
      ...range(keyMatrices).flatMap((k) => [
        `    let p${k} = subgroupMatrixLoad<Left, row_major>(&probs, subgroup * ${16 * tileStride}u + ${k * 16}u, ${tileStride}u);`,
        ...range(slices).map((n) => `    o${n} = subgroupMatrixMultiplyAccumulate(p${k}, subgroupMatrixLoad<Right, row_major>(&stage, ${(tile + k * 16) * stride + n * 16}u, ${stride}u), o${n});`),
      ]),
    ]),
    '',
    '  // The output, one 16 × 16 matrix at a time through this subgroup\'s scores: two vec4s a lane.',
    ...range(slices).flatMap((n) => [
      `  subgroupMatrixStore<row_major>(&scores, score_base, o${n}, 16u);`,
      '  workgroupBarrier();',
      '  for (var e = 0u; e < 2u; e++) {',
      `    let index = lane + ${SUBGROUP}u * e;`,
      '    let r = index / 4u;',
      '    let quad = index % 4u;',
      '    let query = row0 + subgroup * 16u + r;',
      '    if (query < params.rows && lengths[subgroup * 16u + r] > 0u) {',
      '      let at = score_base + r * 16u + 4u * quad;',
      `      out[((params.first_row + query) * params.heads + head) * ${columns}u + ${n * 4}u + quad] = vec4<f32>(scores[at], scores[at + 1u], scores[at + 2u], scores[at + 3u]);`,
      '    }',
      '  }',
      '  workgroupBarrier();',
    ]),
    '}',
    '',
  ].join('\n');
}
