// safetensors in plain JavaScript: F32, F16 and BF16 files written by timm and transformers (checked against the
// embeddings those libraries computed from the same files, in vit.test.ts; here the values and layout), sharded
// indexes, a float32 round trip, and the messages for truncated and foreign files.
import t from 'tap';
import { readFileSync, writeFileSync, truncateSync, copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../../lib/errors.js';
import zlib from 'node:zlib';
import {
  halfToFloat,
  readModelWeights,
  readSafetensors,
  readSafetensorsMetadata,
  readStoredTensors,
  writeSafetensors,
} from '../../lib/backends/js/safetensors.js';
import { folder } from './helpers.js';

/** The raw header and data section of a file, decoded independently with DataView (the format, read by hand). */
function rawTensor(file: string, name: string): { dtype: string; shape: number[]; bits: number[] } {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.subarray(8, 8 + n).toString())[name];
  const [b, e] = h.data_offsets;
  const bytes = buf.subarray(8 + n + b, 8 + n + e);
  const width = h.dtype === 'F32' ? 4 : 2;
  const bits: number[] = [];
  for (let i = 0; i < bytes.length; i += width) bits.push(width === 4 ? bytes.readFloatLE(i) : bytes.readUInt16LE(i));
  return { dtype: h.dtype, shape: h.shape, bits };
}

t.test('F32, F16 and BF16 tensors decode exactly', async (t) => {
  const f32 = path.join(folder('timm_giant_reg4_swiglu'), 'model.safetensors');
  const f16 = path.join(folder('hf_dinov2_gelu'), 'model.safetensors');
  const bf16 = path.join(folder('timm_large_gelu'), 'model.safetensors');
  const a = readSafetensors(f32).get('pos_embed')!;
  const ra = rawTensor(f32, 'pos_embed');
  t.equal(a.storedDtype, 'F32');
  t.same(a.shape, ra.shape);
  t.same(Array.from(a.data), ra.bits);
  const h = readSafetensors(f16).get('embeddings.cls_token')!;
  const rh = rawTensor(f16, 'embeddings.cls_token');
  t.equal(h.storedDtype, 'F16');
  t.same(Array.from(h.data), rh.bits.map(halfToFloat));
  const bf = readSafetensors(bf16).get('cls_token')!;
  const rb = rawTensor(bf16, 'cls_token');
  t.equal(bf.storedDtype, 'BF16');
  const expected = rb.bits.map((u) => {
    const v = new DataView(new ArrayBuffer(4));
    v.setUint32(0, u << 16);
    return v.getFloat32(0);
  });
  t.same(Array.from(bf.data), expected);
  t.equal(halfToFloat(0x3c00), 1);
  t.equal(halfToFloat(0xc000), -2);
  t.equal(halfToFloat(0x0001), 2 ** -24, 'subnormal');
  t.equal(halfToFloat(0x7c00), Infinity);
});

t.test('a sharded folder reads through model.safetensors.index.json', async (t) => {
  const dir = folder('hf_dinov2_reg_swiglu');
  const index = JSON.parse(readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
  const w = readModelWeights(dir);
  t.same([...w.keys()].sort(), Object.keys(index.weight_map).sort());
  t.ok(new Set(Object.values(index.weight_map)).size > 1, 'the fixture has several shards');
});

t.test('float32 round trip, with metadata', async (t) => {
  const file = path.join(t.testdir(), 'x.safetensors');
  const tensors = new Map([
    ['b.weight', { shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 1e-30, -0, 7]) }],
    ['a', { shape: [1], data: Float32Array.from([Math.PI]) }],
  ]);
  await writeSafetensors(file, tensors, { format: 'pt', step: '3' });
  const back = readSafetensors(file);
  t.same([...back.keys()], ['a', 'b.weight'], 'names sorted');
  t.same(Array.from(back.get('b.weight')!.data), Array.from(tensors.get('b.weight')!.data));
  t.equal(back.get('a')!.data[0], Math.fround(Math.PI));
  t.same(readSafetensorsMetadata(file), { format: 'pt', step: '3' });
  const n = Number(readFileSync(file).readBigUInt64LE(0));
  t.equal((8 + n) % 8, 0, 'data section aligned to 8 bytes');
});

