// Slide-level evaluation (`eval --level slide`): per-slide features in, slide labels in, the slide-level tasks of the
// paper out (TP53 mutation in TCGA-BRCA, CHIMERA). Inputs:
//
//   features  a folder of <slide>.h5 (embed --slides: `features` (N, D) per slide), or a feature set whose meta.csv
//             has a `slide` column (rows of one slide are its tiles)
//   labels    a CSV with slide, label, and where known split (train/val/test) or fold (0..K-1), patient, site
//
// Aggregators: `mean`, each slide's tile features averaged, then the linear probe and kNN of lib/eval/evaluate.ts on
// the pooled features; `abmil`, gated-attention MIL (Ilse et al. 2018, as CLAM and UNI's slide benchmarks use it;
// engine: native/engine/include/g2l/mil.h, js twin: lib/backends/js/mil.ts) trained on the train slides with AdamW and a
// cosine learning rate, one slide a step in an order drawn from the seed, early stopping on the validation slides
// (the val split, or with folds the next fold, the rest training), the best epoch's weights scored on test. Splits are by patient: a patient's slides never sit on two sides (a labels file that breaks this is
// refused, naming the patient); without a split or fold column, K patient-level folds stratified by label are drawn
// from the seed. With folds, every metric is reported per fold, with the mean and the standard deviation (numpy's,
// ddof 0) across folds. report.json: slide.<aggregator>.{auc,bacc,acc,f1} (the linear probe at the first C, or the C
// chosen on val), with std and folds when cross-validated, and the probe's and kNN's full results beside them.
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { readCsv } from '../io/csv.js';
import { hdf5, isHdf5File } from '../io/hdf5.js';
import { compareCodePoints, readFeatureSet, type FeatureSet } from '../data/feature-set.js';
import { SplitMix32, shuffleInPlace } from '../util/random.js';
import { cKey, evaluateSet, type EvalOptions, type SetReport } from './evaluate.js';
import { accuracy, balancedAccuracy, rocAuc, weightedF1 } from './metrics.js';
import { argmaxRows } from './logistic.js';
import type { EvalBackend, MilBackend, MilBags, MilParams } from '../backends/types.js';

/** A slide's tile features. */
export interface Bag {
  n: number;
  d: number;
  features: Float32Array;
}

export interface SlideLabels {
  file: string;
  slides: string[];
  labels: string[];
  patients: string[];
  /** 'train' | 'val' | 'test' per slide, when the file has a split column. */
  splits?: string[];
  /** Fold index per slide, when the file has a fold column. */
  folds?: number[];
  sites?: string[];
}

type Metrics = { auc: number; bacc: number; acc: number; f1: number };

export interface SlideAggregatorReport extends Metrics {
  /** mean: which C the headline metrics are the probe's at. */
  C?: number;
  std?: Metrics;
  folds?: (Metrics & { n_train: number; n_test: number; best_epoch?: number })[];
  /** mean: the probe at every C. */
  linear?: Record<string, Metrics & { std?: Metrics }>;
  /** abmil: the settings it trained with. */
  settings?: AbmilSettings;
  knn?: Record<string, { acc: number; bacc: number; std?: { acc: number; bacc: number } }>;
  info: {
    slides: number;
    patients: number;
    classes: string[];
    dim: number;
    scheme: 'split' | 'folds';
    n_folds: number;
  };
}

export type SlideReport = { mean?: SlideAggregatorReport; abmil?: SlideAggregatorReport };

const TCGA_BARCODE = /^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})-/i;

/**
 * The labels CSV. A missing patient column takes the patient from a TCGA barcode (its first three fields) where the
 * slide name is one, else the slide itself.
 */
