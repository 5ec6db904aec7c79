// Choosing a backend by name. `auto` takes a hardware WebGPU adapter when there is one and falls
// back to the CPU backend with a one-line notice; `webgpu` insists (a software adapter will do);
// `cpu` never touches the GPU.
import type { Backend, KVPrecision } from './backend.ts';
import { CpuBackend } from './cpu/backend.ts';
import type { GpuLinalg } from './webgpu/linalg.ts';

export const BACKEND_KINDS = ['auto', 'cpu', 'webgpu'] as const;
export type BackendKind = (typeof BACKEND_KINDS)[number];

export function isBackendKind(name: string): name is BackendKind {
  return (BACKEND_KINDS as readonly string[]).includes(name);
}

/**
 * `kvCache`: how the KV cache stores keys and values (Backend.kvPrecision); by default f16 on a GPU
 * with shader-f16, else f32. The CPU backend keeps f32 arrays either way (f16 rounds the values).
 */
export async function createBackend(kind: BackendKind, notice: (message: string) => void = () => {}, kvCache?: KVPrecision): Promise<Backend> {
  const cpu = () => new CpuBackend({ kvPrecision: kvCache });
  if (kind === 'cpu') return cpu();
  // Loaded only when asked for: the CPU path never pays for Dawn's native module.
  const { WebGpuBackend } = await import('./webgpu/backend.ts');
  return (await openGpuOrNot(kind, (allowSoftware) => WebGpuBackend.create({ allowSoftware, kvPrecision: kvCache }), (reason) => notice(`${reason}; using the CPU backend`))) ?? cpu();
}

/**
 * The GPU's linear algebra for factorising weights (`blr compress`), or undefined where the
 * factorisations run on the CPU (`cpu`, or `auto` without a hardware adapter, with a notice).
 */
export async function openLinalg(kind: BackendKind, notice: (message: string) => void = () => {}): Promise<GpuLinalg | undefined> {
  if (kind === 'cpu') return undefined;
  const { GpuLinalg: Linalg } = await import('./webgpu/linalg.ts');
  return openGpuOrNot(kind, (allowSoftware) => Linalg.open({ allowSoftware }), (reason) => notice(`${reason}; factorising on the CPU`));
}

/** `webgpu` insists (a software adapter will do); `auto` takes a hardware adapter or, without one, undefined. */
async function openGpuOrNot<T>(kind: Exclude<BackendKind, 'cpu'>, open: (allowSoftware: boolean) => Promise<T>, notice: (reason: string) => void): Promise<T | undefined> {
  const { GpuUnavailableError } = await import('./webgpu/gpu.ts');
  if (kind === 'webgpu') return open(true);
  try {
    return await open(false);
  } catch (error) {
    if (!(error instanceof GpuUnavailableError)) throw error;
    notice(error.message);
    return undefined;
  }
}
