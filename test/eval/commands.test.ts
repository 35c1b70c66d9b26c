// `g2l-native eval` and `g2l-native cka` end to end on the committed fixtures: report.json's contract keys hold
// the scikit-learn / numpy reference values; bad inputs exit 2 with one clear line.
import t, { type Test } from 'tap';
import path from 'node:path';
import { readFileSync, existsSync, mkdirSync, writeFileSync, cpSync } from 'node:fs';
import sharp from 'sharp';
import { main } from '../../lib/cli.js';

const fx = path.join(import.meta.dirname, '..', 'fixtures', 'eval');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const expected = JSON.parse(readFileSync(path.join(fx, 'expected.json'), 'utf8')) as any;

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '',
    err = '';
  const o = process.stdout.write.bind(process.stdout),
    e = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => {
    out += s;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => {
    err += s;
    return true;
  }) as typeof process.stderr.write;
  try {
    const code = await main(args);
    return { code, out, err };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
  }
}

const close = (t: Test, got: number, want: number, tol: number, msg: string) =>
  t.ok(Math.abs(got - want) <= tol, `${msg}: ${got} vs ${want}`);

t.test('eval on one set: report.json keys at the root, values equal the references', async (t) => {
  const out = t.testdir();
  const r = await run([
    'eval',
    '--features',
    path.join(fx, 'multi'),
    '--protocol',
    'knn,linear,robustness',
    '--k',
    '5,20',
    '--C',
    '0.01,1',
    '--knn-vote',
    'majority',
    '--out',
    out,
  ]);
  t.equal(r.code, 0, r.err);
  const rep = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
  t.same(Object.keys(rep.knn), ['k5', 'k20']);
  t.same(Object.keys(rep.linear), ['C0.01', 'C1']);
  t.same(Object.keys(rep.robustness), ['k3', 'k5', 'k10', 'k20']);
  const exp = expected.multi;
  for (const k of ['k5', 'k20']) {
    close(t, rep.knn[k].acc, exp.knn[k].majority.acc, 1e-9, `${k} acc`);
    close(t, rep.knn[k].bacc, exp.knn[k].majority.bacc, 1e-9, `${k} bacc`);
  }
  for (const C of ['C0.01', 'C1']) {
    close(t, rep.linear[C].auc, exp.linear[C].auc, 1e-3, `${C} auc`);
    for (const m of ['acc', 'bacc', 'f1']) close(t, rep.linear[C][m], exp.linear[C][m], 1e-9, `${C} ${m}`);
  }
  for (const k of ['k3', 'k5', 'k10', 'k20']) {
    const want = exp.robustness_test[k];
    t.same(
      [rep.robustness[k].SO, rep.robustness[k].OS, rep.robustness[k].SS, rep.robustness[k].OO],
      [want.SO, want.OS, want.SS, want.OO],
    );
    close(t, rep.robustness[k].ratio, want.ratio, 1e-9, `${k} ratio`);
    close(t, rep.robustness[k].bounded, want.bounded, 1e-9, `${k} bounded`);
  }
  t.ok(rep.selected.knn && rep.selected.linear, 'val split present: best k and C selected');
  t.ok(rep.knn.k5.val && rep.linear.C1.val, 'val scores reported');
  for (const f of ['report.md', 'report.html', 'eval.log.jsonl']) t.ok(existsSync(path.join(out, f)), f);
  for (const f of ['robustness.png', 'roc.png']) {
    const meta = await sharp(path.join(out, 'figures', f)).metadata();
    t.equal(meta.format, 'png', `${f} is a PNG`);
    t.ok((meta.width ?? 0) > 300, `${f} has a real size`);
  }
  t.notOk(existsSync(path.join(out, 'figures', 'cka.png')), 'no CKA figure for a single set');
  const md = readFileSync(path.join(out, 'report.md'), 'utf8');
  t.match(md, /\| model \| k=5 acc \| k=5 bacc \| k=20 acc \| k=20 bacc \|/);
  t.match(md, /!\[.*\]\(figures\/robustness\.png\)/);
  const log = readFileSync(path.join(out, 'eval.log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.ok(
    log.some((l) => l.event === 'linear.result'),
    'JSON-lines log of the steps',
  );
});

t.test('eval on several sets: one object per set under its name, CKA between them, bootstrap intervals', async (t) => {
  const out = t.testdir();
  const r = await run([
    'eval',
    '--features',
    `teacher:${path.join(fx, 'multi')}`,
    '--features',
    path.join(fx, 'multi_b'),
    '--protocol',
    'knn,linear',
    '--k',
    '10',
    '--bootstrap',
    '100',
    '--out',
    out,
  ]);
  t.equal(r.code, 0, r.err);
  const rep = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
  t.same(Object.keys(rep), ['teacher', 'multi_b']);
  close(t, rep.teacher.knn.k10.acc, expected.multi.knn.k10.weighted.acc, 1e-9, 'teacher k10 weighted acc');
  t.equal(rep.teacher.robustness, undefined, 'robustness not requested');
  const [lo, hi] = rep.teacher.linear.C1.ci.auc;
  t.ok(lo <= rep.teacher.linear.C1.auc && rep.teacher.linear.C1.auc <= hi, 'bootstrap interval brackets the AUC');
  const ckaPairs = JSON.parse(readFileSync(path.join(out, 'cka.json'), 'utf8'));
  close(t, ckaPairs[0].linear, expected.cka_multi_multi_b.linear, 1e-6, 'CKA in the report');
  t.ok(existsSync(path.join(out, 'figures', 'cka.png')));
  const html = readFileSync(path.join(out, 'report.html'), 'utf8');
  t.match(html, /<td>teacher<\/td>/);
  t.match(html, /<img src="figures\/cka\.png"/);
});

t.test('robustness on a set without a split column uses the whole set', async (t) => {
  const root = t.testdir();
  const dir = path.join(root, 'nosplit');
  mkdirSync(dir);
  cpSync(path.join(fx, 'multi', 'features.npy'), path.join(dir, 'features.npy'));
  const csv = readFileSync(path.join(fx, 'multi', 'meta.csv'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.split(','));
  const drop = csv[0].indexOf('split');
  writeFileSync(path.join(dir, 'meta.csv'), csv.map((r) => r.filter((_, i) => i !== drop).join(',')).join('\n') + '\n');
  const out = path.join(root, 'out');
  const r = await run([
    'eval',
    '--features',
    dir,
    '--protocol',
    'robustness',
    '--robustness-k',
    '5',
    '--robustness-k',
    '20',
    '--out',
    out,
  ]);
  t.equal(r.code, 0, r.err);
  const rep = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
  for (const k of ['k5', 'k20'])
    close(t, rep.robustness[k].ratio, expected.multi.robustness_all[k].ratio, 1e-9, `${k} whole-set ratio`);
  t.equal(rep.info.robustness_scope, 'all');
});

t.test('cka command: text and --json, rows matched by id', async (t) => {
  const r = await run(['cka', path.join(fx, 'multi'), path.join(fx, 'multi_b'), '--json']);
  t.equal(r.code, 0, r.err);
  const v = JSON.parse(r.out);
  t.same(Object.keys(v), ['linear', 'rbf', 'linear_debiased']);
  for (const k of ['linear', 'rbf', 'linear_debiased']) close(t, v[k], expected.cka_multi_multi_b[k], 1e-6, k);
  const txt = await run(['cka', path.join(fx, 'multi'), path.join(fx, 'multi_b')]);
  t.match(txt.out, /linear CKA +0\.\d{6}\nRBF CKA +0\.\d{6}\ndebiased linear CKA +0\.\d{6}\n405 samples matched by id/);
  const sub = await run(['cka', path.join(fx, 'multi'), path.join(fx, 'multi_b'), '--rbf-max-rows', '100']);
  t.match(sub.out, /on a random 100 of the 405 rows/);
});

t.test('bad input: exit 2 and one clear line each', async (t) => {
  const root = t.testdir();
  const mk = (name: string, csv: string, rows: number) => {
    const dir = path.join(root, name);
    mkdirSync(dir);
    const feats = Float32Array.from({ length: rows * 2 }, (_, i) => Math.sin(i));
    const head = `{'descr': '<f4', 'fortran_order': False, 'shape': (${rows}, 2), }`;
    const pad = 64 - ((10 + head.length + 1) % 64);
    const header = Buffer.from(head + ' '.repeat(pad % 64) + '\n', 'latin1');
    const pre = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 0xff, header.length >> 8]);
    writeFileSync(path.join(dir, 'features.npy'), Buffer.concat([pre, header, Buffer.from(feats.buffer)]));
    writeFileSync(path.join(dir, 'meta.csv'), csv);
    return dir;
  };
  const single = mk('single', 'id,label,split\na,x,train\nb,x,train\nc,y,test\n', 3);
  const unlabelled = mk('unlabelled', 'id,label,split\na,x,train\nb,,test\nc,y,train\n', 3);
  const unseen = mk('unseen', 'id,label,split\na,x,train\nb,y,train\nc,z,test\n', 3);
  const nosplit = mk('nosplit', 'id,label\na,x\nb,y\n', 2);
  const nosite = mk(
    'nosite',
    'id,label,split,slide\na,x,train\nb,y,test\nc,x,test\n'.replace(/\n(\w),(\w),(\w+)/g, '\n$1,$2,$3,s$1'),
    3,
  );
  const cases: [string[], RegExp][] = [
    [['--features', single], /a single class: the train split has only class 'x'/],
    [['--features', unlabelled], /missing labels for the test split: 1 row\(s\) have no label \(e\.g\. 'b'\)/],
    [['--features', unseen], /class 'z' appears in the test split but not in train/],
    [['--features', nosplit], /no 'split' column; kNN and linear probing train on split=train/],
    [
      ['--features', nosite, '--protocol', 'robustness'],
      /no 'site' column; the robustness index needs the site and slide/,
    ],
    [
      ['--features', path.join(fx, 'multi'), '--protocol', 'knn,svm'],
      /--protocol svm: unknown; choose from knn,linear,robustness/,
    ],
    [['--features', path.join(fx, 'multi'), '--k', '0'], /--k 0: expected a positive integer/],
    [['--features', path.join(fx, 'multi'), '--C', '-1'], /--C -1: expected a positive number/],
    [
      ['--features', path.join(fx, 'binary'), '--k', '500', '--protocol', 'knn'],
      /--k 500 is larger than the 150 training samples/,
    ],
    [[], /name what to evaluate: --features <folder>/],
    [
      ['--features', path.join(fx, 'multi'), '--features', path.join(fx, 'multi')],
      /two feature sets are named 'multi'; name them with name:<folder>/,
    ],
    [['--models', 'bad-spec', '--dataset', fx], /--models bad-spec: expected name:<model folder>/],
  ];
  for (const [args, re] of cases) {
    const r = await run(['eval', ...args, '--out', path.join(root, 'out')]);
    t.equal(r.code, 2, `exit 2 for ${args.join(' ')}`);
    t.match(r.err, re, re.source);
    t.equal(r.err.trim().split('\n').length, 1, 'one line');
  }
  const mism = mk('mism', 'id\na\nb\nc\n', 3);
  const r = await run(['cka', path.join(fx, 'multi'), mism]);
  t.equal(r.code, 2);
  t.match(r.err, /mismatched rows: 405 id\(s\) of .*multi are not in .*mism/);
});