export async function readSlideLabels(file: string): Promise<SlideLabels> {
  const table = await readCsv(file);
  const col = (name: string) => table.header.indexOf(name);
  for (const name of ['slide', 'label']) {
    if (col(name) < 0)
      throw new UserError(
        `${file}: no '${name}' column (columns: ${table.header.join(', ')}); a slide labels file has slide and label (and split or fold, patient, site where known)`,
      );
  }
  const get = (name: string) => (col(name) >= 0 ? table.rows.map((r) => r[col(name)].trim()) : undefined);
  const slides = get('slide')!;
  const labels = get('label')!;
  const seen = new Map<string, number>();
  slides.forEach((s, i) => {
    if (s === '') throw new UserError(`${file}: row ${i + 2} has no slide`);
    if (labels[i] === '')
      throw new UserError(`${file}: slide ${s} (row ${i + 2}) has no label; drop the row or label it`);
    if (seen.has(s)) throw new UserError(`${file}: slide ${s} appears twice (rows ${seen.get(s)! + 2} and ${i + 2})`);
    seen.set(s, i);
  });
  const patients =
    get('patient')?.map((p, i) => p || slides[i]) ?? slides.map((s) => TCGA_BARCODE.exec(s)?.[1].toUpperCase() ?? s);
  const out: SlideLabels = { file, slides, labels, patients, sites: get('site') };
  const splits = get('split');
  const folds = get('fold');
  if (splits && folds)
    throw new UserError(
      `${file}: has both split and fold columns; keep one (split: one train/test split; fold: cross-validation)`,
    );
  if (splits) {
    out.splits = splits.map((s, i) => {
      const v = (
        {
          train: 'train',
          training: 'train',
          val: 'val',
          valid: 'val',
          validation: 'val',
          test: 'test',
          testing: 'test',
        } as Record<string, string>
      )[s.toLowerCase()];
      if (!v) throw new UserError(`${file}: slide ${slides[i]} has split '${s}'; use train, val or test`);
      return v;
    });
  }
  if (folds) {
    out.folds = folds.map((f, i) => {
      const v = Number(f);
      if (f === '' || !Number.isInteger(v) || v < 0)
        throw new UserError(`${file}: slide ${slides[i]} has fold '${f}'; folds are integers from 0`);
      return v;
    });
  }
  return out;
}

/** Per-slide features: a folder of <slide>.h5, or a feature set with a slide column. */
export async function readSlideBags(dir: string): Promise<Map<string, Bag>> {
  const bags = new Map<string, Bag>();
  if (existsSync(path.join(dir, 'features.npy'))) {
    const set = await readFeatureSet(dir);
    if (!set.meta.slide)
      throw new UserError(
        `${dir}: meta.csv has no 'slide' column; slide-level evaluation needs the slide of every row`,
      );
    const rows = new Map<string, number[]>();
    set.meta.slide.forEach((s, i) => {
      if (s === '') throw new UserError(`${dir}: sample '${set.ids[i]}' has no slide`);
      (rows.get(s) ?? rows.set(s, []).get(s)!).push(i);
    });
    for (const [s, r] of rows) {
      const features = new Float32Array(r.length * set.d);
      r.forEach((row, k) => features.set(set.features.subarray(row * set.d, (row + 1) * set.d), k * set.d));
      bags.set(s, { n: r.length, d: set.d, features });
    }
    return bags;
  }
  const names = await fs.readdir(dir).catch(() => null);
  if (!names) throw new UserError(`--features ${dir}: no such folder`);
  const files = names.filter((f) => f.endsWith('.h5')).sort();
  if (files.length === 0)
    throw new UserError(
      `${dir}: neither a feature set (features.npy + meta.csv) nor a folder of <slide>.h5 files (embed --slides)`,
    );
  const h5 = await hdf5();
  for (const f of files) {
    const file = path.join(dir, f);
    if (!isHdf5File(file))
      throw new UserError(`${file}: not an HDF5 file; extract it again with g2l-native embed --slides`);
    const h = new h5.File(file, 'r');
    try {
      const ds = h.get('features');
      const shape = ds instanceof h5.Dataset ? (ds.shape ?? []) : [];
      if (!(ds instanceof h5.Dataset) || shape.length !== 2)
        throw new UserError(`${file}: no 2-D 'features' dataset; extract it again with g2l-native embed --slides`);
      const v = ds.value as ArrayLike<number>;
      const features = v instanceof Float32Array ? v : Float32Array.from(v);
      bags.set(f.slice(0, -3), { n: shape[0], d: shape[1], features });
    } finally {
      h.close();
    }
  }
  return bags;
}

