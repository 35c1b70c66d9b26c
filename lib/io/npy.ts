// NumPy .npy files (format versions 1.0, 2.0 and 3.0): little-endian, C-order arrays of plain numeric dtypes.
// This is how features travel between g2l-native, NumPy and PyTorch. Anything else (Fortran order, big-endian,
// object or structured dtypes, a short file) is refused with a line that says what to change in the writer.
import { promises as fs } from 'node:fs';
import { UserError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';

export type NpyDtype = 'float32' | 'float64' | 'float16' | 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32'
  | 'int64' | 'uint64' | 'bool';

export type NpyData = Float32Array | Float64Array | Uint16Array | Uint8Array | Int8Array | Int16Array | Uint32Array
  | Int32Array | BigInt64Array | BigUint64Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  /** Elements in C order; float16 is kept as its raw bits in a Uint16Array, bool as 0/1 bytes. */
  data: NpyData;
}

// descr (without byte-order character) -> dtype, element size, typed-array constructor
const DTYPES: Record<string, { dtype: NpyDtype; size: number; make: (b: ArrayBuffer, o: number, n: number) => NpyData }> = {
  f4: { dtype: 'float32', size: 4, make: (b, o, n) => new Float32Array(b, o, n) },
  f8: { dtype: 'float64', size: 8, make: (b, o, n) => new Float64Array(b, o, n) },
  f2: { dtype: 'float16', size: 2, make: (b, o, n) => new Uint16Array(b, o, n) },
  u1: { dtype: 'uint8', size: 1, make: (b, o, n) => new Uint8Array(b, o, n) },
  i1: { dtype: 'int8', size: 1, make: (b, o, n) => new Int8Array(b, o, n) },
  b1: { dtype: 'bool', size: 1, make: (b, o, n) => new Uint8Array(b, o, n) },
  u2: { dtype: 'uint16', size: 2, make: (b, o, n) => new Uint16Array(b, o, n) },
  i2: { dtype: 'int16', size: 2, make: (b, o, n) => new Int16Array(b, o, n) },
  u4: { dtype: 'uint32', size: 4, make: (b, o, n) => new Uint32Array(b, o, n) },
  i4: { dtype: 'int32', size: 4, make: (b, o, n) => new Int32Array(b, o, n) },
  i8: { dtype: 'int64', size: 8, make: (b, o, n) => new BigInt64Array(b, o, n) },
  u8: { dtype: 'uint64', size: 8, make: (b, o, n) => new BigUint64Array(b, o, n) },
};
const DESCR: Record<NpyDtype, string> = Object.fromEntries(
  Object.entries(DTYPES).map(([k, v]) => [v.dtype, (v.size === 1 ? '|' : '<') + k]),
) as Record<NpyDtype, string>;

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

function fail(where: string, what: string): never {
  throw new UserError(`${where}: ${what}`);
}

/** Parses the header dict, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } */
function parseHeader(text: string, where: string): { descr: string; fortran: boolean; shape: number[] } {
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(text)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(text)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    fail(where, `not a valid .npy header (${JSON.stringify(text.trim().slice(0, 80))}); write it with numpy.save`);
  }
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map((s) => {
    const v = Number(s.replace(/L$/, ''));
    if (!Number.isSafeInteger(v) || v < 0) fail(where, `bad dimension ${JSON.stringify(s)} in the .npy shape`);
    return v;
  });
  return { descr, fortran: fortran === 'True', shape };
}

