// blr compress IN OUT: a dense Llama or GPT-2 checkpoint → block low-rank (low-rank, Monarch or BLAST).
import { COMPRESS_PRESETS, compressCheckpoint, GPT2_PROJECTIONS, presetOptions, PROJECTIONS, type CompressOptions, type CompressPreset, type Projection } from '../models/compress.ts';
import { BACKEND_KINDS, isBackendKind } from '../kernels/select.ts';
import { numberOption, parseCommandLine, UsageError } from './args.ts';

export const COMPRESS_HELP = `Usage: blr compress IN OUT --method lowrank|monarch|blast (--preset NAME | --blocks B (--rank R | --ratio X)) [options]

Factorises the chosen projections of a dense Llama or GPT-2 checkpoint directory IN into block
low-rank form and writes OUT in blr's format (README: config blr_layers, factor tensors), tokenizer
files copied. Low-rank: truncated SVD. Monarch: truncated SVD of each sub-block (rank r/b).
BLAST: preconditioned gradient descent from the low-rank start. Runs on the GPU when there is
one (f32), else on the CPU (float64; hours per 7B layer). Prints each projection's relative
Frobenius error and size as it goes (stderr), then the totals.

Options:
  --method NAME        lowrank, monarch or blast
  --preset NAME        the paper's configuration: ${COMPRESS_PRESETS.join(', ')} (blocks, ranks, projections)
  --blocks B           blocks (Monarch, BLAST; low-rank has one)
  --rank R             rank of every chosen projection
  --ratio X            instead of --rank: keep X of each projection's parameters (0 < X < 1)
  --layers LIST        projections, comma-separated (default: all): ${PROJECTIONS.join(',')} for Llama,
                       ${GPT2_PROJECTIONS.join(',')} for GPT-2 (c_proj: the MLP's; attn.c_proj: the attention's)
  --iterations N       BLAST gradient-descent iterations (default 300)
  --backend NAME       ${BACKEND_KINDS.join(' | ')}: where the factorisations run (default auto: a
                       hardware WebGPU adapter when there is one, else the CPU; webgpu takes a
                       software adapter too)
  -h, --help           show this help
`;

export async function runCompress(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine('compress', args, {
    method: { type: 'string' },
    preset: { type: 'string' },
    blocks: { type: 'string' },
    rank: { type: 'string' },
    ratio: { type: 'string' },
    layers: { type: 'string' },
    iterations: { type: 'string' },
    backend: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(COMPRESS_HELP);
    return;
  }
  if (positionals.length !== 2) throw new UsageError(`expected IN and OUT, got ${positionals.length} argument(s)`, 'compress');
  const method = values.method;
  if (method !== 'lowrank' && method !== 'monarch' && method !== 'blast') throw new UsageError(`--method must be lowrank, monarch or blast, got ${JSON.stringify(method ?? null)}`, 'compress');
  let options: CompressOptions;
  if (values.preset !== undefined) {
    if (!(COMPRESS_PRESETS as readonly string[]).includes(values.preset)) throw new UsageError(`unknown --preset "${values.preset}" (known: ${COMPRESS_PRESETS.join(', ')})`, 'compress');
    if (values.blocks !== undefined || values.rank !== undefined || values.ratio !== undefined || values.layers !== undefined) {
      throw new UsageError('--preset sets the blocks, ranks and projections: leave out --blocks, --rank, --ratio and --layers', 'compress');
    }
    options = { method, ...presetOptions(values.preset as CompressPreset, method) };
  } else {
    if ((values.rank === undefined) === (values.ratio === undefined)) throw new UsageError('give --rank or --ratio (or --preset)', 'compress');
    const projections = values.layers?.split(',').map((p) => p.trim());
    const known: readonly string[] = [...PROJECTIONS, ...GPT2_PROJECTIONS];
    const unknown = projections?.find((p) => !known.includes(p));
    if (unknown !== undefined) throw new UsageError(`--layers: unknown projection "${unknown}" (known: ${PROJECTIONS.join(', ')} for Llama; ${GPT2_PROJECTIONS.join(', ')} for GPT-2)`, 'compress');
    options = {
      method,
      blocks: method === 'lowrank' ? 1 : numberOption('blocks', values.blocks, Number.NaN, { integer: true, min: 1 }),
      rank: values.rank === undefined ? undefined : numberOption('rank', values.rank, 0, { integer: true, min: 1 }),
      ratio: values.ratio === undefined ? undefined : numberOption('ratio', values.ratio, 0, { min: 1e-6, max: 1 }),
      projections: projections as Projection[] | undefined,
    };
    if (Number.isNaN(options.blocks)) throw new UsageError(`--blocks is required for ${method}`, 'compress');
  }
  options.iterations = numberOption('iterations', values.iterations, 300, { integer: true, min: 1 });
  const backend = values.backend ?? 'auto';
  if (!isBackendKind(backend)) throw new UsageError(`--backend must be one of ${BACKEND_KINDS.join(', ')}, got "${backend}"`, 'compress');
  options.backend = backend;
  const [input, output] = positionals;
  const results = await compressCheckpoint(input, output, { ...options, onProgress: (message) => process.stderr.write(`blr compress: ${message}\n`) });
  const dense = results.reduce((sum, r) => sum + r.denseBytes, 0);
  const compressed = results.reduce((sum, r) => sum + r.bytes, 0);
  const worst = results.reduce((max, r) => Math.max(max, r.error), 0);
  const mean = results.reduce((sum, r) => sum + r.error, 0) / Math.max(results.length, 1);
  const larger = results.filter((r) => r.bytes >= r.denseBytes);
  if (larger.length > 0) {
    process.stderr.write(`blr compress: warning: ${larger.length} of ${results.length} projections are no smaller than their dense weights (e.g. ${larger[0].module}, rank ${larger[0].shape.rank}: ${(larger[0].bytes / 1e6).toFixed(2)} MB against ${(larger[0].denseBytes / 1e6).toFixed(2)} MB); a lower --rank or a --ratio below 1 compresses\n`);
  }
  process.stdout.write(`${output}: ${results.length} projections as ${method}, ${(dense / 1e6).toFixed(2)} → ${(compressed / 1e6).toFixed(2)} MB (${((100 * compressed) / dense).toFixed(1)}%), relative error mean ${mean.toFixed(4)}, worst ${worst.toFixed(4)}\n`);
}
