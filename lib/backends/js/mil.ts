// ABMIL in plain JavaScript: the js backend's twin of native/engine/eval/mil.cpp (the model, the loss, the plan-driven
// AdamW training and its early stopping are described in native/engine/include/g2l/mil.h), forward and backward
// written out, in float64 whatever the parameters' dtype (results are returned in it). For small sets and for
// checking the engine; the engine is the one to use on thousands of slides.
import { UserError } from '../../errors.js';
import type { FloatTensor, MilBags, MilParams, MilTrainPlan, MilTrainResult } from '../types.js';

const NAMES = [
  'fc.weight',
  'fc.bias',
  'attention_a.weight',
  'attention_a.bias',
  'attention_b.weight',
  'attention_b.bias',
  'attention_c.weight',
  'attention_c.bias',
  'classifier.weight',
  'classifier.bias',
] as const;
type Name = (typeof NAMES)[number];
type P = Record<Name, Float64Array>;

interface Dims {
  D: number;
  L: number;
  A: number;
  K: number;
  f64: boolean;
}

function unpack(params: MilParams): { p: P; dims: Dims; shapes: Record<Name, number[]> } {
  for (const n of NAMES) if (!params[n]) throw new UserError(`ABMIL: parameter ${n} is missing`);
  const [L, D] = params['fc.weight'].shape;
  const A = params['attention_a.weight'].shape[0];
  const K = params['classifier.weight'].shape[0];
  const want: Record<Name, number[]> = {
    'fc.weight': [L, D],
    'fc.bias': [L],
    'attention_a.weight': [A, L],
    'attention_a.bias': [A],
    'attention_b.weight': [A, L],
    'attention_b.bias': [A],
    'attention_c.weight': [1, A],
    'attention_c.bias': [1],
    'classifier.weight': [K, L],
    'classifier.bias': [K],
  };
  const p = {} as P;
  for (const n of NAMES) {
    if (params[n].shape.join(',') !== want[n].join(','))
      throw new UserError(`ABMIL: parameter ${n} has shape [${params[n].shape}], expected [${want[n]}]`);
    p[n] = Float64Array.from(params[n].data);
  }
  return { p, dims: { D, L, A, K, f64: params['fc.weight'].data instanceof Float64Array }, shapes: want };
}

function pack(p: P, dims: Dims, shapes: Record<Name, number[]>): MilParams {
  const out: MilParams = {};
  for (const n of NAMES)
    out[n] = { data: dims.f64 ? Float64Array.from(p[n]) : Float32Array.from(p[n]), shape: shapes[n] };
  return out;
}

function checkBags(bags: MilBags, D: number): void {
  const { features, offsets } = bags;
  if (features.shape.length !== 2 || features.shape[1] !== D) throw new UserError(`ABMIL: features must be (N, ${D})`);
  if (offsets.length < 2 || offsets[0] !== 0 || offsets.at(-1) !== features.shape[0])
    throw new UserError('ABMIL: bag offsets must run from 0 to the number of feature rows');
  for (let b = 1; b < offsets.length; b++)
    if (offsets[b] <= offsets[b - 1]) throw new UserError('ABMIL: every bag needs at least one tile');
}

interface BagCache {
  x0: number;
  n: number;
  h: Float64Array;
  a: Float64Array;
  g: Float64Array;
  alpha: Float64Array;
  z: Float64Array;
  logits: Float64Array;
}

/** Forward of one bag (rows [x0, x0 + n) of x). */
function forward(p: P, d: Dims, x: ArrayLike<number>, x0: number, n: number): BagCache {
  const { D, L, A, K } = d;
  const h = new Float64Array(n * L),
    a = new Float64Array(n * A),
    g = new Float64Array(n * A),
    s = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const xo = (x0 + i) * D;
    for (let l = 0; l < L; l++) {
      let v = p['fc.bias'][l];
      for (let j = 0; j < D; j++) v += p['fc.weight'][l * D + j] * x[xo + j];
      h[i * L + l] = v > 0 ? v : 0;
    }
    let si = p['attention_c.bias'][0];
    for (let k = 0; k < A; k++) {
      let va = p['attention_a.bias'][k],
        vb = p['attention_b.bias'][k];
      for (let l = 0; l < L; l++) {
        va += p['attention_a.weight'][k * L + l] * h[i * L + l];
        vb += p['attention_b.weight'][k * L + l] * h[i * L + l];
      }
      a[i * A + k] = Math.tanh(va);
      g[i * A + k] = 1 / (1 + Math.exp(-vb));
      si += p['attention_c.weight'][k] * a[i * A + k] * g[i * A + k];
    }
    s[i] = si;
  }
  let m = -Infinity;
  for (let i = 0; i < n; i++) m = Math.max(m, s[i]);
  const alpha = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += alpha[i] = Math.exp(s[i] - m);
  for (let i = 0; i < n; i++) alpha[i] /= sum;
  const z = new Float64Array(L);
  for (let i = 0; i < n; i++) for (let l = 0; l < L; l++) z[l] += alpha[i] * h[i * L + l];
  const logits = new Float64Array(K);
  for (let k = 0; k < K; k++) {
    let v = p['classifier.bias'][k];
    for (let l = 0; l < L; l++) v += p['classifier.weight'][k * L + l] * z[l];
    logits[k] = v;
  }
  return { x0, n, h, a, g, alpha, z, logits };
}