/** Mean of each slide's tile features, rows in `slides` order. */
export function meanPool(bags: Map<string, Bag>, slides: string[]): { features: Float32Array; d: number } {
  const d = bags.get(slides[0])!.d;
  const out = new Float32Array(slides.length * d);
  const acc = new Float64Array(d);
  slides.forEach((s, i) => {
    const b = bags.get(s)!;
    if (b.d !== d)
      throw new UserError(
        `slide ${s} has ${b.d}-d features, the others ${d}-d: extract every slide with the same model`,
      );
    if (b.n === 0) throw new UserError(`slide ${s} has no tiles to pool: drop it from the labels or tile it again`);
    acc.fill(0);
    for (let r = 0; r < b.n; r++) for (let j = 0; j < d; j++) acc[j] += b.features[r * d + j];
    for (let j = 0; j < d; j++) out[i * d + j] = acc[j] / b.n;
  });
  return { features: out, d };
}

/**
 * K folds by patient, stratified by label: patients (with the label most of their slides have) are shuffled from the
 * seed and dealt class by class to the folds in turn. Returns the fold of every slide.
 */
export function patientFolds(labels: SlideLabels, k: number, seed: number): number[] {
  const byPatient = new Map<string, number[]>();
  labels.patients.forEach((p, i) => (byPatient.get(p) ?? byPatient.set(p, []).get(p)!).push(i));
  if (k < 2 || k > byPatient.size)
    throw new UserError(`--folds ${k}: needs 2 to ${byPatient.size} (the number of patients)`);
  const patientLabel = new Map<string, string>();
  for (const [p, rows] of byPatient) {
    const count = new Map<string, number>();
    for (const r of rows) count.set(labels.labels[r], (count.get(labels.labels[r]) ?? 0) + 1);
    patientLabel.set(p, [...count].sort((a, b) => b[1] - a[1] || compareCodePoints(a[0], b[0]))[0][0]);
  }
  const rng = new SplitMix32(seed, 0x51de);
  const fold = new Array<number>(labels.slides.length);
  let next = 0;
  for (const cls of [...new Set(patientLabel.values())].sort(compareCodePoints)) {
    const ps = [...byPatient.keys()].filter((p) => patientLabel.get(p) === cls).sort(compareCodePoints);
    shuffleInPlace(ps, rng);
    for (const p of ps) {
      for (const r of byPatient.get(p)!) fold[r] = next % k;
      next++;
    }
  }
  return fold;
}

/** Refuses a patient whose slides sit in two groups (splits or folds), naming it. */
export function checkPatientGroups(labels: SlideLabels, group: (string | number)[], what: string): void {
  const at = new Map<string, string | number>();
  labels.patients.forEach((p, i) => {
    const g = at.get(p);
    if (g === undefined) at.set(p, group[i]);
    else if (g !== group[i]) {
      throw new UserError(
        `${labels.file}: patient ${p} has slides in ${what} ${g} and ${group[i]} (slide ${labels.slides[i]}): keep each patient's slides on one side`,
      );
    }
  });
}

export interface SlideEvalOptions extends Pick<
  EvalOptions,
  'ks' | 'Cs' | 'vote' | 'maxIter' | 'threads' | 'bootstrap' | 'seed' | 'log' | 'warn'
> {
  /** Folds drawn when the labels have neither split nor fold (default 5). */
  folds: number;
  /** Aggregators to run (default ['mean']). */
  aggregators?: ('mean' | 'abmil')[];
  /** ABMIL's settings (ABMIL_DEFAULTS) and the backend that trains it. */
  abmil?: Partial<AbmilSettings>;
  /** Trains ABMIL; the mean aggregator's kNN and probe run on it too (evaluate.ts EvalOptions.backend). */
  backend?: MilBackend & EvalBackend;
  device?: string;
}