t.test(
  '--models with --dataset: cached features are reused; an uncached model is loaded (and a missing one named)',
  async (t) => {
    const root = t.testdir();
    const data = path.join(root, 'data');
    for (const cls of ['a', 'b']) {
      mkdirSync(path.join(data, cls), { recursive: true });
      await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 9, g: 9, b: 9 } } })
        .png()
        .toFile(path.join(data, cls, 'x.png'));
    }
    const out = path.join(root, 'out');
    // A cache entry made from the same dataset and model folder: eval must use it without loading any model.
    const cached = path.join(out, 'features', 'teacher');
    mkdirSync(cached, { recursive: true });
    for (const f of ['features.npy', 'meta.csv']) cpSync(path.join(fx, 'multi', f), path.join(cached, f));
    writeFileSync(
      path.join(cached, 'source.json'),
      `${JSON.stringify({ dataset: path.resolve(data), model: path.resolve(root, 'teacher-model'), items: 2, dtype: null })}\n`,
    );
    const r = await run([
      'eval',
      '--models',
      `teacher:${path.join(root, 'teacher-model')}`,
      '--dataset',
      data,
      '--protocol',
      'knn',
      '--k',
      '10',
      '--out',
      out,
    ]);
    t.equal(r.code, 0, r.err);
    const rep = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
    close(t, rep.knn.k10.acc, expected.multi.knn.k10.weighted.acc, 1e-9, 'cached features evaluated');
    const log = readFileSync(path.join(out, 'eval.log.jsonl'), 'utf8');
    t.match(log, /"event":"embed\.cached"/);

    const other = await run([
      'eval',
      '--models',
      `student:${path.join(root, 'student-model')}`,
      '--dataset',
      data,
      '--out',
      out,
    ]);
    t.equal(other.code, 2, `a model that is not cached has to be loaded: ${other.err}`);
    t.equal(other.err.trim().split('\n').length, 1, 'one line');
    t.match(other.err, /student-model/, 'names the missing model folder');
  },
);

