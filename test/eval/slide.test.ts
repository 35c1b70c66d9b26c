// Slide-level evaluation (eval --level slide) against scikit-learn on the fixture of tools/make_slide_eval_fixtures.py:
// mean pooling + the linear probe (probabilities to 1e-6, AUC to 1e-9) per patient-level fold and on a train/test split,
// report.json's slide.mean keys, and splits that never put a patient on two sides.
import t, { type Test } from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { writeFeatureSet } from '../../lib/data/feature-set.js';
import { fitLogistic, predictProba, argmaxRows } from '../../lib/eval/logistic.js';
import { accuracy, balancedAccuracy, rocAuc, weightedF1 } from '../../lib/eval/metrics.js';
import { checkPatientGroups, meanPool, patientFolds, readSlideBags, readSlideLabels } from '../../lib/eval/slide.js';
import { runCli } from '../helpers/cli.js';

const fx = path.join(import.meta.dirname, '..', 'fixtures', 'slide-eval');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const expected = JSON.parse(readFileSync(path.join(fx, 'expected.json'), 'utf8')) as any;
const close = (t: Test, got: number, want: number, tol: number, msg: string) =>
  t.ok(Math.abs(got - want) <= tol, `${msg}: ${got} vs ${want} (tol ${tol})`);

t.test(
  'mean pooling + the linear probe equal scikit-learn per fold: probabilities to 1e-6, metrics to 1e-9',
  async (t) => {
    const labels = await readSlideLabels(path.join(fx, 'labels.csv'));
    const bags = await readSlideBags(path.join(fx, 'bags'));
    t.equal(bags.size, 28);
    const { features, d } = meanPool(bags, labels.slides);
    const y = Int32Array.from(labels.labels, (l) => (l === 'mut' ? 1 : 0));
    for (let k = 0; k < 3; k++) {
      const train = labels.folds!.flatMap((f, i) => (f !== k ? [i] : []));
      const test = labels.folds!.flatMap((f, i) => (f === k ? [i] : []));
      const rows = (r: number[]) => {
        const out = new Float32Array(r.length * d);
        r.forEach((i, j) => out.set(features.subarray(i * d, (i + 1) * d), j * d));
        return out;
      };
      for (const C of [1, 0.1]) {
        const want = expected.folds[k][`C${C}`];
        t.same(
          test.map((i) => labels.slides[i]),
          want.test,
          `fold ${k}: the same test slides`,
        );
        const model = fitLogistic(
          rows(train),
          Int32Array.from(train, (i) => y[i]),
          train.length,
          d,
          2,
          { C },
        );
        const proba = predictProba(model, rows(test), test.length);
        let worst = 0;
        want.proba.forEach((row: number[], i: number) =>
          row.forEach((v, c) => {
            worst = Math.max(worst, Math.abs(v - proba[i * 2 + c]));
          }),
        );
        t.ok(worst <= 1e-6, `fold ${k} C=${C}: probabilities within ${worst.toExponential(2)} <= 1e-6`);
        const yt = Int32Array.from(test, (i) => y[i]);
        const pred = argmaxRows(proba, 2);
        close(t, rocAuc(yt, proba, 2), want.auc, 1e-9, `fold ${k} C=${C} AUC`);
        close(t, balancedAccuracy(yt, pred, 2), want.bacc, 1e-9, `fold ${k} C=${C} bacc`);
        close(t, accuracy(yt, pred), want.acc, 1e-9, `fold ${k} C=${C} acc`);
        close(t, weightedF1(yt, pred, 2), want.f1, 1e-9, `fold ${k} C=${C} f1`);
      }
    }
  },
);

