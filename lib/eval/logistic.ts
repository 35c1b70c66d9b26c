// Linear probe, the js backend's (JsBackend.fitLogistic; the native engine's twin, g2l/eval.h fit_logistic, is the same
// algorithm in float64 on libtorch, off the event loop and on all its threads): multinomial logistic regression with
// scikit-learn's objective,
//   minimise  Σ_i cross-entropy(softmax(W x_i + b), y_i) + 1/(2C) ‖W‖²   (intercept b unpenalised),
// solved by L-BFGS (10 pairs, strong-Wolfe line search) until the largest gradient component of the objective
// divided by N (scikit-learn's scaling, so the tolerance means the same thing) is at most 1e-8. Foundation-model
// features have large means and norms, which makes this objective badly conditioned in (W, b); L-BFGS therefore
// iterates in the exactly equivalent parametrisation of centred, unit-scale features, W' = s W, b' = b + W μ
// (μ the column means, s the overall standard deviation), and tests convergence on the original gradient.
// Binary problems get scikit-learn's binomial objective, Σ_i log(1 + exp(-ỹ_i (w·x_i + b))) + 1/(2C) ‖w‖², with C as
// scikit-learn means it: it is solved as the two-class softmax with C/2, which is the same problem exactly (for a
// given difference w = w1 - w0 the penalty ‖w0‖² + ‖w1‖² is least at w0 = -w/2, w1 = w/2, where it is ‖w‖²/2), so
// the probabilities and the objective's value at the optimum are the binomial model's.
// Float64 throughout. The objective's two products (logits X·Wᵀ and gradient Rᵀ·X) run through the f64 SIMD
// kernel over float64 copies of X kept in WebAssembly memory, row-major for the logits and transposed in blocks of
// 512 samples for the gradient, so each pass streams X once (2 x N x D x 8 bytes, e.g. 2 GB for 80k x 1536). When
// that does not fit in the 4 GiB of WebAssembly memory, a plain JavaScript loop over the float32 rows is used.
import { simdKernels, wasm } from './simd.js';
import type { LogisticModel, LogisticOptions } from '../backends/types.js';

// The options and model types are the backend interface's (the native engine fits the same model).
export type { LogisticModel, LogisticOptions };

/** Objective/N and its gradient at theta = [W (K*D), b (K)], written into grad. */
function objective(
  theta: Float64Array,
  grad: Float64Array,
  X: Float32Array,
  y: Int32Array,
  n: number,
  d: number,
  K: number,
  C: number,
): number {
  grad.fill(0);
  const z = new Float64Array(K);
  const bOff = K * d;
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const xo = i * d;
    let zmax = -Infinity;
    for (let k = 0; k < K; k++) {
      const wo = k * d;
      let s0 = 0,
        s1 = 0,
        s2 = 0,
        s3 = 0;
      let j = 0;
      for (; j + 4 <= d; j += 4) {
        s0 += X[xo + j] * theta[wo + j];
        s1 += X[xo + j + 1] * theta[wo + j + 1];
        s2 += X[xo + j + 2] * theta[wo + j + 2];
        s3 += X[xo + j + 3] * theta[wo + j + 3];
      }
      for (; j < d; j++) s0 += X[xo + j] * theta[wo + j];
      const v = s0 + s1 + (s2 + s3) + theta[bOff + k];
      z[k] = v;
      if (v > zmax) zmax = v;
    }
    let sum = 0;
    for (let k = 0; k < K; k++) {
      z[k] = Math.exp(z[k] - zmax);
      sum += z[k];
    }
    const yi = y[i];
    // -log softmax_y = log Σ exp(z) - z_y, computed from the shifted values.
    loss += Math.log(sum) - Math.log(z[yi]);
    for (let k = 0; k < K; k++) {
      const r = z[k] / sum - (k === yi ? 1 : 0);
      if (r === 0) continue;
      const wo = k * d;
      for (let j = 0; j < d; j++) grad[wo + j] += r * X[xo + j];
      grad[bOff + k] += r;
    }
  }
  let pen = 0;
  for (let t = 0; t < K * d; t++) {
    pen += theta[t] * theta[t];
    grad[t] = grad[t] / n + theta[t] / (C * n);
  }
  for (let k = 0; k < K; k++) grad[bOff + k] /= n;
  return loss / n + pen / (2 * C * n);
}

const BLOCK = 512;
const PAGE = 65536;
const pad = (v: number, m: number) => Math.ceil(v / m) * m;

