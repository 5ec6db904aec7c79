// The safetensors format, read and written by us: an 8-byte little-endian header length, a JSON
// header { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__?: {..} }, then raw data.
// Reading goes through a file descriptor, one tensor at a time, so a multi-GB file never sits in
// the JS heap whole.
import fs from 'node:fs';
import path from 'node:path';
import { DTYPE_BYTES, isDType, toFloat32, type DType } from './dtypes.ts';

export interface TensorInfo {
  name: string;
  /** The file holding it, for messages. */
  file: string;
  dtype: DType;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  fileOffset: number;
  byteLength: number;
}

/** Something that can hand out named tensors: one safetensors file, a sharded set, a converter. */
export interface TensorSource {
  /** Where the tensors come from (a file or directory), for messages. */
  readonly location: string;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** Raw little-endian bytes of the tensor. */
  readBytes(name: string): Uint8Array;
  /** The tensor converted to f32 (float and integer dtypes alike). */
  readFloat32(name: string): Float32Array;
  close(): void;
}

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

// The reference implementation refuses headers above 100 MB; so do we, before allocating them.
const MAX_HEADER_BYTES = 100_000_000;

export class SafetensorsFile implements TensorSource {
  readonly path: string;
  readonly location: string;
  readonly metadata: Record<string, string>;
  private readonly fd: number;
  private readonly tensors = new Map<string, TensorInfo>();

  private constructor(filePath: string, fd: number, tensors: TensorInfo[], metadata: Record<string, string>) {
    this.path = filePath;
    this.location = filePath;
    this.fd = fd;
    this.metadata = metadata;
    for (const t of tensors) this.tensors.set(t.name, t);
  }

  static open(filePath: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(filePath, 'r');
    } catch (error) {
      throw new CheckpointError(`${filePath}: cannot open (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
    try {
      const { tensors, metadata } = parseHeader(filePath, fd);
      return new SafetensorsFile(filePath, fd, tensors, metadata);
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new CheckpointError(`${this.path}: no tensor named "${name}"`);
    return info;
  }

  readBytes(name: string): Uint8Array {
    const info = this.info(name);
    const bytes = new Uint8Array(info.byteLength);
    let done = 0;
    while (done < info.byteLength) {
      const read = fs.readSync(this.fd, bytes, done, info.byteLength - done, info.fileOffset + done);
      if (read === 0) throw new CheckpointError(`${this.path}: tensor "${name}" is truncated: the file ends ${info.byteLength - done} bytes early`);
      done += read;
    }
    return bytes;
  }

  readFloat32(name: string): Float32Array {
    const info = this.info(name);
    return toFloat32(this.readBytes(name), info.dtype, new Float32Array(elementCount(info.shape)));
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function readExactly(fd: number, length: number, position: number): Uint8Array | undefined {
  const bytes = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const read = fs.readSync(fd, bytes, done, length - done, position + done);
    if (read === 0) return undefined;
    done += read;
  }
  return bytes;
}

function parseHeader(filePath: string, fd: number): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  const fileBytes = fs.fstatSync(fd).size;
  const fail = (why: string): never => {
    throw new CheckpointError(`${filePath}: not a valid safetensors file: ${why}`);
  };
  if (fileBytes < 8) fail(`the file is ${fileBytes} bytes, shorter than the 8-byte header length`);
  const lengthBytes = readExactly(fd, 8, 0)!;
  const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) fail(`header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (Number(headerLength) > fileBytes - 8) fail(`header length ${headerLength} runs past the end of the ${fileBytes}-byte file (truncated?)`);
  const headerBytes = readExactly(fd, Number(headerLength), 8)!;
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (error) {
    fail(`header is not UTF-8 JSON (${(error as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');

  const dataStart = 8 + Number(headerLength);
  const dataBytes = fileBytes - dataStart;
  const tensors: TensorInfo[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Object.values(entry).some((v) => typeof v !== 'string')) {
        fail('__metadata__ must map strings to strings');
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    const bad = (why: string): never => fail(`tensor "${name}": ${why}`);
    if (typeof entry !== 'object' || entry === null) bad('entry is not an object');
    const { dtype, shape, data_offsets: offsets } = entry as { dtype: unknown; shape: unknown; data_offsets: unknown };
    if (typeof dtype !== 'string' || !isDType(dtype)) bad(`unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')})`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) bad(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      bad(`data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    const expected = elementCount(shape as number[]) * DTYPE_BYTES[dtype as DType];
    if (end < begin) bad(`data_offsets [${begin}, ${end}] end before they begin`);
    if (end - begin !== expected) bad(`data_offsets span ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} needs ${expected}`);
    if (end > dataBytes) bad(`data_offsets end at byte ${end} but the file holds only ${dataBytes} data bytes (truncated file?)`);
    tensors.push({ name, file: filePath, dtype: dtype as DType, shape: shape as number[], fileOffset: dataStart + begin, byteLength: end - begin });
  }
  const sorted = [...tensors].sort((a, b) => a.fileOffset - b.fileOffset);
  for (let i = 1; i < sorted.length; i++) {
    const previous = sorted[i - 1];
    if (sorted[i].fileOffset < previous.fileOffset + previous.byteLength) {
      fail(`tensors "${previous.name}" and "${sorted[i].name}" overlap`);
    }
  }
  return { tensors, metadata };
}

export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: number[];
  /** The raw bytes, or a function that produces them when the writer reaches this tensor. */
  data: Uint8Array | (() => Uint8Array);
}

/** A tensor whose bytes may take asynchronous work to produce (factorising on the GPU). */
export interface TensorToWriteAsync {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

/** The 8-byte header length and the JSON header (padded so tensor data starts 8-byte aligned). */
function safetensorsHeader(tensors: { name: string; dtype: DType; shape: number[] }[], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const expected = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + expected] };
    offset += expected;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so tensor data starts 8-byte aligned, as the reference writer does.
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const lengthBytes = Buffer.alloc(8);
  lengthBytes.writeBigUInt64LE(BigInt(headerBytes.byteLength));
  return Buffer.concat([lengthBytes, headerBytes]);
}

function writeTensorBytes(fd: number, t: { name: string; dtype: DType; shape: number[] }, data: Uint8Array): void {
  const expected = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
  if (data.byteLength !== expected) {
    throw new Error(`writeSafetensors: tensor "${t.name}" has ${data.byteLength} bytes, ${t.dtype} ${JSON.stringify(t.shape)} needs ${expected}`);
  }
  let done = 0;
  while (done < data.byteLength) done += fs.writeSync(fd, data, done, data.byteLength - done);
}

/** Opens FILE.partial for writing; `finish(true)` renames it into place, `finish(false)` removes it. */
function openPartial(filePath: string): { fd: number; finish: (complete: boolean) => void } {
  fs.mkdirSync(path.dirname(filePath), { recursive: true });
  // Written under another name and renamed at the end: a failure never leaves a half file behind.
  const partial = `${filePath}.partial`;
  const fd = fs.openSync(partial, 'w');
  return {
    fd,
    finish: (complete) => {
      fs.closeSync(fd);
      if (complete) fs.renameSync(partial, filePath);
      else fs.rmSync(partial, { force: true });
    },
  };
}

/**
 * Writes a safetensors file. Tensors are written one at a time, and lazy data is produced only
 * when its turn comes, so converting a checkpoint never holds more than one tensor in memory.
 */
export function writeSafetensors(filePath: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  const header = safetensorsHeader(tensors, metadata);
  const { fd, finish } = openPartial(filePath);
  let complete = false;
  try {
    fs.writeSync(fd, header);
    for (const t of tensors) writeTensorBytes(fd, t, typeof t.data === 'function' ? t.data() : t.data);
    complete = true;
  } finally {
    finish(complete);
  }
}

/** `writeSafetensors` for tensors whose lazy data is asynchronous. */
export async function writeSafetensorsAsync(filePath: string, tensors: TensorToWriteAsync[], metadata?: Record<string, string>): Promise<void> {
  const header = safetensorsHeader(tensors, metadata);
  const { fd, finish } = openPartial(filePath);
  let complete = false;
  try {
    fs.writeSync(fd, header);
    for (const t of tensors) writeTensorBytes(fd, t, typeof t.data === 'function' ? await t.data() : t.data);
    complete = true;
  } finally {
    finish(complete);
  }
}

/**
 * All tensors of a checkpoint directory: model.safetensors, or the shards listed in
 * model.safetensors.index.json ({ weight_map: { tensor: file } }).
 */
export class ShardedSafetensors implements TensorSource {
  private readonly files: SafetensorsFile[];
  private readonly owner = new Map<string, SafetensorsFile>();