export interface AbmilSettings {
  hidden: number;
  attention: number;
  lr: number;
  weightDecay: number;
  epochs: number;
  patience: number;
}

/**
 * Defaults in the style of the slide benchmarks of UNI and CLAM (AdamW, learning rate 1e-4 on a cosine, weight decay
 * 1e-5, one slide a step, a few tens of epochs with early stopping on the validation loss); not any one paper's exact
 * recipe: hidden 256 and attention 128, 20 epochs, patience 5. Each is settable (--abmil-epochs, the library's abmil).
 */
export const ABMIL_DEFAULTS: AbmilSettings = Object.freeze({
  hidden: 256,
  attention: 128,
  lr: 1e-4,
  weightDecay: 1e-5,
  epochs: 20,
  patience: 5,
});

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const std = (xs: number[]) => {
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length);
};
const each = <T extends Record<string, number>>(rows: T[]): { mean: T; std: T } => {
  const keys = Object.keys(rows[0]) as (keyof T)[];
  return {
    mean: Object.fromEntries(keys.map((k) => [k, mean(rows.map((r) => r[k] as number))])) as T,
    std: Object.fromEntries(keys.map((k) => [k, std(rows.map((r) => r[k] as number))])) as T,
  };
};

/** Slide-level evaluation of one model's per-slide features with the `mean` aggregator. */
export async function evaluateSlides(
  name: string,
  bags: Map<string, Bag>,
  labels: SlideLabels,
  opts: SlideEvalOptions,
): Promise<SlideReport> {
  const missing = labels.slides.filter((s) => !bags.has(s));
  if (missing.length) {
    throw new UserError(
      `${name}: ${missing.length} labelled slide(s) have no features (e.g. ${missing[0]}): extract them (embed --slides) or drop them from ${labels.file}`,
    );
  }
  const classes = [...new Set(labels.labels)].sort(compareCodePoints);
  if (classes.length < 2)
    throw new UserError(`${labels.file}: one label only (${classes[0]}); a slide task needs two classes or more`);
  const pooled = meanPool(bags, labels.slides);
  // The groups: the file's split, its folds, or folds drawn by patient.
  let groups: { train: number[]; val: number[]; test: number[] }[];
  let scheme: 'split' | 'folds';
  if (labels.splits) {
    checkPatientGroups(labels, labels.splits, 'splits');
    const rows = (s: string) => labels.splits!.flatMap((v, i) => (v === s ? [i] : []));
    groups = [{ train: rows('train'), val: rows('val'), test: rows('test') }];
    scheme = 'split';
  } else {
    const fold = labels.folds ?? patientFolds(labels, opts.folds, opts.seed);
    checkPatientGroups(labels, fold, 'folds');
    const ks = [...new Set(fold)].sort((a, b) => a - b);
    if (ks.length < 2) throw new UserError(`${labels.file}: one fold only; cross-validation needs two or more`);
    groups = ks.map((f) => ({
      train: fold.flatMap((v, i) => (v !== f ? [i] : [])),
      val: [],
      test: fold.flatMap((v, i) => (v === f ? [i] : [])),
    }));
    scheme = 'folds';
  }
  const aggregators = opts.aggregators ?? ['mean'];
  const info = (n_folds: number) => ({
    slides: labels.slides.length,
    patients: new Set(labels.patients).size,
    classes,
    dim: pooled.d,
    scheme,
    n_folds,
  });
  const out: SlideReport = {};
  if (aggregators.includes('mean'))
    out.mean = await meanAggregator(name, labels, pooled, groups, scheme, opts, info(groups.length));
  if (aggregators.includes('abmil'))
    out.abmil = await abmilAggregator(bags, labels, classes, groups, scheme, opts, info(groups.length));
  return out;
}

type Groups = { train: number[]; val: number[]; test: number[] }[];