/** The same objective as `objective`, with both products in the SIMD kernel. Undefined when it does not fit. */
function simdObjective(
  X: Float32Array,
  y: Int32Array,
  n: number,
  d: number,
  K: number,
  C: number,
): ((theta: Float64Array, grad: Float64Array) => number) | undefined {
  const Dp = pad(d, 4),
    Kp = pad(K, 4),
    Np = pad(n, BLOCK);
  const sizes = { x: Np * Dp, xtb: Np * Dp, w: Kp * Dp, z: Np * Kp, rtb: Np * Kp, gt: Dp * Kp };
  const bytes = Object.values(sizes).reduce((a, b) => a + b, 0) * 8;
  if (bytes > 65535 * PAGE) return undefined;
  const memory = new wasm.Memory({ initial: Math.ceil(bytes / PAGE) });
  const k = simdKernels(memory);
  const buf = memory.buffer as ArrayBuffer;
  let off = 0;
  const take = (len: number) => {
    const o = off;
    off += len * 8;
    return { o, a: new Float64Array(buf, o, len) };
  };
  const x64 = take(sizes.x),
    xtb = take(sizes.xtb),
    w = take(sizes.w),
    z = take(sizes.z),
    rtb = take(sizes.rtb),
    gt = take(sizes.gt);
  // x64: [Np, Dp] row-major; xtb: per block of BLOCK samples a [Dp, BLOCK] transposed slab.
  for (let i = 0; i < n; i++) {
    const blk = Math.floor(i / BLOCK),
      r = i % BLOCK;
    const slab = blk * Dp * BLOCK;
    for (let j = 0; j < d; j++) {
      const v = X[i * d + j];
      x64.a[i * Dp + j] = v;
      xtb.a[slab + j * BLOCK + r] = v;
    }
  }
  return (theta, grad) => {
    for (let c = 0; c < K; c++) w.a.set(theta.subarray(c * d, (c + 1) * d), c * Dp);
    k.nt64(x64.o, w.o, z.o, Np, Kp, Dp, Kp, 0);
    const bOff = K * d;
    const p = new Float64Array(K);
    const gb = new Float64Array(K);
    let loss = 0;
    for (let i = 0; i < n; i++) {
      let zmax = -Infinity;
      for (let c = 0; c < K; c++) {
        const v = z.a[i * Kp + c] + theta[bOff + c];
        p[c] = v;
        if (v > zmax) zmax = v;
      }
      let sum = 0;
      for (let c = 0; c < K; c++) {
        p[c] = Math.exp(p[c] - zmax);
        sum += p[c];
      }
      const yi = y[i];
      loss += Math.log(sum) - Math.log(p[yi]);
      const slab = Math.floor(i / BLOCK) * Kp * BLOCK,
        r = i % BLOCK;
      for (let c = 0; c < K; c++) {
        const res = p[c] / sum - (c === yi ? 1 : 0);
        rtb.a[slab + c * BLOCK + r] = res;
        gb[c] += res;
      }
    }
    // gt [Dp, Kp] = Σ over blocks of xtbᵀ-slab · rtb-slabᵀ, i.e. (Rᵀ X)ᵀ.
    for (let blk = 0; blk < Np / BLOCK; blk++) {
      k.nt64(xtb.o + blk * Dp * BLOCK * 8, rtb.o + blk * Kp * BLOCK * 8, gt.o, Dp, Kp, BLOCK, Kp, blk > 0 ? 1 : 0);
    }
    let pen = 0;
    for (let c = 0; c < K; c++) {
      for (let j = 0; j < d; j++) {
        const t = theta[c * d + j];
        pen += t * t;
        grad[c * d + j] = gt.a[j * Kp + c] / n + t / (C * n);
      }
      grad[bOff + c] = gb[c] / n;
    }
    return loss / n + pen / (2 * C * n);
  };
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function maxAbs(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const v = Math.abs(a[i]);
    if (v > m) m = v;
  }
  return m;
}

/** Minimiser of a cubic through (a, fa, da) and (b, fb, db), safeguarded into the interval; bisection otherwise. */
function cubicMin(a: number, fa: number, da: number, b: number, fb: number, db: number): number {
  const d1 = da + db - (3 * (fa - fb)) / (a - b);
  const disc = d1 * d1 - da * db;
  const lo = Math.min(a, b),
    hi = Math.max(a, b);
  if (disc >= 0) {
    const d2 = Math.sign(b - a) * Math.sqrt(disc);
    const t = b - (b - a) * ((db + d2 - d1) / (db - da + 2 * d2));
    const margin = 0.1 * (hi - lo);
    if (Number.isFinite(t) && t > lo + margin && t < hi - margin) return t;
  }
  return (a + b) / 2;
}

/**
 * Generic L-BFGS with a strong-Wolfe line search (Nocedal & Wright, algorithms 7.5, 3.5 and 3.6). Near the optimum,
 * where the objective's rounding swamps its decrease, steps are also accepted under Hager and Zhang's approximate
 * Wolfe conditions.
 */
