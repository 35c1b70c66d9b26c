// safetensors in plain JavaScript: read F32/F16/BF16 tensors (one file or a sharded model.safetensors.index.json)
// into float32, write float32. Format: u64 little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}, then the data, offsets relative to
// its start (https://github.com/huggingface/safetensors, "Format").
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../../errors.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { readTorchBin } from './torch-state.js';

export interface NamedTensor {
  shape: number[];
  data: Float32Array;
  /** The dtype it was stored in. */
  storedDtype: 'F32' | 'F16' | 'BF16';
}

const SIZES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };

/** Reads every tensor of one .safetensors file as float32. */
export function readSafetensors(file: string): Map<string, NamedTensor> {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (e) {
    throw new UserError(`cannot read weights ${file}: ${(e as Error).message}`);
  }
  if (buf.length < 8) throw new UserError(`${file} is truncated: ${buf.length} bytes, not even the 8-byte header length; download it again`);
  const n = Number(buf.readBigUInt64LE(0));
  if (8 + n > buf.length) {
    throw new UserError(`${file} is truncated: its header needs bytes 8..${8 + n} but the file has ${buf.length}; download it again`);
  }
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  } catch {
    throw new UserError(`${file} is not a safetensors file: its header is not JSON; check the file`);
  }
  const base = 8 + n;
  const out = new Map<string, NamedTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const size = SIZES[info.dtype];
    if (!size) {
      throw new UserError(`${file}: tensor '${name}' is stored as ${info.dtype}; supported are F32, F16 and BF16 (convert the weights)`);
    }
    const count = info.shape.reduce((a, b) => a * b, 1);
    const [begin, end] = info.data_offsets;
    if (end - begin !== count * size) {
      throw new UserError(`${file}: tensor '${name}' spans ${end - begin} bytes but shape (${info.shape}) of ${info.dtype} needs ${count * size}`);
    }
    if (base + end > buf.length) {
      throw new UserError(`${file} is truncated at byte ${buf.length}: tensor '${name}' needs bytes ${base + begin}..${base + end}; download it again`);
    }
    out.set(name, { shape: info.shape.slice(), data: decode(buf, base + begin, count, info.dtype), storedDtype: info.dtype as NamedTensor['storedDtype'] });
  }
  return out;
}

/** The __metadata__ strings of a safetensors file's header ({} when absent). */
export function readSafetensorsMetadata(file: string): Record<string, string> {
  const fd = openSync(file, 'r');
  try {
    const len = Buffer.alloc(8);
    if (readSync(fd, len, 0, 8, 0) !== 8) throw new UserError(`${file} is truncated: not even the 8-byte header length`);
    const n = Number(len.readBigUInt64LE(0));
    const head = Buffer.alloc(n);
    if (readSync(fd, head, 0, n, 8) !== n) throw new UserError(`${file} is truncated: its header needs bytes 8..${8 + n}`);
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

/** The tensors of a pytorch_model.bin (torch-state.ts readTorchBin: nothing in its pickle runs) as float32. */
function readBinWeights(file: string): Map<string, NamedTensor> {
  const out = new Map<string, NamedTensor>();
  for (const [name, t] of readTorchBin(file)) {
    const buf = Buffer.from(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
    out.set(name, { shape: t.shape, data: decode(buf, 0, t.bytes.byteLength / SIZES[t.dtype], t.dtype), storedDtype: t.dtype });
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
    throw new UserError(`${folder} has no model.safetensors nor model.safetensors.index.json (nor pytorch_model.bin, pytorch_model.bin.index.json); point --model at a hub folder with its weights`);
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
    const keys = new Set(Object.entries(map).filter(([, f]) => f === shard).map(([k]) => k));
    for (const [name, t] of read(path.join(folder, shard))) if (keys.has(name)) out.set(name, t);
  }
  const missing = Object.keys(map).filter((k) => !out.has(k));
  if (missing.length) throw new UserError(`${index} lists tensors its shards do not hold: ${missing.slice(0, 5).join(', ')}; download the shards again`);
  return out;
}

/** Writes float32 tensors as one safetensors file (names sorted, as the reference writer does), atomically. */
export async function writeSafetensors(file: string, tensors: Map<string, { shape: number[]; data: Float32Array }>,
  metadata: Record<string, string> = { format: 'pt' }): Promise<void> {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const bytes = t.data.length * 4;
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);  // data aligned to 8 bytes
  const head = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + head.length + offset);
  out.writeBigUInt64LE(BigInt(head.length), 0);
  head.copy(out, 8);
  let o = 8 + head.length;
  for (const name of names) {
    const d = tensors.get(name)!.data;
    for (let i = 0; i < d.length; i++, o += 4) out.writeFloatLE(d[i], o);
  }
  await writeFileAtomic(file, out);
}