t.test(
  'eval --level slide: report.json slide.mean.{auc,bacc,acc,f1} with folds, mean and std across folds',
  async (t) => {
    const out = path.join(t.testdir(), 'report');
    const r = await runCli([
      'eval',
      '--level',
      'slide',
      '--features',
      `g2l:${path.join(fx, 'bags')}`,
      '--labels',
      path.join(fx, 'labels.csv'),
      '--C',
      '1,0.1',
      '--k',
      '5',
      '--out',
      out,
    ]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /g2l: .*slide mean-pool probe AUC/);
    const report = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
    const m = report.slide.mean;
    t.equal(m.C, 1, 'headline metrics at the first C (no val split to choose on)');
    t.equal(m.folds.length, 3);
    for (const key of ['auc', 'bacc', 'acc', 'f1']) {
      const per = expected.folds.map((f: Record<string, Record<string, number>>) => f.C1[key]);
      m.folds.forEach((f: Record<string, number>, k: number) => close(t, f[key], per[k], 1e-9, `fold ${k} ${key}`));
      const mean = per.reduce((a: number, b: number) => a + b, 0) / 3;
      close(t, m[key], mean, 1e-9, `${key}: mean over folds`);
      close(
        t,
        m.std[key],
        Math.sqrt(per.reduce((a: number, b: number) => a + (b - mean) ** 2, 0) / 3),
        1e-9,
        `${key}: std over folds`,
      );
      close(
        t,
        m.linear['C0.1'][key],
        expected.folds.reduce((a: number, f: Record<string, Record<string, number>>) => a + f['C0.1'][key], 0) / 3,
        1e-9,
        `C=0.1 ${key}`,
      );
    }
    t.same(
      m.folds.map((f: { n_test: number }) => f.n_test),
      expected.folds.map((f: { C1: { test: string[] } }) => f.C1.test.length),
      'fold sizes',
    );
    t.ok(m.knn.k5 && m.knn.k5.std, 'kNN on the pooled features, with its spread');
    t.same(m.info, { slides: 28, patients: 12, classes: ['mut', 'wt'], dim: 16, scheme: 'folds', n_folds: 3 });
    t.match(
      readFileSync(path.join(out, 'report.md'), 'utf8'),
      /Slide level: mean pooling \+ linear probe \(mean over 3 patient-level folds\)[\s\S]*± /,
    );
  },
);

t.test(
  "a train/test split by patient: the test split's metrics, no folds; the same from a feature set with a slide column",
  async (t) => {
    const dir = t.testdir();
    // The bags as one feature set (rows are tiles, a slide column).
    const bags = await readSlideBags(path.join(fx, 'bags'));
    const ids: string[] = [],
      slide: string[] = [];
    const parts: Float32Array[] = [];
    for (const [s, b] of bags) {
      for (let i = 0; i < b.n; i++) {
        ids.push(`${s}_${i}`);
        slide.push(s);
      }
      parts.push(b.features);
    }
    const features = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) {
      features.set(p, o);
      o += p.length;
    }
    await writeFeatureSet(path.join(dir, 'set'), { n: ids.length, d: 16, features, ids, meta: { slide } });
    for (const src of [path.join(fx, 'bags'), path.join(dir, 'set')]) {
      const out = path.join(dir, `report-${path.basename(src)}`);
      const r = await runCli([
        'eval',
        '--level',
        'slide',
        '--features',
        src,
        '--labels',
        path.join(fx, 'labels-split.csv'),
        '--out',
        out,
      ]);
      t.equal(r.code, 0, r.stderr);
      const m = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8')).slide.mean;
      for (const key of ['auc', 'bacc', 'acc', 'f1'])
        close(t, m[key], expected.split.C1[key], 1e-9, `${path.basename(src)}: ${key}`);
      t.equal(m.folds, undefined, 'no folds with a split');
      t.equal(m.info.scheme, 'split');
    }
  },
);

