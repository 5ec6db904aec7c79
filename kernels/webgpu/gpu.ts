// Opening a WebGPU device through Dawn's Node binding: adapter choice, the toggles NVIDIA needs,
// feature detection, limits as large as the adapter allows, and errors that surface instead of hang.
import { create, globals } from 'webgpu';
import { installPollThrottle } from './poll.ts';

/**
 * On NVIDIA's Vulkan driver, Dawn hides shader-f16 unless told it may enable it, and subgroup
 * matrices are behind allow_unsafe_apis (see ../shared/ANCHORS.md §4). disable_robustness drops
 * the index clamping Dawn adds to every array access: our kernels bound their own accesses (and
 * their tests run on awkward sizes), and the clamps cost the tensor-core GEMM 40% of its speed
 * (bench/RESULTS.md). BLR_DAWN_TOGGLES adds toggles (comma-separated) for experiments.
 */
export const DAWN_TOGGLES = [
  `enable-dawn-features=${['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia', 'disable_robustness', ...(process.env.BLR_DAWN_TOGGLES?.split(',').filter(Boolean) ?? [])].join(',')}`,
  'disable-dawn-features=timestamp_quantization',
];

export class GpuUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GpuUnavailableError';
  }
}

export interface GpuFeatures {
  shaderF16: boolean;
  subgroups: boolean;
  subgroupMatrix: boolean;
  /** Subgroup matrices with f16 operands and f32 results at M16 N16 K16 (tensor cores on NVIDIA). */
  subgroupMatrixF16: boolean;
  timestampQuery: boolean;
}

export interface Gpu {
  device: GPUDevice;
  adapterInfo: GPUAdapterInfo;
  /** Software adapters (lavapipe, SwiftShader) are correct but slow. */
  isSoftware: boolean;
  features: GpuFeatures;
  description: string;
}

interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

let instance: GPU | undefined;
function gpuInstance(): GPU {
  if (!instance) {
    Object.assign(globalThis, globals);
    instance = create(DAWN_TOGGLES);
    // Fewer of the binding's polls while a step waits on the GPU: see poll.ts.
    installPollThrottle();
  }
  return instance;
}

const WANTED_FEATURES: GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query', 'chromium-experimental-subgroup-matrix' as GPUFeatureName];

/** Features the kernels can do without, left off in portable mode to run the fallback paths. */
const OPTIONAL_FEATURES: GPUFeatureName[] = ['subgroups', 'chromium-experimental-subgroup-matrix' as GPUFeatureName];

/** WebGPU's default maxComputeWorkgroupStorageSize: every adapter offers at least this much. */
export const DEFAULT_WORKGROUP_STORAGE = 16384;

/**
 * `portable` opens the device without subgroups and subgroup matrices even where the adapter has
 * them, and with WebGPU's default 16 KB of workgroup memory (the least an adapter may offer), so the
 * kernels for adapters that lack them can be tested on any machine. `workgroupStorage` caps the
 * workgroup memory asked for (tests of adapters with subgroups but only 16 KB).
 */

export async function openGpu(options: { allowSoftware: boolean; portable?: boolean; workgroupStorage?: number }): Promise<Gpu> {
  const adapter = await gpuInstance().requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new GpuUnavailableError('no WebGPU adapter (no Vulkan driver found: install a GPU driver, or Mesa ≥ 25 for the software adapter)');
  const info = adapter.info;
  const isSoftware = info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader/i.test(`${info.device} ${info.description}`);
  if (isSoftware && !options.allowSoftware) {
    throw new GpuUnavailableError(`only a software WebGPU adapter is available (${info.description || info.device})`);
  }
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f) && !(options.portable && OPTIONAL_FEATURES.includes(f)));
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures,
    requiredLimits: {
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxBufferSize: limits.maxBufferSize,
      maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: Math.min(options.workgroupStorage ?? (options.portable ? DEFAULT_WORKGROUP_STORAGE : Infinity), limits.maxComputeWorkgroupStorageSize),
      maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: limits.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: limits.maxComputeWorkgroupSizeY,
    },
  });
  const features: GpuFeatures = {
    shaderF16: device.features.has('shader-f16'),
    subgroups: device.features.has('subgroups'),
    subgroupMatrix: device.features.has('chromium-experimental-subgroup-matrix'),
    subgroupMatrixF16: device.features.has('chromium-experimental-subgroup-matrix') && device.features.has('shader-f16')
      && (info as GPUAdapterInfo & { subgroupMatrixConfigs?: SubgroupMatrixConfig[] }).subgroupMatrixConfigs?.some((c) =>
        c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16) === true
      && info.subgroupMaxSize === 32,
    timestampQuery: device.features.has('timestamp-query'),
  };
  const name = [info.vendor, info.description || info.device].filter(Boolean).join(' ');
  const featureList = Object.entries(features).filter(([, on]) => on).map(([f]) => f).join(', ');
  return {
    device,
    adapterInfo: info,
    isSoftware,
    features,
    description: `WebGPU ${name}${isSoftware ? ' (software)' : ''}; features: ${featureList || 'none'}`,
  };
}
