// One feature set through the protocols of the issue: kNN and the linear probe trained on split=train and
// scored on split=test (val, when present, scores every k and C so the best can be picked without touching test),
// and the robustness index on the test split (the whole set when there is no split column). The result object is
// the per-set part of report.json: knn.k<k>.{acc,bacc}, linear.C<C>.{auc,acc,bacc,f1},
// robustness.k<k>.{ratio,bounded,SO,OS,SS,OO}, plus optional val scores, bootstrap intervals and an info block.
import { UserError } from '../errors.js';
import { classList, labelsOf, requireTwoClasses, selectRows, splitRows, type FeatureSet } from '../data/feature-set.js';
import { knnClassify, type KnnVote } from './knn.js';
import { fitLogistic, predictProba, argmaxRows } from './logistic.js';
import { accuracy, balancedAccuracy, bootstrapCis, metricsOn, rocAuc, rocCurve, weightedF1 } from './metrics.js';
import { robustnessIndex, codes, type RobustnessCounts } from './robustness.js';
import type { SlideReport } from './slide.js';
import type { EvalBackend } from '../backends/types.js';

export type Protocol = 'knn' | 'linear' | 'robustness';
export const PROTOCOLS: Protocol[] = ['knn', 'linear', 'robustness'];

export interface EvalOptions {
  protocols: Protocol[];
  /** kNN k values (default [20]). */
  ks: number[];
  /** Linear-probe C values (default [1]). */
  Cs: number[];
  vote: KnnVote;
  /** Robustness-index k values (default [3, 5, 10, 20]). */
  robustnessKs: number[];
  /** L-BFGS iteration cap of the linear probe (it stops earlier at max |gradient| 1e-8). */
  maxIter: number;
  /** Threads for the neighbour searches of the js backend (default: all CPUs when the search is large). */
  threads?: number;
  /**
   * The backend the searches and the probe run on: the native engine (libtorch: BLAS or the GPU of `device`, the
   * probe off the event loop on all its threads) or js (WebAssembly SIMD). Default: the js code on this thread.
   */
  backend?: EvalBackend;
  /** Native engine: cpu, cuda, cuda:<i> (default cpu). */
  device?: string;
  /** Bootstrap rounds for 95% intervals on test metrics; 0 for none. */
  bootstrap: number;
  seed: number;
  /** One line per step (for the JSON-lines log and the console). */
  log?: (event: string, detail: Record<string, unknown>) => void;
  warn?: (line: string) => void;
  progress?: (label: string) => ((done: number, total: number) => void) | undefined;
}

type Interval = [number, number];
export interface KnnEntry {
  acc: number;
  bacc: number;
  val?: { acc: number; bacc: number };
  ci?: { acc: Interval; bacc: Interval };
}
export interface LinearEntry {
  auc: number;
  acc: number;
  bacc: number;
  f1: number;
  val?: { auc: number; acc: number; bacc: number; f1: number };
  ci?: { auc: Interval; acc: Interval; bacc: Interval; f1: Interval };
}

export interface SetReport {
  /** Slide-level evaluation (eval --level slide; lib/eval/slide.ts), per aggregator. */
  slide?: SlideReport;
  knn?: Record<string, KnnEntry>;
  linear?: Record<string, LinearEntry>;
  robustness?: Record<string, RobustnessCounts>;
  /** Best k and C by validation balanced accuracy (only when a val split exists). */
  selected?: { knn?: string; linear?: string };
  info: {
    n: number;
    dim: number;
    classes?: string[];
    n_train?: number;
    n_val?: number;
    n_test?: number;
    robustness_rows?: number;
    robustness_scope?: 'test' | 'all';
    linear_fit?: Record<string, { iterations: number; converged: boolean; grad_max: number }>;
  };
}

/** Per-class ROC curves of the probe on test, for the figure (the selected C, else the first). */
export interface RocCurves {
  C: number;
  classes: string[];
  curves: { fpr: number[]; tpr: number[] }[];
  auc: number;
}

