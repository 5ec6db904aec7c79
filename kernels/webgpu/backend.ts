// The WebGPU backend. Ops are recorded into one compute pass; `read` ends the pass, copies the
// result to a mappable buffer, submits once and waits: a decode step is one submit, and only what
// is read (logits, sampled ids) crosses back. (A prefill recorded while the GPU has nothing else to
// run goes out in parts, `submitIfIdle`, so that the GPU starts before the CPU is done.)
//
// Recorded once, at load: pipelines (below), weight buffers, activation buffers, and the bind group
// of every (kernel, buffers) pair the model uses (cached on first use). Per step: each dispatch's
// parameters go into a uniform arena (one writeBuffer per submit, bound with dynamic offsets),
// token ids and positions are written into their index buffers, and the pass is recorded anew.
import { checkLogprobsTop, flagStride, logprobStride, type AttentionShape, type Backend, type BlockShape, type IndexTensor, type InputNorm, type InputTransform, isInputNorm, isLayerNorm, type KVCache, type KVCacheShape, type KVPages, type KVPrecision, kvValueBytes, type KVStore, type OutputActivation, type OutputRope, ropeOutputs, type SampleRow, type Tensor } from '../backend.ts';
import { halvesFrom } from '../../weights/dtypes.ts';
import { openGpu, type Gpu, type GpuFeatures } from './gpu.ts';
import { ATTENTION_TENSOR_HEAD_DIMS, ATTENTION_TENSOR_ROWS, attentionSubgroupMatrixSource, attentionTensorWorkgroupBytes } from './attention_subgroup_matrix.ts';
import { gemmSubgroupMatrixSource, gemmTileColumns, gemmTileRows, gemmTileThreads, gemmTileWorkgroupBytes, type GemmInput, type GemmTile } from './gemm_subgroup_matrix.ts';
import { commonWgsl, type CommonPiece, composeWgsl, scalarAlias, wgsl } from './wgsl_source.ts';

/** f16 matrices keep each row padded to this many halves (one 16-byte load). */
const ROW_ALIGN_HALVES = 8;
const F16_MAX = 65504;
/** wgsl/common/matmul_common.wgsl's flags bit 3: GELU on each result as it is stored (OutputActivation 'gelu'). */
const ACTIVATION_FLAG = 8;
const PARAM_BYTES = 128;
const ARENA_SLOTS = 16384;
/**
 * The tensor-core GEMM rounds activations to f16; it takes prefill chunks of at least this many
 * rows (where its speed matters), smaller ones stay on the f32 kernels.
 */
const SUBGROUP_MATRIX_MIN_ROWS = 32;
/**
 * Tensor-core tiles, in order of preference; the first that fits the device's workgroup memory is
 * used. bench/gemm-sweep.ts chose the first on an H200 (bench/RESULTS.md): the fastest variant at
 * 2048 tokens, and at 128 tokens with K split to fill the GPU.
 */
const GEMM_TILES: GemmTile[] = [
  { subgroupsM: 2, subgroupsN: 4, blocksM: 4, blocksN: 2, depth: 64, stages: 1, loopK: true }, // 128 × 128
  { subgroupsM: 2, subgroupsN: 2, blocksM: 2, blocksN: 2, depth: 32, stages: 2, loopK: true }, // 64 × 64, for 32 KiB of workgroup memory
];
/** Split K (up to MAX_GEMM_SPLITS ways, each ≥ GEMM_MIN_SPLIT_STEPS steps) until about this many workgroups. */
const GEMM_TARGET_WORKGROUPS = 160;
const MAX_GEMM_SPLITS = 8;
const GEMM_MIN_SPLIT_STEPS = 8;
/**
 * submitIfIdle submits once at least this many dispatches wait: about two layers of a prefill. On an
 * H200, 128-token prefills went from 4.4–4.5 to 2.8–3.5 ms (GPT-2), 5.4–6.2 to 3.9–5.2 (Llama-3.2-1B)
 * and 17.2–18.9 to 15.0–15.3 (Llama-2-7B); a submit a layer (8) cost the 7B's GPU 0.15 ms more
 * (bench/RESULTS.md).
 */
const EARLY_SUBMIT_DISPATCHES = 16;
/**
 * Attention splits the cache over more workgroups until there are about this many (decode has one
 * per head otherwise: too few to keep a GPU's memory system busy), each split at least
 * ATTENTION_MIN_SPLIT positions long.
 */
const ATTENTION_TARGET_WORKGROUPS = 256;
const ATTENTION_MIN_SPLIT = 32;
const MAX_ATTENTION_SPLITS = 32;
/**
 * Where attention would split, a cache of at most this many positions goes to the wide pipeline
 * instead (wgsl/attention_vec4.wgsl with 1024 threads): one dispatch, no merge of splits. H200,
 * Llama-2-7B decode (bench/RESULTS.md): no slower than the split up to ~1024 positions, slower
 * at 2048.
 */
const ATTENTION_WIDE_MAX_LENGTH = 1024;
const ATTENTION_WIDE_THREADS = 1024;
/** The wide pipeline's workgroup memory: q (1 KB), scores and slots (4 KB each), work (16 KB), the reductions' 4 KB (1 KB through subgroups). */
const ATTENTION_WIDE_WORKGROUP_BYTES = 29_700;
/** wgsl/attention_prefill.wgsl: rows per workgroup, largest head_dim, workgroup memory it declares. */
const ATTENTION_PREFILL_QUERIES = 16;
const ATTENTION_PREFILL_MAX_HEAD_DIM = 128;
const ATTENTION_PREFILL_WORKGROUP_BYTES = 26_436;
/**
 * Prefill rows from which attention runs on tensor cores (kernels/webgpu/attention_subgroup_matrix.ts,
 * head_dim 64 or 128) where the adapter has f16 subgroup matrices. H200 (bench/RESULTS.md): at 256
 * rows 84 against 131 µs (Llama-2-7B's shape), at 128 rows 53 against 35 (too few workgroups).
 */
const ATTENTION_TENSOR_MIN_ROWS = 256;

type Access = 'read' | 'write';
/** x, W, bias, three outputs (wgsl/common/matmul_common.wgsl), and an input-norm weight. */
const MATMUL_BINDINGS: Access[] = ['read', 'read', 'read', 'write', 'write', 'write', 'read'];
/** The RoPE pair epilogue's own (wgsl/common/gemv_pair_rope.wgsl): positions, rotary table, pages, keys, values. */
const ROPE_PAIR_BINDINGS: Access[] = ['read', 'read', 'read', 'write', 'write'];
interface KernelSpec {
  source: string;
  entryPoint: string;
  /** Bindings 1..n (binding 0 is always the uniform parameters). */
  storage: Access[];
  /** Values of the module's `override` constants. */
  constants?: Record<string, number>;
}

/** Bytes of workgroup memory wgsl/sample.wgsl needs per invocation (ten f32 reduction lanes). */
const SAMPLE_BYTES_PER_THREAD = 40;
/** wgsl/sample.wgsl's per-row parameters (a Params struct), and the rows its ring of them holds. */
const SAMPLE_PARAM_BYTES = 48;
const SAMPLE_PARAM_ROWS = 4096;

/** The sampling kernel's workgroup: the largest power of two (≤ 1024) the device's limits allow. */
function sampleThreads(limits: GPUSupportedLimits): number {
  const most = Math.min(1024, limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX,
    Math.floor(limits.maxComputeWorkgroupStorageSize / SAMPLE_BYTES_PER_THREAD));
  return 2 ** Math.floor(Math.log2(most));
}

/** Ids wgsl/sample.wgsl's `list` holds for a row of `count` tokens: its list_depth for each invocation. */
function sampleListIds(count: number, threads: number): number {
  return threads * 4 * Math.ceil(Math.ceil(count / 4) / threads);
}

const GATHER_F16 = `
@group(0) @binding(1) var<storage, read> table: array<u32>;
fn load_table(row: u32, column: u32) -> f32 {
  let pair = unpack2x16float(table[row * params.table_stride + column / 2u]);
  return select(pair.x, pair.y, (column & 1u) == 1u);
}
`;
/**
 * `layer_norm_bias(index)` for wgsl/gemv_subgroup.wgsl and wgsl/block_gemv.wgsl: the LayerNorm
 * bias bound at `binding` in their LAYER_NORM pipelines; zeros (nothing bound) in the others.
 */
function layerNormBias(binding?: number): string {
  if (binding === undefined) return 'fn layer_norm_bias(index: u32) -> vec4<f32> {\n  return vec4<f32>(0.0);\n}\n';
  return `@group(0) @binding(${binding}) var<storage, read> norm_bias: array<vec4<f32>>;\nfn layer_norm_bias(index: u32) -> vec4<f32> {\n  return norm_bias[index];\n}\n`;
}
const GATHER_F32 = `
@group(0) @binding(1) var<storage, read> table: array<f32>;
fn load_table(row: u32, column: u32) -> f32 {
  return table[row * params.table_stride + column];
}
`;

