import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { floatToBfloat16, floatToHalf, fromFloat32, halfToFloat, halvesFrom, toFloat32 } from '../weights/dtypes.ts';
import { CheckpointError, SafetensorsFile, ShardedSafetensors, writeSafetensors, type TensorToWrite } from '../weights/safetensors.ts';
import { tempDirectory } from './helpers.ts';

function f32(name: string, shape: number[], values: number[]): TensorToWrite {
  return { name, dtype: 'F32', shape, data: fromFloat32(Float32Array.from(values), 'F32') };
}

/** A file with a hand-made header and `dataBytes` bytes of data. */
function rawFile(directory: string, header: unknown, dataBytes: number, headerLengthOverride?: bigint): string {
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(headerLengthOverride ?? BigInt(json.length));
  const file = path.join(directory, `raw-${Math.random().toString(36).slice(2)}.safetensors`);
  fs.writeFileSync(file, Buffer.concat([length, json, Buffer.alloc(dataBytes, 7)]));
  return file;
}

describe('dtypes', () => {
  it('halvesFrom converts as floatToHalf does, and stops at the first value beyond ±65504 or NaN', () => {
    const edges = [0, -0, 1, -1, 65504, -65504, 65503.99, 6.103515625e-5, 6.1e-5, 5.960464477539063e-8, 1e-9, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 0.1, 2049, 2050.5];
    let seed = 12345;
    const random = Array.from({ length: 20000 }, () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return ((seed / 4294967296) - 0.5) * 10 ** ((seed % 13) - 8);
    });
    const values = Float32Array.from([...edges, ...random]);
    const out = new Uint16Array(values.length + 3);
    expect(halvesFrom(values, 0, out, 3, values.length)).toBe(-1);
    for (let k = 0; k < values.length; k++) expect(out[k + 3]).toBe(floatToHalf(values[k]));
    const bad = Float32Array.of(1, 2, 65505, 4);
    expect(halvesFrom(bad, 0, new Uint16Array(4), 0, 4)).toBe(2);
    expect(halvesFrom(Float32Array.of(0, Number.NaN), 0, new Uint16Array(2), 0, 2)).toBe(1);
    expect(halvesFrom(Float32Array.of(-Infinity), 0, new Uint16Array(1), 0, 1)).toBe(0);
  });

  it('converts half and bfloat16 exactly where representable and rounds to nearest even', () => {
    for (const value of [0, 1, -2, 0.5, 65504, 6.103515625e-5, 5.960464477539063e-8, -0.333251953125]) {
      expect(halfToFloat(floatToHalf(value))).toBe(value);
    }
    expect(floatToHalf(1e6)).toBe(0x7c00); // overflow → +Infinity
    expect(halfToFloat(floatToHalf(1 + 2 ** -11))).toBe(1); // tie rounds to even
    expect(floatToBfloat16(1)).toBe(0x3f80);
    expect(floatToBfloat16(-2.5)).toBe(0xc020);
    const bytes = fromFloat32(Float32Array.of(1.5, -3, 0.15625), 'BF16');
    expect(Array.from(toFloat32(bytes, 'BF16'))).toEqual([1.5, -3, 0.15625]);
  });

  it('reads integer and unaligned float tensors', () => {
    const raw = new Uint8Array(9);
    new DataView(raw.buffer).setFloat32(1, -1.25, true);
    new DataView(raw.buffer).setFloat32(5, 8, true);
    expect(Array.from(toFloat32(raw.subarray(1), 'F32'))).toEqual([-1.25, 8]);
    const i64 = new Uint8Array(16);
    new DataView(i64.buffer).setBigInt64(8, -5n, true);
    expect(Array.from(toFloat32(i64, 'I64'))).toEqual([0, -5]);
  });
});

