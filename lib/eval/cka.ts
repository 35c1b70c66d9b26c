// Centered kernel alignment between two representations of the same samples (Kornblith et al., ICML 2019).
// - linear: ‖XcᵀYc‖²_F / (‖XcᵀXc‖_F ‖YcᵀYc‖_F) in feature space, with Xc, Yc column-centred; the D x D products are
//   accumulated over blocks of 256 rows, so memory does not grow with N (streaming).
// - debiased linear: the same with Song et al.'s unbiased HSIC estimator (Kornblith's
//   _debiased_dot_product_similarity_helper), from the same accumulated products and the centred rows' norms.
// - RBF: Gaussian kernels exp(-d²/(2σ²)) with σ² the median squared pairwise distance over all N² pairs (diagonal
//   zeros included, as np.median over the full matrix in Kornblith's code), centred Gram matrices. This is N x N,
//   so above maxRbfRows samples it is computed on a seeded random subset of that many rows (said in the result).
// All sums in float64: here the SIMD kernel's f64 path (the js backend's), on the native engine libtorch's
// (g2l/eval.h linear_cka, rbf_cka), chosen by cka()'s backend option.
import { UserError } from '../errors.js';
import type { EvalBackend } from '../backends/types.js';
import { mulberry32 } from './metrics.js';
import { simdKernels, wasm } from './simd.js';

const PAGE = 65536;
const ROW_BLOCK = 256;

export interface CkaResult {
  linear: number;
  rbf: number;
  linear_debiased: number;
  /** Rows the RBF value was computed on (all of them unless the set is larger than maxRbfRows). */
  rbf_rows: number;
}

const pad = (v: number, m: number) => Math.ceil(v / m) * m;

function columnMeans(x: Float32Array, n: number, d: number): Float64Array {
  const mu = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mu[j] += x[i * d + j];
  for (let j = 0; j < d; j++) mu[j] /= n;
  return mu;
}

/** Linear and debiased linear CKA, streaming over row blocks. x [n, dx], y [n, dy]. */
export function linearCka(
  x: Float32Array,
  dx: number,
  y: Float32Array,
  dy: number,
  n: number,
): { linear: number; debiased: number } {
  const px = pad(dx, 4),
    py = pad(dy, 4);
  const mux = columnMeans(x, n, dx),
    muy = columnMeans(y, n, dy);
  const bytes = (px * px + py * py + px * py + (px + py) * ROW_BLOCK) * 8;
  if (bytes > 65536 * PAGE)
    throw new UserError(
      `linear CKA of ${dx}- and ${dy}-dimensional features needs ${(bytes / 2 ** 30).toFixed(1)} GiB; that is over the 4 GiB limit`,
    );
  const memory = new wasm.Memory({ initial: Math.ceil(bytes / PAGE) });
  const k = simdKernels(memory);
  const buf = memory.buffer as ArrayBuffer;
  let off = 0;
  const take = (len: number) => {
    const a = new Float64Array(buf, off, len);
    const o = off;
    off += len * 8;
    return [a, o] as const;
  };
  const [gxx, gxxOff] = take(px * px);
  const [gyy, gyyOff] = take(py * py);
  const [gxy, gxyOff] = take(px * py);
  const [xt, xtOff] = take(px * ROW_BLOCK);
  const [yt, ytOff] = take(py * ROW_BLOCK);
  const rowSqX = new Float64Array(n),
    rowSqY = new Float64Array(n);
  for (let r0 = 0; r0 < n; r0 += ROW_BLOCK) {
    const rows = Math.min(ROW_BLOCK, n - r0);
    xt.fill(0);
    yt.fill(0);
    // Transposed, centred blocks: xt[j, r] = x[r0 + r, j] - mu[j]
    for (let r = 0; r < rows; r++) {
      const i = r0 + r;
      let sx = 0,
        sy = 0;
      for (let j = 0; j < dx; j++) {
        const v = x[i * dx + j] - mux[j];
        xt[j * ROW_BLOCK + r] = v;
        sx += v * v;
      }
      for (let j = 0; j < dy; j++) {
        const v = y[i * dy + j] - muy[j];
        yt[j * ROW_BLOCK + r] = v;
        sy += v * v;
      }
      rowSqX[i] = sx;
      rowSqY[i] = sy;
    }
    k.nt64(xtOff, xtOff, gxxOff, px, px, ROW_BLOCK, px, 1);
    k.nt64(ytOff, ytOff, gyyOff, py, py, ROW_BLOCK, py, 1);
    k.nt64(xtOff, ytOff, gxyOff, px, py, ROW_BLOCK, py, 1);
  }
  const frob2 = (a: Float64Array) => {
    let s = 0;
    for (let i = 0; i < a.length; i++) s += a[i] * a[i];
    return s;
  };
  const xty = frob2(gxy),
    xtx = frob2(gxx),
    yty = frob2(gyy);
  const linear = xty / (Math.sqrt(xtx) * Math.sqrt(yty));
  let sqNormX = 0,
    sqNormY = 0,
    rxy = 0,
    rxx = 0,
    ryy = 0;
  for (let i = 0; i < n; i++) {
    sqNormX += rowSqX[i];
    sqNormY += rowSqY[i];
    rxy += rowSqX[i] * rowSqY[i];
    rxx += rowSqX[i] * rowSqX[i];
    ryy += rowSqY[i] * rowSqY[i];
  }
  const unbiased = (dotSim: number, rowDot: number, nx: number, ny: number) =>
    dotSim - (n / (n - 2)) * rowDot + (nx * ny) / ((n - 1) * (n - 2));
  const debiased =
    unbiased(xty, rxy, sqNormX, sqNormY) /
    (Math.sqrt(unbiased(xtx, rxx, sqNormX, sqNormX)) * Math.sqrt(unbiased(yty, ryy, sqNormY, sqNormY)));
  return { linear, debiased };
}