async function meanAggregator(
  name: string,
  labels: SlideLabels,
  pooled: { features: Float32Array; d: number },
  groups: Groups,
  scheme: 'split' | 'folds',
  opts: SlideEvalOptions,
  info: SlideAggregatorReport['info'],
): Promise<SlideAggregatorReport> {
  const perGroup: SetReport[] = [];
  for (const [g, rows] of groups.entries()) {
    const split = new Array<string>(labels.slides.length).fill('');
    for (const [s, rs] of Object.entries(rows)) for (const r of rs) split[r] = s;
    const set: FeatureSet = {
      dir: `${name} (slide level, ${scheme === 'folds' ? `fold ${g}` : 'split'})`,
      n: labels.slides.length,
      d: pooled.d,
      features: pooled.features,
      ids: labels.slides,
      meta: { label: labels.labels, split, patient: labels.patients },
    };
    const ks = opts.ks.filter((k) => k <= rows.train.length);
    const { report } = await evaluateSet(set, {
      protocols: ks.length ? ['knn', 'linear'] : ['linear'],
      ks,
      Cs: opts.Cs,
      vote: opts.vote,
      robustnessKs: [],
      maxIter: opts.maxIter,
      threads: opts.threads,
      bootstrap: scheme === 'split' ? opts.bootstrap : 0,
      seed: opts.seed,
      log: opts.log,
      warn: opts.warn,
      backend: opts.backend,
      device: opts.device,
    });
    perGroup.push(report);
  }
  const headlineC = opts.Cs.find((C) => cKey(C) === perGroup[0].selected?.linear) ?? opts.Cs[0];
  const pick = (r: SetReport, C: number): Metrics => {
    const e = r.linear![cKey(C)];
    return { auc: e.auc, bacc: e.bacc, acc: e.acc, f1: e.f1 };
  };
  const linear: SlideAggregatorReport['linear'] = {};
  for (const C of opts.Cs) {
    const rows = perGroup.map((r) => pick(r, C));
    const { mean: m, std: s } = each(rows);
    linear[cKey(C)] =
      scheme === 'folds'
        ? { ...m, std: s }
        : { ...m, ...(perGroup[0].linear![cKey(C)].ci ? { ci: perGroup[0].linear![cKey(C)].ci } : {}) };
  }
  const knn: NonNullable<SlideAggregatorReport['knn']> = {};
  for (const key of Object.keys(perGroup[0].knn ?? {})) {
    if (!perGroup.every((r) => r.knn?.[key])) continue;
    const { mean: m, std: s } = each(perGroup.map((r) => ({ acc: r.knn![key].acc, bacc: r.knn![key].bacc })));
    knn[key] = scheme === 'folds' ? { ...m, std: s } : m;
  }
  const head = perGroup.map((r) => pick(r, headlineC));
  const { mean: m, std: s } = each(head);
  const report: SlideAggregatorReport = {
    ...m,
    C: headlineC,
    ...(scheme === 'folds'
      ? {
          std: s,
          folds: head.map((h, i) => ({ ...h, n_train: groups[i].train.length, n_test: groups[i].test.length })),
        }
      : {}),
    linear,
    knn,
    info,
  };
  return report;
}

/** The bags of `slides` (indices into the labels) as one array, with offsets and class indices. */
function toMilBags(bags: Map<string, Bag>, labels: SlideLabels, classes: string[], slides: number[]): MilBags {
  const d = bags.get(labels.slides[slides[0]])!.d;
  const offsets = [0];
  for (const i of slides) offsets.push(offsets.at(-1)! + bags.get(labels.slides[i])!.n);
  const features = new Float32Array(offsets.at(-1)! * d);
  slides.forEach((i, k) => features.set(bags.get(labels.slides[i])!.features, offsets[k] * d));
  return {
    features: { data: features, shape: [offsets.at(-1)!, d] },
    offsets,
    labels: slides.map((i) => classes.indexOf(labels.labels[i])),
  };
}

