// Whole-slide feature extraction (`embed --slides`): 20 synthetic slides tiled by `tile`, one of them damaged after
// tiling. The .h5 files, read with h5py, hold exactly the manifest's coordinates and the features `embed` gives for
// the same tiles read one by one; the damaged slide is a failed row and the other 19 are extracted; a run killed
// halfway and run again gives the same files; --nproc 2 splits the slides and gives the same files too.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { TileSampler } from '../../lib/data/sampler.js';
import { Encoder } from '../../lib/models/encoder.js';
import { openSlide } from '../../lib/slides/reader.js';
import { makeSyntheticSlides } from '../../lib/slides/synthetic.js';
import { runTiling } from '../../lib/slides/tile-run.js';
import { parseCsv } from '../../lib/io/csv.js';
import { BIN, ROOT, VENV_PYTHON, childEnv, runCli, runProcess } from '../helpers/cli.js';

const MODEL = path.join(ROOT, 'test/fixtures/models/hf_dinov2_reg_swiglu');
const dir = t.testdir();
const slides = path.join(dir, 'slides');
const manifest = path.join(dir, 'tiles');
let damaged = '';

t.before(async () => {
  const set = await makeSyntheticSlides(slides, { count: 20, width: 1024, height: 1024, seed: 4 });
  const r = await runTiling({ slides, out: manifest, mpp: 0.5, tileSizePx: 256, tissueThreshold: 0.05 });
  if (r.ok !== 20) throw new Error(`tiling: ${r.ok} of 20 slides: ${JSON.stringify(r.rows.filter((x) => x.error))}`);
  // Damaged after tiling (a copy cut short): the manifest lists it, its tiles cannot be read.
  damaged = set.slides[7].name;
  truncateSync(set.slides[7].file, 4096);
});

/** Every dataset and attribute of the .h5 files of a folder, read with h5py. */
async function readH5(
  folder: string,
): Promise<
  Record<
    string,
    { features: number[][]; coords: number[][]; attrs: Record<string, unknown>; fileAttrs: Record<string, unknown> }
  >
> {
  const script = `
import h5py, json, os, sys
out = {}
for name in sorted(os.listdir(sys.argv[1])):
    if not name.endswith('.h5'):
        continue
    with h5py.File(os.path.join(sys.argv[1], name), 'r') as f:
        assert f['features'].dtype == 'float32' and f['coords'].dtype == 'int64', (f['features'].dtype, f['coords'].dtype)
        conv = lambda v: v.item() if hasattr(v, 'item') else v
        out[name[:-3]] = {'features': f['features'][:].tolist(), 'coords': f['coords'][:].tolist(),
                          'attrs': {k: conv(v) for k, v in f['coords'].attrs.items()},
                          'fileAttrs': {k: conv(v) for k, v in f.attrs.items()}}
print(json.dumps(out))
`;
  const r = await runProcess(VENV_PYTHON, ['-c', script, folder]);
  if (r.code !== 0) throw new Error(`h5py: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const statusOf = (out: string) => {
  const table = parseCsv(readFileSync(path.join(out, 'slides.csv'), 'utf8'));
  return new Map(table.rows.map((r) => [r[0], { status: r[1], tiles: Number(r[2]), error: r[5] }]));
};

t.test("20 slides: 19 extracted in TRIDENT's layout, the damaged one a failed row", async (t) => {
  const out = path.join(dir, 'features');
  const r = await runCli(['embed', '--slides', manifest, '--model', MODEL, '--out', out, '--batch-size', '8']);
  t.equal(r.code, 1, `exit 1 when a slide failed: ${r.stderr}`);
  t.match(r.stdout, /extracted 19 slides .*; 1 failed/);
  t.match(r.stderr, new RegExp(`slide ${damaged} failed: `));
  const status = statusOf(out);
  t.equal(status.size, 20, 'slides.csv has a row per slide');
  t.equal(status.get(damaged)?.status, 'failed');
  t.ok((status.get(damaged)?.error ?? '').length > 0, `the row says why: ${status.get(damaged)?.error}`);
  t.equal([...status.values()].filter((s) => s.status === 'ok').length, 19);
  t.notOk(existsSync(path.join(out, `${damaged}.h5`)), 'no file for the failed slide');
  t.same(
    readdirSync(out).filter((f) => f.includes('.tmp')),
    [],
    'no temporary file left',
  );

  const h5 = await readH5(out);
  const sampler = await TileSampler.open(manifest, { batchSize: 1 });
  t.equal(Object.keys(h5).length, 19);
  const enc = await Encoder.load(MODEL, { device: 'cpu', backend: 'native' });
  let worst = 0;
  try {
    for (const slide of sampler.slides) {
      if (slide.name === damaged) continue;
      const got = h5[slide.name];
      const refs = Array.from(slide.tiles, (k) => sampler.tiles[k]);
      t.same(
        got.coords,
        refs.map((r) => [r.x, r.y]),
        `${slide.name}: coords are the manifest's, in its order`,
      );
      t.equal(got.features.length, refs.length);
      t.equal(got.attrs.patch_size, 256);
      t.equal(
        got.attrs.patch_size_level0,
        Math.round((256 * 0.5) / slide.mpp!),
        `${slide.name}: patch_size_level0 at ${slide.mpp} um/px`,
      );
      t.equal(got.attrs.target_magnification, 20);
      t.equal(got.fileAttrs.dims, enc.info.dims);
      // The same tiles read one by one, each embedded alone.
      const s = await openSlide(slide.path);
      try {
        for (const [k, ref] of refs.entries()) {
          const px = await s.readRegion(ref.x, ref.y, ref.level, ref.readSizePx, ref.readSizePx);
          const y = await enc.embed({ data: px.data, shape: [1, 256, 256, 3] });
          for (let j = 0; j < y.data.length; j++) worst = Math.max(worst, Math.abs(y.data[j] - got.features[k][j]));
        }
      } finally {
        await s.close();
      }
    }
  } finally {
    await enc.dispose();
  }
  t.ok(worst <= 1e-5, `features equal those of the tiles embedded one by one (worst difference ${worst})`);

  // A rerun skips what is done and tries the failed slide again.
  const again = await runCli(['embed', '--slides', manifest, '--model', MODEL, '--out', out, '--batch-size', '8']);
  t.match(again.stdout, /extracted 0 slides .*; 19 already done; 1 failed/);
});

