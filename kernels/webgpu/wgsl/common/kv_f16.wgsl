// The KV cache's element type where the device has shader-f16 (kernels/webgpu/backend.ts
// kvPrecision): keys and values stored in f16, half the memory and half the bytes attention reads;
// kernels convert to f32 as they load and round as they store.
enable f16;
alias kv_scalar = f16;