/** torch.nn.Linear's default initialisation (weight and bias uniform in +-1/sqrt(fan_in)) from the seed. */
export function abmilInit(d: number, k: number, s: AbmilSettings, seed: number): MilParams {
  const rng = new SplitMix32(seed, 0xab);
  const layer = (out: number, inp: number): [Float32Array, Float32Array] => {
    const bound = 1 / Math.sqrt(inp);
    const u = () => (rng.below(2 ** 30) / 2 ** 30) * 2 * bound - bound;
    return [Float32Array.from({ length: out * inp }, u), Float32Array.from({ length: out }, u)];
  };
  const p: MilParams = {};
  for (const [name, out, inp] of [
    ['fc', s.hidden, d],
    ['attention_a', s.attention, s.hidden],
    ['attention_b', s.attention, s.hidden],
    ['attention_c', 1, s.attention],
    ['classifier', k, s.hidden],
  ] as const) {
    const [w, b] = layer(out, inp);
    p[`${name}.weight`] = { data: w, shape: [out, inp] };
    p[`${name}.bias`] = { data: b, shape: [out] };
  }
  return p;
}

async function abmilAggregator(
  bags: Map<string, Bag>,
  labels: SlideLabels,
  classes: string[],
  groups: Groups,
  scheme: 'split' | 'folds',
  opts: SlideEvalOptions,
  info: SlideAggregatorReport['info'],
): Promise<SlideAggregatorReport> {
  if (!opts.backend) throw new Error('abmil: no backend given');
  const s = { ...ABMIL_DEFAULTS, ...opts.abmil };
  const K = classes.length;
  const d = bags.get(labels.slides[0])!.d;
  const results: (Metrics & { n_train: number; n_test: number; best_epoch: number })[] = [];
  for (const [g, rows0] of groups.entries()) {
    // Folds: the next fold validates (early stopping), the others train.
    let rows = rows0;
    if (scheme === 'folds') {
      if (groups.length < 3)
        throw new UserError(
          'abmil with cross-validation needs at least 3 folds (one tests, one validates, the rest train)',
        );
      const valSet = new Set(groups[(g + 1) % groups.length].test);
      rows = { train: rows0.train.filter((i) => !valSet.has(i)), val: [...valSet], test: rows0.test };
    }
    const train = toMilBags(bags, labels, classes, rows.train);
    const val = rows.val.length ? toMilBags(bags, labels, classes, rows.val) : null;
    const test = toMilBags(bags, labels, classes, rows.test);
    // One slide a step, in an order drawn per epoch; a cosine learning rate over all steps.
    const rng = new SplitMix32(opts.seed, 0x1000 + g);
    const epochs = Array.from({ length: s.epochs }, () => {
      const order = rows.train.map((_, i) => i);
      shuffleInPlace(order, rng);
      return order.map((b) => [b]);
    });
    const total = s.epochs * rows.train.length;
    const lr = Array.from({ length: total }, (_, t) => s.lr * 0.5 * (1 + Math.cos((Math.PI * t) / total)));
    opts.log?.('abmil.start', {
      fold: g,
      train: rows.train.length,
      val: rows.val.length,
      test: rows.test.length,
      ...s,
    });
    const fit = await opts.backend.abmilTrain(
      abmilInit(d, K, s, opts.seed + g),
      train,
      val,
      { epochs, lr, weightDecay: s.weightDecay, patience: val ? s.patience : 0 },
      opts.device,
    );
    const proba = await opts.backend.abmilPredict(fit.params, test, opts.device);
    const p64 = Float64Array.from(proba.data);
    const y = Int32Array.from(test.labels!);
    const pred = argmaxRows(p64, K);
    results.push({
      auc: rocAuc(y, p64, K),
      bacc: balancedAccuracy(y, pred, K),
      acc: accuracy(y, pred),
      f1: weightedF1(y, pred, K),
      n_train: rows.train.length,
      n_test: rows.test.length,
      best_epoch: fit.bestEpoch,
    });
    opts.log?.('abmil.result', { fold: g, best_epoch: fit.bestEpoch, epochs_run: fit.epochsRun, ...results.at(-1) });
  }
  const { mean: m, std: sd } = each(results.map(({ auc, bacc, acc, f1 }) => ({ auc, bacc, acc, f1 })));
  return {
    ...m,
    ...(scheme === 'folds' ? { std: sd, folds: results } : {}),
    settings: s,
    info,
  };
}
