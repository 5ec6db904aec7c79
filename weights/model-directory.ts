// A Hugging Face model directory: config.json, generation_config.json, tokenizer.json (or
// tokenizer.json.gz), tokenizer_config.json, and safetensors weights (single or sharded).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { CheckpointError, ShardedSafetensors } from './safetensors.ts';
import { TextTokenizer } from './tokenizer.ts';

type Json = Record<string, unknown>;

export interface ModelDirectory {
  path: string;
  config: Json;
  generationConfig: Json;
  tokenizer: TextTokenizer;
  /** tokenizer_config.json ({} when absent): special tokens and the chat template. */
  tokenizerConfig: Json;
  /** Ids that end generation: generation_config, config and tokenizer_config together. */
  eosTokenIds: number[];
  openTensors(): ShardedSafetensors;
}

function readJson(filePath: string, required: boolean): Json {
  if (!fs.existsSync(filePath)) {
    if (required) throw new CheckpointError(`${filePath}: missing`);
    return {};
  }
  try {
    const value = JSON.parse(fs.readFileSync(filePath, 'utf8'));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Json;
  } catch (error) {
    throw new CheckpointError(`${filePath}: not valid JSON (${(error as Error).message})`);
  }
}

export function readTokenizerJson(directory: string): Json {
  const plain = path.join(directory, 'tokenizer.json');
  if (fs.existsSync(plain)) return readJson(plain, true);
  const gzipped = `${plain}.gz`;
  if (fs.existsSync(gzipped)) {
    try {
      return JSON.parse(zlib.gunzipSync(fs.readFileSync(gzipped)).toString('utf8'));
    } catch (error) {
      throw new CheckpointError(`${gzipped}: not gzipped JSON (${(error as Error).message})`);
    }
  }
  throw new CheckpointError(`${directory}: no tokenizer.json or tokenizer.json.gz`);
}

export function readModelDirectory(directory: string): ModelDirectory {
  if (!fs.existsSync(directory) || !fs.statSync(directory).isDirectory()) {
    throw new CheckpointError(`${directory}: model directory not found`);
  }
  const config = readJson(path.join(directory, 'config.json'), true);
  const generationConfig = readJson(path.join(directory, 'generation_config.json'), false);
  const tokenizerConfig = readJson(path.join(directory, 'tokenizer_config.json'), false);
  const tokenizer = new TextTokenizer(readTokenizerJson(directory), tokenizerConfig);

  const eos = new Set<number>();
  for (const value of [generationConfig.eos_token_id, config.eos_token_id]) {
    for (const id of [value].flat()) if (typeof id === 'number') eos.add(id);
  }
  const eosToken = tokenizerConfig.eos_token;
  const eosText = typeof eosToken === 'string' ? eosToken : (eosToken as { content?: unknown } | undefined)?.content;
  if (typeof eosText === 'string') {
    const id = tokenizer.tokenId(eosText);
    if (id !== undefined) eos.add(id);
  }
  return {
    path: directory,
    config,
    generationConfig,
    tokenizer,
    tokenizerConfig,
    eosTokenIds: [...eos].sort((a, b) => a - b),
    openTensors: () => ShardedSafetensors.openDirectory(directory),
  };
}