export const kKey = (k: number) => `k${k}`;
/** C as JavaScript prints the number: C0.01, C1. */
export const cKey = (C: number) => `C${C}`;

function bestBy(keys: string[], score: (k: string) => number | undefined): string | undefined {
  let best: string | undefined;
  let bestScore = -Infinity;
  for (const k of keys) {
    const s = score(k);
    if (s !== undefined && s > bestScore) {
      best = k;
      bestScore = s;
    }
  }
  return best;
}

export async function evaluateSet(set: FeatureSet, opts: EvalOptions): Promise<{ report: SetReport; roc?: RocCurves }> {
  const log = opts.log ?? (() => {});
  const classes = classList(set);
  const report: SetReport = { info: { n: set.n, dim: set.d, classes } };
  let roc: RocCurves | undefined;
  if (opts.protocols.includes('knn') || opts.protocols.includes('linear')) {
    const splits = supervisedSplits(set, classes);
    Object.assign(report.info, {
      n_train: splits.train.n,
      n_test: splits.test.n,
      ...(splits.val ? { n_val: splits.val.n } : {}),
    });
    if (opts.protocols.includes('knn')) await runKnn(set, splits, classes.length, opts, report, log);
    if (opts.protocols.includes('linear')) roc = await runLinear(set, splits, classes, opts, report, log);
  }
  if (opts.protocols.includes('robustness')) await runRobustness(set, classes, opts, report, log);
  // Protocol results first, the info block last, so report.json reads in the order of the contract.
  const { info, ...results } = report;
  return { report: { ...results, info }, roc };
}

type Log = NonNullable<EvalOptions['log']>;

/** The rows kNN and the linear probe train on (split=train) and score (split=test, and val when present). */
interface Splits {
  train: FeatureSet;
  test: FeatureSet;
  val?: FeatureSet;
  yTr: Int32Array;
  yTe: Int32Array;
  yVa?: Int32Array;
}

/** The supervised protocols' splits, refused with one message when they cannot be trained or scored. */
function supervisedSplits(set: FeatureSet, classes: string[]): Splits {
  if (!set.meta.split) {
    throw new UserError(
      `${set.dir}: meta.csv has no 'split' column; kNN and linear probing train on split=train and score split=test (add the column, or run --protocol robustness alone)`,
    );
  }
  const trRows = splitRows(set, 'train'),
    teRows = splitRows(set, 'test'),
    vaRows = splitRows(set, 'val');
  if (trRows.length === 0)
    throw new UserError(`${set.dir}: no rows with split=train; kNN and linear probing need a training split`);
  if (teRows.length === 0)
    throw new UserError(`${set.dir}: no rows with split=test; kNN and linear probing are scored on the test split`);
  const yTr = labelsOf(set, trRows, classes, 'train split');
  requireTwoClasses(set, yTr, classes, 'train split');
  const yTe = labelsOf(set, teRows, classes, 'test split');
  const yVa = vaRows.length > 0 ? labelsOf(set, vaRows, classes, 'val split') : undefined;
  // A class the probe never saw in training cannot be predicted: refuse rather than report skewed metrics.
  const seen = new Set(yTr);
  for (const [what, ys] of [
    ['test', yTe],
    ['val', yVa],
  ] as const) {
    const unseen = ys && [...new Set(ys)].find((c) => !seen.has(c));
    if (unseen !== undefined) {
      throw new UserError(
        `${set.dir}: class '${classes[unseen]}' appears in the ${what} split but not in train; add training samples of it or drop it`,
      );
    }
  }
  return {
    train: selectRows(set, trRows),
    test: selectRows(set, teRows),
    ...(yVa ? { val: selectRows(set, vaRows), yVa } : {}),
    yTr,
    yTe,
  };
}

const pick = (y: Int32Array, rows: Int32Array) => Int32Array.from(rows, (r) => y[r]);

