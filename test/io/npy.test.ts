// .npy reading against files numpy itself wrote (tools/make_eval_fixtures.py), and round trips back.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { readNpy, writeNpy, parseNpy, encodeNpy } from '../../lib/io/npy.js';
import { UserError } from '../../lib/errors.js';

const dir = path.join(import.meta.dirname, '..', 'fixtures', 'eval', 'npy');
const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8')) as {
  good: Record<string, { dtype: string; shape: number[]; values: (number | string)[] }>;
  bad: Record<string, string>;
};

t.test('reads every dtype and header version numpy wrote', async (t) => {
  for (const [name, want] of Object.entries(index.good)) {
    const arr = await readNpy(path.join(dir, name));
    t.equal(arr.dtype, want.dtype, `${name} dtype`);
    t.same(arr.shape, want.shape, `${name} shape`);
    const got = Array.from(arr.data as ArrayLike<number | bigint>, (v) => (typeof v === 'bigint' ? v.toString() : v));
    if (want.dtype === 'float32') {
      // JSON holds the float32 values widened to float64 exactly.
      t.same(got, want.values, `${name} values`);
    } else t.same(got, want.values, `${name} values`);
  }
  t.ok(readFileSync(path.join(dir, 'f32_v2.npy'))[6] === 2, 'the v2 fixture really has a 2.0 header');
});

t.test('round trip: what we write, we (and numpy, per the header format) read back', async (t) => {
  const tmp = t.testdir();
  const cases = [
    { dtype: 'float32' as const, shape: [2, 3], data: Float32Array.from([1, 2, 3, 4.5, -5, 6]) },
    { dtype: 'float64' as const, shape: [3], data: Float64Array.from([1e-300, -2, Math.PI]) },
    { dtype: 'uint8' as const, shape: [1, 2, 2], data: Uint8Array.from([0, 255, 7, 8]) },
    { dtype: 'int64' as const, shape: [2], data: BigInt64Array.from([-(2n ** 62n), 3n]) },
  ];
  for (const c of cases) {
    const f = path.join(tmp, `${c.dtype}.npy`);
    await writeNpy(f, c);
    const back = await readNpy(f);
    t.equal(back.dtype, c.dtype);
    t.same(back.shape, c.shape);
    t.same(Array.from(back.data as ArrayLike<unknown>), Array.from(c.data as ArrayLike<unknown>));
    const raw = readFileSync(f);
    t.equal((raw.length - c.data.byteLength) % 64, 0, 'header padded to a multiple of 64 bytes, as numpy does');
  }
  // Identical bytes to numpy's own file for the same array (header text included).
  const numpyFile = readFileSync(path.join(dir, 'f32_2d.npy'));
  const parsed = parseNpy(numpyFile);
  t.same(Buffer.from(encodeNpy(parsed)), numpyFile, 'byte-identical to numpy.save output');
});

t.test('refuses malformed files with one clear line each', async (t) => {
  const expect: Record<string, RegExp> = {
    'bad_fortran.npy': /Fortran-order array; save a C-order copy/,
    'bad_bigendian.npy': /big-endian dtype '>f4'/,
    'bad_complex.npy': /unsupported dtype '<c8'/,
    'bad_truncated.npy': /truncated data: shape \[10, 10\] float32 needs 400 bytes, the file has 383/,
  };
  t.same(Object.keys(expect).sort(), Object.keys(index.bad).sort());
  for (const [name, re] of Object.entries(expect)) {
    await t.rejects(readNpy(path.join(dir, name)), re, name);
    await t.rejects(readNpy(path.join(dir, name)), UserError, `${name} is a UserError`);
  }
  t.throws(() => parseNpy(Buffer.from('not numpy at all')), /not a \.npy file/);
  await t.rejects(readNpy(path.join(dir, 'nope.npy')), /cannot read \(ENOENT\); check the path/);
});