t.test('truncated and foreign files: one line naming the file and the byte offset', async (t) => {
  const dir = t.testdir();
  const src = path.join(folder('timm_giant_reg4_swiglu'), 'model.safetensors');
  const cut = path.join(dir, 'cut.safetensors');
  copyFileSync(src, cut);
  truncateSync(cut, 5000);
  const e1 = (() => {
    try {
      readSafetensors(cut);
    } catch (e) {
      return e as Error;
    }
  })();
  t.type(e1, UserError);
  t.match(e1!.message, `${cut} is truncated at byte 5000`);
  t.match(e1!.message, 'download it again');
  const junk = path.join(dir, 'junk.safetensors');
  const b = Buffer.alloc(20);
  b.writeBigUInt64LE(4n, 0);
  b.write('nope', 8);
  writeFileSync(junk, b);
  t.throws(
    () => readSafetensors(junk),
    new UserError(`${junk} is not a safetensors file: its header is not JSON; check the file`),
  );
  const empty = path.join(dir, 'empty');
  mkdirSync(empty);
  t.throws(() => readModelWeights(empty), /has no model.safetensors nor model.safetensors.index.json/);
});

t.test("float32 and int64 with a checksum: exact round trip, zlib's CRC-32, and damage refused", async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'state.safetensors');
  const tensors = new Map<string, { shape: number[]; data: Float32Array | BigInt64Array }>([
    ['w', { shape: [2, 2], data: Float32Array.from([1.5, -0, 3e-39, NaN]) }],
    ['step', { shape: [1], data: BigInt64Array.from([-(2n ** 62n) + 7n]) }],
  ]);
  await writeSafetensors(file, tensors, { format: 'pt' }, { checksum: true });
  const { tensors: back, metadata } = readStoredTensors(file, 'write it again');
  t.same([...back.keys()], ['step', 'w']);
  t.equal(back.get('step')!.dtype, 'int64');
  t.equal((back.get('step')!.data as BigInt64Array)[0], -(2n ** 62n) + 7n);
  t.same(
    Buffer.from(back.get('w')!.data.buffer),
    Buffer.from(tensors.get('w')!.data.buffer),
    'float32 bits (NaN, -0, subnormal) kept',
  );
  const bytes = readFileSync(file);
  const base = 8 + Number(bytes.readBigUInt64LE(0));
  const zcrc = (zlib as unknown as { crc32?: (b: Uint8Array) => number }).crc32;
  if (zcrc)
    t.equal(
      metadata.data_crc32,
      zcrc(bytes.subarray(base)).toString(16).padStart(8, '0'),
      'zlib.crc32 of the data section',
    );
  else t.match(metadata.data_crc32, /^[0-9a-f]{8}$/);
  bytes[base + 3] ^= 0x40;
  writeFileSync(file, bytes);
  t.throws(
    () => readStoredTensors(file, 'write it again'),
    /state\.safetensors: its data does not match the CRC-32 in its header .*: the file is damaged; write it again/,
  );
});

t.test('a header that does not tile the data section exactly is refused, naming the file', async (t) => {
  const dir = t.testdir();
  const make = (name: string, header: Record<string, unknown>, data: Buffer) => {
    const text = JSON.stringify(header);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(text.length));
    const f = path.join(dir, name);
    writeFileSync(f, Buffer.concat([len, Buffer.from(text), data]));
    return f;
  };
  const data = Buffer.alloc(16);
  const overlap = make(
    'overlap.safetensors',
    { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
    data.subarray(0, 12),
  );
  t.throws(
    () => readSafetensors(overlap),
    /overlap\.safetensors: tensor 'b' begins at data byte 4, inside the tensor before it/,
  );
  const gap = make(
    'gap.safetensors',
    { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } },
    data,
  );
  t.throws(() => readSafetensors(gap), /gap\.safetensors: tensor 'b' begins at data byte 12, after a gap/);
  const trailing = make('trailing.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, data);
  t.throws(() => readSafetensors(trailing), /trailing\.safetensors: 8 bytes follow the last tensor/);
  const fraction = make(
    'fraction.safetensors',
    { a: { dtype: 'F32', shape: [2.5], data_offsets: [0, 10] } },
    data.subarray(0, 10),
  );
  t.throws(() => readSafetensors(fraction), /fraction\.safetensors: tensor 'a' has a bad shape/);
  const meta = make(
    'meta.safetensors',
    { __metadata__: { format: 1 }, a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } },
    data.subarray(0, 8),
  );
  t.throws(() => readSafetensors(meta), /meta\.safetensors: __metadata__\['format'\] is not a string/);
});
