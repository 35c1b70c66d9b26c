// Cosine top-k search, blocked: queries in blocks of 64 rows against the base in chunks of 4096 rows through the
// f32 SIMD product (simd.ts), keeping each query's best candidates with a threshold test so that almost every
// similarity costs one comparison. The k + 16 best f32 candidates are then rescored in float64 from the original
// features and sorted (similarity descending, then base index ascending), so neighbour order and similarities
// match a float64 NumPy computation rather than depending on f32 rounding.
//
// Memory: the L2-normalised base lives once in WebAssembly memory, [nb, ceil(d/4)*4] f32 (614 MB for 100k x 1536).
import { UserError } from '../errors.js';
import { simdKernels, wasm } from './simd.js';

export interface TopK {
  k: number;
  /** [nq, k] base row indices, best first; -1 where a query has fewer than k allowed neighbours. */
  idx: Int32Array;
  /** [nq, k] float64 cosine similarities matching idx (NaN where idx is -1). */
  sim: Float64Array;
}

export interface TopKOptions {
  /** Group per query and per base row (e.g. slide); base rows in the query's own group are never neighbours. */
  queryGroup?: Int32Array;
  baseGroup?: Int32Array;
  /** Called after each query block with the number of queries done. */
  onProgress?: (done: number, total: number) => void;
}

const QUERY_BLOCK = 64;
const BASE_CHUNK = 4096;
const F32_MARGIN = 16;
const PAGE = 65536;

/** float64 L2 norms of the rows of x [n, d]. */
export function rowNorms(x: Float32Array, n: number, d: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    const o = i * d;
    for (let j = 0; j < d; j++) s += x[o + j] * x[o + j];
    out[i] = Math.sqrt(s);
  }
  return out;
}

function dot64(a: Float32Array, ao: number, b: Float32Array, bo: number, d: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let j = 0;
  for (; j + 4 <= d; j += 4) {
    s0 += a[ao + j] * b[bo + j];
    s1 += a[ao + j + 1] * b[bo + j + 1];
    s2 += a[ao + j + 2] * b[bo + j + 2];
    s3 += a[ao + j + 3] * b[bo + j + 3];
  }
  for (; j < d; j++) s0 += a[ao + j] * b[bo + j];
  return (s0 + s1) + (s2 + s3);
}

/**
 * The k nearest base rows of every query row by cosine similarity.
 * query [nq, d], base [nb, d] row-major float32 (not yet normalised; zero rows have similarity 0 to everything).
 */
export function cosineTopK(query: Float32Array, nq: number, base: Float32Array, nb: number, d: number, k: number,
  opts: TopKOptions = {}): TopK {
  if (k < 1) throw new UserError(`k must be at least 1, got ${k}`);
  const d4 = Math.ceil(d / 4) * 4;
  const nbPad = Math.ceil(nb / 4) * 4;
  const chunk = Math.min(BASE_CHUNK, nbPad);
  const baseBytes = nbPad * d4 * 4;
  const queryBytes = QUERY_BLOCK * d4 * 4;
  const cBytes = QUERY_BLOCK * chunk * 4;
  const total = baseBytes + queryBytes + cBytes;
  if (total > 65536 * PAGE) {
    throw new UserError(`cosine search over ${nb} x ${d} features needs ${(total / 2 ** 30).toFixed(1)} GiB of WebAssembly memory (4 GiB at most); evaluate on fewer samples`);
  }
  const memory = new wasm.Memory({ initial: Math.ceil(total / PAGE) });
  const kern = simdKernels(memory);
  const buf = memory.buffer as ArrayBuffer;
  const baseOff = 0, qOff = baseBytes, cOff = baseBytes + queryBytes;
  const baseN = new Float32Array(buf, baseOff, nbPad * d4);
  const qN = new Float32Array(buf, qOff, QUERY_BLOCK * d4);
  const C = new Float32Array(buf, cOff, QUERY_BLOCK * chunk);

  const bNorm = rowNorms(base, nb, d);
  const qNorm = rowNorms(query, nq, d);
  for (let i = 0; i < nb; i++) {
    const inv = bNorm[i] > 0 ? 1 / bNorm[i] : 0;
    for (let j = 0; j < d; j++) baseN[i * d4 + j] = base[i * d + j] * inv;
  }

  const kk = Math.min(k + F32_MARGIN, nb);
  const candSim = new Float32Array(QUERY_BLOCK * kk);
  const candIdx = new Int32Array(QUERY_BLOCK * kk);
  const candN = new Int32Array(QUERY_BLOCK);
  const idx = new Int32Array(nq * k).fill(-1);
  const sim = new Float64Array(nq * k).fill(NaN);
  const { queryGroup, baseGroup } = opts;
  const grouped = queryGroup !== undefined && baseGroup !== undefined;
  const rescored: { s: number; j: number }[] = [];

  for (let q0 = 0; q0 < nq; q0 += QUERY_BLOCK) {
    const rows = Math.min(QUERY_BLOCK, nq - q0);
    const rowsPad = rows + (rows & 1);
    qN.fill(0);
    for (let r = 0; r < rows; r++) {
      const i = q0 + r;
      const inv = qNorm[i] > 0 ? 1 / qNorm[i] : 0;
      for (let j = 0; j < d; j++) qN[r * d4 + j] = query[i * d + j] * inv;
    }
    candN.fill(0);
    for (let b0 = 0; b0 < nbPad; b0 += chunk) {
      const cols = Math.min(chunk, nbPad - b0);
      kern.nt32(qOff, baseOff + b0 * d4 * 4, cOff, rowsPad, cols, d4, cols, 0);
      const valid = Math.min(cols, nb - b0);
      for (let r = 0; r < rows; r++) {
        const co = r * cols;
        const ko = r * kk;
        let cnt = candN[r];
        // The worst kept similarity; anything not above it is skipped with one comparison.
        let thr = cnt === kk ? candSim[ko + kk - 1] : -Infinity;
        const g = grouped ? queryGroup[q0 + r] : 0;
        for (let c = 0; c < valid; c++) {
          const v = C[co + c];
          if (!(v > thr)) continue;
          const j = b0 + c;
          if (grouped && baseGroup[j] === g) continue;
          // Sorted insertion (descending) into the candidate list.
          let p = cnt === kk ? kk - 1 : cnt++;
          while (p > 0 && candSim[ko + p - 1] < v) {
            candSim[ko + p] = candSim[ko + p - 1];
            candIdx[ko + p] = candIdx[ko + p - 1];
            p--;
          }
          candSim[ko + p] = v;
          candIdx[ko + p] = j;
          if (cnt === kk) thr = candSim[ko + kk - 1];
        }
        candN[r] = cnt;
      }
    }
    for (let r = 0; r < rows; r++) {
      const i = q0 + r;
      rescored.length = 0;
      for (let t = 0; t < candN[r]; t++) {
        const j = candIdx[r * kk + t];
        const den = qNorm[i] * bNorm[j];
        rescored.push({ s: den > 0 ? dot64(query, i * d, base, j * d, d) / den : 0, j });
      }
      rescored.sort((a, b) => (b.s - a.s) || (a.j - b.j));
      const m = Math.min(k, rescored.length);
      for (let t = 0; t < m; t++) {
        idx[i * k + t] = rescored[t].j;
        sim[i * k + t] = rescored[t].s;
      }
    }
    opts.onProgress?.(Math.min(nq, q0 + QUERY_BLOCK), nq);
  }
  return { k, idx, sim };
}
