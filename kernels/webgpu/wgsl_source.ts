// Kernel sources: WGSL files under wgsl/, composed with shared pieces from wgsl/common/ (WGSL has
// no includes), and kernels written by small TS functions for one shape.
import fs from 'node:fs';

const WGSL_DIRECTORY = new URL('./wgsl/', import.meta.url);

export type CommonPiece = 'matmul_common' | 'block_gemm_common' | 'workgroup_reduce' | 'subgroup_reduce' | 'attention_params' | 'kv_pages' | 'gemv_pair_swiglu' | 'gemv_pair_rope';

/**
 * Joins WGSL sources into one module. `enable` and `diagnostic` directives must open a module,
 * so they are hoisted from every part.
 */
export function composeWgsl(parts: string[]): string {
  const directive = /^(enable|diagnostic)\b.*;\s*$/;
  const lines = parts.join('\n').split('\n');
  const directives = [...new Set(lines.filter((l) => directive.test(l)))];
  return [...directives, ...lines.filter((l) => !directive.test(l))].join('\n');
}

/**
 * `alias name = type;` (with f16 enabled for f16): the element type of buffers whose precision the
 * backend chooses, composed into the kernels that declare them (the KV cache's `kv_scalar`, BLAST's
 * z in wgsl/blast_couple.wgsl).
 */
export function scalarAlias(name: string, type: 'f32' | 'f16'): string {
  return type === 'f16' ? `enable f16;\nalias ${name} = f16;` : `alias ${name} = f32;`;
}

/** The shared pieces' WGSL, in order. */
export function commonWgsl(...common: CommonPiece[]): string[] {
  return common.map((c) => fs.readFileSync(new URL(`common/${c}.wgsl`, WGSL_DIRECTORY), 'utf8'));
}

/** A kernel's WGSL: its file composed with shared pieces from wgsl/common/. */
export function wgsl(file: string, ...common: CommonPiece[]): string {
  return composeWgsl([...commonWgsl(...common), fs.readFileSync(new URL(file, WGSL_DIRECTORY), 'utf8')]);
}
