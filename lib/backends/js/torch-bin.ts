// pytorch_model.bin (torch.save of a state dict: PyTorch's zip archive of stored records, archive/data.pkl a pickle
// whose tensors are torch._utils._rebuild_tensor_v2 calls over persistent storages, archive/data/<key> their bytes)
// read in plain JavaScript without running the pickle: only the globals a state dict names are accepted. (Checkpoints
// are safetensors; this reader is for model weights only.)
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { UserError } from '../../errors.js';
import { crc32 } from './safetensors.js';

/** Bytes per element of the storage types read. */
const STORAGE_SIZES: Record<string, { size: number }> = {
  FloatStorage: { size: 4 },
  LongStorage: { size: 8 },
  HalfStorage: { size: 2 },
  BFloat16Storage: { size: 2 },
};

// ---------------------------------------------------------------------------------------------------------------
// Zip (stored records only, as PyTorch writes them; zip64 sizes and offsets understood)
// ---------------------------------------------------------------------------------------------------------------

interface ZipEntry {
  name: string;
  offset: number;
  size: number;
  method: number;
  crc: number;
}

function readAt(fd: number, position: number, length: number, file: string): Buffer {
  const b = Buffer.alloc(length);
  const n = readSync(fd, b, 0, length, position);
  if (n !== length) throw new UserError(`${file} is truncated at byte ${position + n}; the file is damaged`);
  return b;
}

