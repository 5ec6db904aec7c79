// The load program's clients (bench/load.ts): streaming completions against a server, in turn per
// client, for a level's seconds. Runs in the server's process, or, with --client-process, in a
// child process of its own (this file run with tsx), so that parsing the streams does not share
// the server's event loop and the server's figures are its own. Requests and prompts are the same
// either way (one seeded generator, in the same order).
import { fileURLToPath } from 'node:url';
import { Rng } from '../engine/rng.ts';

export interface ClientOptions {
  base: string;
  model: string;
  promptTokens: number;
  vocabSize: number;
  maxTokens: number;
  temperature: number;
  /** Alternatives asked for with each token's logprob; undefined: no logprobs. */
  logprobs?: number;
}

export interface RequestOutcome {
  ok: boolean;
  tokens: number;
  firstTokenMs: number;
  error?: string;
}

export interface LevelResult {
  outcomes: RequestOutcome[];
  wallS: number;
}

/** What bench/load.ts calls, in its process or through the child's messages. */
export interface Clients {
  warmUp(clients: number): Promise<void>;
  level(clients: number, seconds: number): Promise<LevelResult>;
  close(): void;
}

export class LoadClients implements Clients {
  private readonly rng = new Rng(7);

  constructor(private readonly options: ClientOptions) {}

  private randomPrompt(): number[] {
    const { promptTokens, vocabSize } = this.options;
    return Array.from({ length: promptTokens }, () => 3 + Math.floor(this.rng.next() * (Math.min(vocabSize, 32000) - 3)));
  }

  /** One streaming completion; reads the SSE stream to its end. */
  private async streamOnce(promptIds: number[], seed: number): Promise<RequestOutcome> {
    const { base, model, maxTokens, temperature, logprobs } = this.options;
    const start = performance.now();
    let firstTokenMs = Number.NaN;
    let tokens = 0;
    try {
      const response = await fetch(`${base}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model, prompt: promptIds, max_tokens: maxTokens, temperature, seed, ignore_eos: true, stream: true, stream_options: { include_usage: true },
          ...(logprobs !== undefined ? { logprobs } : {}),
        }),
      });
      if (!response.ok || !response.body) return { ok: false, tokens: 0, firstTokenMs, error: `HTTP ${response.status}: ${await response.text()}` };
      const decoder = new TextDecoder();
      let buffered = '';
      let done = false;
      for await (const bytes of response.body) {
        buffered += decoder.decode(bytes as Uint8Array, { stream: true });
        let end: number;
        while ((end = buffered.indexOf('\n\n')) !== -1) {
          const event = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          if (!event.startsWith('data: ')) continue;
          const data = event.slice(6);
          if (data === '[DONE]') {
            done = true;
            continue;
          }
          const chunk = JSON.parse(data);
          if (chunk.error) return { ok: false, tokens, firstTokenMs, error: chunk.error.message };
          if (chunk.usage) tokens = chunk.usage.completion_tokens;
          else if (Number.isNaN(firstTokenMs) && chunk.choices?.[0]?.text) firstTokenMs = performance.now() - start;
        }
      }
      return done ? { ok: true, tokens, firstTokenMs } : { ok: false, tokens, firstTokenMs, error: 'stream ended without [DONE]' };
    } catch (error) {
      return { ok: false, tokens, firstTokenMs, error: (error as Error).message };
    }
  }

  /** One request from each of `clients` at once (compiles pipelines, grows scratch buffers). */
  async warmUp(clients: number): Promise<void> {
    await Promise.all(Array.from({ length: clients }, (_, i) => this.streamOnce(this.randomPrompt(), i)));
  }

  /** `clients` clients, each sending request after request until `seconds` have passed. */
  async level(clients: number, seconds: number): Promise<LevelResult> {
    const outcomes: RequestOutcome[] = [];
    const start = performance.now();
    const deadline = start + seconds * 1000;
    await Promise.all(Array.from({ length: clients }, async (_, c) => {
      let seed = c * 1000;
      while (performance.now() < deadline) outcomes.push(await this.streamOnce(this.randomPrompt(), seed++));
    }));
    return { outcomes, wallS: (performance.now() - start) / 1000 };
  }

  close(): void {}
}

type Call = { method: 'warmUp'; clients: number } | { method: 'level'; clients: number; seconds: number };
type Request = Call & { id: number };

/** The clients in a child process: this file, run with tsx, answering bench/load.ts's messages. */
export async function childClients(options: ClientOptions): Promise<Clients> {
  const { fork } = await import('node:child_process');
  const child = fork(fileURLToPath(import.meta.url), [JSON.stringify(options)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  child.on('message', (message: { id: number; result: unknown }) => {
    pending.get(message.id)?.resolve(message.result);
    pending.delete(message.id);
  });
  child.on('exit', (code) => {
    for (const { reject } of pending.values()) reject(new Error(`the client process exited (${code})`));
    pending.clear();
  });
  let next = 0;
  const call = (request: Call) => new Promise<unknown>((resolve, reject) => {
    const id = next++;
    pending.set(id, { resolve, reject });
    child.send({ ...request, id });
  });
  return {
    warmUp: async (clients) => void (await call({ method: 'warmUp', clients })),
    level: async (clients, seconds) => (await call({ method: 'level', clients, seconds })) as LevelResult,
    close: () => child.kill(),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.send) {
  const clients = new LoadClients(JSON.parse(process.argv[2]) as ClientOptions);
  process.on('message', async (request: Request) => {
    const result = request.method === 'warmUp' ? await clients.warmUp(request.clients) : await clients.level(request.clients, request.seconds);
    process.send!({ id: request.id, result: result ?? null });
  });
}
