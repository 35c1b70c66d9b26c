// Feature-set folders: round trip, row matching by id, and one clear message per bad input.
import t from 'tap';
import path from 'node:path';
import { writeFileSync, mkdirSync } from 'node:fs';
import {
  readFeatureSet,
  writeFeatureSet,
  matchById,
  splitRows,
  classList,
  labelsOf,
  requireTwoClasses,
  compareCodePoints,
} from '../../lib/data/feature-set.js';
import { encodeNpy } from '../../lib/io/npy.js';
import { UserError } from '../../lib/errors.js';

function rawSet(dir: string, features: Float32Array | Float64Array, shape: number[], csv: string) {
  mkdirSync(dir, { recursive: true });
  const dtype = features instanceof Float32Array ? 'float32' : 'float64';
  writeFileSync(path.join(dir, 'features.npy'), encodeNpy({ dtype, shape, data: features }));
  writeFileSync(path.join(dir, 'meta.csv'), csv);
}

t.test('write then read a feature set; float64 features are accepted as float32', async (t) => {
  const tmp = t.testdir();
  const dir = path.join(tmp, 'set');
  const features = Float32Array.from([1, 2, 3, 4, 5, 6]);
  await writeFeatureSet(dir, {
    n: 3,
    d: 2,
    features,
    ids: ['a', 'b,c', 'd'],
    meta: { label: ['x', 'y', ''], split: ['train', 'test', 'val'] },
  });
  const back = await readFeatureSet(dir);
  t.same(Array.from(back.features), [1, 2, 3, 4, 5, 6]);
  t.same(back.ids, ['a', 'b,c', 'd']);
  t.same(back.meta, { label: ['x', 'y', ''], split: ['train', 'test', 'val'] });
  t.same(splitRows(back, 'test'), [1]);
  t.same(splitRows(back, 'all'), [0, 1, 2]);
  const d64 = path.join(tmp, 'f64');
  rawSet(d64, Float64Array.from([0.5, 1.5]), [2, 1], 'id,split\nq,Training\nr,VALIDATION\n');
  const s64 = await readFeatureSet(d64);
  t.ok(s64.features instanceof Float32Array);
  t.same(s64.meta.split, ['train', 'val'], 'split aliases normalised');
});

t.test('classes sort as strings by code point, as numpy does', async (t) => {
  t.same(['b', 'B', 'a', '10', '9', 'é', 'z'].sort(compareCodePoints), ['10', '9', 'B', 'a', 'b', 'z', 'é']);
});

t.test('matchById reorders by id and names what is missing', async (t) => {
  const a = { dir: 'A', n: 3, d: 1, features: Float32Array.from([1, 2, 3]), ids: ['p', 'q', 'r'], meta: {} };
  const b = {
    dir: 'B',
    n: 3,
    d: 2,
    features: Float32Array.from([30, 31, 10, 11, 20, 21]),
    ids: ['r', 'p', 'q'],
    meta: { label: ['R', 'P', 'Q'] },
  };
  const [, bm] = matchById(a, b);
  t.same(Array.from(bm.features), [10, 11, 20, 21, 30, 31]);
  t.same(bm.meta.label, ['P', 'Q', 'R']);
  const c = { ...b, ids: ['r', 'p', 'zz'] };
  t.throws(
    () => matchById(a, c),
    /mismatched rows: 1 id\(s\) of A are not in B \(e\.g\. 'q'\); embed the same samples into both sets/,
  );
});

t.test('bad feature sets: one clear line each', async (t) => {
  const root = t.testdir();
  const cases: [string, () => void, RegExp][] = [
    [
      'rows',
      () => rawSet(path.join(root, 'rows'), new Float32Array(6), [3, 2], 'id\na\nb\n'),
      /mismatched rows: features\.npy has 3 rows, meta\.csv has 2/,
    ],
    [
      'nan',
      () => rawSet(path.join(root, 'nan'), Float32Array.from([0, 1, NaN, 2]), [2, 2], 'id\na\nb\n'),
      /NaN features: sample 'b' \(row 1, column 0\) is NaN; re-embed it or drop it/,
    ],
    [
      'dup',
      () => rawSet(path.join(root, 'dup'), new Float32Array(2), [2, 1], 'id\na\na\n'),
      /id 'a' appears twice \(rows 2 and 3\)/,
    ],
    ['noid', () => rawSet(path.join(root, 'noid'), new Float32Array(2), [2, 1], 'name\na\nb\n'), /no 'id' column/],
    [
      'split',
      () => rawSet(path.join(root, 'split'), new Float32Array(1), [1, 1], 'id,split\na,holdout\n'),
      /row 2 has split 'holdout'; use train, val or test/,
    ],
    [
      'shape',
      () => rawSet(path.join(root, 'shape'), new Float32Array(4), [4], 'id\na\nb\nc\nd\n'),
      /features must be 2-D \[N, D\], got shape \[4\]/,
    ],
  ];
  for (const [name, make, re] of cases) {
    make();
    await t.rejects(readFeatureSet(path.join(root, name)), re, name);
    await t.rejects(readFeatureSet(path.join(root, name)), UserError);
  }
  await t.rejects(readFeatureSet(path.join(root, 'absent')), /not a feature-set folder .*run g2l-native embed first/);
  mkdirSync(path.join(root, 'half'));
  writeFileSync(path.join(root, 'half', 'meta.csv'), 'id\n');
  await t.rejects(readFeatureSet(path.join(root, 'half')), /features\.npy: missing/);
});

t.test('labels: missing for a split, single class, no label column', async (t) => {
  const set = {
    dir: 'S',
    n: 4,
    d: 1,
    features: new Float32Array(4),
    ids: ['a', 'b', 'c', 'd'],
    meta: { label: ['x', '', 'x', 'y'], split: ['train', 'train', 'test', 'test'] },
  };
  const classes = classList(set);
  t.same(classes, ['x', 'y']);
  t.throws(
    () => labelsOf(set, splitRows(set, 'train'), classes, 'train split'),
    /S: missing labels for the train split: 1 row\(s\) have no label \(e\.g\. 'b'\)/,
  );
  const y = labelsOf(set, [0, 2], classes, 'train split');
  t.throws(
    () => requireTwoClasses(set, y, classes, 'train split'),
    /S: a single class: the train split has only class 'x'; classification needs at least two classes/,
  );
  t.throws(() => classList({ ...set, meta: {} }), /S: meta\.csv has no 'label' column/);
});