/** -log softmax(logits)[y] and d/dlogits. */
function crossEntropy(logits: Float64Array, y: number): { loss: number; dlogits: Float64Array } {
  let m = -Infinity;
  for (const v of logits) m = Math.max(m, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - m);
  const lse = m + Math.log(sum);
  const dlogits = Float64Array.from(logits, (v) => Math.exp(v - lse));
  dlogits[y] -= 1;
  return { loss: lse - logits[y], dlogits };
}

/** Accumulates scale * d(loss of the bag)/d(params) into grad. */
function backward(
  p: P,
  d: Dims,
  x: ArrayLike<number>,
  c: BagCache,
  dlogits: Float64Array,
  scale: number,
  grad: P,
): void {
  const { D, L, A, K } = d;
  const { n, h, a, g, alpha, z } = c;
  const dz = new Float64Array(L);
  for (let k = 0; k < K; k++) {
    const dl = dlogits[k] * scale;
    grad['classifier.bias'][k] += dl;
    for (let l = 0; l < L; l++) {
      grad['classifier.weight'][k * L + l] += dl * z[l];
      dz[l] += dl * p['classifier.weight'][k * L + l];
    }
  }
  // z = sum alpha_i h_i; alpha = softmax(s)
  const dalpha = new Float64Array(n);
  for (let i = 0; i < n; i++) for (let l = 0; l < L; l++) dalpha[i] += dz[l] * h[i * L + l];
  let dot = 0;
  for (let i = 0; i < n; i++) dot += alpha[i] * dalpha[i];
  const dh = new Float64Array(n * L);
  for (let i = 0; i < n; i++) {
    for (let l = 0; l < L; l++) dh[i * L + l] = alpha[i] * dz[l];
    const ds = alpha[i] * (dalpha[i] - dot);
    grad['attention_c.bias'][0] += ds;
    for (let k = 0; k < A; k++) {
      const ai = a[i * A + k],
        gi = g[i * A + k];
      grad['attention_c.weight'][k] += ds * ai * gi;
      const dag = ds * p['attention_c.weight'][k];
      const dpa = dag * gi * (1 - ai * ai);
      const dpb = dag * ai * gi * (1 - gi);
      grad['attention_a.bias'][k] += dpa;
      grad['attention_b.bias'][k] += dpb;
      for (let l = 0; l < L; l++) {
        grad['attention_a.weight'][k * L + l] += dpa * h[i * L + l];
        grad['attention_b.weight'][k * L + l] += dpb * h[i * L + l];
        dh[i * L + l] += dpa * p['attention_a.weight'][k * L + l] + dpb * p['attention_b.weight'][k * L + l];
      }
    }
    const xo = (c.x0 + i) * D;
    for (let l = 0; l < L; l++) {
      if (h[i * L + l] <= 0) continue;
      const dpre = dh[i * L + l];
      grad['fc.bias'][l] += dpre;
      for (let j = 0; j < D; j++) grad['fc.weight'][l * D + j] += dpre * x[xo + j];
    }
  }
}

const zeros = (p: P): P => Object.fromEntries(NAMES.map((n) => [n, new Float64Array(p[n].length)])) as P;

