// `tile --coords-from`: TRIDENT's patch coordinates (files written with h5py by tools/make_trident_patches.py from
// our own manifest) give the same tiles as our manifest for the same grid; --mag 20 is --mpp 0.5; coordinates of
// another resolution or a missing file are a failed slide with the reason.
import t from 'tap';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseCsv } from '../../lib/io/csv.js';
import { makeSyntheticSlides } from '../../lib/slides/synthetic.js';
import { ROOT, VENV_PYTHON, runCli, runProcess } from '../helpers/cli.js';

const dir = t.testdir();
const slides = path.join(dir, 'slides');
const ours = path.join(dir, 'ours');
const job = path.join(dir, 'trident');

const tilesOf = (manifest: string, slide: string) => {
  const table = parseCsv(readFileSync(path.join(manifest, 'tiles', `${slide}.csv`), 'utf8'));
  return table.rows.map((r) => r.slice(0, 4).join(',')).sort();
};

t.before(async () => {
  await makeSyntheticSlides(slides, { count: 3, width: 2048, height: 1536, seed: 9 });
  const r = await runCli(['tile', '--slides', slides, '--out', ours, '--mag', '20']);
  if (r.code !== 0) throw new Error(r.stderr);
  const py = await runProcess(VENV_PYTHON, [path.join(ROOT, 'tools/make_trident_patches.py'), ours, job]);
  if (py.code !== 0) throw new Error(py.stderr);
});

t.test('--mag 20 tiles as --mpp 0.5', async (t) => {
  t.equal(JSON.parse(readFileSync(path.join(ours, 'tiling.json'), 'utf8')).mpp, 0.5);
});

t.test('TRIDENT coordinates give the same tiles as our manifest (x, y, level, read size)', async (t) => {
  const theirs = path.join(dir, 'from-trident');
  const r = await runCli(['tile', '--slides', slides, '--out', theirs, '--coords-from', job]);
  t.equal(r.code, 0, r.stderr);
  const rows = parseCsv(readFileSync(path.join(theirs, 'slides.csv'), 'utf8')).rows;
  t.equal(rows.length, 3);
  for (const row of rows) {
    t.equal(row[2], 'ok', `${row[0]}: ${row[7]}`);
    const want = tilesOf(ours, row[0]);
    t.ok(want.length > 0, `${row[0]}: ${want.length} tiles`);
    t.same(tilesOf(theirs, row[0]), want, `${row[0]}: the same tiles`);
    // In the file's order (reversed by the fixture script), not re-derived from a grid.
    const first = parseCsv(readFileSync(path.join(theirs, 'tiles', `${row[0]}.csv`), 'utf8'))
      .rows[0].slice(0, 2)
      .join(',');
    const last = parseCsv(readFileSync(path.join(ours, 'tiles', `${row[0]}.csv`), 'utf8'))
      .rows.at(-1)!
      .slice(0, 2)
      .join(',');
    t.equal(first, last, `${row[0]}: rows in the file's order`);
  }
  t.equal(
    JSON.parse(readFileSync(path.join(theirs, 'tiling.json'), 'utf8')).coordsFrom,
    path.resolve(job),
    'tiling.json records the source',
  );
});

t.test('coordinates of another resolution, or a missing file: a failed slide that says what to change', async (t) => {
  const other = path.join(dir, 'other');
  const r = await runCli(['tile', '--slides', slides, '--out', other, '--coords-from', job, '--mag', '40']);
  t.equal(r.code, 2, 'no slide tiled: exit 2');
  const rows = parseCsv(readFileSync(path.join(other, 'slides.csv'), 'utf8')).rows;
  for (const row of rows) t.match(row[7], /patches cover \d+ level-0 px, while --mpp 0.25 gives \d+ .*pass --mag 20/);
  const first = rows[0][0];
  rmSync(path.join(job, 'patches', `${first}_patches.h5`));
  writeFileSync(path.join(job, 'patches', `${rows[1][0]}_patches.h5`), 'not hdf5');
  const missing = path.join(dir, 'missing');
  const m = await runCli(['tile', '--slides', slides, '--out', missing, '--coords-from', job]);
  t.equal(m.code, 0, 'the third slide is tiled');
  const mr = new Map(parseCsv(readFileSync(path.join(missing, 'slides.csv'), 'utf8')).rows.map((x) => [x[0], x]));
  t.match(mr.get(first)![7], new RegExp(`no ${first}_patches.h5 in .* --coords-from needs TRIDENT's patch file`));
  t.match(mr.get(rows[1][0])![7], /is not a readable HDF5 file/);
});