export function lbfgs(
  fg: (x: Float64Array, g: Float64Array) => number,
  x: Float64Array,
  opts: {
    gtol: number;
    maxIter: number;
    m?: number;
    onIteration?: (it: number, f: number, gmax: number) => void;
    /** The size compared with gtol (default max |g|). */
    measure?: (g: Float64Array) => number;
  },
): { f: number; gradMax: number; iterations: number; converged: boolean } {
  const m = opts.m ?? 10;
  const n = x.length;
  const g = new Float64Array(n);
  let f = fg(x, g);
  const S: Float64Array[] = [],
    Y: Float64Array[] = [],
    rho: number[] = [];
  const p = new Float64Array(n),
    xNew = new Float64Array(n),
    gNew = new Float64Array(n);
  const alphaH = new Float64Array(m);
  const c1 = 1e-4,
    c2 = 0.9;
  let it = 0;
  const measure = opts.measure ?? maxAbs;
  let gmax = measure(g);
  while (gmax > opts.gtol && it < opts.maxIter) {
    // Two-loop recursion: p = -H g.
    for (let i = 0; i < n; i++) p[i] = -g[i];
    for (let h = S.length - 1; h >= 0; h--) {
      const a = rho[h] * dot(S[h], p);
      alphaH[h] = a;
      const yh = Y[h];
      for (let i = 0; i < n; i++) p[i] -= a * yh[i];
    }
    if (S.length > 0) {
      const last = S.length - 1;
      const gamma = dot(S[last], Y[last]) / dot(Y[last], Y[last]);
      for (let i = 0; i < n; i++) p[i] *= gamma;
    }
    for (let h = 0; h < S.length; h++) {
      const beta = rho[h] * dot(Y[h], p);
      const sh = S[h];
      for (let i = 0; i < n; i++) p[i] += (alphaH[h] - beta) * sh[i];
    }
    let dphi0 = dot(g, p);
    if (!(dphi0 < 0)) {
      // Not a descent direction (lost curvature information): restart from steepest descent.
      S.length = 0;
      Y.length = 0;
      rho.length = 0;
      for (let i = 0; i < n; i++) p[i] = -g[i];
      dphi0 = dot(g, p);
    }
    const f0 = f;
    const epsF = 1e-12 * Math.abs(f0);
    const evalAt = (alpha: number) => {
      for (let i = 0; i < n; i++) xNew[i] = x[i] + alpha * p[i];
      const fa = fg(xNew, gNew);
      return { a: alpha, f: fa, d: dot(gNew, p) };
    };
    const armijo = (s: { a: number; f: number; d: number }) =>
      s.f <= f0 + c1 * s.a * dphi0 || (s.f <= f0 + epsF && s.d <= (2 * c1 - 1) * dphi0);
    const curvature = (s: { d: number }) => Math.abs(s.d) <= -c2 * dphi0;
    let alpha = S.length === 0 ? Math.min(1, 1 / Math.sqrt(dot(g, g))) : 1;
    let prev = { a: 0, f: f0, d: dphi0 };
    let accepted: { a: number; f: number; d: number } | undefined;
    const zoom = (lo: { a: number; f: number; d: number }, hi: { a: number; f: number; d: number }) => {
      for (let z = 0; z < 40; z++) {
        const s = evalAt(cubicMin(lo.a, lo.f, lo.d, hi.a, hi.f, hi.d));
        if (!armijo(s) || s.f >= lo.f) hi = s;
        else {
          if (curvature(s)) return s;
          if (s.d * (hi.a - lo.a) >= 0) hi = lo;
          lo = s;
        }
        if (Math.abs(hi.a - lo.a) < 1e-16 * Math.max(1, lo.a)) break;
      }
      // Best sufficient-decrease point found, if it moved at all.
      return lo.a > 0 ? evalAt(lo.a) : undefined;
    };
    for (let ls = 0; ls < 40; ls++) {
      const s = evalAt(alpha);
      if (!armijo(s) || (ls > 0 && s.f >= prev.f)) {
        accepted = zoom(prev, s);
        break;
      }
      if (curvature(s)) {
        accepted = s;
        break;
      }
      if (s.d >= 0) {
        accepted = zoom(s, prev);
        break;
      }
      prev = s;
      alpha *= 2;
    }
    if (!accepted) break; // no step decreases the objective: as converged as float64 allows
    // xNew/gNew hold the accepted point's values (evalAt was last called on it).
    const sVec = new Float64Array(n),
      yVec = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      sVec[i] = xNew[i] - x[i];
      yVec[i] = gNew[i] - g[i];
    }
    const sy = dot(sVec, yVec);
    x.set(xNew);
    g.set(gNew);
    f = accepted.f;
    if (sy > 1e-300) {
      if (S.length === m) {
        S.shift();
        Y.shift();
        rho.shift();
      }
      S.push(sVec);
      Y.push(yVec);
      rho.push(1 / sy);
    }
    it++;
    gmax = measure(g);
    opts.onIteration?.(it, f, gmax);
  }
  return { f, gradMax: gmax, iterations: it, converged: gmax <= opts.gtol };
}