t.test('--models end to end with a tiny real model (timm layout fixture) on a CSV dataset', async (t) => {
  const root = t.testdir();
  const rows = ['path,label,split,site,slide'];
  for (let i = 0; i < 24; i++) {
    const label = i % 2 === 0 ? 'pink' : 'purple';
    const rgb = label === 'pink' ? { r: 230, g: 120 + (i % 5) * 9, b: 190 } : { r: 110, g: 50 + (i % 5) * 9, b: 170 };
    const file = path.join(root, 'img', `${i}.png`);
    mkdirSync(path.dirname(file), { recursive: true });
    await sharp({ create: { width: 40, height: 40, channels: 3, background: rgb } })
      .png()
      .toFile(file);
    rows.push(`img/${i}.png,${label},${i < 16 ? 'train' : 'test'},site${i % 3},slide${i % 6}`);
  }
  writeFileSync(path.join(root, 'data.csv'), rows.join('\n') + '\n');
  const model = path.join(fx, '..', 'models', 'timm_large_gelu');
  const out = path.join(root, 'out');
  const args = [
    'eval',
    '--models',
    `tiny:${model}`,
    '--dataset',
    path.join(root, 'data.csv'),
    '--k',
    '3',
    '--robustness-k',
    '3',
    '--device',
    'cpu',
    '--batch-size',
    '5',
    '--out',
    out,
  ];
  const r = await run(args);
  t.equal(r.code, 0, r.err);
  const rep = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
  t.same(Object.keys(rep.knn), ['k3']);
  t.same(Object.keys(rep.linear), ['C1']);
  t.same(Object.keys(rep.robustness), ['k3']);
  t.equal(rep.info.n, 24);
  const meta = readFileSync(path.join(out, 'features', 'tiny', 'meta.csv'), 'utf8')
    .trim()
    .split('\n');
  t.equal(meta[0], 'id,label,split,site,slide');
  t.equal(meta.length, 25);
  const again = await run(args);
  t.equal(again.code, 0, again.err);
  t.match(
    readFileSync(path.join(out, 'eval.log.jsonl'), 'utf8'),
    /"event":"embed\.cached"/,
    'second run reuses the features',
  );
});

t.test('--max-iter: an unconverged probe is reported and warned about, not hidden', async (t) => {
  const out = t.testdir();
  const r = await run([
    'eval',
    '--features',
    path.join(fx, 'multi'),
    '--protocol',
    'linear',
    '--max-iter',
    '2',
    '--out',
    out,
  ]);
  t.equal(r.code, 0, r.err);
  t.match(
    r.err,
    /warning: .*linear probe C=1 stopped after 2 iterations at max \|gradient\| .* \(target 1e-8\); raise --max-iter/,
  );
  const rep = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
  t.equal(rep.info.linear_fit.C1.converged, false);
  t.equal(rep.info.linear_fit.C1.iterations, 2);
  const bad = await run(['eval', '--features', path.join(fx, 'multi'), '--max-iter', '0', '--out', out]);
  t.equal(bad.code, 2);
  t.match(bad.err, /--max-iter 0: expected a positive integer/);
});
