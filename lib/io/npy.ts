// NumPy .npy files (format versions 1.0, 2.0 and 3.0): little-endian, C-order arrays of plain numeric dtypes.
// This is how features travel between g2l-native, NumPy and PyTorch. Anything else (Fortran order, big-endian,
// object or structured dtypes, a short file) is refused with a line that says what to change in the writer.
//
// Files of any size: reads and writes go through a file handle in chunks (a whole-file read stops at 2 GiB), whole
// arrays up to what a typed array holds; openNpy() reads row ranges by offset and NpyWriter appends rows and writes
// the final shape into the header at the end, for feature sets larger than memory (10^7 rows x 1536 float32 = 61 GB).
import { promises as fs } from 'node:fs';
import { UserError } from '../errors.js';
import { trackTemp } from './atomic.js';

export type NpyDtype =
  | 'float32'
  | 'float64'
  | 'float16'
  | 'uint8'
  | 'int8'
  | 'uint16'
  | 'int16'
  | 'uint32'
  | 'int32'
  | 'int64'
  | 'uint64'
  | 'bool';

export type NpyData =
  | Float32Array
  | Float64Array
  | Uint16Array
  | Uint8Array
  | Int8Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | BigInt64Array
  | BigUint64Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  /** Elements in C order; float16 is kept as its raw bits in a Uint16Array, bool as 0/1 bytes. */
  data: NpyData;
}

// descr (without byte-order character) -> dtype, element size, typed-array constructor
const DTYPES: Record<
  string,
  { dtype: NpyDtype; size: number; make: (b: ArrayBuffer, o: number, n: number) => NpyData }
> = {
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
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      const v = Number(s.replace(/L$/, ''));
      if (!Number.isSafeInteger(v) || v < 0) fail(where, `bad dimension ${JSON.stringify(s)} in the .npy shape`);
      return v;
    });
  return { descr, fortran: fortran === 'True', shape };
}

interface NpyLayout {
  dtype: NpyDtype;
  shape: number[];
  /** Bytes of one element, and where the data starts. */
  size: number;
  dataStart: number;
  make: (b: ArrayBuffer, o: number, n: number) => NpyData;
}

/** The header of a .npy file from its first bytes (at least the whole header). `where` names it in errors. */
function parseLayout(buf: Uint8Array, where: string): NpyLayout {
  if (buf.length < 10 || MAGIC.some((b, i) => buf[i] !== b))
    fail(where, 'not a .npy file (no \\x93NUMPY magic); write it with numpy.save');
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
    fail(
      where,
      `unsupported dtype '${descr}' (float32, float64, float16, (u)int8/16/32/64 and bool are read); convert with a.astype(numpy.float32)`,
    );
  }
  if (order === '>' && info.size > 1)
    fail(where, `big-endian dtype '${descr}'; save a little-endian copy (a.astype(a.dtype.newbyteorder('<')))`);
  return { dtype: info.dtype, shape, size: info.size, dataStart, make: info.make };
}

const elements = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Parses a whole .npy file held in memory. `where` names it in errors. */
export function parseNpy(buf: Uint8Array, where = '.npy data'): NpyArray {
  const { dtype, shape, size, dataStart, make } = parseLayout(buf, where);
  const count = elements(shape);
  const bytes = count * size;
  if (buf.length - dataStart < bytes) {
    fail(
      where,
      `truncated data: shape [${shape.join(', ')}] ${dtype} needs ${bytes} bytes, the file has ${buf.length - dataStart}`,
    );
  }
  // Copy into an aligned buffer of its own (typed arrays need offsets that are multiples of the element size).
  const own = new Uint8Array(bytes);
  own.set(buf.subarray(dataStart, dataStart + bytes));
  return { dtype, shape, data: make(own.buffer, 0, count) };
}

/** Bytes per read or write call (fs calls take at most 2 GiB). */
const CHUNK = 256 * 2 ** 20;

