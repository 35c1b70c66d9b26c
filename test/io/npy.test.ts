// .npy reading against files numpy itself wrote (tools/make_eval_fixtures.py), and round trips back.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readNpy, writeNpy, parseNpy, encodeNpy, NpyWriter, openNpy } from '../../lib/io/npy.js';
import { VENV_PYTHON, runProcess } from '../helpers/cli.js';
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

t.test('NpyWriter appends rows, openNpy reads row ranges: numpy reads the file', async (t) => {
  const file = path.join(t.testdir(), 'rows.npy');
  const w = await NpyWriter.create(file, 'float32', [3]);
  const all: number[] = [];
  for (let chunk = 0; chunk < 4; chunk++) {
    const rows = Float32Array.from({ length: 3 * (chunk + 1) }, (_, i) => chunk * 100 + i + 0.5);
    all.push(...rows);
    await w.append(rows);
  }
  t.notOk(existsSync(file), 'nothing at the name before close()');
  await w.close();
  const f = await openNpy(file);
  t.same(f.shape, [10, 3]);
  t.same(Array.from((await f.readRows(4, 3)) as ArrayLike<number>), all.slice(12, 21), 'rows 4..6 by offset');
  await t.rejects(f.readRows(8, 3), { name: 'RangeError' }, 'rows past the end are refused');
  await f.close();
  const py = await runProcess(VENV_PYTHON, [
    '-c',
    `import numpy as np, json, sys; a = np.load(sys.argv[1]); print(json.dumps([list(a.shape), str(a.dtype), a.ravel().tolist()]))`,
    file,
  ]);
  t.equal(py.code, 0, py.stderr);
  t.same(JSON.parse(py.stdout), [[10, 3], 'float32', all], 'numpy reads the shape written at close and every row');
  const aborted = await NpyWriter.create(path.join(path.dirname(file), 'aborted.npy'), 'uint8', [2]);
  await aborted.append(new Uint8Array(4));
  await aborted.abort();
  t.same(readdirSync(path.dirname(file)).sort(), ['rows.npy'], 'abort() leaves nothing behind');
});

// Larger than a whole-file read can hold (2 GiB), which the reader once used.
const BIG = 2 ** 31 + 2 ** 20;
const room = (() => {
  try {
    const s = statfsSync(os.tmpdir());
    return s.bavail * s.bsize > 3 * BIG && os.freemem() > 2.5 * BIG;
  } catch {
    return false;
  }
})();
t.test(
  'an .npy over 2 GiB round-trips',
  {
    skip: room
      ? false
      : `needs ${((3 * BIG) / 2 ** 30).toFixed(1)} GiB free in ${os.tmpdir()} and ${((2.5 * BIG) / 2 ** 30).toFixed(1)} GiB of free memory, which this machine lacks now`,
  },
  async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-npy-big-'));
    try {
      const file = path.join(dir, 'big.npy');
      const rows = BIG / 4096;
      let data: Uint8Array | null = new Uint8Array(BIG);
      for (let i = 0; i < BIG; i += 4093) data[i] = (i / 4093) & 255;
      data[BIG - 1] = 7;
      await writeNpy(file, { dtype: 'uint8', shape: [rows, 4096], data });
      data = null;
      const back = await readNpy(file);
      t.same(back.shape, [rows, 4096]);
      let bad = 0;
      for (let i = 0; i < BIG; i++) {
        const want = i === BIG - 1 ? 7 : i % 4093 === 0 ? (i / 4093) & 255 : 0;
        if ((back.data as Uint8Array)[i] !== want) bad++;
      }
      t.equal(bad, 0, `all ${BIG} bytes read back`);
      const py = await runProcess(VENV_PYTHON, [
        '-c',
        `import numpy as np, sys; a = np.load(sys.argv[1], mmap_mode='r'); print(a.shape[0], a.shape[1], int(a[-1, -1]))`,
        file,
      ]);
      t.equal(py.code, 0, py.stderr);
      t.equal(
        py.stdout.trim().split(' ').slice(0, 3).join(' '),
        `${rows} 4096 7`,
        'numpy maps it: shape and last byte',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
