// The tensor-core GEMM (prefill): out (rows × out_features) = x · Wᵀ + bias, through subgroup
// matrices (f16 × f16 → f32, 16 × 16 × 16). WGSL cannot index a list of matrices by a loop
// variable, so this function writes the kernel for one tile shape, a statement per matrix: a
// workgroup of subgroupsM × subgroupsN subgroups of 32 makes a (subgroupsM · blocksM · 16) ×
// (subgroupsN · blocksN · 16) output tile, each subgroup blocksM × blocksN result matrices.
//
// Per `depth`-deep step of K, x (rounded to f16 if it comes as f32) and W (f16, row-major out × in,
// so Wᵀ is a column-major right matrix) are staged in workgroup memory with rows padded by 8 halves
// (16 bytes: the 16-byte row pieces that matrix loads read land in distinct banks). The next
// step's tiles are fetched into registers while this step's are multiplied; with one stage they
// are then stashed in place (two barriers a step), with two into the other stage (one barrier).
// The step's 16-deep slices are multiplied unrolled, or in a loop (`loopK`: fewer live registers,
// which the H200 rewarded with 1.4x). Results pass through a 16 × 16 scratch per subgroup so
// ragged edges are bounds-checked and the shared epilogue (bias, residual, split outputs) applies.
//
// Split K: with a grid z of n > 1, workgroup z takes the z-th of n runs of K steps and writes its
// raw sums to `partials` (n × rows × out_features), which wgsl/gemm_combine.wgsl adds up and
// passes through the epilogue. Small prefill chunks have too few output tiles to fill a GPU.
// (Layout 'blocks', step 3 only: each sum at its output feature, `output_feature` of the common part.)
//
// x comes as f32 read one value at a time ('f32'), as vec4<f32> ('vec4': in_features a multiple
// of 4) or as f16 eight at a time ('f16': in_features a multiple of 8); weight rows
// padded to 8 halves (the backend's layout; padding is zero), whose stride the kernel takes in halves.
//
// Layout 'blocks' (block low-rank layers, x as 'vec4' or 'f16'; composed after wgsl/common/block_gemm_common.wgsl,
// which defines its parameters and its `store`): a batch of independent GEMMs, one per block. The
// grid's x covers every block's column tiles (params.tiles_per_block each); block k multiplies
// the x rows at offset k · x_block (row stride x_row) by the factor's rows k · block_out onwards.

export interface GemmTile {
  subgroupsM: number;
  subgroupsN: number;
  blocksM: number;
  blocksN: number;
  /** K per staged step: 32 or 64. */
  depth: number;
  /** 2: double-buffered workgroup memory; 1: single buffer, two barriers a step. */
  stages: 1 | 2;
  /** Multiply a step's 16-deep slices in a loop instead of unrolled (fewer registers live). */
  loopK?: boolean;
}

const SUBGROUP = 32;
const PAD_HALVES = 8;

export function gemmTileRows(tile: GemmTile): number {
  return tile.subgroupsM * tile.blocksM * 16;
}

export function gemmTileColumns(tile: GemmTile): number {
  return tile.subgroupsN * tile.blocksN * 16;
}

export function gemmTileThreads(tile: GemmTile): number {
  return tile.subgroupsM * tile.subgroupsN * SUBGROUP;
}

/** Workgroup memory the kernel declares, in bytes. */
export function gemmTileWorkgroupBytes(tile: GemmTile): number {
  const stride = tile.depth + PAD_HALVES;
  return tile.stages * (gemmTileRows(tile) + gemmTileColumns(tile)) * stride * 2 + tile.subgroupsM * tile.subgroupsN * 256 * 4;
}

export function gemmTileName(tile: GemmTile): string {
  return `${gemmTileRows(tile)}x${gemmTileColumns(tile)} (${tile.subgroupsM}x${tile.subgroupsN} subgroups of ${tile.blocksM}x${tile.blocksN}) k${tile.depth} s${tile.stages}${tile.loopK ? ' loop' : ''}`;
}

