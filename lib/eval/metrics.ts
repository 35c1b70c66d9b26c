// Classification metrics with scikit-learn's definitions: accuracy, balanced accuracy (mean recall over the classes
// present in y_true), ROC AUC (binary: the positive class's score; multiclass: macro one-vs-rest), weighted F1
// (per-label F1 over the labels in y_true or y_pred, weighted by support, 0 where undefined), and percentile
// bootstrap 95% intervals over resampled test sets.
import { mulberry32 } from '../util/random.js';

export function accuracy(y: Int32Array, pred: Int32Array): number {
  let c = 0;
  for (let i = 0; i < y.length; i++) if (y[i] === pred[i]) c++;
  return c / y.length;
}

export function balancedAccuracy(y: Int32Array, pred: Int32Array, nClasses: number): number {
  const support = new Float64Array(nClasses);
  const hit = new Float64Array(nClasses);
  for (let i = 0; i < y.length; i++) {
    support[y[i]]++;
    if (pred[i] === y[i]) hit[y[i]]++;
  }
  let s = 0,
    m = 0;
  for (let c = 0; c < nClasses; c++) {
    if (support[c] > 0) {
      s += hit[c] / support[c];
      m++;
    }
  }
  return s / m;
}

export function weightedF1(y: Int32Array, pred: Int32Array, nClasses: number): number {
  const tp = new Float64Array(nClasses),
    fp = new Float64Array(nClasses),
    fn = new Float64Array(nClasses);
  for (let i = 0; i < y.length; i++) {
    if (y[i] === pred[i]) tp[y[i]]++;
    else {
      fp[pred[i]]++;
      fn[y[i]]++;
    }
  }
  let s = 0,
    w = 0;
  for (let c = 0; c < nClasses; c++) {
    const support = tp[c] + fn[c];
    const den = 2 * tp[c] + fp[c] + fn[c];
    s += support * (den > 0 ? (2 * tp[c]) / den : 0);
    w += support;
  }
  return s / w;
}

/**
 * Binary ROC AUC of scores for positives (isPos) against negatives: the Mann-Whitney statistic with ties counted
 * as one half, which equals the area under scikit-learn's trapezoidal ROC curve. NaN when one side is empty.
 */
export function binaryAuc(isPos: Uint8Array, score: Float64Array): number {
  const n = score.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => score[a] - score[b]);
  let nPos = 0;
  for (let i = 0; i < n; i++) nPos += isPos[i];
  const nNeg = n - nPos;
  if (nPos === 0 || nNeg === 0) return NaN;
  // Sum of midranks of the positives.
  let rankSum = 0;
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && score[order[j + 1]] === score[order[i]]) j++;
    const mid = (i + j) / 2 + 1;
    for (let t = i; t <= j; t++) if (isPos[order[t]]) rankSum += mid;
    i = j + 1;
  }
  return (rankSum - (nPos * (nPos + 1)) / 2) / (nPos * nNeg);
}

/**
 * ROC AUC from class probabilities proba [n, nClasses]. Two classes: AUC of the second class's score (the positive
 * class, as scikit-learn's classes_[1]). More: the unweighted mean of the one-vs-rest AUCs of the classes present
 * in y (a class absent from y has no AUC).
 */
export function rocAuc(y: Int32Array, proba: Float64Array, nClasses: number): number {
  const n = y.length;
  const isPos = new Uint8Array(n);
  const col = new Float64Array(n);
  const aucFor = (c: number) => {
    for (let i = 0; i < n; i++) {
      isPos[i] = y[i] === c ? 1 : 0;
      col[i] = proba[i * nClasses + c];
    }
    return binaryAuc(isPos, col);
  };
  if (nClasses === 2) return aucFor(1);
  let s = 0,
    m = 0;
  for (let c = 0; c < nClasses; c++) {
    const a = aucFor(c);
    if (!Number.isNaN(a)) {
      s += a;
      m++;
    }
  }
  return m > 0 ? s / m : NaN;
}

/** ROC curve points (fpr, tpr) of one class against the rest, thresholds from high to low. */
export function rocCurve(isPos: Uint8Array, score: Float64Array): { fpr: number[]; tpr: number[] } {
  const n = score.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => score[b] - score[a]);
  let nPos = 0;
  for (let i = 0; i < n; i++) nPos += isPos[i];
  const nNeg = n - nPos;
  const fpr = [0],
    tpr = [0];
  let tp = 0,
    fp = 0;
  for (let i = 0; i < n;) {
    let j = i;
    while (j < n && score[order[j]] === score[order[i]]) {
      if (isPos[order[j]]) tp++;
      else fp++;
      j++;
    }
    fpr.push(nNeg > 0 ? fp / nNeg : 0);
    tpr.push(nPos > 0 ? tp / nPos : 0);
    i = j;
  }
  return { fpr, tpr };
}

// mulberry32 (lib/util/random.ts) makes the bootstrap resamples reproducible; re-exported for the tests.
export { mulberry32 };

/**
 * Percentile bootstrap 95% intervals of several metrics over the same resamples (paired): metrics(rows) returns
 * one value per metric name. NaN values (undefined on a resample) are dropped per metric.
 */
export function bootstrapCis<M extends string>(
  n: number,
  metrics: (rows: Int32Array) => Record<M, number>,
  rounds = 1000,
  seed = 0,
): Record<M, [number, number]> {
  const rand = mulberry32(seed);
  const values = new Map<M, number[]>();
  const rows = new Int32Array(n);
  for (let b = 0; b < rounds; b++) {
    for (let i = 0; i < n; i++) rows[i] = Math.floor(rand() * n);
    for (const [name, v] of Object.entries(metrics(rows)) as [M, number][]) {
      if (!values.has(name)) values.set(name, []);
      if (!Number.isNaN(v)) values.get(name)!.push(v);
    }
  }
  const out = {} as Record<M, [number, number]>;
  for (const [name, vs] of values) {
    vs.sort((a, b) => a - b);
    out[name] = [percentile(vs, 2.5), percentile(vs, 97.5)];
  }
  return out;
}

/** Linear-interpolated percentile (NumPy's default method) of sorted values. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export interface ClassificationMetrics {
  acc: number;
  bacc: number;
  f1: number;
  auc?: number;
}

/** Picks rows of y, pred and proba (for bootstrap resamples). */
export function metricsOn(
  rows: Int32Array,
  y: Int32Array,
  pred: Int32Array,
  proba: Float64Array | undefined,
  nClasses: number,
): ClassificationMetrics {
  const yy = new Int32Array(rows.length),
    pp = new Int32Array(rows.length);
  const pr = proba ? new Float64Array(rows.length * nClasses) : undefined;
  rows.forEach((r, i) => {
    yy[i] = y[r];
    pp[i] = pred[r];
    if (pr && proba) for (let c = 0; c < nClasses; c++) pr[i * nClasses + c] = proba[r * nClasses + c];
  });
  const m: ClassificationMetrics = {
    acc: accuracy(yy, pp),
    bacc: balancedAccuracy(yy, pp, nClasses),
    f1: weightedF1(yy, pp, nClasses),
  };
  if (pr) m.auc = rocAuc(yy, pr, nClasses);
  return m;
}