/** kNN at every k: test (and val) accuracy and balanced accuracy, bootstrap intervals, the k val selects. */
async function runKnn(
  set: FeatureSet,
  s: Splits,
  K: number,
  opts: EvalOptions,
  report: SetReport,
  log: Log,
): Promise<void> {
  const tooBig = opts.ks.find((k) => k > s.train.n);
  if (tooBig !== undefined)
    throw new UserError(
      `--k ${tooBig} is larger than the ${s.train.n} training samples of ${set.dir}; use a smaller k`,
    );
  log('knn.start', { set: set.dir, ks: opts.ks, vote: opts.vote, train: s.train.n, test: s.test.n });
  const on = { threads: opts.threads, backend: opts.backend, device: opts.device };
  const preds = await knnClassify(
    s.train.features,
    s.train.n,
    s.yTr,
    s.test.features,
    s.test.n,
    set.d,
    K,
    opts.ks,
    opts.vote,
    { ...on, onProgress: opts.progress?.('kNN search') },
  );
  const valPreds =
    s.val && s.yVa
      ? await knnClassify(s.train.features, s.train.n, s.yTr, s.val.features, s.val.n, set.d, K, opts.ks, opts.vote, on)
      : undefined;
  report.knn = {};
  for (const k of opts.ks) {
    const p = preds.get(k)!.pred;
    const e: KnnEntry = { acc: accuracy(s.yTe, p), bacc: balancedAccuracy(s.yTe, p, K) };
    if (valPreds && s.yVa) {
      const pv = valPreds.get(k)!.pred;
      e.val = { acc: accuracy(s.yVa, pv), bacc: balancedAccuracy(s.yVa, pv, K) };
    }
    if (opts.bootstrap > 0) {
      e.ci = bootstrapCis(
        s.test.n,
        (r) => {
          const yy = pick(s.yTe, r),
            pp = pick(p, r);
          return { acc: accuracy(yy, pp), bacc: balancedAccuracy(yy, pp, K) };
        },
        opts.bootstrap,
        opts.seed,
      );
    }
    report.knn[kKey(k)] = e;
    log('knn.result', { set: set.dir, k, acc: e.acc, bacc: e.bacc });
  }
  if (valPreds) (report.selected ??= {}).knn = bestBy(opts.ks.map(kKey), (k) => report.knn![k].val?.bacc);
}