function kernelSpecs(features: GpuFeatures, limits: GPUSupportedLimits, subgroupMinSize: number | undefined, kvPrecision: KVPrecision): Partial<Record<KernelName, KernelSpec>> {
  const kvWgsl = (file: string, ...common: CommonPiece[]) => kvCacheWgsl(kvPrecision, wgsl(file, ...common));
  const norm = wgsl('norm.wgsl', 'workgroup_reduce');
  const normVec4 = wgsl('norm_vec4.wgsl', 'workgroup_reduce');
  const matmul = wgsl('matmul.wgsl', 'matmul_common');
  const gather = wgsl('gather.wgsl');
  const gemvSubgroupSlots = 256 / Math.max(4, subgroupMinSize || 4);
  const pairedConstants = { BATCH: 1, NORMED: 1, PAIRED: 1, ROWS_PER_GROUP: 2, SUBGROUP_SLOTS: gemvSubgroupSlots };
  const ropeGemv = composeWgsl([layerNormBias(), kvWgsl('gemv_subgroup.wgsl', 'matmul_common', 'kv_pages', 'gemv_pair_rope')]);
  const gemvSubgroup = composeWgsl([layerNormBias(), wgsl('gemv_subgroup.wgsl', 'matmul_common', 'gemv_pair_swiglu')]);
  // Decode attention's softmax sums and maxima through subgroups where there are some (two barriers
  // each, not 12): 0.02 ms a Llama-2-7B step at 128–256 positions (H200, RESULTS.md).
  const attentionVec4 = kvWgsl('attention_vec4.wgsl', 'attention_params', features.subgroups ? 'subgroup_reduce' : 'workgroup_reduce', 'kv_pages');
  return {
    gatherF16: { source: GATHER_F16 + gather, entryPoint: 'main', storage: ['read', 'read', 'write'] },
    gatherF32: { source: GATHER_F32 + gather, entryPoint: 'main', storage: ['read', 'read', 'write'] },
    rmsNorm: { source: norm, entryPoint: 'rms_norm', storage: ['read', 'read', 'read', 'write'] },
    layerNorm: { source: norm, entryPoint: 'layer_norm', storage: ['read', 'read', 'read', 'write'] },
    rmsNormVec4: { source: normVec4, entryPoint: 'rms_norm', storage: ['read', 'read', 'read', 'write'] },
    layerNormVec4: { source: normVec4, entryPoint: 'layer_norm', storage: ['read', 'read', 'read', 'write'] },
    elementwise: { source: wgsl('elementwise.wgsl'), entryPoint: 'main', storage: ['read', 'read', 'write'] },
    rope: { source: kvWgsl('rope.wgsl', 'kv_pages'), entryPoint: 'main', storage: ['write', 'write', 'read', 'read', 'read', 'read', 'write', 'write'] },
    writeKV: { source: kvWgsl('kv.wgsl', 'kv_pages'), entryPoint: 'main', storage: ['read', 'read', 'read', 'read', 'write', 'write'] },
    attention: { source: kvWgsl('attention.wgsl', 'attention_params', 'workgroup_reduce', 'kv_pages'), entryPoint: 'main', storage: ['read', 'read', 'read', 'read', 'write', 'read'] },
    attentionVec4: { source: attentionVec4, entryPoint: 'main', storage: ['read', 'read', 'read', 'read', 'write', 'write', 'read'] },
    attentionVec4Wide: limits.maxComputeInvocationsPerWorkgroup >= ATTENTION_WIDE_THREADS && limits.maxComputeWorkgroupSizeX >= ATTENTION_WIDE_THREADS
      && limits.maxComputeWorkgroupStorageSize >= ATTENTION_WIDE_WORKGROUP_BYTES
      ? { source: attentionVec4, entryPoint: 'main', storage: ['read', 'read', 'read', 'read', 'write', 'write', 'read'], constants: { REDUCE_SIZE: ATTENTION_WIDE_THREADS, SCORE_THREADS: 4 } }
      : undefined,
    attentionCombine: { source: wgsl('attention_combine.wgsl', 'attention_params'), entryPoint: 'main', storage: ['read', 'write'] },
    attentionPrefill: limits.maxComputeWorkgroupStorageSize >= ATTENTION_PREFILL_WORKGROUP_BYTES
      ? { source: kvWgsl('attention_prefill.wgsl', 'attention_params', 'kv_pages'), entryPoint: 'main', storage: ['read', 'read', 'read', 'read', 'write', 'read'] }
      : undefined,
    gemv: { source: matmul, entryPoint: 'gemv', storage: MATMUL_BINDINGS },
    gemvAligned: { source: wgsl('gemv.wgsl', 'matmul_common'), entryPoint: 'main', storage: MATMUL_BINDINGS },
    randomMatrix: { source: wgsl('random.wgsl'), entryPoint: 'main', storage: ['write'] },
    scaleColumns: { source: wgsl('random.wgsl'), entryPoint: 'scale_columns', storage: ['write', 'read'] },
    argmax: { source: wgsl('argmax.wgsl'), entryPoint: 'main', storage: ['read', 'write'] },
    sample: { source: wgsl('sample.wgsl'), entryPoint: 'main', storage: ['read', 'write', 'write', 'write', 'read', 'write'], constants: { THREADS: sampleThreads(limits) } },
    logprobs: { source: wgsl('logprobs.wgsl'), entryPoint: 'main', storage: ['read', 'read', 'read', 'write'] },
    gemm: { source: matmul, entryPoint: 'gemm', storage: MATMUL_BINDINGS },
    toHalf: { source: wgsl('to_half.wgsl'), entryPoint: 'main', storage: ['read', 'write'] },
    // x normalised or gated straight into f16 for the tensor-core GEMM (one pass, not two).
    rmsNormHalf: { source: normVec4, entryPoint: 'rms_norm_half', storage: ['read', 'read', 'read', 'write'] },
    swigluHalf: { source: wgsl('to_half.wgsl'), entryPoint: 'swiglu_half', storage: ['read', 'write', 'read'] },
    blockProject: { source: wgsl('block_project.wgsl'), entryPoint: 'main', storage: ['read', 'read', 'read', 'write'] },
    blockExpand: { source: wgsl('block_expand.wgsl'), entryPoint: 'main', storage: ['read', 'read', 'read', 'write'] },
    ...tensorCoreSpecs(features, limits, kvPrecision),
    // Only where the adapter has subgroups; elsewhere gemvAligned and gemm do the same jobs.
    ...Object.fromEntries(GEMV_BATCHES.flatMap((batch) => (['plain', 'normed', 'blocked'] as const).map((kind) => [gemvSubgroupName(batch, kind),
      // The normalising pipeline only for one row (recordMatmul says why).
      features.subgroups && (kind !== 'normed' || batch === 1) ? { source: gemvSubgroup, entryPoint: 'main', storage: MATMUL_BINDINGS, constants: { BATCH: batch, NORMED: kind === 'normed' ? 1 : 0, BLOCKED: kind === 'blocked' ? 1 : 0, ROWS_PER_GROUP: gemvRowsPerGroup(batch, kind), SUBGROUP_SLOTS: gemvSubgroupSlots } } : undefined]))),
    // One row, normed, where the norm's weight is ones (folded into the weights: no norm weight loaded).
    gemvSubgroup1NormedUnscaled: features.subgroups ? { source: gemvSubgroup, entryPoint: 'main', storage: MATMUL_BINDINGS, constants: { BATCH: 1, NORMED: 1, NORM_WEIGHT: 0, ROWS_PER_GROUP: gemvRowsPerGroup(1, 'normed'), SUBGROUP_SLOTS: gemvSubgroupSlots } } : undefined,
    // One row with a LayerNorm inside (GPT-2's ln_1, ln_2, ln_f): the norm's bias bound at 8.
    gemvSubgroup1LayerNormed: features.subgroups ? { source: composeWgsl([layerNormBias(MATMUL_BINDINGS.length + 1), wgsl('gemv_subgroup.wgsl', 'matmul_common', 'gemv_pair_swiglu')]), entryPoint: 'main', storage: [...MATMUL_BINDINGS, 'read'], constants: { BATCH: 1, NORMED: 1, LAYER_NORM: 1, ROWS_PER_GROUP: 2, SUBGROUP_SLOTS: gemvSubgroupSlots } } : undefined,
    // One row, normed, with its outputs in pairs (wgsl/gemv_subgroup.wgsl PAIRED): SwiGLU, or RoPE
    // and the KV cache store (five more bindings: only where the device has room for them).
    // (Each also with a norm weight of ones: the Unscaled pipelines.)
    gemvPairedSwiglu: features.subgroups ? { source: gemvSubgroup, entryPoint: 'main', storage: MATMUL_BINDINGS, constants: { ...pairedConstants } } : undefined,
    gemvPairedSwigluUnscaled: features.subgroups ? { source: gemvSubgroup, entryPoint: 'main', storage: MATMUL_BINDINGS, constants: { ...pairedConstants, NORM_WEIGHT: 0 } } : undefined,
    ...(features.subgroups && limits.maxStorageBuffersPerShaderStage >= MATMUL_BINDINGS.length + ROPE_PAIR_BINDINGS.length ? {
      gemvPairedRope: { source: ropeGemv, entryPoint: 'main', storage: [...MATMUL_BINDINGS, ...ROPE_PAIR_BINDINGS], constants: { ...pairedConstants } },
      gemvPairedRopeUnscaled: { source: ropeGemv, entryPoint: 'main', storage: [...MATMUL_BINDINGS, ...ROPE_PAIR_BINDINGS], constants: { ...pairedConstants, NORM_WEIGHT: 0 } },
      gemvPairedRopeBlocked: { source: ropeGemv, entryPoint: 'main', storage: [...MATMUL_BINDINGS, ...ROPE_PAIR_BINDINGS], constants: { ...pairedConstants, NORMED: 0, BLOCKED: 1 } },
    } : {}),
    ...Object.fromEntries(GEMV_BATCHES.flatMap((batch) => (['plain', 'normed', 'gated'] as const).map((kind) => [blockGemvName(batch, kind),
      features.subgroups && (kind !== 'gated' || batch === 1) ? { source: composeWgsl([layerNormBias(), wgsl('block_gemv.wgsl')]), entryPoint: 'main', storage: ['read', 'read', 'read', 'write', 'read'], constants: { BATCH: batch, NORMED: kind === 'normed' ? 1 : 0, NORM_SUBGROUPS: kind === 'normed' ? 64 : 1, GATED: kind === 'gated' ? 1 : 0 } } : undefined]))),
    // BLAST steps 1–2 of one row with a LayerNorm inside (GPT-2's c_attn, c_fc): the norm's bias bound at 6.
    blockGemv1LayerNormed: features.subgroups ? { source: composeWgsl([layerNormBias(6), wgsl('block_gemv.wgsl')]), entryPoint: 'main', storage: ['read', 'read', 'read', 'write', 'read', 'read'], constants: { BATCH: 1, NORMED: 1, LAYER_NORM: 1, NORM_SUBGROUPS: 64 } } : undefined,
  };
}

type PairedKernel = 'gemvPairedSwiglu' | 'gemvPairedRope';
/** A paired GEMV pipeline and what it takes beyond the matmul's: params from pair_span on, bindings from 8 on. */
interface Pairing {
  kernel: PairedKernel;
  params: number[];
  buffers: GPUBuffer[];
}

/** Rows of x per workgroup of the subgroup GEMV's pipelines (wgsl/gemv_subgroup.wgsl BATCH). */
const GEMV_BATCHES = [1, 4, 16] as const;
type GemvBatch = (typeof GEMV_BATCHES)[number];
/**
 * The subgroup GEMVs' pipelines: plain, RMSNorm inside (normed), a block low-rank layer's step 3
 * (blocked, wgsl/gemv_subgroup.wgsl), SwiGLU inside (gated, wgsl/block_gemv.wgsl only).
 */
type GemvKind = 'plain' | 'normed' | 'blocked' | 'gated';
const GEMV_KIND_SUFFIX = { plain: '', normed: 'Normed', blocked: 'Blocked', gated: 'Gated' } as const;
const gemvSubgroupName = <K extends Exclude<GemvKind, 'gated'>>(batch: GemvBatch, kind: K) => `gemvSubgroup${batch}${GEMV_KIND_SUFFIX[kind]}` as `gemvSubgroup${GemvBatch}${(typeof GEMV_KIND_SUFFIX)[K]}`;
const blockGemvName = <K extends 'plain' | 'normed' | 'gated'>(batch: GemvBatch, kind: K) => `blockGemv${batch}${GEMV_KIND_SUFFIX[kind]}` as `blockGemv${GemvBatch}${(typeof GEMV_KIND_SUFFIX)[K]}`;
/**
 * Weight rows each x load serves in wgsl/gemv_subgroup.wgsl (a workgroup makes twice that many
 * outputs): 4 for batched plain matmuls (8–16 rows of Llama-3.2-1B: 7–9% less GPU time than 2 on an
 * H200, bench/batch-step.ts --profile), 2 elsewhere (the blocked pipeline's rows must share a
 * block; the one-row pipelines were tuned with 2).
 */
const gemvRowsPerGroup = (batch: GemvBatch, kind: Exclude<GemvKind, 'gated'>) => (batch > 1 && kind === 'plain' ? 4 : 2);
/**
 * The most output features a one-row matmul takes its LayerNorm inside the GEMV for. The
 * LayerNorm GEMV loads the norm's weight and bias beside x for every 8 halves of each pair of
 * weight rows, about twice the plain GEMV's loads: GPT-2's LM head (768 → 50,257) took 65 µs in it,
 * against ~26 µs for the plain GEMV after the norm's own pass. For c_attn and c_fc (2,304 and 3,072
 * outputs) the dispatch saved is worth more; the limit sits well between (H200, bench/RESULTS.md).
 */
export const LAYER_NORM_GEMV_MAX_OUT = 16384;
/** Factor rows per workgroup of wgsl/block_gemv.wgsl: Monarch's step 1, and step 3; BLAST's steps 1–2 take up to BLOCK_GEMV_BLAST_ROWS (its MAX_GROUP_ROWS). */
const BLOCK_GEMV_GROUP_ROWS = 32;
const BLOCK_GEMV_EXPAND_ROWS = 32;
const BLOCK_GEMV_BLAST_ROWS = 64;
/** BLAST blocks the kernel takes: its coupling tile (MAX_COUPLING = 1024 values) holds blocks² of them per channel. */
const BLOCK_GEMV_MAX_BLAST_BLOCKS = 32;
/** BLAST blocks that wgsl/blast_couple.wgsl's tiled entry takes (its TILE_BLOCKS). */
const BLAST_COUPLE_TILE_BLOCKS = 16;
/**
 * BLAST channels per workgroup of wgsl/block_gemv.wgsl: as many as its rows and coupling tile hold,
 * a multiple of 4 where that leaves at least 4 (each quad of rows then reads one block of x, loaded
 * once, and is placed with one division: flags bit 2). 7B shapes on an H200 (bench/blr-project-sweep.ts,
 * RESULTS.md): 4 channels of 16 blocks, q|k|v with the norm inside 14.3 µs for 25 MB where 2 channels
 * took 23.5-25.6.
 */
function blastChannels(blocks: number): number {
  const most = Math.min(Math.floor(BLOCK_GEMV_BLAST_ROWS / blocks), Math.floor(1024 / (blocks * blocks)));
  return Math.max(1, most >= 4 ? most - (most % 4) : most);
}
/** The smallest batch that takes `rows` rows in one workgroup, or the largest. */
const gemvBatch = (rows: number): GemvBatch => GEMV_BATCHES.find((b) => b >= rows) ?? GEMV_BATCHES[GEMV_BATCHES.length - 1];
/** The tensor-core tile for this device, where it has f16 → f32 16 × 16 × 16 subgroup matrices. */
function tensorCoreTile(features: GpuFeatures, limits: GPUSupportedLimits): GemmTile | undefined {
  if (!features.subgroupMatrixF16) return undefined;
  const fits = (tile: GemmTile) => gemmTileWorkgroupBytes(tile) <= limits.maxComputeWorkgroupStorageSize
    && gemmTileThreads(tile) <= Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
  return GEMM_TILES.find(fits);
}

/** x, W, bias, three outputs, and split-K partial sums (written). */
const GEMM_BINDINGS: Access[] = ['read', 'read', 'read', 'write', 'write', 'write', 'write'];