  constructor(files: SafetensorsFile[], readonly location: string) {
    this.files = files;
    for (const file of files) {
      for (const name of file.names()) {
        const other = this.owner.get(name);
        if (other) throw new CheckpointError(`tensor "${name}" appears in both ${other.path} and ${file.path}`);
        this.owner.set(name, file);
      }
    }
  }

  static openDirectory(directory: string): ShardedSafetensors {
    const indexPath = path.join(directory, 'model.safetensors.index.json');
    if (fs.existsSync(indexPath)) {
      let index: { weight_map?: Record<string, string> };
      try {
        index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
      } catch (error) {
        throw new CheckpointError(`${indexPath}: not valid JSON (${(error as Error).message})`);
      }
      if (!index.weight_map || typeof index.weight_map !== 'object') throw new CheckpointError(`${indexPath}: no "weight_map" object`);
      const shardNames = [...new Set(Object.values(index.weight_map))].sort();
      const files: SafetensorsFile[] = [];
      try {
        for (const shard of shardNames) {
          if (shard.includes('/') || shard.includes('\\')) throw new CheckpointError(`${indexPath}: shard name "${shard}" must be a file in the same directory`);
          files.push(SafetensorsFile.open(path.join(directory, shard)));
        }
        const sharded = new ShardedSafetensors(files, directory);
        for (const [tensor, shard] of Object.entries(index.weight_map)) {
          const owner = sharded.owner.get(tensor);
          if (!owner) throw new CheckpointError(`${indexPath}: lists tensor "${tensor}" in ${shard}, but ${shard} does not hold it`);
        }
        return sharded;
      } catch (error) {
        for (const f of files) f.close();
        throw error;
      }
    }
    const single = path.join(directory, 'model.safetensors');
    if (!fs.existsSync(single)) throw new CheckpointError(`${directory}: no model.safetensors or model.safetensors.index.json`);
    return new ShardedSafetensors([SafetensorsFile.open(single)], directory);
  }

  names(): string[] {
    return [...this.owner.keys()];
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  private file(name: string): SafetensorsFile {
    const file = this.owner.get(name);
    if (!file) throw new CheckpointError(`${this.location}: no tensor named "${name}"`);
    return file;
  }

  info(name: string): TensorInfo {
    return this.file(name).info(name);
  }

  readBytes(name: string): Uint8Array {
    return this.file(name).readBytes(name);
  }

  readFloat32(name: string): Float32Array {
    return this.file(name).readFloat32(name);
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}
