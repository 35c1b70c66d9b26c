// Image datasets (ImageFolder and CSV) into feature sets through embedDataset, with a small fake encoder whose
// output is known from the pixels (the real models come from lib/models): per-image channel means and the
// input shape it was given. Unreadable images are skipped and listed; the rest are embedded.
import t from 'tap';
import path from 'node:path';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import sharp from 'sharp';
import { readImageDataset, embedDataset, decodeRgb, type ImageEncoder } from '../../lib/data/image-dataset.js';
import { readFeatureSet } from '../../lib/data/feature-set.js';
import { main } from '../../lib/cli.js';

async function solid(file: string, w: number, h: number, rgb: [number, number, number], channels: 1 | 3 | 4 = 3) {
  mkdirSync(path.dirname(file), { recursive: true });
  const bg = channels === 4 ? { r: rgb[0], g: rgb[1], b: rgb[2], alpha: 1 } : { r: rgb[0], g: rgb[1], b: rgb[2] };
  let img = sharp({ create: { width: w, height: h, channels: channels === 4 ? 4 : 3, background: bg } });
  if (channels === 1) img = img.grayscale();
  await img.png().toFile(file);
}

class FakeEncoder implements ImageEncoder {
  info = { inputSize: 16 };
  batches: number[][] = [];
  async embed(batch: { data: Uint8Array; shape: [number, number, number, number] }) {
    const [n, h, w, c] = batch.shape;
    this.batches.push([...batch.shape]);
    const out = new Float32Array(n * 4);
    for (let i = 0; i < n; i++) {
      for (let ch = 0; ch < 3; ch++) {
        let s = 0;
        for (let p = 0; p < h * w; p++) s += batch.data[i * h * w * c + p * c + ch];
        out[i * 4 + ch] = s / (h * w);
      }
      out[i * 4 + 3] = h * 1000 + w;
    }
    return { data: out, shape: [n, 4] };
  }
}

t.test(
  'ImageFolder: classes from folder names, images decoded to the input size, unreadable ones skipped',
  async (t) => {
    const tmp = t.testdir();
    const root = path.join(tmp, 'data');
    await solid(path.join(root, 'tumour', 'a.png'), 40, 30, [200, 10, 30]);
    await solid(path.join(root, 'tumour', 'b.png'), 16, 16, [5, 250, 7], 4);
    await solid(path.join(root, 'stroma', 'c.png'), 24, 64, [90, 90, 90], 1);
    writeFileSync(path.join(root, 'stroma', 'broken.png'), 'this is not a png');
    writeFileSync(path.join(root, 'stroma', 'notes.txt'), 'ignored: not an image');
    const ds = await readImageDataset(root);
    t.same(
      ds.items.map((i) => i.id),
      ['stroma/broken.png', 'stroma/c.png', 'tumour/a.png', 'tumour/b.png'],
    );
    const enc = new FakeEncoder();
    const out = path.join(tmp, 'features');
    const res = await embedDataset(enc, ds, out, { batchSize: 2 });
    t.equal(res.embedded, 3);
    t.same(
      res.skipped.map((s) => s.id),
      ['stroma/broken.png'],
    );
    t.same(
      enc.batches,
      [
        [1, 16, 16, 3],
        [2, 16, 16, 3],
      ],
      'batches of the readable images at the input size',
    );
    const set = await readFeatureSet(out);
    t.same(set.ids, ['stroma/c.png', 'tumour/a.png', 'tumour/b.png']);
    t.same(set.meta, { label: ['stroma', 'tumour', 'tumour'] });
    t.same(
      Array.from(set.features),
      [90, 90, 90, 16016, 200, 10, 30, 16016, 5, 250, 7, 16016],
      'solid colours survive decode and resize exactly; grey widened to RGB; alpha dropped',
    );
    const skipped = readFileSync(path.join(out, 'skipped.csv'), 'utf8');
    t.match(skipped, /^id,path,reason\nstroma\/broken\.png,.*broken\.png,/);
    const px = await decodeRgb(path.join(root, 'tumour', 'a.png'), 8);
    t.equal(px.length, 8 * 8 * 3);
  },
);

t.test('CSV dataset: meta columns carried into meta.csv, then evaluated', async (t) => {
  const root = t.testdir();
  const rows = ['path,label,split,site,slide'];
  const colours: Record<string, [number, number, number]> = { a: [220, 40, 40], b: [40, 40, 220] };
  let i = 0;
  for (const label of ['a', 'b']) {
    for (let j = 0; j < 12; j++) {
      const c = colours[label].map((v) => Math.min(255, v + ((j * 7 + i) % 23))) as [number, number, number];
      const file = `img/${label}${j}.png`;
      await solid(path.join(root, file), 20, 20, c);
      rows.push(`${file},${label},${j < 8 ? 'train' : 'test'},site${j % 3},${label}_slide${j % 4}`);
      i++;
    }
  }
  rows.push('img/missing.png,a,test,site0,a_slide0');
  writeFileSync(path.join(root, 'data.csv'), rows.join('\n') + '\n');
  const ds = await readImageDataset(path.join(root, 'data.csv'));
  t.same(ds.columns, ['label', 'split', 'site', 'slide']);
  const out = path.join(root, 'features');
  const res = await embedDataset(new FakeEncoder(), ds, out);
  t.equal(res.embedded, 24);
  t.equal(res.skipped.length, 1);
  t.equal(res.skipped[0].id, 'img/missing.png');
  const set = await readFeatureSet(out);
  t.same(set.meta.site?.slice(0, 3), ['site0', 'site1', 'site2']);
  // The colours separate the classes perfectly: the probe and kNN must find that.
  const evalOut = path.join(root, 'report');
  let err = '';
  const e = process.stderr.write.bind(process.stderr),
    o = process.stdout.write.bind(process.stdout);
  process.stderr.write = ((s: string) => {
    err += s;
    return true;
  }) as typeof process.stderr.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  let code: number;
  try {
    code = await main(['eval', '--features', out, '--k', '3', '--robustness-k', '3', '--out', evalOut]);
  } finally {
    process.stderr.write = e;
    process.stdout.write = o;
  }
  t.equal(code, 0, err);
  const rep = JSON.parse(readFileSync(path.join(evalOut, 'report.json'), 'utf8'));
  t.equal(rep.knn.k3.acc, 1);
  t.equal(rep.linear.C1.auc, 1);
});

t.test('bad datasets: one clear line each', async (t) => {
  const root = t.testdir();
  await t.rejects(readImageDataset(path.join(root, 'nope')), /dataset not found; give an ImageFolder/);
  mkdirSync(path.join(root, 'empty', 'cls'), { recursive: true });
  await t.rejects(
    readImageDataset(path.join(root, 'empty')),
    /no images found; an ImageFolder holds one folder per class/,
  );
  writeFileSync(path.join(root, 'nopath.csv'), 'file,label\nx.png,a\n');
  await t.rejects(readImageDataset(path.join(root, 'nopath.csv')), /no 'path' column/);
  writeFileSync(path.join(root, 'dup.csv'), 'path\nx.png\nx.png\n');
  await t.rejects(readImageDataset(path.join(root, 'dup.csv')), /id 'x\.png' appears twice/);
  writeFileSync(path.join(root, 'allbad.csv'), 'path\nx.png\ny.png\n');
  const ds = await readImageDataset(path.join(root, 'allbad.csv'));
  await t.rejects(embedDataset(new FakeEncoder(), ds, path.join(root, 'f')), /none of the 2 images could be read/);
});
