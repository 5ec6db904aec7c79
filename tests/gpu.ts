// Getting a WebGPU backend in tests. In CI a missing adapter is a failure (CI installs lavapipe);
// elsewhere the WebGPU suites are skipped with a visible message.
import { WebGpuBackend } from '../kernels/webgpu/backend.ts';

export interface GpuForTests {
  backend: WebGpuBackend | undefined;
  reason: string;
}

const opened = new Map<boolean, Promise<GpuForTests>>();

/**
 * The shared test backend; `portable` leaves subgroups and subgroup matrices off and keeps the KV
 * cache in f32, as on adapters without shader-f16 (the default backend stores it in f16).
 */
export function gpuForTests(portable = false): Promise<GpuForTests> {
  let backend = opened.get(portable);
  if (!backend) {
    backend = WebGpuBackend.create({ allowSoftware: true, portable, kvPrecision: portable ? 'f32' : undefined }).then(
      (created) => ({ backend: created, reason: '' }),
      (error: Error) => {
        if (process.env.CI) throw new Error(`CI must run the WebGPU tests, but no adapter opened: ${error.message} (does .ci/install-lavapipe.sh run?)`);
        console.warn(`\n*** WebGPU tests SKIPPED: ${error.message} ***\n*** run .ci/install-lavapipe.sh (root) to get Mesa's software adapter ***\n`);
        return { backend: undefined, reason: error.message };
      },
    );
    opened.set(portable, backend);
  }
  return backend;
}
