// blr: the command-line entry point. Dispatches to a command; turns errors into one clear line
// on stderr and a non-zero exit (2 for usage errors, 1 for everything else).
import fs from 'node:fs';
import { UsageError } from './args.ts';
import { COMPRESS_HELP, runCompress } from './compress.ts';
import { CONVERT_HELP, runConvert } from './convert.ts';
import { GENERATE_HELP, runGenerate } from './generate.ts';
import { ROOFLINE_HELP, runRoofline } from './roofline.ts';
import { runServe, SERVE_HELP } from './serve.ts';

const HELP = `Usage: blr <command> [options]

An inference engine for dense and block low-rank Llama and GPT-2 models.

Commands:
  generate [PROMPT]      continue a prompt and stream the text (default model: stories260K)
  serve                  OpenAI-compatible HTTP server with continuous batching
  convert INPUT OUTDIR   llama2.c or GGUF checkpoint → Hugging Face model directory
  compress IN OUT        dense Llama or GPT-2 checkpoint → low-rank, Monarch or BLAST
  roofline --model M     bytes, FLOPs and roofline time of block low-rank layers (table, SVG)

Run 'blr <command> --help' for a command's options.
`;

const COMMANDS: Record<string, { run: (args: string[]) => Promise<void>; help: string }> = {
  generate: { run: runGenerate, help: GENERATE_HELP },
  serve: { run: runServe, help: SERVE_HELP },
  convert: { run: runConvert, help: CONVERT_HELP },
  compress: { run: runCompress, help: COMPRESS_HELP },
  roofline: { run: runRoofline, help: ROOFLINE_HELP },
};

function version(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    const topic = command === 'help' ? COMMANDS[rest[0]] : undefined;
    process.stdout.write(topic ? topic.help : HELP);
    return 0;
  }
  if (command === '--version' || command === '-v') {
    process.stdout.write(`blr ${version()}\n`);
    return 0;
  }
  const entry = COMMANDS[command];
  if (!entry) {
    process.stderr.write(`blr: unknown command "${command}"\n\n${HELP}`);
    return 2;
  }
  try {
    await entry.run(rest);
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`blr ${command}: ${error.message}\nRun 'blr ${command} --help' for usage.\n`);
      return 2;
    }
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`blr ${command}: error: ${message}\n`);
    if (process.env.BLR_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    return 1;
  }
}

// A closed pipe (`blr generate | head`) is the reader's choice, not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

process.exitCode = await main(process.argv.slice(2));
