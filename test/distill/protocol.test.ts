// `g2l-native protocol`: synthetic training slides, the fixture teacher and student, a patch dataset (CSV of tiles)
// and a slide dataset (synthetic slides + labels) through tile -> distill -> features -> evaluation -> one table; an
// interrupted run (killed during the features stage) resumes without redoing the stages it had finished.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { syntheticTile } from '../../lib/distill/tiles.js';
import { makeSyntheticSlides } from '../../lib/slides/synthetic.js';
import { readProtocol } from '../../lib/protocol/run.js';
import { BIN, ROOT, childEnv, runCli } from '../helpers/cli.js';

const dir = t.testdir();
const file = path.join(dir, 'protocol.yaml');
const out = path.join(dir, 'protocol.out');

t.before(async () => {
  await makeSyntheticSlides(path.join(dir, 'train-slides'), { count: 2, width: 1536, height: 1024, seed: 2 });
  const set = await makeSyntheticSlides(path.join(dir, 'task-slides'), {
    count: 6,
    width: 1024,
    height: 1024,
    seed: 5,
  });
  writeFileSync(
    path.join(dir, 'task-labels.csv'),
    `slide,label,fold\n${set.slides.map((s, i) => `${s.name},${i % 2 ? 'b' : 'a'},${i % 3}`).join('\n')}\n`,
  );
  // A patch task: tiles of two textures (seeds), train and test.
  mkdirSync(path.join(dir, 'patches'));
  const rows = ['path,label,split,site,slide'];
  for (let i = 0; i < 16; i++) {
    const label = i % 2 ? 'b' : 'a';
    const px = syntheticTile(1000 * (i % 2) + i, 256);
    await sharp(Buffer.from(px), { raw: { width: 256, height: 256, channels: 3 } })
      .png()
      .toFile(path.join(dir, 'patches', `${i}.png`));
    rows.push(`patches/${i}.png,${label},${i < 8 ? 'train' : 'test'},${i % 4 < 2 ? 'A' : 'B'},s${i}`);
  }
  writeFileSync(path.join(dir, 'patches.csv'), `${rows.join('\n')}\n`);
  writeFileSync(
    file,
    [
      'slides: train-slides',
      'tiling: { mpp: 0.5, tile: 256, tissueThreshold: 0.05 }',
      `teacher: ${path.join(ROOT, 'test/fixtures/models/timm_giant_reg4_swiglu')}`,
      `student: ${path.join(ROOT, 'test/fixtures/models/hf_dinov2_reg_swiglu')}`,
      'distill: { steps: 4, batchSize: 4, checkpointEvery: 2 }',
      'datasets:',
      '  - { name: tex, kind: patch, data: patches.csv }',
      '  - { name: task, kind: slide, slides: task-slides, labels: task-labels.csv }',
      'eval: { k: [3], C: [1], folds: 3 }',
      'batchSize: 8',
      '',
    ].join('\n'),
  );
});

t.test('the protocol file is validated, paths relative to it', async (t) => {
  const p = readProtocol(file);
  t.equal(p.slides, path.join(dir, 'train-slides'));
  t.equal(p.datasets.length, 2);
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(bad, 'slides: x\nteacher: a\nstudent: b\ndistill: {}\ndatasets: []\n');
  t.throws(() => readProtocol(bad), /bad\.yaml: .*distill\.steps.*datasets/);
});

t.test('killed during the features stage, run again: tile and distill are reused, the table is written', async (t) => {
  const child = spawn(process.execPath, [BIN, 'protocol', file], { cwd: ROOT, env: childEnv(), stdio: 'ignore' });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const marker = path.join(out, 'distill', 'stage.json');
  const deadline = Date.now() + 300_000;
  while (!existsSync(marker) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.ok(existsSync(marker), 'tile and distill finished');
  child.kill('SIGKILL');
  await exited;
  const distilled = statSync(path.join(out, 'distill', 'student', 'model.safetensors')).mtimeMs;
  const r = await runCli(['protocol', file]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /protocol done: .*report\.md \(reused: tile, distill/);
  t.equal(
    statSync(path.join(out, 'distill', 'student', 'model.safetensors')).mtimeMs,
    distilled,
    'the distilled student was not trained again',
  );
  const report = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
  t.same(
    report.table.rows.map((x: { model: string }) => x.model),
    ['teacher', 'student', 'g2l'],
    'one row per model',
  );
  t.same(
    report.table.columns.map((c: { dataset: string }) => c.dataset),
    ['tex', 'task'],
    'one column per dataset',
  );
  for (const row of report.table.rows)
    for (const v of row.cells) t.ok(v === null || (v >= 0 && v <= 1), `${row.model}: ${v}`);
  t.equal(report.table.cka.length, 1, 'CKA before and after on the patch dataset');
  t.ok(report.table.cka[0].before > 0 && report.table.cka[0].after > 0);
  t.ok(report.reports.task.g2l.slide.mean.folds.length === 3, 'the slide task cross-validated over its 3 folds');
  t.same(
    report.table.robustness.map((r: { model: string; k: number }) => [r.model, r.k]),
    [
      ['teacher', 5],
      ['student', 5],
      ['g2l', 5],
    ],
    'the robustness index at the largest k the 8 test tiles allow',
  );
  t.ok(statSync(path.join(out, 'table.png')).size > 1000, 'the table as a figure');
  t.match(
    readFileSync(path.join(out, 'report.md'), 'utf8'),
    /\| model \| tex \(linear C=1 bacc\) \| task \(slide AUC \(mean pooling\)\) \|/,
  );
  // A third run reuses everything.
  const again = await runCli(['protocol', file]);
  t.match(again.stdout, /reused: tile, distill, features tex\/teacher/);
});
