// The KV cache's element type on devices without shader-f16, or where f32 is asked for
// (kernels/webgpu/backend.ts kvPrecision).
alias kv_scalar = f32;
