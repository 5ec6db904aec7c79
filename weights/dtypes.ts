// Element types found in checkpoints, and conversions of their raw little-endian bytes to f32.

export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

export function isDType(name: string): name is DType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, name);
}

export function isFloatDType(dtype: DType): boolean {
  return dtype === 'F64' || dtype === 'F32' || dtype === 'F16' || dtype === 'BF16';
}

// IEEE half → f32 through a 65536-entry table: one lookup per element instead of bit juggling.
let halfTable: Float32Array | undefined;
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    let value: number;
    if (exponent === 0) value = mantissa * 2 ** -24;
    else if (exponent === 31) value = mantissa ? NaN : Infinity;
    else value = (1 + mantissa / 1024) * 2 ** (exponent - 15);
    halfTable[h] = sign * value;
  }
  return halfTable;
}

export function halfToFloat(bits: number): number {
  return halfToFloatTable()[bits & 0xffff];
}

// Scratch views for reinterpreting one f32's bits without allocating per call.
const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

/** f32 → IEEE half bits, round to nearest even; overflow becomes ±Infinity. */
export function floatToHalf(value: number): number {
  scratchFloat[0] = value;
  const x = scratchBits[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const e = exponent - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    let half = mantissa >> shift;
    const rest = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mantissa >> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/** Bits of the largest finite f16, 65504, as an f32. */
const F16_MAX_AS_F32_BITS = 0x477fe000;

/**
 * f32 → f16 bits, as floatToHalf, for `count` values from values[from] into out[to]: the normal
 * range inline (a weight matrix converts ~2x faster than value by value). Returns the index (into
 * `values`) of the first value beyond ±65504 or NaN, which is not converted, or -1.
 */
export function halvesFrom(values: Float32Array, from: number, out: Uint16Array, to: number, count: number): number {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let k = 0; k < count; k++) {
    const x = bits[from + k];
    if ((x & 0x7fffffff) > F16_MAX_AS_F32_BITS) return from + k;
    const e = ((x >>> 23) & 0xff) - 112;
    if (e > 0) {
      const mantissa = x & 0x7fffff;
      let half = (e << 10) | (mantissa >>> 13);
      const rest = mantissa & 0x1fff;
      if (rest > 0x1000 || (rest === 0x1000 && (half & 1))) half++;
      out[to + k] = ((x >>> 16) & 0x8000) | half;
    } else {
      out[to + k] = floatToHalf(values[from + k]); // zeros and f16 subnormals
    }
  }
  return -1;
}

/** f32 → bf16 bits, round to nearest even (what torch does when casting). */
export function floatToBfloat16(value: number): number {
  scratchFloat[0] = value;
  const x = scratchBits[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return (x >>> 16) | 0x40;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/**
 * Converts `count` elements of `dtype` starting at `bytes.byteOffset` to f32, writing into `out`.
 * Accepts any alignment: checkpoint offsets are not guaranteed to be multiples of the element size.
 */
export function toFloat32(bytes: Uint8Array, dtype: DType, out: Float32Array = new Float32Array(bytes.byteLength / DTYPE_BYTES[dtype])): Float32Array {
  const count = out.length;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32':
      if (bytes.byteOffset % 4 === 0) out.set(new Float32Array(bytes.buffer, bytes.byteOffset, count));
      else for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      break;
    case 'F16': {
      const table = halfToFloatTable();
      for (let i = 0; i < count; i++) out[i] = table[bytes[2 * i] | (bytes[2 * i + 1] << 8)];
      break;
    }
    case 'BF16': {
      const bits = new Uint32Array(out.buffer, out.byteOffset, count);
      for (let i = 0; i < count; i++) bits[i] = ((bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16) >>> 0;
      break;
    }
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(i * 8, true);
      break;
    case 'I64':
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigInt64(i * 8, true));
      break;
    case 'I32':
      for (let i = 0; i < count; i++) out[i] = view.getInt32(i * 4, true);
      break;
    case 'I16':
      for (let i = 0; i < count; i++) out[i] = view.getInt16(i * 2, true);
      break;
    case 'I8':
      for (let i = 0; i < count; i++) out[i] = view.getInt8(i);
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < count; i++) out[i] = bytes[i];
      break;
  }
  return out;
}

/** f32 values → raw little-endian bytes of a float dtype (for writing checkpoints). */
export function fromFloat32(values: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const out = new Uint16Array(values.length);
  const convert = dtype === 'F16' ? floatToHalf : floatToBfloat16;
  for (let i = 0; i < values.length; i++) out[i] = convert(values[i]);
  return new Uint8Array(out.buffer);
}
