// safetensors in plain JavaScript: read F32/F16/BF16 weights (one file or a sharded model.safetensors.index.json)
// into float32, read F32/I64 tensors as stored (checkpoints), write F32 and I64. Format: u64 little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}, then the
// data, offsets relative to its start (https://github.com/huggingface/safetensors, "Format"). Headers are validated
// strictly, and a `data_crc32` checksum in the metadata is verified (see parseSafetensors).
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../../errors.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { readTorchBin } from './torch-bin.js';

export interface NamedTensor {
  shape: number[];
  data: Float32Array;
  /** The dtype it was stored in. */
  storedDtype: 'F32' | 'F16' | 'BF16';
}

/** A tensor as stored, float32 or int64 (a checkpoint's state: native/engine/train/distiller.cpp save()). */
export type StoredTensor =
  { dtype: 'float32'; shape: number[]; data: Float32Array } | { dtype: 'int64'; shape: number[]; data: BigInt64Array };

/** The __metadata__ key of the data section's CRC-32, 8 lowercase hex digits (native/engine/io/safetensors.h). */
export const CHECKSUM_KEY = 'data_crc32';

const SIZES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

interface Parsed {
  entries: Entry[];
  metadata: Record<string, string>;
}

/**
 * The validated header of a whole safetensors file in `buf`, as the reference library checks it: integer shapes and
 * offsets, shape x dtype size = byte length, the tensors tiling the data section exactly (no overlap, no gap, nothing
 * after the last). `data_crc32` in __metadata__, when present, must match the data section. Entries in key order
 * with absolute byte offsets. One UserError naming the file for any fault, ending in `advice`.
 */
