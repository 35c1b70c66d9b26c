// `g2l-native tile` as a user runs it (the built CLI in a child process): the output layout, failed rows for broken
// files, resuming, the mpp rules and the exit codes of the contract.
import t from 'tap';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { openslideStatus } from '../../lib/slides/addon.js';
import {
  makeSyntheticSlides,
  randomTissueRegions,
  renderSlide,
  writeSyntheticTiff,
} from '../../lib/slides/synthetic.js';
import { runCli } from '../helpers/cli.js';

const os = openslideStatus();
const csv = (file: string) => {
  const [header, ...rows] = readFileSync(file, 'utf8').trim().split('\n');
  return { header: header.split(','), rows: rows.map((r) => r.split(',')) };
};

t.test(
  'a folder with good, truncated and non-slide files: failed rows, exit 0 with a warning, then resume',
  async (t) => {
    const dir = t.testdir();
    const slides = path.join(dir, 'slides');
    const out = path.join(dir, 'out');
    await makeSyntheticSlides(slides, { count: 2, width: 2048, height: 1536, withBroken: true });
    const r = await runCli(['tile', '--slides', slides, '--out', out, '--workers', '2']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stderr, /warning: 2 slide\(s\) failed/);
    t.match(r.stdout, /tiled 2 of 4 slides/);
    const table = csv(path.join(out, 'slides.csv'));
    t.same(table.header, ['slide', 'path', 'status', 'tiles', 'mpp', 'width', 'height', 'error']);
    const bySlide = Object.fromEntries(table.rows.map((row) => [row[0], row]));
    t.same(Object.keys(bySlide).sort(), ['not-a-slide', 'synthetic-01', 'synthetic-02', 'truncated']);
    t.equal(bySlide['truncated'][2], 'failed');
    t.equal(bySlide['not-a-slide'][2], 'failed');
    t.ok(bySlide['truncated'][7].length > 0 && bySlide['not-a-slide'][7].length > 0, 'failed rows carry their error');
    for (const name of ['synthetic-01', 'synthetic-02']) {
      const row = bySlide[name];
      t.equal(row[2], 'ok', `${name} ok`);
      t.ok(Number(row[3]) > 0, `${name} has tiles`);
      const tiles = csv(path.join(out, 'tiles', `${name}.csv`));
      t.same(tiles.header, ['x', 'y', 'level', 'read_size', 'tissue_fraction']);
      t.equal(tiles.rows.length, Number(row[3]), 'the manifest has as many rows as slides.csv says');
      t.ok(
        tiles.rows.every((x) => Number(x[4]) >= 0.5),
        'every tile passes the tissue threshold',
      );
      const meta = await sharp(path.join(out, 'thumbs', `${name}.png`)).metadata();
      t.equal(meta.format, 'png');
    }
    t.equal(bySlide['synthetic-01'][4], '0.25', 'SVS mpp from its Aperio description');
    const tilesFile = path.join(out, 'tiles', 'synthetic-01.csv');
    const before = statSync(tilesFile).mtimeMs;

    const again = await runCli(['tile', '--slides', slides, '--out', out]);
    t.equal(again.code, 0, again.stderr);
    t.match(again.stdout, /tiled 2 of 4 slides \(2 already done\)/);
    t.equal(statSync(tilesFile).mtimeMs, before, 'a finished slide is not tiled again');

    const other = await runCli(['tile', '--slides', slides, '--out', out, '--tile', '224']);
    t.equal(other.code, 2);
    t.match(other.stderr, /holds tiles made with --mpp 0\.5 --tile 256.*use another --out/);
  },
);

