// Builds engine/native/memory.c into build/blr_memory.node (npm runs this after install). Optional:
// where there is no C compiler, no Node headers or no glibc, it says so and the engine runs
// without returning idle memory to the system (engine/native.ts).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
const output = path.join(here, 'build', 'blr_memory.node');

function nodeHeaders(): string | undefined {
  const candidates = [
    process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include', 'node'),
    path.join(path.dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ];
  return candidates.find((dir): dir is string => !!dir && fs.existsSync(path.join(dir, 'node_api.h')));
}

function build(): string {
  if (process.platform !== 'linux') return `skipped: malloc_trim is glibc's (this is ${process.platform})`;
  const headers = nodeHeaders();
  if (!headers) return 'skipped: no Node headers (node_api.h) found';
  const compiler = process.env.CC ?? 'cc';
  fs.mkdirSync(path.dirname(output), { recursive: true });
  const temporary = `${output}.${process.pid}`;
  try {
    execFileSync(compiler, ['-O2', '-fPIC', '-shared', '-Wall', '-Werror', '-I', headers, '-o', temporary, path.join(here, 'memory.c'), '-ldl'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    const reason = (error as { stderr?: Buffer }).stderr?.toString().trim() || (error as Error).message;
    return `skipped: ${compiler} failed: ${reason.split('\n').slice(0, 3).join(' ')}`;
  }
  fs.renameSync(temporary, output);
  return `built ${path.relative(process.cwd(), output)}`;
}

console.log(`blr native memory helper: ${build()}`);