function parseSafetensors(buf: Buffer, file: string, advice: string): Parsed {
  const damaged = (what: string) => new UserError(`${file}: ${what}: the file is damaged; ${advice}`);
  if (buf.length < 8)
    throw new UserError(`${file} is truncated: ${buf.length} bytes, not even the 8-byte header length; ${advice}`);
  const n = Number(buf.readBigUInt64LE(0));
  if (n > 100 * 1024 * 1024)
    throw new UserError(
      `${file} is not a safetensors file (its header length field reads ${n} bytes): check the file, or ${advice}`,
    );
  if (8 + n > buf.length) {
    throw new UserError(
      `${file} is truncated: its header needs bytes 8..${8 + n} but the file has ${buf.length}; ${advice}`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + n)));
  } catch {
    throw new UserError(`${file} is not a safetensors file: its header is not JSON; check the file`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header))
    throw damaged('the header is not a JSON object');
  const base = 8 + n;
  const count = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (info === null || typeof info !== 'object' || Array.isArray(info))
        throw damaged('__metadata__ is not an object of strings');
      for (const [k, v] of Object.entries(info)) {
        if (typeof v !== 'string') throw damaged(`__metadata__['${k}'] is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const {
      dtype,
      shape,
      data_offsets: offsets,
    } = (info ?? {}) as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof dtype !== 'string' || !Array.isArray(shape) || !Array.isArray(offsets) || offsets.length !== 2) {
      throw damaged(`header entry '${name}' lacks dtype, shape or data_offsets`);
    }
    const size = SIZES[dtype];
    if (!size) throw damaged(`tensor '${name}' has dtype ${dtype}, which is not a safetensors dtype`);
    if (!shape.every(count)) throw damaged(`tensor '${name}' has a bad shape`);
    const [begin, end] = offsets;
    if (!count(begin) || !count(end) || end < begin) throw damaged(`tensor '${name}' has bad data_offsets`);
    const bytes = shape.reduce((a: number, b: number) => a * b, size);
    if (end - begin !== bytes)
      throw damaged(`tensor '${name}' spans ${end - begin} bytes but shape (${shape}) of ${dtype} needs ${bytes}`);
    entries.push({ name, dtype, shape: shape.slice(), begin: base + begin, end: base + end });
  }
  const order = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  const last = order.at(-1)?.end ?? base;
  if (last > buf.length) {
    const cut = order.find((e) => e.end > buf.length)!;
    throw new UserError(
      `${file} is truncated at byte ${buf.length}: tensor '${cut.name}' needs bytes ${cut.begin}..${cut.end}; ${advice}`,
    );
  }
  let at = base;
  for (const e of order) {
    if (e.begin !== at) {
      throw damaged(
        `tensor '${e.name}' begins at data byte ${e.begin - base}, ${e.begin < at ? 'inside the tensor before it' : 'after a gap'} (expected ${at - base})`,
      );
    }
    at = e.end;
  }
  if (at !== buf.length) throw damaged(`${buf.length - at} bytes follow the last tensor`);
  const sum = metadata[CHECKSUM_KEY];
  if (sum !== undefined) {
    const actual = crc32Hex(crc32(buf.subarray(base)));
    if (sum !== actual) throw damaged(`its data does not match the CRC-32 in its header (${sum}, computed ${actual})`);
  }
  return { entries: entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)), metadata };
}

function readWhole(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new UserError(`cannot read ${what} ${file}: ${(e as Error).message}`);
  }
}

/** Reads every tensor of one .safetensors file (F32, F16 or BF16: model weights) as float32. */
export function readSafetensors(file: string): Map<string, NamedTensor> {
  const buf = readWhole(file, 'weights');
  const out = new Map<string, NamedTensor>();
  for (const e of parseSafetensors(buf, file, 'download it again').entries) {
    if (e.dtype !== 'F32' && e.dtype !== 'F16' && e.dtype !== 'BF16') {
      throw new UserError(
        `${file}: tensor '${e.name}' is stored as ${e.dtype}; supported are F32, F16 and BF16 (convert the weights)`,
      );
    }
    const count = e.shape.reduce((a, b) => a * b, 1);
    out.set(e.name, { shape: e.shape, data: decode(buf, e.begin, count, e.dtype), storedDtype: e.dtype });
  }
  return out;
}

/**
 * Reads a file of F32 and I64 tensors as stored, with its metadata (a checkpoint's state.safetensors). `advice`:
 * what a message about a damaged file tells the user to do.
 */
export function readStoredTensors(
  file: string,
  advice: string,
): { tensors: Map<string, StoredTensor>; metadata: Record<string, string> } {
  const buf = readWhole(file, 'tensors');
  const { entries, metadata } = parseSafetensors(buf, file, advice);
  const tensors = new Map<string, StoredTensor>();
  for (const e of entries) {
    // A copy: the data section need not be aligned for a typed array view.
    const bytes = buf.subarray(e.begin, e.end);
    const copy = new ArrayBuffer(bytes.length);
    new Uint8Array(copy).set(bytes);
    if (e.dtype === 'F32') tensors.set(e.name, { dtype: 'float32', shape: e.shape, data: new Float32Array(copy) });
    else if (e.dtype === 'I64') tensors.set(e.name, { dtype: 'int64', shape: e.shape, data: new BigInt64Array(copy) });
    else
      throw new UserError(
        `${file}: tensor '${e.name}' is stored as ${e.dtype}, where F32 or I64 is expected: the file is damaged; ${advice}`,
      );
  }
  return { tensors, metadata };
}

/** The __metadata__ strings of a safetensors file's header ({} when absent). */
export function readSafetensorsMetadata(file: string): Record<string, string> {
  const fd = openSync(file, 'r');
  try {
    const len = Buffer.alloc(8);
    if (readSync(fd, len, 0, 8, 0) !== 8)
      throw new UserError(`${file} is truncated: not even the 8-byte header length`);
    const n = Number(len.readBigUInt64LE(0));
    const head = Buffer.alloc(n);
    if (readSync(fd, head, 0, n, 8) !== n)
      throw new UserError(`${file} is truncated: its header needs bytes 8..${8 + n}`);
    return (JSON.parse(head.toString('utf8')).__metadata__ ?? {}) as Record<string, string>;
  } finally {
    closeSync(fd);
  }
}

function decode(buf: Buffer, offset: number, count: number, dtype: string): Float32Array {
  const out = new Float32Array(count);
  const view = new DataView(buf.buffer, buf.byteOffset + offset, count * SIZES[dtype]);
  if (dtype === 'F32') {
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
  } else if (dtype === 'BF16') {
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) u32[i] = view.getUint16(i * 2, true) << 16;
  } else {
    for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(i * 2, true));
  }
  return out;
}

/** IEEE 754 binary16 bits -> number (exact). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** The tensors of a pytorch_model.bin (torch-bin.ts readTorchBin: nothing in its pickle runs) as float32. */
function readBinWeights(file: string): Map<string, NamedTensor> {
  const out = new Map<string, NamedTensor>();
  for (const [name, t] of readTorchBin(file)) {
    const buf = Buffer.from(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
    out.set(name, {
      shape: t.shape,
      data: decode(buf, 0, t.bytes.byteLength / SIZES[t.dtype], t.dtype),
      storedDtype: t.dtype,
    });
  }
  return out;
}

/**
 * The weights of a model folder: model.safetensors, or the shards listed by model.safetensors.index.json
 * ({weight_map: {name: shard file}}); else pytorch_model.bin, or the shards of pytorch_model.bin.index.json (read
 * without running their pickle). The engine's WeightFiles reads the same files in the same order of preference.
 */
export function readModelWeights(folder: string): Map<string, NamedTensor> {
  const single = path.join(folder, 'model.safetensors');
  let index = path.join(folder, 'model.safetensors.index.json');
  let read = readSafetensors;
  if (existsSync(single)) return readSafetensors(single);
  if (!existsSync(index)) {
    const bin = path.join(folder, 'pytorch_model.bin');
    if (existsSync(bin)) return readBinWeights(bin);
    index = path.join(folder, 'pytorch_model.bin.index.json');
    read = readBinWeights;
  }
  if (!existsSync(index)) {
    throw new UserError(
      `${folder} has no model.safetensors nor model.safetensors.index.json (nor pytorch_model.bin, pytorch_model.bin.index.json); point --model at a hub folder with its weights`,
    );
  }
  let map: Record<string, string>;
  try {
    map = JSON.parse(readFileSync(index, 'utf8')).weight_map;
  } catch (e) {
    throw new UserError(`${index} is not valid JSON (${(e as Error).message}); download it again`);
  }
  if (!map || typeof map !== 'object') throw new UserError(`${index} has no weight_map; download it again`);
  const out = new Map<string, NamedTensor>();
  for (const shard of [...new Set(Object.values(map))].sort()) {
    const keys = new Set(
      Object.entries(map)
        .filter(([, f]) => f === shard)
        .map(([k]) => k),
    );
    for (const [name, t] of read(path.join(folder, shard))) if (keys.has(name)) out.set(name, t);
  }
  const missing = Object.keys(map).filter((k) => !out.has(k));
  if (missing.length)
    throw new UserError(
      `${index} lists tensors its shards do not hold: ${missing.slice(0, 5).join(', ')}; download the shards again`,
    );
  return out;
}

/**
 * Writes float32 (F32) and int64 (I64) tensors as one safetensors file (names sorted, as the reference writer does),
 * atomically; options.checksum adds the data section's CRC-32 to the metadata (CHECKSUM_KEY).
 */
export async function writeSafetensors(
  file: string,
  tensors: Map<string, { shape: number[]; data: Float32Array | BigInt64Array }>,
  metadata: Record<string, string> = { format: 'pt' },
  options: { checksum?: boolean } = {},
): Promise<void> {
  const names = [...tensors.keys()].sort();
  const chunks: Buffer[] = [];
  const entries: Record<string, unknown> = {};
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    if (t.data.length !== t.shape.reduce((a, b) => a * b, 1))
      throw new Error(`writeSafetensors: '${name}' has ${t.data.length} values for shape (${t.shape})`);
    // Little-endian bytes (every platform Node runs on is little-endian; asserted by the round-trip tests).
    const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    entries[name] = {
      dtype: t.data instanceof BigInt64Array ? 'I64' : 'F32',
      shape: t.shape,
      data_offsets: [offset, offset + bytes.length],
    };
    chunks.push(bytes);
    offset += bytes.length;
  }
  const meta = options.checksum
    ? { ...metadata, [CHECKSUM_KEY]: crc32Hex(chunks.reduce((c, b) => crc32(b, c), 0)) }
    : metadata;
  // Metadata keys sorted, as the engine writes them (std::map): both backends write the same header.
  const sortedMeta = Object.fromEntries(Object.entries(meta).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  let json = JSON.stringify({ __metadata__: sortedMeta, ...entries });
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8); // data aligned to 8 bytes
  const head = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(head.length), 0);
  await writeFileAtomic(file, Buffer.concat([len, head, ...chunks]));
}

// CRC-32 (IEEE 802.3, as zip and zlib; the engine's is native/engine/io/safetensors.cpp), byte-wise by table.
const CRC_TABLE = (() => {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/** CRC-32 of `b`, continuing from `crc` (the CRC of the bytes before it; 0 to start). */
export function crc32(b: Uint8Array, crc = 0): number {
  let c = ~crc;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

const crc32Hex = (crc: number) => crc.toString(16).padStart(8, '0');