/** Parses a whole .npy file held in memory. `where` names it in errors. */
export function parseNpy(buf: Uint8Array, where = '.npy data'): NpyArray {
  if (buf.length < 10 || MAGIC.some((b, i) => buf[i] !== b)) fail(where, 'not a .npy file (no \\x93NUMPY magic); write it with numpy.save');
  const major = buf[6];
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = buf[8] | (buf[9] << 8);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (buf.length < 12) fail(where, 'truncated .npy header');
    headerLen = (buf[8] | (buf[9] << 8) | (buf[10] << 16)) + buf[11] * 2 ** 24;
    headerStart = 12;
  } else {
    fail(where, `unsupported .npy format version ${major}.${buf[7]} (1.0, 2.0 and 3.0 are read)`);
  }
  const dataStart = headerStart + headerLen;
  if (buf.length < dataStart) fail(where, 'truncated .npy header');
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(buf.subarray(headerStart, dataStart));
  const { descr, fortran, shape } = parseHeader(header, where);
  if (fortran) fail(where, 'Fortran-order array; save a C-order copy (numpy.save(path, numpy.ascontiguousarray(a)))');
  const order = descr[0];
  const code = /^[<>|=]/.test(descr) ? descr.slice(1) : descr;
  const info = DTYPES[code];
  if (info === undefined) {
    fail(where, `unsupported dtype '${descr}' (float32, float64, float16, (u)int8/16/32/64 and bool are read); convert with a.astype(numpy.float32)`);
  }
  if (order === '>' && info.size > 1) fail(where, `big-endian dtype '${descr}'; save a little-endian copy (a.astype(a.dtype.newbyteorder('<')))`);
  const count = shape.reduce((a, b) => a * b, 1);
  const bytes = count * info.size;
  if (buf.length - dataStart < bytes) {
    fail(where, `truncated data: shape [${shape.join(', ')}] ${info.dtype} needs ${bytes} bytes, the file has ${buf.length - dataStart}`);
  }
  // Copy into an aligned buffer of its own (typed arrays need offsets that are multiples of the element size).
  const own = new Uint8Array(bytes);
  own.set(buf.subarray(dataStart, dataStart + bytes));
  return { dtype: info.dtype, shape, data: info.make(own.buffer, 0, count) };
}

function dtypeOf(data: NpyData): NpyDtype {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Int8Array) return 'int8';
  if (data instanceof Uint16Array) return 'uint16';
  if (data instanceof Int16Array) return 'int16';
  if (data instanceof Uint32Array) return 'uint32';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  return 'uint64';
}

/** Encodes an array as a version 1.0 .npy file (2.0 when the header does not fit in 65535 bytes). */
export function encodeNpy(arr: NpyArray): Uint8Array {
  const count = arr.shape.reduce((a, b) => a * b, 1);
  if (arr.data.length !== count) {
    throw new Error(`encodeNpy: shape [${arr.shape.join(', ')}] holds ${count} elements, data has ${arr.data.length}`);
  }
  const natural = dtypeOf(arr.data);
  const sizeOk = arr.dtype === natural || (arr.dtype === 'float16' && natural === 'uint16') || (arr.dtype === 'bool' && natural === 'uint8');
  if (!sizeOk) throw new Error(`encodeNpy: dtype ${arr.dtype} does not match a ${arr.data.constructor.name}`);
  const shapeText = arr.shape.length === 1 ? `(${arr.shape[0]},)` : `(${arr.shape.join(', ')})`;
  let dict = `{'descr': '${DESCR[arr.dtype]}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  let version = 1;
  let pre = 10;
  if (dict.length + 1 + pre > 65535) {
    version = 2;
    pre = 12;
  }
  const pad = (64 - ((pre + dict.length + 1) % 64)) % 64;
  dict = dict + ' '.repeat(pad) + '\n';
  const out = new Uint8Array(pre + dict.length + arr.data.byteLength);
  out.set(MAGIC, 0);
  out[6] = version;
  out[7] = 0;
  const len = dict.length;
  if (version === 1) {
    out[8] = len & 0xff;
    out[9] = len >> 8;
  } else {
    new DataView(out.buffer).setUint32(8, len, true);
  }
  for (let i = 0; i < dict.length; i++) out[pre + i] = dict.charCodeAt(i);
  out.set(new Uint8Array(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength), pre + dict.length);
  return out;
}

/** Reads a .npy file. */
export async function readNpy(file: string): Promise<NpyArray> {
  let buf: Uint8Array;
  try {
    buf = await fs.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${file}: cannot read (${code ?? (e as Error).message}); check the path`);
  }
  return parseNpy(buf, file);
}

/** Writes a .npy file atomically. */
export async function writeNpy(file: string, arr: NpyArray): Promise<void> {
  await writeFileAtomic(file, encodeNpy(arr));
}