t.test('a run killed halfway and run again gives the same files', async (t) => {
  const straight = path.join(dir, 'straight');
  const killed = path.join(dir, 'killed');
  await runCli(['embed', '--slides', manifest, '--model', MODEL, '--out', straight, '--batch-size', '4']);
  const child = spawn(
    process.execPath,
    [BIN, 'embed', '--slides', manifest, '--model', MODEL, '--out', killed, '--batch-size', '4'],
    { cwd: ROOT, env: childEnv(), stdio: 'ignore' },
  );
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const deadline = Date.now() + 120_000;
  const done = () =>
    existsSync(path.join(killed, '.status'))
      ? readdirSync(path.join(killed, '.status')).filter((f) => f.endsWith('.json')).length
      : 0;
  while (done() < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  child.kill('SIGKILL');
  await exited;
  const partial = readdirSync(killed).filter((f) => f.endsWith('.h5')).length;
  t.ok(partial >= 4 && partial < 19, `killed with ${partial} of 19 slides written`);
  const r = await runCli(['embed', '--slides', manifest, '--model', MODEL, '--out', killed, '--batch-size', '4']);
  t.match(r.stdout, new RegExp(`extracted ${19 - partial} slides`), 'the rerun extracts only the rest');
  t.same(
    readdirSync(killed).filter((f) => f.includes('.tmp')),
    [],
    'no temporary file left',
  );
  t.same(await readH5(killed), await readH5(straight), 'the same datasets and attributes as a run straight through');
});

t.test('--nproc 2 splits the slides between two workers: the same files', async (t) => {
  const one = path.join(dir, 'straight');
  const two = path.join(dir, 'two');
  const r = await runCli([
    'embed',
    '--slides',
    manifest,
    '--model',
    MODEL,
    '--out',
    two,
    '--batch-size',
    '4',
    '--nproc',
    '2',
  ]);
  t.equal(r.code, 1, 'a worker saw the damaged slide: exit 1');
  const status = statusOf(two);
  t.equal(
    [...status.values()].filter((s) => s.status === 'ok').length,
    19,
    'slides.csv has every slide, from both workers',
  );
  t.same(await readH5(two), await readH5(one));
});

t.test('--format npy writes a feature set per slide', async (t) => {
  const out = path.join(dir, 'npy');
  const r = await runCli(['embed', '--slides', manifest, '--model', MODEL, '--out', out, '--format', 'npy']);
  t.equal(r.code, 1);
  const slide = readdirSync(slides)
    .map((f) => f.replace(/\.(svs|tiff)$/, ''))
    .find((n) => n !== damaged)!;
  for (const f of ['features.npy', 'meta.csv', 'coords.csv'])
    t.ok(existsSync(path.join(out, slide, f)), `${slide}/${f}`);
  const meta = parseCsv(readFileSync(path.join(out, slide, 'meta.csv'), 'utf8'));
  t.same(meta.header, ['id', 'slide']);
});

t.test('bad input: one message', async (t) => {
  const r = await runCli(['embed', '--slides', slides, '--model', MODEL, '--out', path.join(dir, 'x')]);
  t.equal(r.code, 2);
  t.match(r.stderr, /not a tile manifest folder/);
  const both = await runCli([
    'embed',
    '--slides',
    manifest,
    '--input',
    'a.npy',
    '--model',
    MODEL,
    '--out',
    path.join(dir, 'y'),
  ]);
  t.equal(both.code, 2);
  t.match(both.stderr, /--input or --slides, not both/);
});