function tensorCoreSpecs(features: GpuFeatures, limits: GPUSupportedLimits, kvPrecision: KVPrecision): Partial<Record<KernelName, KernelSpec>> {
  const tile = tensorCoreTile(features, limits);
  if (!tile) return {};
  const spec = (input: GemmInput): KernelSpec => ({
    source: composeWgsl([...commonWgsl('matmul_common'), gemmSubgroupMatrixSource(tile, input)]), entryPoint: 'main', storage: GEMM_BINDINGS,
  });
  return {
    gemmTensor: spec('f16'),
    gemmTensorVec4X: spec('vec4'),
    gemmTensorScalarX: spec('f32'),
    gemmTensorBlocks: { source: composeWgsl([...commonWgsl('block_gemm_common'), gemmSubgroupMatrixSource(tile, 'vec4', 'blocks')]), entryPoint: 'main', storage: GEMM_BINDINGS },
    // Step 3 of BLAST, whose coupling writes z in f16 (blockProject says when).
    gemmTensorBlocksHalfX: { source: composeWgsl([...commonWgsl('block_gemm_common'), gemmSubgroupMatrixSource(tile, 'f16', 'blocks')]), entryPoint: 'main', storage: GEMM_BINDINGS },
    blastCouple: { source: blastCouple('f32'), entryPoint: 'main', storage: ['read', 'read', 'write'] },
    blastCoupleTiled: { source: blastCouple('f32'), entryPoint: 'tiled', storage: ['read', 'read', 'write'] },
    blastCoupleHalf: { source: blastCouple('f16'), entryPoint: 'main', storage: ['read', 'read', 'write'] },
    blastCoupleTiledHalf: { source: blastCouple('f16'), entryPoint: 'tiled', storage: ['read', 'read', 'write'] },
    gemmCombine: { source: wgsl('gemm_combine.wgsl', 'matmul_common'), entryPoint: 'main', storage: GEMM_BINDINGS },
    ...Object.fromEntries(ATTENTION_TENSOR_HEAD_DIMS.map((headDim) => [attentionTensorName(headDim),
      attentionTensorWorkgroupBytes(headDim) <= limits.maxComputeWorkgroupStorageSize
        ? { source: kvCacheWgsl(kvPrecision, composeWgsl([...commonWgsl('attention_params', 'kv_pages'), attentionSubgroupMatrixSource(headDim, kvPrecision)])), entryPoint: 'main', storage: ['read', 'read', 'read', 'read', 'write', 'read'] }
        : undefined])),
  };
}

/** wgsl/blast_couple.wgsl writing z as f32 or f16. */
const blastCouple = (z: 'f32' | 'f16') => composeWgsl([scalarAlias('z_scalar', z), wgsl('blast_couple.wgsl')]);
/**
 * A kernel that reads or writes the KV cache, with the cache's element type `kv_scalar`
 * (Backend.kvPrecision: stores round to it, loads convert from it).
 */
const kvCacheWgsl = (precision: KVPrecision, source: string) => composeWgsl([scalarAlias('kv_scalar', precision), source]);

const attentionTensorName = (headDim: (typeof ATTENTION_TENSOR_HEAD_DIMS)[number]) => `attentionTensor${headDim}` as const;

type KernelName = 'gatherF16' | 'gatherF32' | 'rmsNorm' | 'layerNorm' | 'rmsNormVec4' | 'layerNormVec4' | 'elementwise' | 'rope' | 'writeKV' | 'attention' | 'attentionVec4' | 'attentionVec4Wide' | 'attentionCombine' | 'attentionPrefill' | ReturnType<typeof attentionTensorName> | 'gemvSubgroup1LayerNormed' | 'blockGemv1LayerNormed'
  | 'gemv' | 'gemvAligned' | ReturnType<typeof gemvSubgroupName> | ReturnType<typeof blockGemvName> | 'gemm' | 'toHalf' | 'rmsNormHalf' | 'swigluHalf' | 'blockProject' | 'blockExpand' | 'gemmTensor' | 'gemmTensorVec4X' | 'gemmTensorScalarX' | 'gemmTensorBlocks' | 'gemmTensorBlocksHalfX' | 'blastCouple' | 'blastCoupleTiled' | 'blastCoupleHalf' | 'blastCoupleTiledHalf' | 'gemmCombine' | PairedKernel | `${PairedKernel}Unscaled` | 'gemvSubgroup1NormedUnscaled' | 'gemvPairedRopeBlocked' | 'randomMatrix' | 'scaleColumns' | 'argmax' | 'sample' | 'logprobs';

interface BindGroupNode {
  children: Map<GPUBuffer, BindGroupNode>;
  group?: GPUBindGroup;
}

interface Kernel {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  bindGroups: BindGroupNode;
}

class GpuTensor implements Tensor {
  constructor(
    readonly buffer: GPUBuffer,
    readonly elements: number,
    /** f16 matrices: halves per padded row; 0 for f32 tensors. */
    readonly rowStrideHalves = 0,
  ) {}
  /**
   * Activations that the last kernel recorded to write them left in f16, as recording goes (BLAST's
   * z on tensor cores, written by its coupling for step 3's block GEMM: blockProject, blockExpand).
   */
  halves = false;
  /**
   * An uploaded vector of ones (set by upload): a norm whose weight the model folded into the
   * projections that read it, which the normed GEMVs then do not load (their Unscaled pipelines).
   */
  ones = false;
  get isHalfMatrix(): boolean {
    return this.rowStrideHalves > 0;
  }
}

class GpuIndexTensor implements IndexTensor {
  constructor(readonly buffer: GPUBuffer, readonly elements: number) {}
}

class GpuKVCache implements KVCache {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly blocks: number;
  readonly blockSize: number;
  readonly sequences: number;
  readonly flagStride: number;
  constructor(shape: KVCacheShape, readonly keys: GPUBuffer[], readonly values: GPUBuffer[], readonly tokenFlags: GpuIndexTensor, private readonly onRelease: (cache: GpuKVCache) => void) {
    ({ layers: this.layers, kvHeads: this.kvHeads, headDim: this.headDim, blocks: this.blocks, blockSize: this.blockSize, sequences: this.sequences } = shape);
    this.flagStride = flagStride(shape.vocabSize);
  }
  /** Positions per head of a layer's keys: every block's. */
  get slots(): number {
    return this.blocks * this.blockSize;
  }
  release(): void {
    this.onRelease(this);
  }
}

export class GpuError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GpuError';
  }
}

/**
 * What WebGPU reports away from the call that caused it (validation errors, device loss),
 * collected as it comes and raised at the next read: surfaced as errors, never a hang.
 */
export class DeviceErrors {
  private readonly errors: string[] = [];
  private lostReason: string | undefined;

  constructor(device: GPUDevice) {
    device.addEventListener('uncapturederror', (event) => {
      this.errors.push((event as GPUUncapturedErrorEvent).error.message);
    });
    void device.lost.then((info) => {
      this.lostReason = info.message || info.reason;
    });
  }

  /** The error to throw when mapping a result for reading failed (`cause`: mapAsync's). */
  readFailed(cause: unknown): GpuError {
    return new GpuError(`reading results failed: ${this.lostReason ?? (this.errors.join('; ') || (cause as Error).message)}`);
  }

  /** Throws what was reported since the last check. */
  check(): void {
    if (this.errors.length > 0) throw new GpuError(`WebGPU reported: ${this.errors.splice(0).join('; ')}`);
    if (this.lostReason) throw new GpuError(`the GPU device was lost: ${this.lostReason}`);
  }
}

export class WebGpuBackend implements Backend {
  readonly name = 'webgpu' as const;
  readonly leavesNativeGarbage = true;
  readonly stacksPaddedRanks = true;
  readonly description: string;
  private readonly device: GPUDevice;
  private readonly kernels = new Map<KernelName, Kernel>();
  /** The one dynamic offset of a dispatch's bind group: a plain array (bench/record-cost.ts: Dawn's
   * binding takes it ~0.5 µs faster than a Uint32Array with a start and a length). */
  private readonly dynamicOffset = [0];
  private currentPipeline: GPUComputePipeline | undefined;
  private readonly dummy: GPUBuffer;
  private readonly unusedOutputs: [GPUBuffer, GPUBuffer, GPUBuffer];
  /** unusedOutputs[0] as a tensor: the empty q of a k|v matmul with RoPE (matmulRope). */
  private readonly unusedOutput: GpuTensor;
  private readonly gemmTile: GemmTile | undefined;
  private gemmPartials: GPUBuffer | undefined;
  private halfScratch: GPUBuffer | undefined;
  /** BLAST's per-block products between the tensor-core GEMM and the coupling kernel. */
  private blockScratch: GPUBuffer | undefined;
  private readonly arena: GPUBuffer;
  private readonly arenaWords: Uint32Array;
  private readonly arenaFloats: Float32Array;
  private readonly slotBytes: number;
  private slotsUsed = 0;
  private encoder: GPUCommandEncoder | undefined;
  private pass: GPUComputePassEncoder | undefined;
  /** Mappable buffers by size; a read takes one not in flight (pipelined steps overlap reads). */
  private readonly staging = new Map<number, GPUBuffer[]>();
  private readonly kvPool = new Map<number, GPUBuffer[]>();
  private readonly owned: GPUBuffer[] = [];
  private readonly errors: DeviceErrors;
  /** The step read last: its dispatches, and the submits they went in (1 unless submitIfIdle split it). */
  readonly lastStep = { dispatches: 0, submits: 0 };
  private dispatchesSinceRead = 0;
  private submitsSinceRead = 0;
  /** Reads submitted and not yet back: while there are some, a step is recorded behind a running one. */
  private readsInFlight = 0;
  private profiler: Profiler | undefined;
  /**
   * Dispatch k since the last submit: its kernel, buffers and bind group. A decode step makes the
   * same dispatches with the same buffers as the step before, so comparing against them finds the
   * kernel and bind group without the lookups (kernels, bindGroup), whose Maps the recording between
   * two lookups has pushed out of the CPU's caches: recording a Llama-shaped step of 164 dispatches
   * took 17% less time on this project's development machine.
   */
  private readonly lastDispatches: { name: KernelName; kernel: Kernel; buffers: GPUBuffer[]; group: GPUBindGroup }[] = [];
  private dispatchIndex = 0;
  /** Benchmarks only (setSkippedKernels): kernels whose dispatches are left out. */
  private skipped: RegExp | undefined;
  private timeline: PassTimeline | undefined;
  private normScratchTensor: GpuTensor | undefined;
  private sampleScratch: GPUBuffer | undefined;
  private sampleList: GPUBuffer | undefined;
  /** wgsl/sample.wgsl's workgroup size (its THREADS), which sizes its `list`. */
  private readonly sampleThreads: number;
  private readonly sampleParams: GPUBuffer;
  private sampleParamsNext = 0;
  private attentionPartials: GPUBuffer | undefined;