/** Fits the probe on X [n, d] float32 with labels y in [0, nClasses). */
export function fitLogistic(
  X: Float32Array,
  y: Int32Array,
  n: number,
  d: number,
  nClasses: number,
  opts: LogisticOptions,
): LogisticModel {
  const K = nClasses;
  const theta = new Float64Array(K * d + K);
  const engine = opts.engine ?? 'auto';
  const C = K === 2 ? opts.C / 2 : opts.C; // binary: the binomial model with opts.C (see the header)
  const simd = engine === 'js' ? undefined : simdObjective(X, y, n, d, K, C);
  if (engine === 'simd' && !simd) throw new Error('fitLogistic: the SIMD objective does not fit in WebAssembly memory');
  const fg = simd ?? ((t: Float64Array, g: Float64Array) => objective(t, g, X, y, n, d, K, C));
  // Preconditioning by reparametrisation: theta = (W, b) = (W' / s, b' - W' μ / s) for the iterate theta' = (W', b').
  const mu = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mu[j] += X[i * d + j];
  for (let j = 0; j < d; j++) mu[j] /= n;
  let ss = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) ss += (X[i * d + j] - mu[j]) ** 2;
  const scale = Math.sqrt(ss / (n * d)) || 1;
  const bOff = K * d;
  const toOriginal = (tp: Float64Array, out: Float64Array) => {
    for (let c = 0; c < K; c++) {
      let shift = 0;
      for (let j = 0; j < d; j++) {
        const w = tp[c * d + j] / scale;
        out[c * d + j] = w;
        shift += w * mu[j];
      }
      out[bOff + c] = tp[bOff + c] - shift;
    }
  };
  const thetaOrig = new Float64Array(theta.length),
    gradOrig = new Float64Array(theta.length);
  const fgPrime = (tp: Float64Array, gp: Float64Array) => {
    toOriginal(tp, thetaOrig);
    const f = fg(thetaOrig, gradOrig);
    // ∂f/∂W' = (∂f/∂W - ∂f/∂b ⊗ μ) / s, ∂f/∂b' = ∂f/∂b
    for (let c = 0; c < K; c++) {
      const gb = gradOrig[bOff + c];
      for (let j = 0; j < d; j++) gp[c * d + j] = (gradOrig[c * d + j] - gb * mu[j]) / scale;
      gp[bOff + c] = gb;
    }
    return f;
  };
  // max |∂f/∂θ| from the iterate's gradient: ∂f/∂W = s ∂f/∂W' + ∂f/∂b' ⊗ μ.
  const originalGradMax = (gp: Float64Array) => {
    let m = 0;
    for (let c = 0; c < K; c++) {
      const gb = gp[bOff + c];
      m = Math.max(m, Math.abs(gb));
      for (let j = 0; j < d; j++) m = Math.max(m, Math.abs(scale * gp[c * d + j] + gb * mu[j]));
    }
    return m;
  };
  const res = lbfgs(fgPrime, theta, {
    gtol: opts.gtol ?? 1e-8,
    maxIter: opts.maxIter ?? 10000,
    onIteration: opts.onIteration,
    measure: originalGradMax,
  });
  toOriginal(theta, thetaOrig);
  return {
    nClasses: K,
    d,
    W: thetaOrig.slice(0, K * d),
    b: thetaOrig.slice(K * d),
    iterations: res.iterations,
    converged: res.converged,
    gradMax: res.gradMax,
    loss: res.f,
    engine: simd ? 'simd' : 'js',
  };
}

/** Class probabilities [n, K] of X [n, d]. */
export function predictProba(model: LogisticModel, X: Float32Array, n: number): Float64Array {
  const { W, b, d, nClasses: K } = model;
  const out = new Float64Array(n * K);
  for (let i = 0; i < n; i++) {
    let zmax = -Infinity;
    for (let k = 0; k < K; k++) {
      let s = b[k];
      for (let j = 0; j < d; j++) s += X[i * d + j] * W[k * d + j];
      out[i * K + k] = s;
      if (s > zmax) zmax = s;
    }
    let sum = 0;
    for (let k = 0; k < K; k++) {
      out[i * K + k] = Math.exp(out[i * K + k] - zmax);
      sum += out[i * K + k];
    }
    for (let k = 0; k < K; k++) out[i * K + k] /= sum;
  }
  return out;
}

/** Argmax per row of proba [n, K]; ties to the lowest class index. */
export function argmaxRows(proba: Float64Array, K: number): Int32Array {
  const n = proba.length / K;
  const pred = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let k = 1; k < K; k++) if (proba[i * K + k] > proba[i * K + best]) best = k;
    pred[i] = best;
  }
  return pred;
}