t.test('exit 2 when no slide can be tiled', async (t) => {
  const dir = t.testdir({ slides: { 'a.svs': 'not a slide', 'b.tiff': 'nor this' } });
  const r = await runCli(['tile', '--slides', path.join(dir, 'slides'), '--out', path.join(dir, 'out')]);
  t.equal(r.code, 2);
  t.match(r.stderr, /no slide could be tiled \(2 failed\)/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  t.ok(existsSync(path.join(dir, 'out', 'slides.csv')));
});

t.test('slides without mpp: failed with the fix named, then --default-mpp or an mpp column', async (t) => {
  const dir = t.testdir();
  // A plain PNG has no mpp.
  const spec = { width: 1024, height: 768, mpp: 0.5, regions: randomTissueRegions(1024, 768, 5) };
  await sharp(Buffer.from(renderSlide(spec)), { raw: { width: 1024, height: 768, channels: 3 } })
    .png()
    .toFile(path.join(dir, 'plain.png'));
  await writeSyntheticTiff(path.join(dir, 'with-mpp.tiff'), spec);
  writeFileSync(path.join(dir, 'cohort.csv'), 'slide,path\nplain,plain.png\n');
  const r = await runCli(['tile', '--slides', path.join(dir, 'cohort.csv'), '--out', path.join(dir, 'o1')]);
  t.equal(r.code, 2);
  const row = csv(path.join(dir, 'o1', 'slides.csv')).rows[0].join(',');
  t.match(row, /no microns per pixel.*--default-mpp <um\/px> or add an mpp column/);
  const d = await runCli([
    'tile',
    '--slides',
    path.join(dir, 'cohort.csv'),
    '--out',
    path.join(dir, 'o2'),
    '--default-mpp',
    '0.5',
  ]);
  t.equal(d.code, 0, d.stderr);
  writeFileSync(path.join(dir, 'cohort2.csv'), 'slide,path,mpp\nplain,plain.png,0.5\ntiff,with-mpp.tiff,\n');
  const c = await runCli(['tile', '--slides', path.join(dir, 'cohort2.csv'), '--out', path.join(dir, 'o3')]);
  t.equal(c.code, 0, c.stderr);
  const rows = csv(path.join(dir, 'o3', 'slides.csv')).rows;
  t.same(
    rows.map((x) => [x[0], x[2], x[4]]),
    [
      ['plain', 'ok', '0.5'],
      ['tiff', 'ok', '0.5'],
    ],
  );
  t.equal(rows[0][3], rows[1][3], 'the same image tiles the same whichever way its mpp came');
});

t.test('without the slide addon, TIFF reads through libvips', async (t) => {
  const dir = t.testdir();
  const spec = { width: 2048, height: 1536, mpp: 0.5, regions: randomTissueRegions(2048, 1536, 9) };
  await writeSyntheticTiff(path.join(dir, 'slides', 's.tiff'), spec);
  const withAddon = os.version
    ? await runCli(['tile', '--slides', path.join(dir, 'slides'), '--out', path.join(dir, 'a')])
    : null;
  const r = await runCli(['tile', '--slides', path.join(dir, 'slides'), '--out', path.join(dir, 'b')], {
    env: { G2L_SLIDES_ADDON_PATH: path.join(dir, 'none.node') },
  });
  t.equal(r.code, 0, r.stderr);
  const tiles = csv(path.join(dir, 'b', 'slides.csv')).rows[0][3];
  t.ok(Number(tiles) > 0);
  if (withAddon)
    t.equal(csv(path.join(dir, 'a', 'slides.csv')).rows[0][3], tiles, 'OpenSlide and libvips give the same tiles');
});

t.test('bad flags are one-line user errors', async (t) => {
  const dir = t.testdir({ slides: {} });
  for (const [args, re] of [
    [['--mpp', '-1'], /--mpp -1: must be a positive number/],
    [['--tissue-threshold', '2'], /--tissue-threshold 2: must be in \[0, 1\]/],
    [[], /no slide files in this folder/],
  ] as const) {
    const r = await runCli(['tile', '--slides', path.join(dir, 'slides'), '--out', path.join(dir, 'out'), ...args]);
    t.equal(r.code, 2, r.stderr);
    t.match(r.stderr, re);
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  }
});
