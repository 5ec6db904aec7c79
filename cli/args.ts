// Shared argument handling: strict parsing (unknown flags are errors), typed numeric options, and
// the error type that main.ts turns into a message and an exit code.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { KV_PRECISIONS, type KVPrecision } from '../kernels/backend.ts';

export class UsageError extends Error {
  constructor(message: string, readonly command?: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function parseCommandLine<T extends ParseArgsConfig['options']>(command: string, args: string[], options: T) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/\. To specify a positional argument.*$/s, ''), command);
  }
}

/** --kv-cache: undefined (the backend's default) or one of KV_PRECISIONS. */
export function kvCacheOption(value: string | undefined, command: string): KVPrecision | undefined {
  if (value === undefined) return undefined;
  const precision = KV_PRECISIONS.find((p) => p === value);
  if (!precision) throw new UsageError(`--kv-cache must be one of ${KV_PRECISIONS.join(', ')}, got "${value}"`, command);
  return precision;
}

export function numberOption(name: string, value: string | undefined, fallback: number, check: { integer?: boolean; min?: number; max?: number } = {}): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  const ok = value.trim() !== '' && Number.isFinite(parsed) && (!check.integer || Number.isInteger(parsed))
    && (check.min === undefined || parsed >= check.min) && (check.max === undefined || parsed <= check.max);
  if (!ok) {
    const kind = check.integer ? 'an integer' : 'a number';
    const range = check.min !== undefined && check.max !== undefined ? ` in [${check.min}, ${check.max}]` : check.min !== undefined ? ` ≥ ${check.min}` : '';
    throw new UsageError(`--${name} must be ${kind}${range}, got "${value}"`);
  }
  return parsed;
}