function zipEntries(fd: number, fileSize: number, file: string): Map<string, ZipEntry> {
  const tail = Math.min(fileSize, 65557);
  const end = readAt(fd, fileSize - tail, tail, file);
  let eocd = -1;
  for (let i = end.length - 22; i >= 0; i--)
    if (end.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0)
    throw new UserError(`${file} is not a PyTorch checkpoint (no zip directory): is it a pytorch_model.bin?`);
  let count = end.readUInt16LE(eocd + 10);
  let dirOffset = end.readUInt32LE(eocd + 16);
  if (dirOffset === 0xffffffff || count === 0xffff) {
    // zip64: the end-of-central-directory locator sits just before the record
    const loc = eocd - 20;
    const z64 = Number(end.readBigUInt64LE(loc + 8));
    const rec = readAt(fd, z64, 56, file);
    count = Number(rec.readBigUInt64LE(32));
    dirOffset = Number(rec.readBigUInt64LE(48));
  }
  const entries = new Map<string, ZipEntry>();
  let p = dirOffset;
  for (let i = 0; i < count; i++) {
    const h = readAt(fd, p, 46, file);
    if (h.readUInt32LE(0) !== 0x02014b50) throw new UserError(`${file}: damaged zip directory at byte ${p}`);
    const nameLen = h.readUInt16LE(28),
      extraLen = h.readUInt16LE(30),
      commentLen = h.readUInt16LE(32);
    const rest = readAt(fd, p + 46, nameLen + extraLen, file);
    const name = rest.subarray(0, nameLen).toString('utf8');
    let size = h.readUInt32LE(24),
      offset = h.readUInt32LE(42);
    const extra = rest.subarray(nameLen);
    for (let e = 0; e + 4 <= extra.length;) {
      const id = extra.readUInt16LE(e),
        len = extra.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (size === 0xffffffff) {
          size = Number(extra.readBigUInt64LE(q));
          q += 8;
        }
        if (h.readUInt32LE(20) === 0xffffffff) q += 8;
        if (offset === 0xffffffff) offset = Number(extra.readBigUInt64LE(q));
      }
      e += 4 + len;
    }
    if (offset + 30 + size > fileSize)
      throw new UserError(
        `${file} is truncated: record ${name} runs past its end at byte ${fileSize}; the file is damaged`,
      );
    entries.set(name, { name, offset, size, method: h.readUInt16LE(10), crc: h.readUInt32LE(16) });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

function readEntry(fd: number, e: ZipEntry, file: string): Buffer {
  if (e.method !== 0)
    throw new UserError(`${file}: record ${e.name} is compressed; torch.save stores its records uncompressed`);
  const local = readAt(fd, e.offset, 30, file);
  const start = e.offset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
  const data = readAt(fd, start, e.size, file);
  if (crc32(data) !== e.crc)
    throw new UserError(`${file}: record ${e.name} does not match its CRC-32; the file is damaged`);
  return data;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------------------------

interface Global {
  global: string;
}
interface Storage {
  storage: string;
  type: string;
}
const MARK = Symbol('mark');

/** A global a tensor state dict's pickle names: the tensor rebuilder, storage type names, OrderedDict. */
const weightGlobal = (g: string): boolean =>
  g === 'collections.OrderedDict' || g === 'torch._utils._rebuild_tensor_v2' || /^torch\.[A-Za-z0-9]+Storage$/.test(g);
/**
 * The tensors of a pytorch_model.bin (torch.save of a state dict, PyTorch >= 1.6 zip format), their bytes as stored,
 * read without running anything: its pickle may name only torch._utils._rebuild_tensor_v2, torch.<Type>Storage and
 * collections.OrderedDict (the engine's torch_bin.cpp checks the same globals); anything else is refused with one
 * error naming the file and the global. Float32, float16 and bfloat16 tensors, as their safetensors dtype names
 * (safetensors.ts readModelWeights decodes them).
 */
export function readTorchBin(
  file: string,
): Map<string, { dtype: 'F32' | 'F16' | 'BF16'; shape: number[]; bytes: Uint8Array }> {
  const out = new Map<string, { dtype: 'F32' | 'F16' | 'BF16'; shape: number[]; bytes: Uint8Array }>();
  for (const [key, r] of readArchive(file, weightGlobal, 'download it again', 'a weights file holds a state dict')) {
    const dtype = WEIGHT_STORAGES[r.type];
    if (!dtype)
      throw new UserError(`${file}: '${key}' is a ${r.type}; weights are read as float32, float16 or bfloat16`);
    out.set(key, { dtype, shape: r.shape, bytes: r.bytes });
  }
  return out;
}

/** Storage types of weights in a .bin, as the safetensors dtype they correspond to. */
const WEIGHT_STORAGES: Record<string, 'F32' | 'F16' | 'BF16'> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
};

interface RawTensor {
  type: string;
  shape: number[];
  bytes: Uint8Array;
}

/** The dense tensors of a PyTorch zip archive whose pickle names only `allowed` globals (checked as it is read). */
function readArchive(
  file: string,
  allowed: (g: string) => boolean,
  remedy: string,
  notDict: string,
): Map<string, RawTensor> {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new UserError(`cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    return readRaw(fd, file, allowed, remedy, notDict);
  } catch (e) {
    // A damaged file can make any step above read out of range: one line naming the file, never a stack.
    if (e instanceof UserError) throw e;
    throw new UserError(`${file} is damaged (${(e as Error).message}): ${remedy}`);
  } finally {
    closeSync(fd);
  }
}

function readRaw(
  fd: number,
  file: string,
  allowed: (g: string) => boolean,
  remedy: string,
  notDict: string,
): Map<string, RawTensor> {
  const { size } = fstatSync(fd);
  if (size < 22) throw new UserError(`${file} is damaged (${size} bytes, too few for a checkpoint): ${remedy}`);
  if (readAt(fd, 0, 4, file).readUInt32LE(0) !== 0x04034b50) {
    throw new UserError(
      `${file} is not a zip checkpoint (torch.save before PyTorch 1.6 wrote another format, which is not read): use the model's safetensors, or re-save the state dict with a current torch.save`,
    );
  }
  const entries = zipEntries(fd, size, file);
  const pklName = [...entries.keys()].find((n) => n.endsWith('/data.pkl'));
  if (!pklName) throw new UserError(`${file} has no data.pkl: it is not a PyTorch checkpoint`);
  const prefix = pklName.slice(0, -'data.pkl'.length);
  const value = unpickle(readEntry(fd, entries.get(pklName)!, file), file, allowed);
  if (!(value instanceof Map)) throw new UserError(`${file} does not hold a dict of tensors: ${notDict}`);
  const out = new Map<string, RawTensor>();
  for (const [key, t] of value as Map<string, unknown>) {
    const r = t as { storage: Storage; offset: number; shape: number[]; stride: number[] };
    if (
      !r ||
      !r.storage ||
      !Array.isArray(r.shape) ||
      !Array.isArray(r.stride) ||
      r.shape.length !== r.stride.length ||
      !r.shape.every((d) => Number.isSafeInteger(d) && d >= 0) ||
      !Number.isSafeInteger(r.offset) ||
      r.offset < 0
    ) {
      throw new UserError(`${file}: '${String(key)}' is not a tensor the checkpoint should hold; the file is damaged`);
    }
    const kind = STORAGE_SIZES[r.storage.type];
    if (!kind) throw new UserError(`${file}: '${String(key)}' is a ${r.storage.type}, which is not read`);
    const bytes = readEntry(
      fd,
      entries.get(`${prefix}data/${r.storage.storage}`) ?? fail(file, r.storage.storage),
      file,
    );
    const n = r.shape.reduce((a, b) => a * b, 1);
    let expect = 1;
    for (let d = r.shape.length - 1; d >= 0; d--) {
      if (r.shape[d] !== 1 && r.stride[d] !== expect)
        throw new UserError(`${file}: '${String(key)}' is not contiguous`);
      expect *= r.shape[d];
    }
    const begin = r.offset * kind.size;
    if (begin + n * kind.size > bytes.length) {
      throw new UserError(
        `${file}: '${String(key)}' needs ${begin + n * kind.size} bytes of data/${r.storage.storage}, which has ${bytes.length}; the file is damaged`,
      );
    }
    out.set(key, { type: r.storage.type, shape: r.shape, bytes: bytes.subarray(begin, begin + n * kind.size) });
  }
  return out;
}