  private constructor(readonly gpu: Gpu, readonly kvPrecision: KVPrecision) {
    this.device = gpu.device;
    this.description = gpu.description;
    this.errors = new DeviceErrors(this.device);
    this.slotBytes = Math.max(PARAM_BYTES, this.device.limits.minUniformBufferOffsetAlignment);
    this.arena = this.createBuffer(ARENA_SLOTS * this.slotBytes, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    this.sampleParams = this.createBuffer(SAMPLE_PARAM_ROWS * SAMPLE_PARAM_BYTES, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    const cpuArena = new ArrayBuffer(ARENA_SLOTS * this.slotBytes);
    this.arenaWords = new Uint32Array(cpuArena);
    this.arenaFloats = new Float32Array(cpuArena);
    this.dummy = this.createBuffer(16, GPUBufferUsage.STORAGE);
    // Distinct buffers: one buffer may not fill two writable bindings of a dispatch.
    this.unusedOutputs = [this.createBuffer(16, GPUBufferUsage.STORAGE), this.createBuffer(16, GPUBufferUsage.STORAGE), this.createBuffer(16, GPUBufferUsage.STORAGE)];
    this.unusedOutput = new GpuTensor(this.unusedOutputs[0], 0);
    this.gemmTile = tensorCoreTile(gpu.features, this.device.limits);
    this.sampleThreads = sampleThreads(this.device.limits);
  }

  /**
   * Opens a device and compiles every kernel up front, so a shader error shows at start-up.
   * `profile` times every dispatch with timestamp queries (one compute pass each, so slower
   * overall); `takeProfile()` returns the totals per kernel. `timeline` times every compute pass
   * instead (a step is one pass, so the steps run as they would): `takeTimeline()` returns when each
   * began and ended on the GPU. `portable` leaves subgroups and subgroup matrices off (tests of the
   * fallback kernels). `kvPrecision`: how the KV cache stores keys and values (Backend.kvPrecision);
   * f16 by default where the device has shader-f16, else f32.
   */
  static async create(options: { allowSoftware: boolean; profile?: boolean; timeline?: boolean; portable?: boolean; workgroupStorage?: number; kvPrecision?: KVPrecision }): Promise<WebGpuBackend> {
    const gpu = await openGpu(options);
    if (options.kvPrecision === 'f16' && !gpu.features.shaderF16) throw new GpuError(`an f16 KV cache needs the shader-f16 feature, which ${gpu.description} lacks: use f32`);
    const backend = new WebGpuBackend(gpu, options.kvPrecision ?? (gpu.features.shaderF16 ? 'f16' : 'f32'));
    await backend.compileKernels();
    if ((options.profile || options.timeline) && !backend.gpu.features.timestampQuery) throw new GpuError('profiling needs the timestamp-query feature');
    if (options.profile && options.timeline) throw new GpuError('profile and timeline modes time different things: pick one');
    if (options.profile) backend.profiler = new Profiler(backend.device);
    if (options.timeline) backend.timeline = new PassTimeline(backend.device);
    return backend;
  }

  /** Timeline mode: each compute pass since the last call, [begin, end] in µs of GPU time. */
  takeTimeline(): Promise<[number, number][]> {
    if (!this.timeline) throw new GpuError('create the backend with { timeline: true } for a timeline');
    this.flush();
    return this.timeline.take();
  }

  /**
   * Benchmarks only: leaves out every later dispatch of a kernel whose name matches (undefined: none),
   * to measure what a step costs without them. Results are meaningless meanwhile; dispatches are
   * still counted.
   */
  setSkippedKernels(pattern: RegExp | undefined): void {
    this.skipped = pattern;
  }

  /** Per-kernel GPU time since the last call (profile mode): calls and total milliseconds. */
  takeProfile(): Map<string, { calls: number; ms: number }> {
    if (!this.profiler) throw new GpuError('create the backend with { profile: true } to profile');
    return this.profiler.take();
  }

  private async compileKernels(): Promise<void> {
    const specs = kernelSpecs(this.gpu.features, this.device.limits, this.gpu.adapterInfo.subgroupMinSize, this.kvPrecision);
    const modules = new Map<string, GPUShaderModule>();
    await Promise.all(Object.entries(specs).map(async ([name, spec]) => {
      if (!spec) return;
      let module = modules.get(spec.source);
      if (!module) {
        module = this.device.createShaderModule({ label: name, code: spec.source });
        modules.set(spec.source, module);
        const messages = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
        if (messages.length > 0) {
          throw new GpuError(`WGSL kernel ${name} does not compile: ${messages.map((m) => `line ${m.lineNum}: ${m.message}`).join('; ')}`);
        }
      }
      const layout = this.device.createBindGroupLayout({
        label: name,
        entries: [
          { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true, minBindingSize: PARAM_BYTES } },
          ...spec.storage.map((access, i) => ({
            binding: i + 1,
            visibility: GPUShaderStage.COMPUTE,
            buffer: { type: access === 'read' ? 'read-only-storage' as const : 'storage' as const },
          })),
        ],
      });
      const pipeline = await this.device.createComputePipelineAsync({
        label: name,
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: spec.entryPoint, constants: spec.constants },
      });
      this.kernels.set(name as KernelName, { pipeline, layout, bindGroups: { children: new Map() } });
    }));
  }

  private createBuffer(size: number, usage: number): GPUBuffer {
    // Sizes are rounded up to 16 bytes, so kernels may read any tensor as whole vec4s.
    const buffer = this.device.createBuffer({ size: Math.max(16, Math.ceil(size / 16) * 16), usage });
    this.owned.push(buffer);
    return buffer;
  }

  // ---- memory ----

  private write(buffer: GPUBuffer, view: ArrayBufferView, bufferOffset = 0): void {
    this.device.queue.writeBuffer(buffer, bufferOffset, view.buffer as ArrayBuffer, view.byteOffset, view.byteLength);
  }

