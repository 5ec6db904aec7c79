// Getting a WebGPU backend in tests. In CI a missing adapter is a failure (CI installs lavapipe);
// elsewhere the WebGPU suites are skipped with a visible message.
import { WebGpuBackend } from '../kernels/webgpu/backend.ts';

export interface GpuForTests {
  backend: WebGpuBackend | undefined;
  reason: string;
}

let opened: Promise<GpuForTests> | undefined;

export function gpuForTests(): Promise<GpuForTests> {
  opened ??= WebGpuBackend.create({ allowSoftware: true }).then(
    (backend) => ({ backend, reason: '' }),
    (error: Error) => {
      if (process.env.CI) throw new Error(`CI must run the WebGPU tests, but no adapter opened: ${error.message} (does .ci/install-lavapipe.sh run?)`);
      console.warn(`\n*** WebGPU tests SKIPPED: ${error.message} ***\n*** run .ci/install-lavapipe.sh (root) to get Mesa's software adapter ***\n`);
      return { backend: undefined, reason: error.message };
    },
  );
  return opened;
}