/** Squared pairwise distances [n, n] (float64) of x [n, d], through the f64 Gram product; diagonal exactly 0. */
function squaredDistances(x: Float32Array, n: number, d: number): Float64Array {
  const pn = pad(n, 4),
    pd = pad(d, 2);
  const bytes = (pn * pd + pn * pn) * 8;
  if (bytes > 65536 * PAGE)
    throw new UserError(`RBF CKA on ${n} rows needs ${(bytes / 2 ** 30).toFixed(1)} GiB; lower --rbf-max-rows`);
  const memory = new wasm.Memory({ initial: Math.ceil(bytes / PAGE) });
  const k = simdKernels(memory);
  const buf = memory.buffer as ArrayBuffer;
  const a = new Float64Array(buf, 0, pn * pd);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) a[i * pd + j] = x[i * d + j];
  const gOff = pn * pd * 8;
  k.nt64(0, 0, gOff, pn, pn, pd, pn, 0);
  const g = new Float64Array(buf, gOff, pn * pn);
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      out[i * n + j] = i === j ? 0 : g[i * pn + i] + g[j * pn + j] - 2 * g[i * pn + j];
    }
  }
  return out;
}

/** Median of all n² entries of a symmetric distance matrix with zero diagonal (NumPy's median: mean of the middle two). */
function medianWithDiagonal(d2: Float64Array, n: number): number {
  // The sorted n² entries are n zeros followed by each off-diagonal pair twice.
  const upper = new Float64Array((n * (n - 1)) / 2);
  let t = 0;
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) upper[t++] = d2[i * n + j];
  upper.sort();
  const at = (p: number) => (p < n ? 0 : upper[(p - n) >> 1]);
  const total = n * n;
  return total % 2 === 1 ? at((total - 1) / 2) : (at(total / 2 - 1) + at(total / 2)) / 2;
}

/** Centred RBF Gram matrix HKH (in place over d2). */
function centredRbf(d2: Float64Array, n: number): Float64Array {
  const sigma2 = medianWithDiagonal(d2, n);
  const K = d2;
  for (let i = 0; i < n * n; i++) K[i] = Math.exp(-K[i] / (2 * sigma2));
  const rowMean = new Float64Array(n);
  let all = 0;
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += K[i * n + j];
    rowMean[i] = s / n;
    all += s;
  }
  all /= n * n;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) K[i * n + j] += all - rowMean[i] - rowMean[j];
  return K;
}

export function rbfCka(x: Float32Array, dx: number, y: Float32Array, dy: number, n: number): number {
  const kx = centredRbf(squaredDistances(x, n, dx), n);
  const ky = centredRbf(squaredDistances(y, n, dy), n);
  let xy = 0,
    xx = 0,
    yy = 0;
  for (let i = 0; i < n * n; i++) {
    xy += kx[i] * ky[i];
    xx += kx[i] * kx[i];
    yy += ky[i] * ky[i];
  }
  return xy / (Math.sqrt(xx) * Math.sqrt(yy));
}

function pickRows(x: Float32Array, d: number, rows: Int32Array): Float32Array {
  const out = new Float32Array(rows.length * d);
  rows.forEach((r, i) => out.set(x.subarray(r * d, (r + 1) * d), i * d));
  return out;
}

/**
 * All three CKA values for x [n, dx] and y [n, dy] whose rows describe the same samples, on opts.backend (default:
 * the js code here).
 */
export async function cka(
  x: Float32Array,
  dx: number,
  y: Float32Array,
  dy: number,
  n: number,
  opts: { maxRbfRows?: number; seed?: number; backend?: EvalBackend; device?: string } = {},
): Promise<CkaResult> {
  if (n < 4) throw new UserError(`CKA needs at least 4 matched samples, got ${n}`);
  const b = opts.backend;
  const rbfOn = (xs: Float32Array, ys: Float32Array, rows: number) =>
    b ? b.rbfCka(xs, dx, ys, dy, rows, opts.device) : rbfCka(xs, dx, ys, dy, rows);
  const { linear, debiased } = b ? await b.linearCka(x, dx, y, dy, n, opts.device) : linearCka(x, dx, y, dy, n);
  const maxRows = opts.maxRbfRows ?? 5000;
  let rbf: number;
  let rbfRows = n;
  if (n <= maxRows) rbf = await rbfOn(x, y, n);
  else {
    // Seeded partial Fisher-Yates: a uniform subset of maxRows rows, in ascending order.
    const rand = mulberry32(opts.seed ?? 0);
    const perm = Int32Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < maxRows; i++) {
      const j = i + Math.floor(rand() * (n - i));
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    const rows = perm.slice(0, maxRows).sort();
    rbfRows = maxRows;
    rbf = await rbfOn(pickRows(x, dx, rows), pickRows(y, dy, rows), maxRows);
  }
  return { linear, rbf, linear_debiased: debiased, rbf_rows: rbfRows };
}