describe('safetensors', () => {
  const directory = tempDirectory('st');

  it('round-trips tensors of every float dtype with metadata, 8-byte aligned', () => {
    const file = path.join(directory, 'roundtrip.safetensors');
    const values = Float32Array.of(0.5, -1, 2, 3.25, -0.125, 7);
    writeSafetensors(file, [
      f32('a', [2, 3], Array.from(values)),
      { name: 'b.half', dtype: 'F16', shape: [6], data: fromFloat32(values, 'F16') },
      { name: 'c.bf16', dtype: 'BF16', shape: [3, 2], data: fromFloat32(values, 'BF16') },
      { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Uint8Array(0) },
      { name: 'ids', dtype: 'I32', shape: [2], data: new Uint8Array(Int32Array.of(3, -9).buffer) },
    ], { format: 'pt' });
    const st = SafetensorsFile.open(file);
    expect(st.metadata).toEqual({ format: 'pt' });
    expect(st.names().sort()).toEqual(['a', 'b.half', 'c.bf16', 'empty', 'ids']);
    for (const name of ['a', 'b.half', 'c.bf16']) expect(Array.from(st.readFloat32(name))).toEqual(Array.from(values));
    expect(st.info('a').shape).toEqual([2, 3]);
    expect(st.info('a').fileOffset % 8).toBe(0);
    expect(st.readFloat32('empty').length).toBe(0);
    expect(Array.from(st.readFloat32('ids'))).toEqual([3, -9]);
    expect(() => st.info('missing')).toThrow(/no tensor named "missing"/);
    st.close();
  });

  const malformed: [string, (dir: string) => string, RegExp][] = [
    ['a file shorter than the length prefix', (d) => { const f = path.join(d, 'short.safetensors'); fs.writeFileSync(f, Buffer.alloc(5)); return f; }, /shorter than the 8-byte header length/],
    ['a header length past the end of the file', (d) => rawFile(d, {}, 0, 1000n), /runs past the end/],
    ['a header length over the limit', (d) => rawFile(d, {}, 0, 1n << 40n), /exceeds the 100000000-byte limit/],
    ['a header that is not JSON', (d) => { const f = rawFile(d, {}, 0); const b = fs.readFileSync(f); b[8] = 0x7b; b[9] = 0x7b; fs.writeFileSync(f, b); return f; }, /not UTF-8 JSON/],
    ['an unknown dtype', (d) => rawFile(d, { w: { dtype: 'F8_E9', shape: [1], data_offsets: [0, 1] } }, 1), /tensor "w": unknown dtype "F8_E9"/],
    ['offsets past the data (truncated)', (d) => rawFile(d, { w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 12), /tensor "w": data_offsets end at byte 16 but the file holds only 12/],
    ['offsets that disagree with the shape', (d) => rawFile(d, { w: { dtype: 'F32', shape: [4], data_offsets: [0, 12] } }, 16), /span 12 bytes but F32 \[4\] needs 16/],
    ['reversed offsets', (d) => rawFile(d, { w: { dtype: 'U8', shape: [0], data_offsets: [4, 2] } }, 8), /end before they begin/],
    ['overlapping tensors', (d) => rawFile(d, { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12), /"a" and "b" overlap/],
    ['a negative dimension', (d) => rawFile(d, { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 0] } }, 0), /not a list of non-negative integers/],
    ['non-string metadata', (d) => rawFile(d, { __metadata__: { n: 1 } }, 0), /__metadata__ must map strings to strings/],
  ];
  it.each(malformed)('rejects %s with a message naming the file', (_, make, message) => {
    const file = make(directory);
    let caught: unknown;
    try {
      SafetensorsFile.open(file);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(CheckpointError);
    expect((caught as Error).message).toMatch(message);
    expect((caught as Error).message).toContain(file);
  });

  it('names the tensor when the file is cut short after opening', () => {
    const file = path.join(directory, 'cut.safetensors');
    writeSafetensors(file, [f32('first', [2], [1, 2]), f32('second', [4], [1, 2, 3, 4])]);
    const st = SafetensorsFile.open(file);
    fs.truncateSync(file, fs.statSync(file).size - 4);
    expect(() => st.readBytes('second')).toThrow(/tensor "second" is truncated/);
    st.close();
  });

  it('loads sharded checkpoints through model.safetensors.index.json', () => {
    const dir = tempDirectory('shards');
    writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [f32('x', [2], [1, 2])]);
    writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [f32('y', [1], [3]), f32('z', [1], [4])]);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({
      metadata: { total_size: 16 },
      weight_map: { x: 'model-00001-of-00002.safetensors', y: 'model-00002-of-00002.safetensors', z: 'model-00002-of-00002.safetensors' },
    }));
    const sharded = ShardedSafetensors.openDirectory(dir);
    expect(sharded.names().sort()).toEqual(['x', 'y', 'z']);
    expect(Array.from(sharded.readFloat32('z'))).toEqual([4]);
    expect(sharded.info('y').file).toContain('model-00002-of-00002');
    sharded.close();

    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: 'model-00002-of-00002.safetensors', y: 'model-00002-of-00002.safetensors' } }));
    expect(() => ShardedSafetensors.openDirectory(dir)).toThrow(/lists tensor "x" in model-00002-of-00002.safetensors, but .* does not hold it/);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: 'missing.safetensors' } }));
    expect(() => ShardedSafetensors.openDirectory(dir)).toThrow(/missing.safetensors: cannot open \(ENOENT\)/);
  });

  it('says what is missing in a directory without weights', () => {
    expect(() => ShardedSafetensors.openDirectory(tempDirectory('empty'))).toThrow(/no model.safetensors or model.safetensors.index.json/);
  });
});