/** An open .npy file: its dtype and shape, and rows read by offset. */
export interface NpyFile {
  readonly dtype: NpyDtype;
  readonly shape: number[];
  /** Rows [start, start + count) of the first axis, as a new array. */
  readRows(start: number, count: number): Promise<NpyData>;
  close(): Promise<void>;
}

/** Opens a .npy file of any size: the header is checked, and so is the file's length against the shape. */
export async function openNpy(file: string): Promise<NpyFile> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${file}: cannot read (${code ?? (e as Error).message}); check the path`);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) fail(file, 'not a file (a folder is in its place); give a .npy file');
    const fileSize = st.size;
    const head = new Uint8Array(Math.min(fileSize, 65536 + 12));
    await handle.read(head, 0, head.length, 0);
    let layout = parseLayoutOrLonger(head, file, fileSize);
    if (layout === null) {
      // A header longer than 64 KiB (format 2.0+): read it whole.
      const len = new DataView(head.buffer).getUint32(8, true);
      const longer = new Uint8Array(Math.min(fileSize, 12 + len));
      await handle.read(longer, 0, longer.length, 0);
      layout = parseLayout(longer, file);
    }
    const { dtype, shape, size, dataStart, make } = layout;
    const bytes = elements(shape) * size;
    if (fileSize - dataStart < bytes) {
      fail(
        file,
        `truncated data: shape [${shape.join(', ')}] ${dtype} needs ${bytes} bytes, the file has ${fileSize - dataStart}`,
      );
    }
    const rowElems = elements(shape.slice(1));
    const rows = shape.length ? shape[0] : 1;
    const h = handle;
    return {
      dtype,
      shape,
      async readRows(start: number, count: number): Promise<NpyData> {
        if (!(
          Number.isInteger(start) &&
          Number.isInteger(count) &&
          start >= 0 &&
          count >= 0 &&
          start + count <= rows
        )) {
          throw new RangeError(`${file}: rows [${start}, ${start + count}) outside the array's ${rows}`);
        }
        const n = count * rowElems;
        const out = new Uint8Array(n * size);
        const from = dataStart + start * rowElems * size;
        for (let done = 0; done < out.length;) {
          const { bytesRead } = await h.read(out, done, Math.min(CHUNK, out.length - done), from + done);
          if (bytesRead === 0) fail(file, 'the file ended while reading: it changed since it was opened');
          done += bytesRead;
        }
        return make(out.buffer, 0, n);
      },
      close: () => h.close(),
    };
  } catch (e) {
    await handle.close();
    throw e;
  }
}

/** parseLayout, or null when the header goes on past `head` (a long 2.0+ header) in a longer file. */
function parseLayoutOrLonger(head: Uint8Array, where: string, fileSize: number): NpyLayout | null {
  if (head.length >= 12 && MAGIC.every((b, i) => head[i] === b) && head[6] >= 2) {
    const len = new DataView(head.buffer, head.byteOffset).getUint32(8, true);
    if (12 + len > head.length && 12 + len <= fileSize) return null;
  }
  return parseLayout(head, where);
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
  const sizeOk =
    arr.dtype === natural ||
    (arr.dtype === 'float16' && natural === 'uint16') ||
    (arr.dtype === 'bool' && natural === 'uint8');
  if (!sizeOk) throw new Error(`encodeNpy: dtype ${arr.dtype} does not match a ${arr.data.constructor.name}`);
  const header = npyHeader(arr.dtype, arr.shape);
  const out = new Uint8Array(header.length + arr.data.byteLength);
  out.set(header, 0);
  out.set(new Uint8Array(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength), header.length);
  return out;
}

/**
 * The header of a version 1.0 .npy file (2.0 when it does not fit in 65535 bytes), padded with spaces so that the data
 * starts at a multiple of 64 bytes, or to exactly `length` bytes when given (NpyWriter's reserved header).
 */
