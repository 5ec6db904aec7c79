// blr convert INPUT OUTDIR: llama2.c or GGUF checkpoints → a Hugging Face model directory.
import { convertCheckpoint } from '../weights/convert.ts';
import { parseCommandLine, UsageError } from './args.ts';

export const CONVERT_HELP = `Usage: blr convert INPUT OUTDIR [--tokenizer FILE]

Converts a llama2.c checkpoint (.bin) or a GGUF file (llama architecture, f32/f16 tensors) into a
Hugging Face model directory: config.json, generation_config.json, model.safetensors,
tokenizer.json and tokenizer_config.json. The SentencePiece vocabulary (llama2.c's tokenizer .bin,
or the GGUF metadata) becomes a BPE tokenizer.json with byte fallback.

Options:
  --tokenizer FILE   llama2.c tokenizer .bin (default: tok<vocab>.bin or tokenizer.bin beside INPUT)
  -h, --help         show this help
`;

export async function runConvert(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine('convert', args, {
    tokenizer: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(CONVERT_HELP);
    return;
  }
  if (positionals.length !== 2) throw new UsageError(`expected INPUT and OUTDIR, got ${positionals.length} argument(s)`, 'convert');
  const [input, output] = positionals;
  const result = await convertCheckpoint(input, output, {
    tokenizerPath: values.tokenizer,
    onProgress: (message) => process.stderr.write(`blr convert: ${message}\n`),
  });
  process.stdout.write(`${result.outputDirectory}: ${result.tensors} tensors, ${result.parameters.toLocaleString('en-US')} parameters (from ${result.format})\n`);
}
