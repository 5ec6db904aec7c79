// Shared test plumbing: fixture paths, temp directories, reference outputs, tiny models.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TINY_MODELS, writeTinyModel, type TinyModel } from './fixtures/tiny-models.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const FIXTURES = path.join(ROOT, 'tests', 'fixtures');
export const STORIES_SOURCES = path.join(FIXTURES, 'stories260K');
export const DEFAULT_MODEL = path.join(ROOT, 'assets', 'stories260K');

export function tempDirectory(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `blr-${prefix}-`));
}

export interface Reference {
  prompt: string;
  prompt_ids: number[];
  top_ids: number[];
  top_logits: number[];
  greedy_ids: number[];
  greedy_text: string;
  probe_ids: number[][];
}

export function reference(name: string): Reference {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, 'reference', `${name}.json`), 'utf8'));
}

export const PROBES: string[] = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'tokenizer-probes.json'), 'utf8'));

const built = new Map<string, string>();
/** Writes a tiny fixture model once per test process and returns its directory. */
export function tinyModelDirectory(name: string): string {
  const existing = built.get(name);
  if (existing) return existing;
  const model = TINY_MODELS.find((m) => m.name === name) as TinyModel;
  const directory = writeTinyModel(model, path.join(tempDirectory('tiny'), name));
  built.set(name, directory);
  return directory;
}

/** Largest |a − b| / max(1, |b|) over paired values. */
export function maxRelativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i] - expected[i]) / Math.max(1, Math.abs(expected[i])));
  }
  return worst;
}

/** Runs the blr command as a user does: a subprocess, its exit status, stdout and stderr. */
export function runBlr(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [path.join(ROOT, 'cli', 'blr.mjs'), ...args], { input, encoding: 'utf8', timeout: 120_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}