function npyHeader(dtype: NpyDtype, shape: number[], length?: number): Uint8Array {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let dict = `{'descr': '${DESCR[dtype]}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  let version = 1;
  let pre = 10;
  if (dict.length + 1 + pre > 65535) {
    version = 2;
    pre = 12;
  }
  const total = length ?? pre + dict.length + 1 + ((64 - ((pre + dict.length + 1) % 64)) % 64);
  if (total < pre + dict.length + 1)
    throw new Error(`npyHeader: ${total} bytes cannot hold the header of shape ${shapeText}`);
  dict = dict + ' '.repeat(total - pre - dict.length - 1) + '\n';
  const out = new Uint8Array(total);
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
  return out;
}

/** Reads a whole .npy file of any size (in chunks). */
export async function readNpy(file: string): Promise<NpyArray> {
  const f = await openNpy(file);
  try {
    return { dtype: f.dtype, shape: f.shape, data: await f.readRows(0, f.shape.length ? f.shape[0] : 1) };
  } finally {
    await f.close();
  }
}

/**
 * Writes a .npy file row by row: rows are appended to a temporary file, and close() writes the header with the final
 * row count (its length reserved up front) and renames the file into place; abort() removes it. Any size.
 */
export class NpyWriter {
  private rows = 0;
  private offset: number;
  private constructor(
    private readonly file: string,
    private readonly tmp: string,
    private readonly handle: fs.FileHandle,
    readonly dtype: NpyDtype,
    readonly rowShape: number[],
    private readonly headerBytes: number,
  ) {
    this.offset = headerBytes;
    this.release = trackTemp(tmp, file);
  }

  /** Ends the temporary file's registration (lib/io/atomic.ts: a stop signal removes registered ones). */
  private readonly release: () => void;

  static async create(file: string, dtype: NpyDtype, rowShape: number[]): Promise<NpyWriter> {
    const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
    const handle = await fs.open(tmp, 'w');
    // The header at its longest: a 20-digit row count.
    const bytes = npyHeader(dtype, [10 ** 19, ...rowShape]).length;
    return new NpyWriter(file, tmp, handle, dtype, rowShape, bytes);
  }

  /** Appends whole rows (data.length a multiple of the row's elements, of the writer's dtype). */
  async append(data: NpyData): Promise<void> {
    const per = elements(this.rowShape);
    if (data.length % per !== 0)
      throw new Error(`NpyWriter: ${data.length} elements is not a whole number of rows of ${per}`);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    for (let done = 0; done < bytes.length;) {
      const { bytesWritten } = await this.handle.write(
        bytes,
        done,
        Math.min(CHUNK, bytes.length - done),
        this.offset + done,
      );
      done += bytesWritten;
    }
    this.offset += bytes.length;
    this.rows += data.length / per;
  }

  async close(): Promise<void> {
    const header = npyHeader(this.dtype, [this.rows, ...this.rowShape], this.headerBytes);
    await this.handle.write(header, 0, header.length, 0);
    await this.handle.sync();
    await this.handle.close();
    await fs.rename(this.tmp, this.file);
    this.release();
  }

  async abort(): Promise<void> {
    await this.handle.close().catch(() => {});
    await fs.rm(this.tmp, { force: true });
    this.release();
  }
}

/** Writes a .npy file atomically (temporary file, then rename), in chunks: any size. */
export async function writeNpy(file: string, arr: NpyArray): Promise<void> {
  const count = elements(arr.shape);
  if (arr.data.length !== count)
    throw new Error(`writeNpy: shape [${arr.shape.join(', ')}] holds ${count} elements, data has ${arr.data.length}`);
  const w = await NpyWriter.create(file, arr.dtype, arr.shape.slice(1));
  try {
    if (arr.shape.length === 0) throw new Error('writeNpy: a 0-d array');
    await w.append(arr.data);
    await w.close();
  } catch (e) {
    await w.abort();
    throw e;
  }
}