/** Mean loss over `which` bags (all when null), with gradients when `grad` is given. */
function meanLoss(p: P, d: Dims, bags: MilBags, which: number[] | null, grad: P | null): number {
  const B = bags.offsets.length - 1;
  const list = which ?? Array.from({ length: B }, (_, b) => b);
  if (!bags.labels || bags.labels.length !== B) throw new UserError('ABMIL: one label per bag is needed to train');
  let total = 0;
  for (const b of list) {
    if (!(Number.isInteger(b) && b >= 0 && b < B)) throw new UserError(`ABMIL: the plan names bag ${b} of ${B}`);
    const y = bags.labels[b];
    if (!(Number.isInteger(y) && y >= 0 && y < d.K))
      throw new UserError(`ABMIL: label ${y} outside the ${d.K} classes`);
    const c = forward(p, d, bags.features.data, bags.offsets[b], bags.offsets[b + 1] - bags.offsets[b]);
    const { loss, dlogits } = crossEntropy(c.logits, y);
    total += loss;
    if (grad) backward(p, d, bags.features.data, c, dlogits, 1 / list.length, grad);
  }
  return total / list.length;
}

export function abmilLossJs(params: MilParams, bags: MilBags): { loss: number; grads: MilParams } {
  const { p, dims, shapes } = unpack(params);
  checkBags(bags, dims.D);
  const grad = zeros(p);
  const loss = meanLoss(p, dims, bags, null, grad);
  return { loss, grads: pack(grad, dims, shapes) };
}

export function abmilPredictJs(params: MilParams, bags: MilBags): FloatTensor {
  const { p, dims } = unpack(params);
  checkBags(bags, dims.D);
  const B = bags.offsets.length - 1;
  const out = new Float64Array(B * dims.K);
  for (let b = 0; b < B; b++) {
    const { logits } = forward(p, dims, bags.features.data, bags.offsets[b], bags.offsets[b + 1] - bags.offsets[b]);
    const m = Math.max(...logits);
    let sum = 0;
    for (let k = 0; k < dims.K; k++) sum += out[b * dims.K + k] = Math.exp(logits[k] - m);
    for (let k = 0; k < dims.K; k++) out[b * dims.K + k] /= sum;
  }
  return { data: dims.f64 ? out : Float32Array.from(out), shape: [B, dims.K] };
}

export function abmilTrainJs(init: MilParams, train: MilBags, val: MilBags | null, plan: MilTrainPlan): MilTrainResult {
  const { p, dims, shapes } = unpack(init);
  checkBags(train, dims.D);
  const hasVal = val !== null && val.offsets.length > 1;
  if (hasVal) checkBags(val!, dims.D);
  const steps = plan.epochs.reduce((a, e) => a + e.length, 0);
  if (plan.lr.length !== steps) throw new UserError('ABMIL: the plan needs one learning rate per step');
  const b1 = 0.9,
    b2 = 0.999,
    eps = 1e-8;
  const m1 = zeros(p),
    m2 = zeros(p);
  const result: MilTrainResult = { params: {}, trainLoss: [], valLoss: [], bestEpoch: -1, epochsRun: 0 };
  let best: P | null = null;
  let bestVal = Infinity;
  let since = 0,
    step = 0;
  for (const epoch of plan.epochs) {
    let sum = 0;
    for (const bagsOfStep of epoch) {
      const grad = zeros(p);
      sum += meanLoss(p, dims, train, bagsOfStep, grad);
      const lr = plan.lr[step++];
      const bc1 = 1 - b1 ** step,
        bc2 = 1 - b2 ** step;
      for (const n of NAMES) {
        const w = p[n],
          g = grad[n],
          m = m1[n],
          v = m2[n];
        for (let i = 0; i < w.length; i++) {
          w[i] *= 1 - lr * plan.weightDecay;
          m[i] = b1 * m[i] + (1 - b1) * g[i];
          v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
          w[i] -= ((lr / bc1) * m[i]) / (Math.sqrt(v[i] / bc2) + eps);
        }
      }
    }
    result.trainLoss.push(epoch.length ? sum / epoch.length : 0);
    result.epochsRun++;
    if (!hasVal) continue;
    const v = meanLoss(p, dims, val!, null, null);
    result.valLoss.push(v);
    if (v < bestVal) {
      bestVal = v;
      result.bestEpoch = result.epochsRun - 1;
      since = 0;
      best = Object.fromEntries(NAMES.map((n) => [n, Float64Array.from(p[n])])) as P;
    } else if (plan.patience > 0 && ++since >= plan.patience) {
      break;
    }
  }
  if (!hasVal || !best) result.bestEpoch = result.epochsRun - 1;
  result.params = pack(best ?? p, dims, shapes);
  return result;
}