t.test('splits by patient: drawn folds never split a patient; a labels file that does is refused', async (t) => {
  const labels = await readSlideLabels(path.join(fx, 'labels.csv'));
  for (const seed of [0, 1, 2, 3]) {
    for (const k of [2, 3, 5]) {
      const folds = patientFolds(labels, k, seed);
      const byPatient = new Map<string, Set<number>>();
      labels.patients.forEach((p, i) => (byPatient.get(p) ?? byPatient.set(p, new Set()).get(p)!).add(folds[i]));
      t.ok(
        [...byPatient.values()].every((s) => s.size === 1),
        `seed ${seed}, ${k} folds: every patient in one fold`,
      );
      t.equal(new Set(folds).size, k, `${k} folds used`);
      t.doesNotThrow(() => checkPatientGroups(labels, folds, 'folds'));
    }
  }
  const dir = t.testdir();
  const text = readFileSync(path.join(fx, 'labels-split.csv'), 'utf8').replace(
    /^P00-S1,(\w+),P00,train$/m,
    'P00-S1,$1,P00,test',
  );
  writeFileSync(path.join(dir, 'bad.csv'), text);
  const r = await runCli([
    'eval',
    '--level',
    'slide',
    '--features',
    path.join(fx, 'bags'),
    '--labels',
    path.join(dir, 'bad.csv'),
    '--out',
    path.join(dir, 'o'),
  ]);
  t.equal(r.code, 2);
  t.match(r.stderr, /patient P00 has slides in splits train and test \(slide P00-S1\)/);
  // Without split or fold: 5 folds drawn by patient, the default.
  writeFileSync(
    path.join(dir, 'plain.csv'),
    `slide,label,patient\n${labels.slides.map((s, i) => `${s},${labels.labels[i]},${labels.patients[i]}`).join('\n')}\n`,
  );
  const five = await runCli([
    'eval',
    '--level',
    'slide',
    '--features',
    path.join(fx, 'bags'),
    '--labels',
    path.join(dir, 'plain.csv'),
    '--out',
    path.join(dir, 'five'),
  ]);
  t.equal(five.code, 0, five.stderr);
  t.equal(JSON.parse(readFileSync(path.join(dir, 'five', 'report.json'), 'utf8')).slide.mean.folds.length, 5);
  // TCGA slide names: the patient is the barcode's first three fields.
  writeFileSync(
    path.join(dir, 'tcga.csv'),
    'slide,label\nTCGA-A1-A0SB-01Z-00-DX1,a\nTCGA-A1-A0SB-01A-01-TS1,a\nTCGA-B6-A0IK-01Z-00-DX1,b\n',
  );
  t.same((await readSlideLabels(path.join(dir, 'tcga.csv'))).patients, [
    'TCGA-A1-A0SB',
    'TCGA-A1-A0SB',
    'TCGA-B6-A0IK',
  ]);
  const missing = await runCli([
    'eval',
    '--level',
    'slide',
    '--features',
    path.join(fx, 'bags'),
    '--out',
    path.join(dir, 'm'),
  ]);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /--level slide needs --labels/);
});

t.test('eval --level slide --aggregator mean,abmil: ABMIL per fold, deterministic, on either backend', async (t) => {
  const dir = t.testdir();
  const run = (out: string, extra: string[] = []) =>
    runCli([
      'eval',
      '--level',
      'slide',
      '--features',
      path.join(fx, 'bags'),
      '--labels',
      path.join(fx, 'labels.csv'),
      '--aggregator',
      'mean,abmil',
      '--abmil-epochs',
      '4',
      '--out',
      path.join(dir, out),
      ...extra,
    ]);
  const a = await run('a');
  t.equal(a.code, 0, a.stderr);
  t.match(a.stdout, /slide ABMIL AUC [\d.]+ ± [\d.]+/);
  const ra = JSON.parse(readFileSync(path.join(dir, 'a', 'report.json'), 'utf8')).slide;
  t.ok(ra.mean && ra.abmil, 'both aggregators');
  t.equal(ra.abmil.folds.length, 3);
  for (const f of ra.abmil.folds) {
    t.ok(
      f.auc >= 0 && f.auc <= 1 && f.best_epoch >= 0 && f.best_epoch < 4,
      `fold: AUC ${f.auc}, best epoch ${f.best_epoch}`,
    );
    t.equal(f.n_test + f.n_train < 28, true, 'a fold validates: train + test < all slides');
  }
  t.same(ra.abmil.settings, { hidden: 256, attention: 128, lr: 1e-4, weightDecay: 1e-5, epochs: 4, patience: 5 });
  await run('b');
  t.same(
    JSON.parse(readFileSync(path.join(dir, 'b', 'report.json'), 'utf8')).slide.abmil,
    ra.abmil,
    'the same seed, the same report',
  );
  const js = await run('js', ['--backend', 'js']);
  t.equal(js.code, 0, js.stderr);
  const rj = JSON.parse(readFileSync(path.join(dir, 'js', 'report.json'), 'utf8')).slide.abmil;
  t.equal(rj.folds.length, 3, 'the js twin runs the same protocol');
  t.match(readFileSync(path.join(dir, 'a', 'report.md'), 'utf8'), /Slide level: gated-attention MIL \(ABMIL\)/);
  const bad = await run('bad', ['--folds', '2']);
  t.equal(bad.code, 0, 'fold column given: --folds is for drawn folds only');
});