  upload(values: Float32Array): Tensor {
    const buffer = this.createBuffer(values.byteLength, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    this.write(buffer, values);
    const t = new GpuTensor(buffer, values.length);
    t.ones = values.every((v) => v === 1);
    return t;
  }

  uploadMatrix(values: Float32Array, rows: number, columns: number, name: string): Tensor {
    if (values.length !== rows * columns) throw new RangeError(`${name}: ${values.length} values, ${rows}×${columns} needs ${rows * columns}`);
    const stride = Math.ceil(columns / ROW_ALIGN_HALVES) * ROW_ALIGN_HALVES;
    const limit = this.device.limits.maxStorageBufferBindingSize;
    if (rows * stride * 2 > limit) {
      throw new GpuError(`${name}: ${rows}×${columns} in f16 is ${rows * stride * 2} bytes, more than this adapter binds at once (${limit})`);
    }
    const halves = new Uint16Array(rows * stride);
    for (let r = 0; r < rows; r++) {
      const bad = halvesFrom(values, r * columns, halves, r * stride, columns);
      if (bad >= 0) {
        throw new RangeError(`${name}: value ${values[bad]} at [${r}, ${bad - r * columns}] is outside f16's range (±${F16_MAX}); this backend stores weights in f16`);
      }
    }
    const buffer = this.createBuffer(halves.byteLength, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    this.write(buffer, halves);
    return new GpuTensor(buffer, rows * columns, stride);
  }

  randomMatrix(rows: number, columns: number, scale: number, seed: number, name: string): Tensor {
    const stride = Math.ceil(columns / ROW_ALIGN_HALVES) * ROW_ALIGN_HALVES;
    if (rows * stride * 2 > this.device.limits.maxStorageBufferBindingSize) {
      throw new GpuError(`${name}: ${rows}×${columns} in f16 is more than this adapter binds at once`);
    }
    const buffer = this.createBuffer(rows * stride * 2, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    const words = (rows * stride) / 2;
    const groups = Math.ceil(words / 256);
    const gridX = Math.min(groups, 65535);
    this.dispatch('randomMatrix', [rows, columns, stride / 2, seed >>> 0, { f32: scale }, gridX * 256, 0, 0], [buffer], [gridX, Math.ceil(groups / gridX)]);
    return new GpuTensor(buffer, rows * columns, stride);
  }

  scaleColumns(matrix: Tensor, columns: number, scale: Tensor): void {
    const t = tensor(matrix);
    if (!t.isHalfMatrix || t.elements % columns !== 0 || t.rowStrideHalves < columns || tensor(scale).elements !== columns) throw new GpuError(`scaleColumns: a ${t.elements}-value matrix of ${columns} columns by ${tensor(scale).elements} scales`);
    const rows = t.elements / columns;
    const words = (rows * t.rowStrideHalves) / 2;
    const groups = Math.ceil(words / 256);
    const gridX = Math.min(groups, 65535);
    this.dispatch('scaleColumns', [rows, columns, t.rowStrideHalves / 2, 0, { f32: 0 }, gridX * 256, 0, 0], [t.buffer, tensor(scale).buffer], [gridX, Math.ceil(groups / gridX)]);
  }

  zeroRows(matrix: Tensor, columns: number, first: number, count: number): void {
    const t = tensor(matrix);
    if (!t.isHalfMatrix || t.elements % columns !== 0 || first + count > t.elements / columns) throw new GpuError(`zeroRows: rows ${first}..${first + count - 1} of a ${t.elements}-value matrix of ${columns} columns`);
    // Recorded in order with the dispatches (randomMatrix's fill among them): between two passes.
    this.pass?.end();
    this.pass = undefined;
    this.encoder ??= this.device.createCommandEncoder();
    this.encoder.clearBuffer(t.buffer, first * t.rowStrideHalves * 2, count * t.rowStrideHalves * 2);
  }

  allocate(elements: number): Tensor {
    return new GpuTensor(this.createBuffer(elements * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST), elements);
  }

  allocateIndices(elements: number): IndexTensor {
    return new GpuIndexTensor(this.createBuffer(elements * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC), elements);
  }

  uploadIndices(target: IndexTensor, values: Int32Array, offset = 0): void {
    this.write(indexTensor(target).buffer, values, offset * 4);
  }

  createKVCache(shape: KVCacheShape): KVCache {
    // Released caches' buffers are pooled by size and handed out again.
    const take = (bytes: number) => this.kvPool.get(bytes)?.pop() ?? this.createBuffer(bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    const give = (buffer: GPUBuffer) => {
      const free = this.kvPool.get(buffer.size) ?? [];
      free.push(buffer);
      this.kvPool.set(buffer.size, free);
    };
    const bytes = Math.ceil(Math.max(16, shape.kvHeads * shape.blocks * shape.blockSize * shape.headDim * kvValueBytes(this.kvPrecision)) / 16) * 16;
    if (bytes > this.device.limits.maxStorageBufferBindingSize) {
      throw new GpuError(`a KV cache layer of ${shape.blocks} blocks of ${shape.blockSize} positions needs ${bytes} bytes, more than the device binds (${this.device.limits.maxStorageBufferBindingSize}): use a shorter context or fewer sequences`);
    }
    const keys = Array.from({ length: shape.layers }, () => take(bytes));
    const values = Array.from({ length: shape.layers }, () => take(bytes));
    const flagEntries = shape.sequences * flagStride(shape.vocabSize);
    const flags = new GpuIndexTensor(take(Math.max(16, flagEntries * 4)), flagEntries);
    return new GpuKVCache(shape, keys, values, flags, (cache) => [...cache.keys, ...cache.values, cache.tokenFlags.buffer].forEach(give));
  }

  // ---- recording ----

  /** Appends a dispatch's parameters to the arena; returns its dynamic offset. */
  private params(words: (number | { f32: number })[]): number {
    if (this.slotsUsed === ARENA_SLOTS) this.submit();
    const slot = this.slotsUsed++;
    const base = (slot * this.slotBytes) / 4;
    for (let i = 0; i < words.length; i++) {
      const w = words[i];
      if (typeof w === 'number') this.arenaWords[base + i] = w;
      else this.arenaFloats[base + i] = w.f32;
    }
    return slot * this.slotBytes;
  }

  /** The kernel `name` and its bind group for `buffers`: as the same dispatch of the last step had them, or looked up. */
  private repeatedDispatch(name: KernelName, buffers: GPUBuffer[]): { kernel: Kernel; group: GPUBindGroup } {
    const index = this.dispatchIndex++;
    const last = this.lastDispatches[index];
    if (last !== undefined && last.name === name && sameBuffers(last.buffers, buffers)) return last;
    const kernel = this.kernels.get(name)!;
    const entry = { name, kernel, buffers, group: this.bindGroup(kernel, buffers) };
    this.lastDispatches[index] = entry;
    return entry;
  }

  /** The cached bind group of (kernel, buffers): a tree keyed by buffer objects, so a hit allocates nothing. */
  private bindGroup(kernel: Kernel, buffers: GPUBuffer[]): GPUBindGroup {
    let node = kernel.bindGroups;
    for (const buffer of buffers) {
      let next = node.children.get(buffer);
      if (!next) {
        next = { children: new Map() };
        node.children.set(buffer, next);
      }
      node = next;
    }
    node.group ??= this.device.createBindGroup({
      layout: kernel.layout,
      entries: [
        { binding: 0, resource: { buffer: this.arena, offset: 0, size: PARAM_BYTES } },
        ...buffers.map((buffer, i) => ({ binding: i + 1, resource: { buffer } })),
      ],
    });
    return node.group;
  }

  private dispatch(name: KernelName, params: (number | { f32: number })[], buffers: GPUBuffer[], grid: [number, number?, number?]): void {
    if (this.skipped?.test(name)) {
      this.dispatchesSinceRead++;
      return;
    }
    const { kernel, group: bindGroup } = this.repeatedDispatch(name, buffers);
    this.dynamicOffset[0] = this.params(params);
    if (this.profiler) {
      // One pass per dispatch, so each gets its own begin/end timestamps.
      this.pass?.end();
      this.encoder ??= this.device.createCommandEncoder();
      this.pass = this.encoder.beginComputePass({ timestampWrites: this.profiler.next(name) });
      this.currentPipeline = undefined;
    } else if (!this.pass) {
      this.encoder ??= this.device.createCommandEncoder();
      this.pass = this.timeline ? this.encoder.beginComputePass({ timestampWrites: this.timeline.next() }) : this.encoder.beginComputePass();
      this.currentPipeline = undefined;
    }
    this.dispatchesSinceRead++;
    // Each call into Dawn crosses into native code: skip the ones that change nothing.
    if (this.currentPipeline !== kernel.pipeline) {
      this.pass.setPipeline(kernel.pipeline);
      this.currentPipeline = kernel.pipeline;
    }
    this.pass.setBindGroup(0, bindGroup, this.dynamicOffset);
    const [x, y = 1, z = 1] = grid;
    if (x > 65535 || y > 65535 || z > 65535) throw new GpuError(`${name}: grid ${x}×${y}×${z} exceeds 65535 workgroups per dimension`);
    this.pass.dispatchWorkgroups(x, y, z);
  }

  /** Ends the pass, uploads the parameters and submits; optionally copies `tensor` out first. */
  private submit(copy?: { from: GPUBuffer; to: GPUBuffer; bytes: number }): void {
    this.pass?.end();
    const encoder = this.encoder ?? this.device.createCommandEncoder();
    if (copy) encoder.copyBufferToBuffer(copy.from, 0, copy.to, 0, copy.bytes);
    this.profiler?.resolve(encoder);
    if (this.slotsUsed > 0) this.device.queue.writeBuffer(this.arena, 0, this.arenaWords.buffer, 0, this.slotsUsed * this.slotBytes);
    this.device.queue.submit([encoder.finish()]);
    this.submitsSinceRead++;
    this.pass = undefined;
    this.encoder = undefined;
    this.dispatchIndex = 0;
    this.slotsUsed = 0;
  }

  gatherRows(out: Tensor, table: Tensor, rowIndices: IndexTensor, rows: number, width: number): void {
    const t = tensor(table);
    const half = t.isHalfMatrix;
    this.dispatch(half ? 'gatherF16' : 'gatherF32', [rows, width, half ? t.rowStrideHalves / 2 : width, 0],
      [t.buffer, indexTensor(rowIndices).buffer, tensor(out).buffer], [Math.ceil(width / 256), rows]);
  }

  rmsNorm(out: Tensor, x: Tensor, weight: Tensor, rows: number, width: number, eps: number): void {
    const vec4 = width % 4 === 0;
    this.dispatch(vec4 ? 'rmsNormVec4' : 'rmsNorm', [vec4 ? width / 4 : width, { f32: eps }, 0, 0],
      [tensor(x).buffer, tensor(weight).buffer, this.dummy, tensor(out).buffer], [rows]);
  }

  layerNorm(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor, rows: number, width: number, eps: number): void {
    const vec4 = width % 4 === 0;
    this.dispatch(vec4 ? 'layerNormVec4' : 'layerNorm', [vec4 ? width / 4 : width, { f32: eps }, 0, 0],
      [tensor(x).buffer, tensor(weight).buffer, tensor(bias).buffer, tensor(out).buffer], [rows]);
  }

  /** Scratch for inputs normalised ahead of a matmul: one buffer, grown to the largest use. */
  private normScratch(elements: number): GpuTensor {
    if (!this.normScratchTensor || this.normScratchTensor.elements < elements) this.normScratchTensor = tensor(this.allocate(elements));
    return this.normScratchTensor;
  }

  /** x normalised or gated into a scratch tensor, for the kernels that do not do it as they read. */
  private transformInput(x: Tensor, rows: number, inFeatures: number, input: InputTransform): Tensor {
    const scratch = this.normScratch(rows * inFeatures);
    if (isLayerNorm(input)) this.layerNorm(scratch, x, input.weight, input.bias, rows, inFeatures, input.eps);
    else if (isInputNorm(input)) this.rmsNorm(scratch, x, input.weight, rows, inFeatures, input.eps);
    else this.swiglu(scratch, x, input.up, rows * inFeatures);
    return scratch;
  }

  /** The second input of a kernel that transforms x as it reads it: the norm weight, or the gated MLP's up. */
  private transformBuffer(input: InputTransform): GPUBuffer {
    return tensor(isInputNorm(input) ? input.weight : input.up).buffer;
  }

  /** Whether attention over this many rows runs on tensor cores, which round q, k, v and the weights to f16. */
  attentionOnTensorCores(rows: number, headDim: number): boolean {
    return this.attentionTensorKernel(rows, headDim) !== undefined;
  }

  /** The tensor-core attention pipeline for this many rows at this head_dim, where there is one (compiled only for ATTENTION_TENSOR_HEAD_DIMS). */
  private attentionTensorKernel(rows: number, headDim: number): KernelName | undefined {
    const name = `attentionTensor${headDim}` as ReturnType<typeof attentionTensorName>;
    return rows >= ATTENTION_TENSOR_MIN_ROWS && this.kernels.has(name) ? name : undefined;
  }

  /** Whether matmul over this many rows runs on tensor cores, which round activations to f16. */
  matmulRoundsActivations(rows: number): boolean {
    return rows >= SUBGROUP_MATRIX_MIN_ROWS && this.kernels.has('gemmTensor');
  }

  /** The one-row normed subgroup GEMV (recordMatmul); BLAST's block projection short of the tensor cores (blockProject). */
  normsInside(kind: 'matmul' | 'blast' | 'monarch', rows: number, inFeatures: number, blocks = 1): boolean {
    if (kind === 'matmul') return rows === 1 && inFeatures % 8 === 0 && this.kernels.has('gemvSubgroup1Normed');
    return kind === 'blast' && this.blockSubgroupPath(inFeatures, blocks, true) && !this.blockTensorCores(rows, inFeatures / blocks, inFeatures);
  }

  matmul(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, outFeatures: number, accumulate = false, input?: InputTransform, activation?: OutputActivation): void {
    // Every matmul kernel stores through wgsl/common/matmul_common.wgsl, which applies it (flags bit 3).
    this.recordMatmul([out], x, weight, bias, rows, inFeatures, [outFeatures], accumulate, input, false, undefined, activation ? ACTIVATION_FLAG : 0);
  }

  matmulSplit(outs: Tensor[], x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, widths: number[], inputNorm?: InputNorm, rope?: OutputRope): void {
    if (rope && this.matmulRope(outs, x, weight, bias, rows, inFeatures, widths, inputNorm, rope)) return;
    this.recordMatmul(outs, x, weight, bias, rows, inFeatures, widths, false, inputNorm);
    if (rope) ropeOutputs(this, outs, rows, rope);
  }

  /**
   * RoPE in the GEMV's epilogue (the one-row normed subgroup GEMV, paired): whole heads, a cache
   * to store k and v in, and outputs that are q|k|v, q alone, or k|v (rope.parts). k|v go to the
   * epilogue as the k and v of a q|k|v whose q is empty (width0 0, out0 a placeholder).
   */
  matmulRope(outs: Tensor[], x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, widths: number[], inputNorm: InputNorm | undefined, rope: OutputRope): boolean {
    const store = rope.store;
    if (!store || rope.headDim % 2 !== 0 || !this.pairs(rows, inFeatures, inputNorm, 'gemvPairedRope')) return false;
    const q = rope.heads * rope.headDim;
    const kv = rope.kvHeads * rope.headDim;
    const expected = rope.parts === 'q' ? [q] : rope.parts === 'kv' ? [kv, kv] : [q, kv, kv];
    if (widths.length !== expected.length || widths.some((w, i) => w !== expected[i])) return false;
    const pairing = { kernel: 'gemvPairedRope' as const, ...this.ropePairFields(rope, store) };
    if (rope.parts === 'kv') this.recordMatmul([this.unusedOutput, ...outs], x, weight, bias, rows, inFeatures, [0, ...widths], false, inputNorm, false, pairing);
    else this.recordMatmul(outs, x, weight, bias, rows, inFeatures, widths, false, inputNorm, false, pairing);
    return true;
  }

  /** What the RoPE pair epilogue (wgsl/common/gemv_pair_rope.wgsl) takes: params from pair_span on, bindings 8–12. */
  private ropePairFields(rope: OutputRope, store: NonNullable<OutputRope['store']>): Omit<Pairing, 'kernel'> {
    const c = kvCache(store.cache);
    return {
      params: [rope.headDim / 2, c.blockSize, c.slots, rope.rotary.elements / 2],
      buffers: [indexTensor(rope.positions).buffer, tensor(rope.rotary).buffer, indexTensor(store.pages).buffer, c.keys[store.layer], c.values[store.layer]],
    };
  }

  matmulSwiglu(out: Tensor, up: Tensor, x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, width: number, inputNorm?: InputNorm): boolean {
    const fused = this.pairs(rows, inFeatures, inputNorm, 'gemvPairedSwiglu');
    this.recordMatmul([out, up], x, weight, bias, rows, inFeatures, [width, width], false, inputNorm, false,
      fused ? { kernel: 'gemvPairedSwiglu', params: [width, 0, 0, 0], buffers: [] } : undefined);
    return fused;
  }

  /** Whether a matmul of this shape can take a paired GEMV pipeline (recordMatmul's one-row normed subgroup GEMV). */
  private pairs(rows: number, inFeatures: number, inputNorm: InputNorm | undefined, kernel: PairedKernel): boolean {
    return rows === 1 && inputNorm !== undefined && !isLayerNorm(inputNorm) && inFeatures % 8 === 0 && this.kernels.has('gemvSubgroup1Normed') && this.kernels.has(kernel);
  }

  matmulStacked(out: Tensor, x: Tensor, weight: Tensor, rows: number, inFeatures: number, widths: number[], inputNorm?: InputNorm): void {
    if (widths.length < 1 || widths.length > 3) throw new GpuError(`matmulStacked writes 1 to 3 projections, got ${widths.length}`);
    this.recordMatmul([out], x, weight, null, rows, inFeatures, widths, false, inputNorm, true);
  }

  private recordMatmul(outs: Tensor[], x: Tensor, weight: Tensor, bias: Tensor | null, rows: number, inFeatures: number, widths: number[], accumulate: boolean, input?: InputTransform, stacked = false, paired?: Pairing, activationFlag = 0): void {
    // Below the tensor cores' rows, the subgroup GEMV streams the weights once per 16 rows.
    const decodeSubgroup = rows < SUBGROUP_MATRIX_MIN_ROWS && inFeatures % 8 === 0 && this.kernels.has('gemvSubgroup1');
    const outFeatures = widths.reduce((a, b) => a + b, 0);
    // (normsInside speaks of RMSNorm; a LayerNorm has a pipeline of its own, for one row.)
    const normInside = input !== undefined && isInputNorm(input) && (isLayerNorm(input)
      ? rows === 1 && inFeatures % 8 === 0 && outFeatures <= LAYER_NORM_GEMV_MAX_OUT && this.kernels.has('gemvSubgroup1LayerNormed')
      : this.normsInside('matmul', rows, inFeatures));
    if (paired && !normInside) throw new GpuError(`${paired.kernel} takes the one-row normed subgroup GEMV's matmuls only`);
    // The tensor-core GEMM's x goes to f16 in a pass of its own, which normalises or gates it too.
    const halfInput = this.matmulRoundsActivations(rows) && inFeatures % 8 === 0 && !isLayerNorm(input);
    if (input && !halfInput && !normInside) {
      // Only the one-row subgroup GEMV normalises its own input; elsewhere the norm runs first.
      // (Every workgroup normalises the rows it reads: for 4 output features per workgroup and 16
      // rows of 2048, the LM head re-read 4 GB of x, 7x slower than normalising once.) SwiGLU runs
      // first here too: inside the GEMV, each pair of output rows recomputed silu over all of x,
      // and Llama-2-7B's decode measured no faster for the dispatch saved (H200, RESULTS.md).
      x = this.transformInput(x, rows, inFeatures, input);
      input = undefined;
    }
    const w = tensor(weight);
    if (!w.isHalfMatrix) throw new GpuError('matmul needs a weight from uploadMatrix');
    if (!stacked && (outs.length < 1 || outs.length > 3 || outs.length !== widths.length)) throw new GpuError(`matmul writes 1 to 3 outputs, got ${outs.length} for ${widths.length} widths`);
    if (outs.includes(x)) throw new GpuError('matmul cannot write over its input');
    const buffers = [tensor(x).buffer, w.buffer, bias ? tensor(bias).buffer : this.dummy,
      tensor(outs[0]).buffer, outs[1] ? tensor(outs[1]).buffer : this.unusedOutputs[0], outs[2] ? tensor(outs[2]).buffer : this.unusedOutputs[1]];
    buffers.push(input ? this.transformBuffer(input) : this.dummy);
    if (isLayerNorm(input)) buffers.push(tensor(input.bias).buffer);
    const flags = (bias ? 1 : 0) | (accumulate ? 2 : 0) | (stacked ? 4 : 0) | activationFlag;
    // A one-row RMSNorm inside the GEMV whose weight is ones: the pipelines that do not load it.
    const unscaled = normInside && rows === 1 && input !== undefined && isInputNorm(input) && !isLayerNorm(input) && tensor(input.weight).ones;
    const params = [rows, inFeatures, outFeatures, w.rowStrideHalves / ROW_ALIGN_HALVES, flags, widths[0], widths[1] ?? 0, { f32: input && isInputNorm(input) ? input.eps : 0 }];
    if (this.matmulRoundsActivations(rows)) {
      // These kernels take the weight stride in halves, and a buffer for split-K sums in place of
      // the norm weight.
      params[3] = w.rowStrideHalves;
      buffers[6] = this.unusedOutputs[2];
      this.recordTensorCoreMatmul(params, buffers, rows, inFeatures, outFeatures, input);
    } else if (paired) {
      // The pair's fields follow the blocked pipeline's three (unused here).
      this.dispatch(unscaled ? `${paired.kernel}Unscaled` : paired.kernel, [...params, 0, 0, 0, ...paired.params], [...buffers, ...paired.buffers], [Math.ceil(outFeatures / 4)]);
    } else if (decodeSubgroup) {
      const batch = gemvBatch(rows);
      const kind = input ? 'normed' : 'plain';
      this.dispatch(isLayerNorm(input) ? 'gemvSubgroup1LayerNormed' : unscaled ? 'gemvSubgroup1NormedUnscaled' : gemvSubgroupName(batch, kind), params, buffers, [Math.ceil(outFeatures / (2 * gemvRowsPerGroup(batch, kind))), Math.ceil(rows / batch)]);
    } else if (rows > 4) this.dispatch('gemm', params, buffers, [Math.ceil(outFeatures / 64), Math.ceil(rows / 64)]);
    else if (inFeatures % 8 === 0) this.dispatch('gemvAligned', params, buffers, [Math.ceil(outFeatures / 4), rows]);
    else this.dispatch('gemv', params, buffers, [Math.ceil(outFeatures / 8), rows]);
  }

  /** `input`: x's transform, for in_features a multiple of 8 (applied as x goes to f16). */
  private recordTensorCoreMatmul(params: (number | { f32: number })[], buffers: GPUBuffer[], rows: number, inFeatures: number, outFeatures: number, input?: InputTransform): void {
    const tile = this.gemmTile!;
    const grid: [number, number, number] = [Math.ceil(outFeatures / gemmTileColumns(tile)), Math.ceil(rows / gemmTileRows(tile)), 1];
    grid[2] = this.gemmSplits(grid, inFeatures, tile);
    const splits = grid[2];
    if (splits > 1) {
      buffers[6] = this.gemmPartialsFor(splits * rows * outFeatures);
      params[4] = (params[4] as number) | (splits << 8);
    }
    if (inFeatures % 8 === 0) {
      // x goes to f16 first (see wgsl/to_half.wgsl), normalised or gated on the way.
      const vectors = (rows * inFeatures) / 4;
      if (!this.halfScratch || this.halfScratch.size < vectors * 8) this.halfScratch = this.createBuffer(vectors * 8, GPUBufferUsage.STORAGE);
      const groups = Math.ceil(vectors / 256);
      const gridX = Math.min(groups, 65535);
      const xGrid: [number, number] = [gridX, Math.ceil(groups / gridX)];
      if (!input) this.dispatch('toHalf', [vectors, gridX * 256], [buffers[0], this.halfScratch], xGrid);
      else if (isInputNorm(input)) this.dispatch('rmsNormHalf', [inFeatures / 4, { f32: input.eps }, 0, 0], [buffers[0], tensor(input.weight).buffer, this.dummy, this.halfScratch], [rows]);
      else this.dispatch('swigluHalf', [vectors, gridX * 256], [buffers[0], this.halfScratch, tensor(input.up).buffer], xGrid);
      buffers[0] = this.halfScratch;
      this.dispatch('gemmTensor', params, buffers, grid);
    } else this.dispatch(inFeatures % 4 === 0 ? 'gemmTensorVec4X' : 'gemmTensorScalarX', params, buffers, grid);
    if (splits > 1) {
      const groups = Math.ceil((rows * outFeatures) / 256);
      const x = Math.min(groups, 65535);
      this.dispatch('gemmCombine', params, [this.dummy, this.dummy, ...buffers.slice(2)], [x, Math.ceil(groups / x)]);
    }
  }

  blockProject(z: Tensor, x: Tensor, factor: Tensor, coupling: Tensor | null, rows: number, shape: BlockShape, input?: InputTransform): void {
    const f = tensor(factor);
    if (!f.isHalfMatrix) throw new GpuError('blockProject needs a factor from uploadMatrix');
    const { inFeatures: i, rank: r, blocks: b } = shape;
    const layers = shape.layers ?? 1;
    const subgroupPath = this.blockSubgroupPath(i, b, coupling !== null);
    const tensorCores = this.blockTensorCores(rows, i / b, i);
    // The subgroup kernel normalises BLAST's input itself (wgsl/block_gemv.wgsl NORMED: a BLAST
    // workgroup reads every block of x) and gates one row's (GATED); elsewhere that runs first.
    // A LayerNorm only for one row whose quads each read one block of x (flags bit 2, below).
    const layerNormHere = coupling !== null && rows === 1 && this.normsInside('blast', rows, i, b) && blastChannels(b) % 4 === 0 && this.kernels.has('blockGemv1LayerNormed');
    const inHere = input && (isLayerNorm(input) ? layerNormHere : isInputNorm(input) ? coupling !== null && this.normsInside('blast', rows, i, b) : subgroupPath && !tensorCores && rows === 1) ? input : undefined;
    if (input && !inHere) x = this.transformInput(x, rows, i, input);
    const buffers = [tensor(x).buffer, f.buffer, coupling ? tensor(coupling).buffer : this.dummy, tensor(z).buffer];
    // BLAST's coupling writes z in f16 where step 3 (blockExpand) will read it on tensor cores, 8
    // halves a load: half the bytes, and the same values (step 3 rounds z to f16 anyway).
    const halfZ = coupling !== null && tensorCores && this.halvesBlockInput(rows, r);
    tensor(z).halves = halfZ;
    if (tensorCores) {
      // Tensor cores: one GEMM per input block in one dispatch (a dispatch per stacked layer);
      // BLAST's products y go through a scratch buffer to the coupling kernel, Monarch's straight
      // to their permuted places in z.
      let target = buffers[3];
      if (coupling) {
        const bytes = b * rows * r * 4;
        if (!this.blockScratch || this.blockScratch.size < bytes) this.blockScratch = this.createBuffer(bytes, GPUBufferUsage.STORAGE);
        target = this.blockScratch;
      }
      for (let layer = 0; layer < layers; layer++) {
        this.recordBlockGemm(rows, i / b, b * r, r, f, 0, coupling ? 0 : 1, i / b, i, r, b, [buffers[0], f.buffer, this.dummy, target], layer, 0, coupling ? 0 : layer * b * rows * r);
        if (coupling && b <= BLAST_COUPLE_TILE_BLOCKS && Math.ceil(rows / 32) <= 65535) {
          // A workgroup per 8 channels × 32 rows, its coupling in workgroup memory (wgsl/blast_couple.wgsl tiled).
          this.dispatch(halfZ ? 'blastCoupleTiledHalf' : 'blastCoupleTiled', [rows, r, b, 0, layer], [target, buffers[2], buffers[3]], [Math.ceil(r / 8), Math.ceil(rows / 32)]);
        } else if (coupling) {
          const groups = Math.ceil((rows * r) / 256);
          const gridX = Math.min(groups, 65535);
          this.dispatch(halfZ ? 'blastCoupleHalf' : 'blastCouple', [rows, r, b, gridX * 256, layer], [target, buffers[2], buffers[3]], [gridX, Math.ceil(groups / gridX)]);
        }
      }
      return;
    }
    if (subgroupPath) {
      // Every stacked layer in one dispatch.
      const batch = gemvBatch(rows);
      const channels = coupling ? blastChannels(b) : 0;
      const groupRows = coupling ? channels * b : BLOCK_GEMV_GROUP_ROWS;
      const groups = coupling ? Math.ceil(r / channels) : Math.ceil((b * r) / groupRows);
      // Flags bit 2: each quad of rows reads one block of x (BLAST: a quad's four channels of a block; Monarch: consecutive rows of a block).
      const sharedX = (coupling ? channels : r) % 4 === 0 ? 4 : 0;
      const kind = !inHere ? 'plain' : isInputNorm(inHere) ? 'normed' : 'gated';
      this.dispatch(isLayerNorm(inHere) ? 'blockGemv1LayerNormed' : blockGemvName(batch, kind), [rows, i / b, b * r, f.rowStrideHalves / ROW_ALIGN_HALVES, r, b, coupling ? 0 : 1, sharedX, groupRows, channels, 0, i, groups, 0, { f32: inHere && isInputNorm(inHere) ? inHere.eps : 0 }],
        [...buffers, inHere ? this.transformBuffer(inHere) : this.dummy, ...(isLayerNorm(inHere) ? [tensor(inHere.bias).buffer] : [])], [layers * groups, Math.ceil(rows / batch)]);
      return;
    }
    for (let layer = 0; layer < layers; layer++) {
      this.dispatch('blockProject', [rows, i, r, b, f.rowStrideHalves / 2, coupling ? 0 : 1, layer, 0], buffers, [Math.ceil(r / 64), rows, coupling ? 1 : b]);
    }
  }

  blockExpand(out: Tensor | Tensor[], z: Tensor, factor: Tensor, bias: Tensor | null, rows: number, shape: BlockShape, strided: boolean, accumulate = false, rope?: OutputRope, activation?: OutputActivation): void {
    if (activation) {
      if (rope || Array.isArray(out) || (shape.layers ?? 1) !== 1) throw new GpuError('blockExpand applies an activation to one layer\'s output, without RoPE');
      const f = tensor(factor);
      if (f.isHalfMatrix && this.blockedGemv(rows, shape)) {
        // The blocked subgroup GEMV stores through the matmul epilogue, which applies it.
        this.expandBlocked([out], z, f, bias, rows, shape, strided, (bias ? 1 : 0) | (accumulate ? 2 : 0) | ACTIVATION_FLAG);
        return;
      }
      // The other step-3 kernels have epilogues of their own: a pass after them.
      if (accumulate) throw new GpuError('blockExpand applies an activation with a residual add only on the blocked subgroup GEMV (one layer, fewer rows than the tensor cores take)');
      this.blockExpand(out, z, factor, bias, rows, shape, strided);
      this.gelu(out, out, rows * shape.outFeatures);
      return;
    }
    if (rope) {
      const outs = Array.isArray(out) ? out : [out];
      if (bias || accumulate || !this.blockExpandRope(outs, z, factor, rows, shape, strided, rope)) {
        this.blockExpand(out, z, factor, bias, rows, shape, strided, accumulate);
        ropeOutputs(this, outs, rows, rope);
      }
      return;
    }
    const f = tensor(factor);
    if (!f.isHalfMatrix) throw new GpuError('blockExpand needs a factor from uploadMatrix');
    const { outFeatures: o, rank: r, blocks: b } = shape;
    const outs = Array.isArray(out) ? out : [out];
    const layers = shape.layers ?? 1;
    if (outs.length !== layers || layers > 3) throw new GpuError(`blockExpand writes one output per stacked layer (up to 3): ${layers} layers, ${outs.length} outputs`);
    if (layers > 1 && (bias || accumulate)) throw new GpuError('stacked block low-rank layers take no bias or residual');
    const flags = (bias ? 1 : 0) | (accumulate ? 2 : 0);
    const buffersFor = (layer: number) => [tensor(z).buffer, f.buffer, bias ? tensor(bias).buffer : this.dummy, tensor(outs[layer]).buffer];
    const halfZ = tensor(z).halves;
    if (halfZ && !this.halvesBlockInput(rows, r)) throw new GpuError(`blockExpand: z holds f16 values, which ${rows} rows at rank ${r} do not read`);
    if (this.blockTensorCores(rows, r, r)) {
      for (let layer = 0; layer < layers; layer++) {
        this.recordBlockGemm(rows, r, o, o / b, f, flags, strided ? 3 : 2, rows * r, r, r, b, buffersFor(layer), layer, layer * b * rows * r, 0, halfZ);
      }
      return;
    }
    if (this.blockedGemv(rows, shape)) {
      this.expandBlocked(outs, z, f, bias, rows, shape, strided, flags);
      return;
    }
    for (let layer = 0; layer < layers; layer++) {
      if (this.kernels.has('blockGemv1') && r % 8 === 0) {
        const batch = gemvBatch(rows);
        const groups = Math.ceil(o / BLOCK_GEMV_EXPAND_ROWS);
        this.dispatch(blockGemvName(batch, 'plain'), [rows, r, o, f.rowStrideHalves / ROW_ALIGN_HALVES, r, b, strided ? 3 : 2, flags, BLOCK_GEMV_EXPAND_ROWS, 0, o / b, 0, groups, layer, 0],
          [...buffersFor(layer), this.dummy], [groups, Math.ceil(rows / batch)]);
      } else {
        this.dispatch('blockExpand', [rows, o, r, b, f.rowStrideHalves / 2, flags | (strided ? 4 : 0), layer, 0], buffersFor(layer), [Math.ceil(o / 64), rows]);
      }
    }
  }

  blockExpandSplit(outs: Tensor[], z: Tensor, factor: Tensor, bias: Tensor | null, rows: number, shape: BlockShape, strided: boolean): boolean {
    const f = tensor(factor);
    if ((shape.layers ?? 1) !== 1 || outs.length < 2 || outs.length > 3 || shape.outFeatures % outs.length !== 0 || !f.isHalfMatrix || tensor(z).halves || !this.blockedGemv(rows, shape)) return false;
    this.expandBlocked(outs, z, f, bias, rows, shape, strided, bias ? 1 : 0);
    return true;
  }

  /** Whether step 3 runs on the blocked subgroup GEMV (wgsl/gemv_subgroup.wgsl BLOCKED): short of the tensor cores' rows. */
  private blockedGemv(rows: number, shape: BlockShape): boolean {
    const { outFeatures: o, rank: r, blocks: b } = shape;
    return !this.blockTensorCores(rows, r, r) && this.kernels.has('gemvSubgroup1Blocked') && r % 8 === 0 && (o / b) % 2 === 0;
  }

  /**
   * Step 3 on the blocked subgroup GEMV, each output block reading its block of z: every stacked
   * layer in one dispatch, all output features (layers · outFeatures) split evenly over `outs` —
   * one tensor per stacked layer, or one layer's features over several (blockExpandSplit).
   */
  private expandBlocked(outs: Tensor[], z: Tensor, f: GpuTensor, bias: Tensor | null, rows: number, shape: BlockShape, strided: boolean, flags: number): void {
    const { outFeatures: o, rank: r, blocks: b } = shape;
    const all = (shape.layers ?? 1) * o;
    const width = all / outs.length;
    const batch = gemvBatch(rows);
    const buffers = [tensor(z).buffer, f.buffer, bias ? tensor(bias).buffer : this.dummy, tensor(outs[0]).buffer,
      outs[1] ? tensor(outs[1]).buffer : this.unusedOutputs[0], outs[2] ? tensor(outs[2]).buffer : this.unusedOutputs[1], this.dummy];
    this.dispatch(gemvSubgroupName(batch, 'blocked'), [rows, r, all, f.rowStrideHalves / ROW_ALIGN_HALVES, flags, width, outs.length > 1 ? width : 0, { f32: 0 }, o / b, b, strided ? 1 : 0],
      buffers, [Math.ceil(all / 4), Math.ceil(rows / batch)]);
  }

  /**
   * Step 3 of block low-rank q|k|v (three stacked layers), q alone, or k|v (two stacked; rope.parts)
   * — BLAST or low-rank, no bias — for one row with RoPE and the KV cache store in its epilogue (the
   * blocked subgroup GEMV, paired), where it applies; false where it does not (Monarch's strided
   * outputs, a head split over blocks, stacked layers of different widths: GQA's narrower k and v
   * stacked with q).
   */
  blockExpandRope(outs: Tensor[], z: Tensor, factor: Tensor, rows: number, shape: BlockShape, strided: boolean, rope: OutputRope): boolean {
    const { outFeatures: o, rank: r, blocks: b } = shape;
    const { headDim, store } = rope;
    const layers = shape.layers ?? 1;
    const expected = rope.parts === 'q' ? 1 : rope.parts === 'kv' ? 2 : 3;
    if (!store || rows !== 1 || strided || layers !== expected || outs.length !== layers || !this.kernels.has('gemvPairedRopeBlocked')) return false;
    if (r % 8 !== 0 || headDim % 2 !== 0 || (o / b) % headDim !== 0) return false;
    if ((rope.parts !== 'kv' && o !== rope.heads * headDim) || (rope.parts !== 'q' && o !== rope.kvHeads * headDim)) return false;
    const f = tensor(factor);
    if (!f.isHalfMatrix) return false; // (blockExpand says why)
    const pair = this.ropePairFields(rope, store);
    // k|v as the k and v of a q|k|v whose q is empty (width0 0, out0 a placeholder).
    const targets = rope.parts === 'kv' ? [this.unusedOutputs[2], ...outs.map((t) => tensor(t).buffer)] : outs.map((t) => tensor(t).buffer);
    while (targets.length < 3) targets.push(this.unusedOutputs[targets.length - 1]);
    const [width0, width1] = rope.parts === 'kv' ? [0, o] : rope.parts === 'q' ? [o, 0] : [o, o];
    this.dispatch('gemvPairedRopeBlocked', [rows, r, layers * o, f.rowStrideHalves / ROW_ALIGN_HALVES, 0, width0, width1, { f32: 0 }, o / b, b, 0, ...pair.params],
      [tensor(z).buffer, f.buffer, this.dummy, ...targets, this.dummy, ...pair.buffers], [Math.ceil((layers * o) / 4)]);
    return true;
  }

  /** Whether a block projection runs on wgsl/block_gemv.wgsl (short of the tensor cores' rows). */
  private blockSubgroupPath(inFeatures: number, blocks: number, blast: boolean): boolean {
    return this.kernels.has('blockGemv1') && (inFeatures / blocks) % 8 === 0 && (!blast || blocks <= BLOCK_GEMV_MAX_BLAST_BLOCKS);
  }

  /** Whether step 3's block GEMM over this many rows reads its z in f16 (rank a multiple of 8: z's blocks and rows start on whole loads of 8 halves). */
  private halvesBlockInput(rows: number, rank: number): boolean {
    return rank % 8 === 0 && this.blockTensorCores(rows, rank, rank) && this.kernels.has('gemmTensorBlocksHalfX');
  }

  /** Whether block GEMMs over this many rows run on tensor cores (they read x as vec4: K and its row stride multiples of 4). */
  private blockTensorCores(rows: number, k: number, xRow: number): boolean {
    return this.matmulRoundsActivations(rows) && this.kernels.has('gemmTensorBlocks') && k % 4 === 0 && xRow % 4 === 0;
  }

  /** One tensor-core GEMM per block (wgsl/common/block_gemm_common.wgsl has the parameters), for one stacked layer. */
  private recordBlockGemm(rows: number, k: number, factorRows: number, blockOut: number, f: GpuTensor, flags: number, mode: number,
    xBlock: number, xRow: number, rank: number, blocks: number, buffers: GPUBuffer[], layer: number, xOffset: number, outOffset: number, halfX = false): void {
    const tile = this.gemmTile!;
    const tilesPerBlock = Math.ceil(blockOut / gemmTileColumns(tile));
    const grid: [number, number, number] = [blocks * tilesPerBlock, Math.ceil(rows / gemmTileRows(tile)), 1];
    // Step 3 (modes 2 and 3) splits K as the dense GEMM does when a short prompt has few tiles (7B
    // BLAST's q at 128 rows: 32 workgroups), its sums (at their output features) added up by
    // gemm_combine.wgsl.
    if (mode === 2 || mode === 3) grid[2] = this.gemmSplits(grid, k, tile);
    const splits = grid[2];
    const partials = splits > 1 ? this.gemmPartialsFor(splits * rows * factorRows) : this.unusedOutputs[2];
    this.dispatch(halfX ? 'gemmTensorBlocksHalfX' : 'gemmTensorBlocks', [rows, k, factorRows, f.rowStrideHalves, flags | (splits << 8), mode, blockOut, tilesPerBlock, xBlock, xRow, rank, blocks, layer, xOffset, outOffset],
      [...buffers, this.unusedOutputs[0], this.unusedOutputs[1], partials], grid);
    if (splits > 1) {
      // The combine's parameters are the dense matmul's (wgsl/common/matmul_common.wgsl): step 3
      // writes output feature j of row r at r · factorRows + j, as its split output 0.
      const groups = Math.ceil((rows * factorRows) / 256);
      const x = Math.min(groups, 65535);
      this.dispatch('gemmCombine', [rows, k, factorRows, 0, flags | (splits << 8), factorRows, 0, { f32: 0 }],
        [this.dummy, this.dummy, buffers[2], buffers[3], this.unusedOutputs[0], this.unusedOutputs[1], partials], [x, Math.ceil(groups / x)]);
    }
  }

  /** Split-K ways for a tensor-core GEMM of this grid and K: up to MAX_GEMM_SPLITS, until about GEMM_TARGET_WORKGROUPS. */
  private gemmSplits(grid: [number, number, number], k: number, tile: GemmTile): number {
    const steps = Math.ceil(k / tile.depth);
    let splits = 1;
    while (splits < MAX_GEMM_SPLITS && grid[0] * grid[1] * splits * 2 <= GEMM_TARGET_WORKGROUPS && steps / (splits * 2) >= GEMM_MIN_SPLIT_STEPS) splits *= 2;
    return splits;
  }

  /** The split-K partial sums' buffer, grown to hold `floats`. */
  private gemmPartialsFor(floats: number): GPUBuffer {
    if (!this.gemmPartials || this.gemmPartials.size < floats * 4) this.gemmPartials = this.createBuffer(floats * 4, GPUBufferUsage.STORAGE);
    return this.gemmPartials;
  }

  private elementwise(op: number, out: Tensor, a: Tensor, b: Tensor | null, elements: number): void {
    const o = tensor(out);
    const inPlace = a === out;
    const groups = Math.ceil(elements / 256);
    const x = Math.min(groups, 65535);
    this.dispatch('elementwise', [elements, op, inPlace ? 1 : 0, x * 256],
      [inPlace ? this.dummy : tensor(a).buffer, b ? tensor(b).buffer : this.dummy, o.buffer], [x, Math.ceil(groups / x)]);
  }

  add(out: Tensor, a: Tensor, b: Tensor, elements: number): void {
    this.elementwise(0, out, a, b, elements);
  }

  swiglu(out: Tensor, gate: Tensor, up: Tensor, elements: number): void {
    this.elementwise(1, out, gate, up, elements);
  }

  gelu(out: Tensor, x: Tensor, elements: number): void {
    this.elementwise(2, out, x, null, elements);
  }

  rope(q: Tensor | null, k: Tensor | null, positions: IndexTensor, rotary: Tensor, rows: number, heads: number, kvHeads: number, headDim: number, store?: KVStore): void {
    const c = store && k ? kvCache(store.cache) : undefined;
    const cacheBuffers = c && store
      ? [indexTensor(store.pages).buffer, tensor(store.v).buffer, c.keys[store.layer], c.values[store.layer]]
      : [this.dummy, this.dummy, this.unusedOutputs[0], this.unusedOutputs[1]];
    // A part left out has no heads (the grid's y covers q's heads, then k's); its binding a placeholder.
    const qHeads = q ? heads : 0;
    const kHeads = k ? kvHeads : 0;
    if (qHeads + kHeads === 0) return;
    this.dispatch('rope', [rows, qHeads, kHeads, headDim, c ? 1 : 0, c?.blockSize ?? 1, c?.slots ?? 0, rotary.elements / 2],
      [q ? tensor(q).buffer : this.unusedOutputs[2], k ? tensor(k).buffer : this.unusedOutputs[2], indexTensor(positions).buffer, tensor(rotary).buffer, ...cacheBuffers],
      [Math.ceil(headDim / 2 / 64), qHeads + kHeads, rows]);
  }

  writeKV(kv: KVCache, layer: number, k: Tensor, v: Tensor, positions: IndexTensor, pages: KVPages, rows: number): void {
    const c = kvCache(kv);
    this.dispatch('writeKV', [rows, c.kvHeads, c.headDim, c.blockSize, c.slots, 0, 0, 0],
      [tensor(k).buffer, tensor(v).buffer, indexTensor(positions).buffer, indexTensor(pages).buffer, c.keys[layer], c.values[layer]],
      [Math.ceil(c.headDim / 64), c.kvHeads, rows]);
  }

  attention(out: Tensor, q: Tensor, kv: KVCache, layer: number, positions: IndexTensor, pages: KVPages, firstRow: number, rows: number, shape: AttentionShape, length: number, oneSequence: boolean): void {
    const c = kvCache(kv);
    if (shape.headDim > 256) throw new GpuError(`attention supports head_dim ≤ 256, got ${shape.headDim}`);
    const buffers = [tensor(q).buffer, c.keys[layer], c.values[layer], indexTensor(positions).buffer, tensor(out).buffer];
    const pageBuffer = indexTensor(pages).buffer;
    const params = (splitLength: number, splits: number) => [rows, shape.heads, shape.kvHeads, shape.headDim, c.slots, { f32: shape.scale }, splitLength, splits, c.blockSize, firstRow];
    if (shape.headDim % 4 !== 0) {
      this.dispatch('attention', params(0, 0), [...buffers, pageBuffer], [shape.heads, rows]);
      return;
    }
    // The prefill kernels stage one page table's keys for a block of rows: one sequence's rows only.
    const tensorKernel = oneSequence ? this.attentionTensorKernel(rows, shape.headDim) : undefined;
    if (tensorKernel) {
      // Prefill on tensor cores: blocks of query rows, scores and weighted values as matrix multiplies.
      this.dispatch(tensorKernel, params(0, 0), [...buffers, pageBuffer], [shape.heads, Math.ceil(rows / ATTENTION_TENSOR_ROWS)]);
      return;
    }
    if (oneSequence && rows >= ATTENTION_PREFILL_QUERIES && shape.headDim <= ATTENTION_PREFILL_MAX_HEAD_DIM && this.kernels.has('attentionPrefill')) {
      // Prefill: blocks of query rows share each staged key and value.
      this.dispatch('attentionPrefill', params(0, 0), [...buffers, pageBuffer], [shape.heads, Math.ceil(rows / ATTENTION_PREFILL_QUERIES)]);
      return;
    }
    // Flash-decoding: a long cache and few workgroups (decode) is split over more of them.
    const workgroups = shape.heads * rows;
    const splits = Math.min(MAX_ATTENTION_SPLITS, Math.ceil(length / ATTENTION_MIN_SPLIT), Math.ceil(ATTENTION_TARGET_WORKGROUPS / workgroups));
    if (splits <= 1 || (length <= ATTENTION_WIDE_MAX_LENGTH && this.kernels.has('attentionVec4Wide'))) {
      this.dispatch(splits <= 1 ? 'attentionVec4' : 'attentionVec4Wide', params(0, 0), [...buffers, this.unusedOutputs[0], pageBuffer], [shape.heads, rows]);
      return;
    }
    const splitLength = Math.ceil(length / splits);
    const used = Math.ceil(length / splitLength);
    const bytes = workgroups * used * (shape.headDim / 4 + 1) * 16;
    if (!this.attentionPartials || this.attentionPartials.size < bytes) this.attentionPartials = this.createBuffer(bytes, GPUBufferUsage.STORAGE);
    this.dispatch('attentionVec4', params(splitLength, used), [...buffers, this.attentionPartials, pageBuffer], [shape.heads, rows, used]);
    this.dispatch('attentionCombine', params(splitLength, used), [this.attentionPartials, tensor(out).buffer], [shape.heads, rows]);
  }

  argmax(out: IndexTensor, values: Tensor, firstRow: number, rows: number, count: number): void {
    const t = tensor(values);
    if (t.buffer.size < (firstRow + rows) * count * 4) throw new GpuError(`argmax of rows ${firstRow}..${firstRow + rows - 1} of ${count} values reads past its buffer`);
    this.dispatch('argmax', [count, firstRow, 0, 0], [t.buffer, indexTensor(out).buffer], [rows]);
  }

  sample(out: IndexTensor, logits: Tensor, count: number, rows: SampleRow[], tokenFlags: IndexTensor | null): void {
    if (rows.length === 0) return;
    const quads = Math.ceil(count / 4);
    const scratchBytes = rows.length * 2 * quads * 16; // per row: order keys, then masses
    if (!this.sampleScratch || this.sampleScratch.size < scratchBytes) {
      this.sampleScratch = this.createBuffer(scratchBytes, GPUBufferUsage.STORAGE);
    }
    const listBytes = rows.length * sampleListIds(count, this.sampleThreads) * 4;
    if (!this.sampleList || this.sampleList.size < listBytes) {
      this.sampleList = this.createBuffer(listBytes, GPUBufferUsage.STORAGE);
    }
    // The rows' parameters go to a ring of SAMPLE_PARAM_ROWS entries: a write lands before the
    // next submit, and one step's calls never wrap onto each other.
    if (rows.length > SAMPLE_PARAM_ROWS) throw new GpuError(`a sample call takes at most ${SAMPLE_PARAM_ROWS} rows, got ${rows.length}`);
    if (this.sampleParamsNext + rows.length > SAMPLE_PARAM_ROWS) this.sampleParamsNext = 0;
    const first = this.sampleParamsNext;
    this.sampleParamsNext += rows.length;
    const words = new ArrayBuffer(rows.length * SAMPLE_PARAM_BYTES);
    const u32 = new Uint32Array(words);
    const f32 = new Float32Array(words);
    rows.forEach(({ row, params, flagsRow }, i) => {
      const at = (i * SAMPLE_PARAM_BYTES) / 4;
      const greedy = params.temperature === 0;
      u32[at] = count;
      u32[at + 1] = params.topK;
      u32[at + 2] = (tokenFlags ? 1 : 0) | (greedy ? 2 : 0);
      f32[at + 3] = greedy ? 1 : 1 / params.temperature;
      f32[at + 4] = params.topP;
      f32[at + 5] = params.minP;
      f32[at + 6] = params.repetitionPenalty;
      f32[at + 7] = params.draw;
      f32[at + 8] = params.presencePenalty;
      f32[at + 9] = params.frequencyPenalty;
      u32[at + 10] = row;
      u32[at + 11] = flagsRow;
    });
    this.device.queue.writeBuffer(this.sampleParams, first * SAMPLE_PARAM_BYTES, words);
    this.dispatch('sample', [count, first, 0, 0],
      [tensor(logits).buffer, tokenFlags ? indexTensor(tokenFlags).buffer : this.unusedOutputs[0], this.sampleScratch, indexTensor(out).buffer, this.sampleParams, this.sampleList], [rows.length]);
  }

  logprobs(out: Tensor, logits: Tensor, count: number, rows: number, nextTokens: IndexTensor, sampled: IndexTensor, top: number): void {
    checkLogprobsTop(top, count);
    if (rows === 0) return;
    this.dispatch('logprobs', [count, top, logprobStride(top), 0],
      [tensor(logits).buffer, indexTensor(nextTokens).buffer, indexTensor(sampled).buffer, tensor(out).buffer], [rows]);
  }

  flush(): void {
    if (this.pass || this.encoder || this.slotsUsed > 0) this.submit();
  }

  submitIfIdle(): void {
    // Profile mode resolves its timestamps once a step, at the read.
    if (this.readsInFlight === 0 && this.dispatchIndex >= EARLY_SUBMIT_DISPATCHES && !this.profiler) this.submit();
  }

  async read(source: Tensor, elements: number): Promise<Float32Array> {
    const t = tensor(source);
    if (t.isHalfMatrix) throw new GpuError('read takes f32 tensors');
    return new Float32Array(await this.readBuffer(t.buffer, elements * 4));
  }

  async readIndices(source: IndexTensor, elements: number): Promise<Int32Array> {
    return new Int32Array(await this.readBuffer(indexTensor(source).buffer, elements * 4));
  }

  /** Submits what was recorded with a copy of `bytes` of `buffer` at the end, and returns them. */
  private async readBuffer(buffer: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    const free = this.staging.get(bytes) ?? [];
    this.staging.set(bytes, free);
    const staging = free.pop() ?? this.createBuffer(bytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    this.submit({ from: buffer, to: staging, bytes });
    this.lastStep.dispatches = this.dispatchesSinceRead;
    this.lastStep.submits = this.submitsSinceRead;
    this.dispatchesSinceRead = 0;
    this.submitsSinceRead = 0;
    this.readsInFlight++;
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (error) {
      throw this.errors.readFailed(error);
    } finally {
      this.readsInFlight--;
    }
    const result = staging.getMappedRange(0, bytes).slice(0);
    staging.unmap();
    free.push(staging);
    await this.profiler?.collect();
    this.errors.check();
    return result;
  }

  dispose(): void {
    for (const buffer of this.owned) buffer.destroy();
    this.owned.length = 0;
    for (const kernel of this.kernels.values()) kernel.bindGroups.children.clear();
    this.lastDispatches.length = 0;
    this.device.destroy();
  }
}

function sameBuffers(a: GPUBuffer[], b: GPUBuffer[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function tensor(t: Tensor): GpuTensor {
  if (!(t instanceof GpuTensor)) throw new TypeError('WebGPU backend was given a tensor from another backend');
  return t;
}

function indexTensor(t: IndexTensor): GpuIndexTensor {
  if (!(t instanceof GpuIndexTensor)) throw new TypeError('WebGPU backend was given an index tensor from another backend');
  return t;
}

function kvCache(c: KVCache): GpuKVCache {
  if (!(c instanceof GpuKVCache)) throw new TypeError('WebGPU backend was given a KV cache from another backend');
  return c;
}

/**
 * Timestamp queries around each compute pass (timeline mode), up to CAPACITY passes between takes
 * (later passes go untimed). Resolved and read only by take(), so steps keep their pace.
 */
class PassTimeline {
  static readonly CAPACITY = 2048;
  private readonly querySet: GPUQuerySet;
  private passes = 0;

  constructor(private readonly device: GPUDevice) {
    this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 * PassTimeline.CAPACITY });
  }

  next(): GPUComputePassTimestampWrites | undefined {
    if (this.passes === PassTimeline.CAPACITY) return undefined;
    const index = this.passes++;
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * index, endOfPassWriteIndex: 2 * index + 1 };
  }

  async take(): Promise<[number, number][]> {
    const count = 2 * this.passes;
    this.passes = 0;
    if (count === 0) return [];
    const resolved = this.device.createBuffer({ size: count * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const readable = this.device.createBuffer({ size: count * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = this.device.createCommandEncoder();
    encoder.resolveQuerySet(this.querySet, 0, count, resolved, 0);
    encoder.copyBufferToBuffer(resolved, 0, readable, 0, count * 8);
    this.device.queue.submit([encoder.finish()]);
    await readable.mapAsync(GPUMapMode.READ);
    const stamps = new BigUint64Array(readable.getMappedRange().slice(0));
    readable.destroy();
    resolved.destroy();
    return Array.from({ length: count / 2 }, (_, i) => [Number(stamps[2 * i]) / 1e3, Number(stamps[2 * i + 1]) / 1e3]);
  }
}

/** Timestamp queries around each dispatch (profile mode), summed per kernel name. */
export class Profiler {
  /** Dispatches timed per submit, between `resolve`s (4096 queries, the WebGPU maximum). */
  static readonly CAPACITY = 2048;
  private readonly querySet: GPUQuerySet;
  private readonly resolved: GPUBuffer;
  private readonly readable: GPUBuffer;
  private names: string[] = [];
  private pending: string[] = [];
  private readonly totals = new Map<string, { calls: number; ms: number }>();

  constructor(private readonly device: GPUDevice) {
    this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 * Profiler.CAPACITY });
    const bytes = 2 * Profiler.CAPACITY * 8;
    this.resolved = device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    this.readable = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  }

  next(name: string): GPUComputePassTimestampWrites {
    if (this.names.length === Profiler.CAPACITY) throw new GpuError(`profile mode records at most ${Profiler.CAPACITY} dispatches per step`);
    const index = this.names.length;
    this.names.push(name);
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * index, endOfPassWriteIndex: 2 * index + 1 };
  }

  resolve(encoder: GPUCommandEncoder): void {
    if (this.names.length === 0) return;
    if (this.pending.length > 0) throw new GpuError('profile mode needs each step read before the next is submitted');
    const count = 2 * this.names.length;
    encoder.resolveQuerySet(this.querySet, 0, count, this.resolved, 0);
    encoder.copyBufferToBuffer(this.resolved, 0, this.readable, 0, count * 8);
    this.pending = this.names;
    this.names = [];
  }

  async collect(): Promise<void> {
    if (this.pending.length === 0) return;
    await this.readable.mapAsync(GPUMapMode.READ, 0, this.pending.length * 16);
    const stamps = new BigUint64Array(this.readable.getMappedRange(0, this.pending.length * 16).slice(0));
    this.readable.unmap();
    this.pending.forEach((name, i) => {
      const entry = this.totals.get(name) ?? { calls: 0, ms: 0 };
      entry.calls++;
      entry.ms += Number(stamps[2 * i + 1] - stamps[2 * i]) / 1e6;
      this.totals.set(name, entry);
    });
    this.pending = [];
  }

  take(): Map<string, { calls: number; ms: number }> {
    const copy = new Map(this.totals);
    this.totals.clear();
    return copy;
  }
}
