// Kernel sources: WGSL files under wgsl/, composed with shared pieces from wgsl/common/ (WGSL has
// no includes), and kernels written by small TS functions for one shape.
import fs from 'node:fs';

const WGSL_DIRECTORY = new URL('./wgsl/', import.meta.url);

export type CommonPiece = 'matmul_common' | 'block_gemm_common' | 'workgroup_reduce' | 'subgroup_reduce' | 'attention_params' | 'kv_pages' | 'gemv_pair_swiglu' | 'gemv_pair_rope' | 'gemv_input' | 'block_z_store';

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

/**
 * A module's declarations renamed apart, so that two kernels can live in one module (WGSL has no
 * namespaces): every name declared at module scope (fn, var, const, override, struct, alias) gets
 * `prefix`, wherever it is used (not after a `.`: struct members keep theirs), and every
 * @binding(n) becomes @binding(n + bindingOffset). An entry point becomes a plain function: its
 * @compute and @workgroup_size go, and so do its parameters' @builtin attributes (the caller passes
 * them). Directives stay for composeWgsl to hoist. Names it does not declare (functions the caller
 * composes beside it) are left as they are. Throws where a struct member shares a renamed name,
 * which the renaming would break.
 */
export function namespaceWgsl(source: string, prefix: string, bindingOffset: number): string {
  // Comments out first: names in them are not declarations.
  const code = source.replace(/\/\/[^\n]*/g, '').replace(/\/\*[\s\S]*?\*\//g, '');
  const names = new Set<string>();
  let depth = 0;
  const declaration = /^\s*(?:@[\w]+(?:\([^)]*\))?\s*)*(?:fn|var(?:<[^>]*>)?|const|override|struct|alias)\s+([A-Za-z_]\w*)/;
  for (const line of code.split('\n')) {
    const match = depth === 0 ? declaration.exec(line) : null;
    if (match) names.add(match[1]);
    for (const ch of line) {
      if (ch === '{') depth++;
      else if (ch === '}') depth--;
    }
  }
  const members = new Set([...code.matchAll(/\bstruct\s+\w+\s*\{([^}]*)\}/g)].flatMap(([, body]) => [...body.matchAll(/([A-Za-z_]\w*)\s*:/g)].map((m) => m[1])));
  const clash = [...members].filter((m) => names.has(m));
  if (clash.length > 0) throw new Error(`namespaceWgsl: struct members named as module declarations (${clash.join(', ')})`);
  const renamed = source
    .replace(/@compute\s*@workgroup_size\([^)]*\)\s*/g, '')
    .replace(/@builtin\([^)]*\)\s*/g, '')
    .replace(/@binding\((\d+)\)/g, (_, n: string) => `@binding(${Number(n) + bindingOffset})`);
  if (names.size === 0) return renamed;
  const pattern = new RegExp(`(?<![\\w.])(${[...names].sort((a, b) => b.length - a.length).join('|')})(?!\\w)`, 'g');
  return renamed.replace(pattern, `${prefix}$1`);
}
