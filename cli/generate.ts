// blr generate [PROMPT]: continue a prompt with a model, streaming the text to stdout.
import { DEFAULT_MODEL_DIR, loadEngine } from '../engine/load.ts';
import { randomSeed } from '../engine/rng.ts';
import type { SamplingOptions } from '../engine/sampler.ts';
import { BACKEND_KINDS, isBackendKind } from '../kernels/select.ts';
import { kvCacheOption, numberOption, parseCommandLine, UsageError } from './args.ts';

export const GENERATE_HELP = `Usage: blr generate [PROMPT] [options]

Continues PROMPT (or, when absent, the text on standard input) with a model and streams the
text to stdout as it is produced. Notices and statistics go to stderr.

Options:
  --model DIR             Hugging Face model directory (default: the bundled stories260K)
  --max-tokens N          most tokens to generate (default 256)
  --temperature T         0 = greedy (default 0)
  --top-k K               keep the K most likely tokens (default 0 = all)
  --top-p P               keep the smallest set with probability mass ≥ P (default 1 = all)
  --min-p P               drop tokens below P × the top probability (default 0 = none)
  --repetition-penalty R  > 1 discourages repeating tokens (default 1 = off)
  --presence-penalty P    in [-2, 2]: subtract P from tokens the output holds (default 0)
  --frequency-penalty P   in [-2, 2]: subtract P per time the output holds a token (default 0)
  --seed N                seed for sampling; the same seed gives the same text (default random)
  --stop TEXT             stop when TEXT appears (may be given several times)
  --ignore-eos            keep generating past end-of-sequence tokens
  --backend NAME          ${BACKEND_KINDS.join(' | ')} (default auto: a hardware WebGPU adapter when
                          there is one, else the CPU; webgpu also accepts a software adapter)
  --kv-cache TYPE         f16 | f32: how the KV cache stores keys and values (default f16 on a
                          GPU with shader-f16, else f32; f16 halves its memory)
  --json                  print one line of JSON instead of the stream:
                          {"prompt_ids", "ids", "text", "finish_reason", "timings":
                           {"load_ms", "prefill_ms", "decode_tokens_per_s", "backend"}}
  -h, --help              show this help
`;

const OPTIONS = {
  model: { type: 'string' },
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  'presence-penalty': { type: 'string' },
  'frequency-penalty': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
  'ignore-eos': { type: 'boolean' },
  backend: { type: 'string' },
  'kv-cache': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function runGenerate(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine('generate', args, OPTIONS);
  if (values.help) {
    process.stdout.write(GENERATE_HELP);
    return;
  }
  if (positionals.length > 1) throw new UsageError(`expected at most one PROMPT argument, got ${positionals.length} (quote the prompt)`, 'generate');
  const backend = values.backend ?? 'auto';
  if (!isBackendKind(backend)) throw new UsageError(`--backend must be one of ${BACKEND_KINDS.join(', ')}, got "${backend}"`, 'generate');
  const kvCache = kvCacheOption(values['kv-cache'], 'generate');
  const sampling: SamplingOptions = {
    temperature: numberOption('temperature', values.temperature, 0, { min: 0 }),
    topK: numberOption('top-k', values['top-k'], 0, { integer: true, min: 0 }),
    topP: numberOption('top-p', values['top-p'], 1, { min: Number.MIN_VALUE, max: 1 }),
    minP: numberOption('min-p', values['min-p'], 0, { min: 0, max: 1 }),
    repetitionPenalty: numberOption('repetition-penalty', values['repetition-penalty'], 1, { min: Number.MIN_VALUE }),
    presencePenalty: numberOption('presence-penalty', values['presence-penalty'], 0, { min: -2, max: 2 }),
    frequencyPenalty: numberOption('frequency-penalty', values['frequency-penalty'], 0, { min: -2, max: 2 }),
    seed: numberOption('seed', values.seed, randomSeed(), { integer: true, min: 0, max: 0xffffffff }),
  };
  const maxTokens = numberOption('max-tokens', values['max-tokens'], 256, { integer: true, min: 1 });

  let prompt = positionals[0];
  if (prompt === undefined) {
    if (process.stdin.isTTY) throw new UsageError('no prompt: pass PROMPT or pipe text on standard input', 'generate');
    prompt = await readStdin();
  }

  const engine = await loadEngine(values.model ?? DEFAULT_MODEL_DIR, {
    backend,
    kvCache,
    onProgress: loadProgress(),
    onNotice: (message) => process.stderr.write(`blr: ${message}\n`),
  });
  const { model, generator, directory } = engine;
  process.stderr.write(`blr: ${directory.path} (${model.config.architecture}, ${(model.parameters / 1e6).toFixed(2)}M parameters) on ${model.backend.description}, loaded in ${engine.loadMs.toFixed(0)} ms\n`);
  const promptIds = directory.tokenizer.encode(prompt);

  const json = values.json === true;
  if (!json) process.stdout.write(prompt);
  const result = await generator.generate({
    promptIds,
    maxTokens,
    sampling,
    stop: values.stop,
    ignoreEos: values['ignore-eos'],
    onText: json ? undefined : (text) => process.stdout.write(text),
  });
  const { timings } = result;
  if (json) {
    process.stdout.write(JSON.stringify({
      prompt_ids: result.promptIds,
      ids: result.ids,
      text: result.text,
      finish_reason: result.finishReason,
      timings: {
        load_ms: round(engine.loadMs),
        prefill_ms: round(timings.prefillMs),
        decode_tokens_per_s: round(timings.decodeTokensPerS),
        backend: model.backend.description,
      },
    }) + '\n');
  } else {
    process.stdout.write('\n');
    process.stderr.write(`blr: ${result.ids.length} tokens (finish: ${result.finishReason}); prompt ${promptIds.length} tokens in ${timings.prefillMs.toFixed(1)} ms; decode ${timings.decodeTokensPerS.toFixed(0)} tokens/s\n`);
  }
}

/** A live "loading NN%" line on a terminal for checkpoints big enough to wait for. */
function loadProgress(): ((loadedBytes: number, totalBytes: number) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  let shown = -1;
  return (loaded, total) => {
    if (total < 64 * 2 ** 20) return;
    const percent = Math.floor((100 * loaded) / total);
    if (percent === shown) return;
    shown = percent;
    process.stderr.write(`\rblr: loading weights ${percent}% (${(loaded / 2 ** 30).toFixed(2)} of ${(total / 2 ** 30).toFixed(2)} GiB)${loaded === total ? '\n' : ''}`);
  };
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
