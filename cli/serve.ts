// blr serve: the OpenAI-compatible HTTP server. Listens at once; the model loads behind it
// (/health answers 503 until it is ready).
import { DEFAULT_MODEL_DIR } from '../engine/load.ts';
import { BACKEND_KINDS, isBackendKind } from '../kernels/select.ts';
import { buildApp } from '../server/app.ts';
import { DEFAULT_CONTEXT, DEFAULT_KV_BYTES, loadServedModel } from '../server/model.ts';
import { kvCacheOption, numberOption, parseCommandLine, UsageError } from './args.ts';

export const SERVE_HELP = `Usage: blr serve [options]

Serves a model over an OpenAI-compatible HTTP API: POST /v1/completions and
/v1/chat/completions (streaming as server-sent events), GET /v1/models, /health, /metrics
(Prometheus), POST /tokenize and /detokenize. Requests are batched continuously over a paged
KV cache. Logs are JSON lines (pino) on stdout.

Options:
  --model DIR         Hugging Face model directory (default: the bundled stories260K)
  --name NAME         the model name clients send (default: the directory's name)
  --host HOST         address to listen on (default 127.0.0.1)
  --port N            port (default 8000; 0 picks a free one)
  --api-key KEY       require "Authorization: Bearer KEY" (default: no key; also BLR_API_KEY)
  --max-batch N       sequences decoding at once (default 16)
  --max-queue N       requests waiting beyond the batch; more get 429 (default 64)
  --ctx N             positions per sequence, prompt + output (default: the model's, at most ${DEFAULT_CONTEXT})
  --kv-blocks N       KV-cache blocks of 16 positions (default: max-batch full-context sequences,
                      at most ${DEFAULT_KV_BYTES / 2 ** 30} GiB of them); a request waits until the blocks for its
                      prompt + max_tokens are free
  --backend NAME      ${BACKEND_KINDS.join(' | ')} (default auto)
  --kv-cache TYPE     f16 | f32: how the KV cache stores keys and values (default f16 on a GPU
                      with shader-f16, else f32; f16 holds twice the positions in the same memory)
  --log-level LEVEL   fatal | error | warn | info | debug | trace (default info)
  -h, --help          show this help
`;

const OPTIONS = {
  model: { type: 'string' },
  name: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  'api-key': { type: 'string' },
  'max-batch': { type: 'string' },
  'max-queue': { type: 'string' },
  ctx: { type: 'string' },
  'kv-blocks': { type: 'string' },
  backend: { type: 'string' },
  'kv-cache': { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

export async function runServe(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine('serve', args, OPTIONS);
  if (values.help) {
    process.stdout.write(SERVE_HELP);
    return;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}" (the model is --model DIR)`, 'serve');
  const backend = values.backend ?? 'auto';
  if (!isBackendKind(backend)) throw new UsageError(`--backend must be one of ${BACKEND_KINDS.join(', ')}, got "${backend}"`, 'serve');
  const kvCache = kvCacheOption(values['kv-cache'], 'serve');
  const logLevel = values['log-level'] ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`, 'serve');
  const port = numberOption('port', values.port, 8000, { integer: true, min: 0, max: 65535 });
  const maxBatch = numberOption('max-batch', values['max-batch'], 16, { integer: true, min: 1, max: 256 });
  const maxQueue = numberOption('max-queue', values['max-queue'], 64, { integer: true, min: 0 });
  const contextLength = values.ctx === undefined ? undefined : numberOption('ctx', values.ctx, 0, { integer: true, min: 2 });
  const kvBlocks = values['kv-blocks'] === undefined ? undefined : numberOption('kv-blocks', values['kv-blocks'], 0, { integer: true, min: 1 });
  const apiKey = values['api-key'] ?? process.env.BLR_API_KEY;
  const host = values.host ?? '127.0.0.1';
  const directory = values.model ?? DEFAULT_MODEL_DIR;

  let announceModel: (() => void) | undefined;
  // Loading progress in the log, every tenth of the checkpoint's bytes.
  let loggedTenths = 0;
  const onProgress = (loaded: number, total: number) => {
    const tenths = Math.floor((10 * loaded) / Math.max(1, total));
    if (tenths <= loggedTenths) return;
    loggedTenths = tenths;
    app.log.info({ loadedMB: Math.round(loaded / 2 ** 20), totalMB: Math.round(total / 2 ** 20) }, `loading the model: ${tenths * 10}%`);
  };
  // Loading starts once the server listens (a turn of the event loop later).
  const model = new Promise<void>((resolve) => (announceModel = resolve)).then(() => loadServedModel(directory, {
    backend, kvCache, maxBatch, maxQueue, contextLength, kvBlocks, name: values.name, onProgress,
    onNotice: (message) => app.log.warn(message),
  }));
  const app = buildApp({ model, apiKey, logger: { level: logLevel } });
  const address = await app.listen({ host, port });
  app.log.info({ address, model: directory, maxBatch, maxQueue, auth: apiKey ? 'bearer' : 'none' }, 'listening; loading the model');
  announceModel!();
  model.then(
    (served) => app.log.info({ model: served.name, contextLength: served.contextLength, kvBlocks: served.scheduler.allocator.total, kvCache: served.scheduler.model.backend.kvPrecision, backend: served.scheduler.model.backend.description }, 'model loaded; ready'),
    () => undefined, // the app logs the failure; /health reports it
  );

  // Stop cleanly on SIGINT/SIGTERM: no new connections, in-flight requests end, the cache is freed.
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      app.log.info({ signal }, 'shutting down');
      void app.close()
        .then(() => model.then((served) => served.scheduler.close(), () => undefined))
        .finally(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}