/** The kernel's WGSL (to be composed after wgsl/common/matmul_common.wgsl). */
export type GemmInput = 'f32' | 'vec4' | 'f16';

export type GemmLayout = 'dense' | 'blocks';

export function gemmSubgroupMatrixSource(tile: GemmTile, input: GemmInput, layout: GemmLayout = 'dense'): string {
  if (layout === 'blocks' && input === 'f32') throw new RangeError('the block GEMM reads x as vec4 or f16');
  const blocks = layout === 'blocks';
  const columnEnd = blocks ? 'col_end' : 'params.out_features';
  const xPerLoad = input === 'f16' ? 8 : 4;
  const xRegister = input === 'f16' ? 'vec4<u32>' : 'vec4<f32>';
  const { subgroupsM, subgroupsN, blocksM, blocksN, depth, stages } = tile;
  const tileRows = gemmTileRows(tile);
  const tileColumns = gemmTileColumns(tile);
  const threads = gemmTileThreads(tile);
  const stride = depth + PAD_HALVES;
  const xLoads = (tileRows * depth) / xPerLoad / threads;
  const wLoads = (tileColumns * depth) / 8 / threads;
  if (!Number.isInteger(xLoads) || !Number.isInteger(wLoads) || xLoads < 1 || wLoads < 1) {
    throw new RangeError(`tile ${gemmTileName(tile)}: its ${threads} threads cannot share the staging loads evenly`);
  }
  const xStage = tileRows * stride;
  const wStage = tileColumns * stride;
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const matrices = range(blocksM).flatMap((i) => range(blocksN).map((j) => [i, j] as const));
  const lines: string[] = [];
  const emit = (...l: string[]) => lines.push(...l);

  // Fetch step t's tiles into registers; stash them into stage s of workgroup memory.
  const fetch = (indent: string, t: string) => [
    ...range(xLoads).map((i) => `${indent}xr${i} = load_x(row0 + (lid + ${i * threads}u) / ${depth / xPerLoad}u, ${t} * ${depth}u + ((lid + ${i * threads}u) % ${depth / xPerLoad}u) * ${xPerLoad}u);`),
    ...range(wLoads).map((i) => `${indent}wr${i} = load_w(col0 + (lid + ${i * threads}u) / ${depth / 8}u, ${t} * ${depth}u + ((lid + ${i * threads}u) % ${depth / 8}u) * 8u);`),
  ];
  const stash = (indent: string, stage: string) => [
    ...range(xLoads).map((i) => `${indent}stash_x(${stage} * ${xStage}u + ((lid + ${i * threads}u) / ${depth / xPerLoad}u) * ${stride}u + ((lid + ${i * threads}u) % ${depth / xPerLoad}u) * ${xPerLoad}u, xr${i});`),
    ...range(wLoads).map((i) => `${indent}stash_w(${stage} * ${wStage}u + ((lid + ${i * threads}u) / ${depth / 8}u) * ${stride}u + ((lid + ${i * threads}u) % ${depth / 8}u) * 8u, wr${i});`),
  ];
  const multiply = (indent: string, stage: string) => tile.loopK
    ? [
      `${indent}for (var kk = 0u; kk < ${depth}u; kk += 16u) {`,
      ...range(blocksM).map((i) => `${indent}  let a${i} = subgroupMatrixLoad<Left, row_major>(&x_tile, ${stage} * ${xStage}u + (sg_row + ${i * 16}u) * ${stride}u + kk, ${stride}u);`),
      ...range(blocksN).map((j) => `${indent}  let b${j} = subgroupMatrixLoad<Right, col_major>(&w_tile, ${stage} * ${wStage}u + (sg_col + ${j * 16}u) * ${stride}u + kk, ${stride}u);`),
      ...matrices.map(([i, j]) => `${indent}  acc${i}_${j} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, acc${i}_${j});`),
      `${indent}}`,
    ]
    : range(depth / 16).flatMap((kk) => [
      ...range(blocksM).map((i) => `${indent}let a${i}_${kk} = subgroupMatrixLoad<Left, row_major>(&x_tile, ${stage} * ${xStage}u + (sg_row + ${i * 16}u) * ${stride}u + ${kk * 16}u, ${stride}u);`),
      ...range(blocksN).map((j) => `${indent}let b${j}_${kk} = subgroupMatrixLoad<Right, col_major>(&w_tile, ${stage} * ${wStage}u + (sg_col + ${j * 16}u) * ${stride}u + ${kk * 16}u, ${stride}u);`),
      ...matrices.map(([i, j]) => `${indent}acc${i}_${j} = subgroupMatrixMultiplyAccumulate(a${i}_${kk}, b${j}_${kk}, acc${i}_${j});`),
    ]);

  emit(
    `// Generated by kernels/webgpu/gemm_subgroup_matrix.ts: tile ${gemmTileName(tile)}, x as ${input}.`,
    'enable f16;',
    'enable subgroups;',
    'enable chromium_experimental_subgroup_matrix;',
    '',
    `@group(0) @binding(1) var<storage, read> x: array<${{ f32: 'f32', vec4: 'vec4<f32>', f16: 'vec4<u32>' }[input]}>;`,
    '@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;',
    '@group(0) @binding(7) var<storage, read_write> partials: array<f32>;',
    '',
    `var<workgroup> x_tile: array<f16, ${stages * xStage}>;`,
    `var<workgroup> w_tile: array<f16, ${stages * wStage}>;`,
    `var<workgroup> scratch: array<f32, ${subgroupsM * subgroupsN * 256}>;`,
    '',
    'alias Left = subgroup_matrix_left<f16, 16, 16>;',
    'alias Right = subgroup_matrix_right<f16, 16, 16>;',
    'alias Result = subgroup_matrix_result<f32, 16, 16>;',
    '',
    ...(blocks ? ['// This workgroup\'s block: where its x rows start, and the end of its factor rows.', 'var<private> x_origin: u32;', 'var<private> col_end: u32;', ''] : []),
    ...(input === 'f16'
      ? [
        '// Eight activations of row r from column k (a multiple of 8); zeros past the edges.',
        'fn load_x(r: u32, k: u32) -> vec4<u32> {',
        '  if (r >= params.rows || k >= params.in_features) { return vec4<u32>(0u); }',
        blocks ? '  return x[(x_origin + r * params.x_row + k) / 8u];' : '  return x[(r * params.in_features + k) / 8u];',
        '}',
        '',
        'fn stash_x(at: u32, v: vec4<u32>) {',
        '  for (var c = 0u; c < 4u; c++) {',
        '    let pair = bitcast<vec2<f16>>(v[c]);',
        '    x_tile[at + 2u * c] = pair.x;',
        '    x_tile[at + 2u * c + 1u] = pair.y;',
        '  }',
        '}',
      ]
      : [
        '// Four activations of row r from column k (a multiple of 4); zeros past the edges.',
        'fn load_x(r: u32, k: u32) -> vec4<f32> {',
        '  if (r >= params.rows) { return vec4<f32>(0.0); }',
        ...(input === 'vec4'
          ? ['  if (k >= params.in_features) { return vec4<f32>(0.0); }', blocks ? '  return x[(x_origin + r * params.x_row + k) / 4u];' : '  return x[(r * params.in_features + k) / 4u];']
          : ['  var v = vec4<f32>(0.0);', '  for (var c = 0u; c < 4u; c++) {', '    if (k + c < params.in_features) { v[c] = x[r * params.in_features + k + c]; }', '  }', '  return v;']),
        '}',
        '',
        'fn stash_x(at: u32, v: vec4<f32>) {',
        '  let h = vec4<f16>(v);',
        '  x_tile[at] = h.x;',
        '  x_tile[at + 1u] = h.y;',
        '  x_tile[at + 2u] = h.z;',
        '  x_tile[at + 3u] = h.w;',
        '}',
      ]),
    '',
    '// Eight weights of output feature o from column k (a multiple of 8); zeros past the edges.',
    'fn load_w(o: u32, k: u32) -> vec4<u32> {',
    `  if (o >= ${columnEnd} || k >= params.w_stride) { return vec4<u32>(0u); }`,
    blocks ? '  return w[((params.layer * params.out_features + o) * params.w_stride + k) / 8u];' : '  return w[(o * params.w_stride + k) / 8u];',
    '}',
    '',
    'fn stash_w(at: u32, v: vec4<u32>) {',
    '  for (var c = 0u; c < 4u; c++) {',
    '    let pair = bitcast<vec2<f16>>(v[c]);',
    '    w_tile[at + 2u * c] = pair.x;',
    '    w_tile[at + 2u * c + 1u] = pair.y;',
    '  }',
    '}',
    '',
    `@compute @workgroup_size(${threads})`,
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) lid: u32,',
    '        @builtin(subgroup_id) subgroup: u32, @builtin(subgroup_invocation_id) lane: u32) {',
    `  let row0 = wid.y * ${tileRows}u;`,
    ...(blocks
      ? [
        '  block = wid.x / params.tiles_per_block;',
        '  let block_start = block * params.block_out;',
        `  let col0 = block_start + (wid.x % params.tiles_per_block) * ${tileColumns}u;`,
        '  col_end = min(block_start + params.block_out, params.out_features);',
        '  x_origin = params.x_offset + block * params.x_block;',
      ]
      : [`  let col0 = wid.x * ${tileColumns}u;`]),
    `  let sg_row = (subgroup / ${subgroupsN}u) * ${blocksM * 16}u;`,
    `  let sg_col = (subgroup % ${subgroupsN}u) * ${blocksN * 16}u;`,
    ...matrices.map(([i, j]) => `  var acc${i}_${j} = Result();`),
    ...range(xLoads).map((i) => `  var xr${i}: ${xRegister};`),
    ...range(wLoads).map((i) => `  var wr${i}: vec4<u32>;`),
    `  let all_steps = (params.in_features + ${depth - 1}u) / ${depth}u;`,
    '  let per_split = (all_steps + groups.z - 1u) / groups.z;',
    '  let first = min(wid.z * per_split, all_steps);',
    '  let steps = min(first + per_split, all_steps);',
    ...fetch('  ', 'first'),
    ...stash('  ', '0u'),
    '  workgroupBarrier();',
    '  for (var t = first; t < steps; t++) {',
    '    let more = t + 1u < steps;',
    '    if (more) {',
    ...fetch('      ', '(t + 1u)'),
    '    }',
  );
  if (stages === 2) {
    emit(
      '    let stage = (t - first) % 2u;',
      ...multiply('    ', 'stage'),
      '    if (more) {',
      ...stash('      ', '(1u - stage)'),
      '    }',
      '    workgroupBarrier();',
    );
  } else {
    emit(
      ...multiply('    ', '0u'),
      '    workgroupBarrier();',
      '    if (more) {',
      ...stash('      ', '0u'),
      '    }',
      '    workgroupBarrier();',
    );
  }
  emit('  }');
  // Epilogue: one result matrix at a time through this subgroup's scratch.
  for (const [i, j] of matrices) {
    emit(
      `  subgroupMatrixStore<row_major>(&scratch, subgroup * 256u, acc${i}_${j}, 16u);`,
      '  workgroupBarrier();',
      '  for (var e = 0u; e < 8u; e++) {',
      '    let index = lane + 32u * e;',
      `    let r = row0 + sg_row + ${i * 16}u + index / 16u;`,
      `    let o = col0 + sg_col + ${j * 16}u + index % 16u;`,
      `    if (r < params.rows && o < ${columnEnd}) {`,
      '      if (groups.z == 1u) {',
      '        store(r, o, scratch[subgroup * 256u + index]);',
      '      } else {',
      `        partials[(wid.z * params.rows + r) * params.out_features + ${blocks ? 'output_feature(o)' : 'o'}] = scratch[subgroup * 256u + index];`,
      '      }',
      '    }',
      '  }',
      '  workgroupBarrier();',
    );
  }
  emit('}', '');
  return lines.join('\n');
}
