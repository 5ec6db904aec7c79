// Choosing a backend by name. `auto` takes a hardware WebGPU adapter when there is one and falls
// back to the CPU backend with a one-line notice; `webgpu` insists (a software adapter will do);
// `cpu` never touches the GPU.
import type { Backend } from './backend.ts';
import { CpuBackend } from './cpu/backend.ts';

export const BACKEND_KINDS = ['auto', 'cpu', 'webgpu'] as const;
export type BackendKind = (typeof BACKEND_KINDS)[number];

export function isBackendKind(name: string): name is BackendKind {
  return (BACKEND_KINDS as readonly string[]).includes(name);
}

export async function createBackend(kind: BackendKind, notice: (message: string) => void = () => {}): Promise<Backend> {
  if (kind === 'cpu') return new CpuBackend();
  // Loaded only when asked for: the CPU path never pays for Dawn's native module.
  const { WebGpuBackend } = await import('./webgpu/backend.ts');
  const { GpuUnavailableError } = await import('./webgpu/gpu.ts');
  if (kind === 'webgpu') return WebGpuBackend.create({ allowSoftware: true });
  try {
    return await WebGpuBackend.create({ allowSoftware: false });
  } catch (error) {
    if (!(error instanceof GpuUnavailableError)) throw error;
    notice(`${error.message}; using the CPU backend`);
    return new CpuBackend();
  }
}
