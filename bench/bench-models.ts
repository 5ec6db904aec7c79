// The benchmarks' full-size models: a real config from bench/configs/, dense or compressed at the
// paper's configurations (models/compress.ts presets), for loadRandomModel.
import fs from 'node:fs';
import path from 'node:path';
import { blrLayersConfig, planCompression, presetOptions, type CompressPreset } from '../models/compress.ts';
import { parseModelConfig } from '../models/config.ts';

export const COMPRESS_METHODS = ['lowrank', 'monarch', 'blast'] as const;
export type CompressMethod = (typeof COMPRESS_METHODS)[number];

/** Model `name`'s Hugging Face config (and its path), with `blr_layers` for a compressed variant. */
export function benchModelConfig(name: string, variant: 'dense' | CompressMethod): { config: Record<string, unknown>; configPath: string } {
  const configPath = path.join('bench', 'configs', `${name}.json`);
  const dense = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  if (variant === 'dense') return { config: dense, configPath };
  const layers = planCompression(parseModelConfig(dense, configPath), { method: variant, ...presetOptions(name as CompressPreset, variant) });
  return { config: { ...dense, blr_layers: blrLayersConfig(layers, variant) }, configPath };
}
