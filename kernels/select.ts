// Choosing a backend by name. `auto` will prefer a hardware WebGPU adapter once that backend
// exists; today every choice runs on the CPU backend.
import type { Backend } from './backend.ts';
import { CpuBackend } from './cpu/backend.ts';

export const BACKEND_KINDS = ['auto', 'cpu'] as const;
export type BackendKind = (typeof BACKEND_KINDS)[number];

export function isBackendKind(name: string): name is BackendKind {
  return (BACKEND_KINDS as readonly string[]).includes(name);
}

export async function createBackend(kind: BackendKind): Promise<Backend> {
  switch (kind) {
    case 'auto':
    case 'cpu':
      return new CpuBackend();
  }
}