/** The linear probe at every C: test (and val) AUC, accuracy, balanced accuracy, F1; the ROC curves of the C val selects. */
async function runLinear(
  set: FeatureSet,
  s: Splits,
  classes: string[],
  opts: EvalOptions,
  report: SetReport,
  log: Log,
): Promise<RocCurves> {
  const K = classes.length;
  report.linear = {};
  report.info.linear_fit = {};
  const probas = new Map<number, Float64Array>();
  for (const C of opts.Cs) {
    log('linear.start', { set: set.dir, C, train: s.train.n, classes: K });
    const model = opts.backend
      ? await opts.backend.fitLogistic(s.train.features, s.yTr, s.train.n, set.d, K, {
          C,
          maxIter: opts.maxIter,
          device: opts.device,
        })
      : fitLogistic(s.train.features, s.yTr, s.train.n, set.d, K, { C, maxIter: opts.maxIter });
    if (!model.converged) {
      log('linear.not_converged', { set: set.dir, C, iterations: model.iterations, grad_max: model.gradMax });
      opts.warn?.(
        `${set.dir}: linear probe C=${C} stopped after ${model.iterations} iterations at max |gradient| ${model.gradMax.toExponential(2)} (target 1e-8); raise --max-iter for a tighter fit`,
      );
    }
    const proba = predictProba(model, s.test.features, s.test.n);
    probas.set(C, proba);
    const pred = argmaxRows(proba, K);
    const e: LinearEntry = {
      auc: rocAuc(s.yTe, proba, K),
      acc: accuracy(s.yTe, pred),
      bacc: balancedAccuracy(s.yTe, pred, K),
      f1: weightedF1(s.yTe, pred, K),
    };
    if (s.val && s.yVa) {
      const pv = predictProba(model, s.val.features, s.val.n);
      const m = metricsOn(
        Int32Array.from({ length: s.val.n }, (_, i) => i),
        s.yVa,
        argmaxRows(pv, K),
        pv,
        K,
      );
      e.val = { auc: m.auc!, acc: m.acc, bacc: m.bacc, f1: m.f1 };
    }
    if (opts.bootstrap > 0) {
      e.ci = bootstrapCis(
        s.test.n,
        (r) => {
          const m = metricsOn(r, s.yTe, pred, proba, K);
          return { auc: m.auc!, acc: m.acc, bacc: m.bacc, f1: m.f1 };
        },
        opts.bootstrap,
        opts.seed,
      );
    }
    report.linear[cKey(C)] = e;
    report.info.linear_fit[cKey(C)] = {
      iterations: model.iterations,
      converged: model.converged,
      grad_max: model.gradMax,
    };
    log('linear.result', {
      set: set.dir,
      C,
      auc: e.auc,
      acc: e.acc,
      bacc: e.bacc,
      f1: e.f1,
      iterations: model.iterations,
    });
  }
  if (s.val) (report.selected ??= {}).linear = bestBy(opts.Cs.map(cKey), (c) => report.linear![c].val?.bacc);
  const rocC = opts.Cs.find((C) => cKey(C) === report.selected?.linear) ?? opts.Cs[0];
  const proba = probas.get(rocC)!;
  const curves = (K === 2 ? [1] : classes.map((_, c) => c)).map((c) =>
    rocCurve(
      Uint8Array.from(s.yTe, (v) => (v === c ? 1 : 0)),
      Float64Array.from({ length: s.test.n }, (_, i) => proba[i * K + c]),
    ),
  );
  return { C: rocC, classes: K === 2 ? [classes[1]] : classes, curves, auc: report.linear[cKey(rocC)].auc };
}

/** The robustness index at every k on the test split (the whole set without a split column). */
async function runRobustness(
  set: FeatureSet,
  classes: string[],
  opts: EvalOptions,
  report: SetReport,
  log: Log,
): Promise<void> {
  const scope = set.meta.split ? 'test' : 'all';
  const rows = splitRows(set, scope);
  if (rows.length === 0) throw new UserError(`${set.dir}: no rows with split=test for the robustness index`);
  for (const col of ['site', 'slide'] as const) {
    const v = set.meta[col];
    if (!v)
      throw new UserError(
        `${set.dir}: meta.csv has no '${col}' column; the robustness index needs the site and slide of every sample`,
      );
    const missing = rows.find((r) => v[r] === '');
    if (missing !== undefined)
      throw new UserError(
        `${set.dir}: sample '${set.ids[missing]}' has no ${col}; the robustness index needs the site and slide of every evaluated sample`,
      );
  }
  const y = labelsOf(set, rows, classes, scope === 'test' ? 'test split' : 'set');
  const sub = selectRows(set, rows);
  log('robustness.start', { set: set.dir, ks: opts.robustnessKs, rows: sub.n, scope });
  const res = await robustnessIndex(
    sub.features,
    sub.n,
    sub.d,
    y,
    codes(sub.meta.site!),
    codes(sub.meta.slide!),
    opts.robustnessKs,
    {
      threads: opts.threads,
      backend: opts.backend,
      device: opts.device,
      onProgress: opts.progress?.('robustness search'),
    },
  );
  report.robustness = {};
  for (const k of opts.robustnessKs) {
    report.robustness[kKey(k)] = res.get(k)!;
    log('robustness.result', { set: set.dir, k, ...res.get(k)! });
  }
  Object.assign(report.info, { robustness_rows: sub.n, robustness_scope: scope });
}