function fail(file: string, key: string): never {
  throw new UserError(`${file} lacks the storage record data/${key}; the file is damaged`);
}

function unpickle(b: Buffer, file: string, allowed: (g: string) => boolean): unknown {
  const global = (g: string): Global => {
    if (!allowed(g)) {
      throw new UserError(
        `${file}: its pickle names the global ${g}; refused without running anything (a weights file needs only torch._utils._rebuild_tensor_v2, torch.*Storage and collections.OrderedDict): use the model's safetensors, or convert the file with code you trust`,
      );
    }
    return { global: g };
  };
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  const popMark = (): unknown[] => {
    let i = stack.length - 1;
    while (i >= 0 && stack[i] !== MARK) i--;
    if (i < 0) throw new UserError(`${file}: malformed pickle (no mark)`);
    const items = stack.slice(i + 1);
    stack.length = i;
    return items;
  };
  let p = 0;
  const line = () => {
    const e = b.indexOf(0x0a, p);
    const s = b.subarray(p, e).toString('utf8');
    p = e + 1;
    return s;
  };
  for (;;) {
    const op = b[p++];
    switch (op) {
      case 0x80:
        p += 1;
        break; // PROTO
      case 0x95:
        p += 8;
        break; // FRAME
      case 0x63: {
        const mod = line();
        const name = line();
        stack.push(global(`${mod}.${name}`));
        break;
      } // GLOBAL
      case 0x93: {
        const name = stack.pop();
        const mod = stack.pop();
        stack.push(global(`${String(mod)}.${String(name)}`));
        break;
      } // STACK_GLOBAL
      case 0x71:
        memo.set(b[p], stack[stack.length - 1]);
        p += 1;
        break; // BINPUT
      case 0x72:
        memo.set(b.readUInt32LE(p), stack[stack.length - 1]);
        p += 4;
        break; // LONG_BINPUT
      case 0x94:
        memo.set(memo.size, stack[stack.length - 1]);
        break; // MEMOIZE
      case 0x68:
        stack.push(memo.get(b[p]));
        p += 1;
        break; // BINGET
      case 0x6a:
        stack.push(memo.get(b.readUInt32LE(p)));
        p += 4;
        break; // LONG_BINGET
      case 0x7d:
        stack.push(new Map());
        break; // EMPTY_DICT
      case 0x5d:
        stack.push([]);
        break; // EMPTY_LIST
      case 0x29:
        stack.push([]);
        break; // EMPTY_TUPLE
      case 0x28:
        stack.push(MARK);
        break; // MARK
      case 0x58: {
        const n = b.readUInt32LE(p);
        p += 4;
        stack.push(b.subarray(p, p + n).toString('utf8'));
        p += n;
        break;
      } // BINUNICODE
      case 0x8c: {
        const n = b[p];
        p += 1;
        stack.push(b.subarray(p, p + n).toString('utf8'));
        p += n;
        break;
      } // SHORT_BINUNICODE
      case 0x4b:
        stack.push(b[p]);
        p += 1;
        break; // BININT1
      case 0x4d:
        stack.push(b.readUInt16LE(p));
        p += 2;
        break; // BININT2
      case 0x4a:
        stack.push(b.readInt32LE(p));
        p += 4;
        break; // BININT
      case 0x8a: {
        // LONG1
        const n = b[p];
        p += 1;
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[p + i]);
        if (n && b[p + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        p += n;
        stack.push(Number(v));
        break;
      }
      case 0x47:
        stack.push(b.readDoubleBE(p));
        p += 8;
        break; // BINFLOAT
      case 0x74:
        stack.push(popMark());
        break; // TUPLE
      case 0x85:
        stack.push([stack.pop()]);
        break; // TUPLE1
      case 0x86: {
        const y = stack.pop();
        const x = stack.pop();
        stack.push([x, y]);
        break;
      } // TUPLE2
      case 0x87: {
        const z = stack.pop();
        const y = stack.pop();
        const x = stack.pop();
        stack.push([x, y, z]);
        break;
      } // TUPLE3
      case 0x88:
        stack.push(true);
        break;
      case 0x89:
        stack.push(false);
        break;
      case 0x4e:
        stack.push(null);
        break;
      case 0x51: {
        // BINPERSID
        const pid = stack.pop() as unknown[];
        if (!Array.isArray(pid) || pid[0] !== 'storage')
          throw new UserError(`${file}: unknown persistent id in the pickle`);
        const type = (pid[1] as Global).global.split('.').pop()!;
        stack.push({ storage: String(pid[2]), type } as Storage);
        break;
      }
      case 0x52: {
        // REDUCE
        const args = stack.pop() as unknown[];
        const fn = (stack.pop() as Global).global;
        if (fn === 'torch._utils._rebuild_tensor_v2') {
          stack.push({ storage: args[0], offset: args[1], shape: args[2], stride: args[3] });
        } else if (fn === 'collections.OrderedDict') {
          stack.push(new Map());
        } else if (fn === 'torch.jit._pickle.restore_type_tag') {
          stack.push(args[0]);
        } else {
          throw new UserError(`${file}: the pickle calls ${fn}, which a g2l-native checkpoint never does`);
        }
        break;
      }
      case 0x75: {
        const items = popMark();
        const d = stack[stack.length - 1] as Map<unknown, unknown>;
        for (let i = 0; i < items.length; i += 2) d.set(items[i], items[i + 1]);
        break;
      } // SETITEMS
      case 0x73: {
        const v = stack.pop();
        const k = stack.pop();
        (stack[stack.length - 1] as Map<unknown, unknown>).set(k, v);
        break;
      } // SETITEM
      case 0x65: {
        const items = popMark();
        (stack[stack.length - 1] as unknown[]).push(...items);
        break;
      } // APPENDS
      case 0x61: {
        const v = stack.pop();
        (stack[stack.length - 1] as unknown[]).push(v);
        break;
      } // APPEND
      case 0x62:
        stack.pop();
        break; // BUILD (state of a rebuilt tensor: ignored)
      case 0x2e:
        return stack.pop(); // STOP
      default:
        throw new UserError(
          `${file}: pickle opcode 0x${(op ?? 0).toString(16)} at byte ${p - 1} is not one a g2l-native checkpoint uses`,
        );
    }
  }
}
