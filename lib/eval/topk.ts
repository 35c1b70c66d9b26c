// The js backend's cosine top-k search (JsBackend.cosineTopK; the native engine's twin is g2l/eval.h cosine_topk,
// with the same results), blocked: queries in blocks of 64 rows against the base in chunks of 4096 rows through the
// f32 SIMD product (simd.ts), keeping each query's best candidates with a threshold test so that almost every
// similarity costs one comparison. The k + 16 best f32 candidates are then rescored in float64 from the original
// features and sorted (similarity descending, then base index ascending), so neighbour order and similarities
// match a float64 NumPy computation rather than depending on f32 rounding.
//
// Threads: the L2-normalised base and queries live once in a shared WebAssembly memory ([nb, ceil(d/4)*4] f32,
// 614 MB for 100k x 1536); worker threads (topk-worker.ts) and this thread take query blocks from a shared
// counter until none are left. Small searches stay on this thread, where starting workers would cost more.
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { UserError } from '../errors.js';
import { simdKernels, wasm, type WasmMemory } from './simd.js';
import type { TopK, TopKOptions } from '../backends/types.js';

// The result and options types are the backend interface's (the native engine's search gives the same result).
export type { TopK, TopKOptions };

export const QUERY_BLOCK = 64;
const BASE_CHUNK = 4096;
const F32_MARGIN = 16;
const PAGE = 65536;
/** Multiply-adds below which a search stays on one thread (about a tenth of a second). */
const PARALLEL_MIN_MACS = 1e9;

/** What one thread needs to scan query blocks; plain data so it can be posted to a worker. */
export interface ScanJob {
  memory: WasmMemory;
  baseOff: number;
  nb: number;
  nbPad: number;
  d4: number;
  chunk: number;
  queryOff: number;
  nq: number;
  /** This thread's [QUERY_BLOCK, chunk] f32 scratch for similarities. */
  cOff: number;
  /** Candidates kept per query. */
  kk: number;
  /** [nq, kk] candidate base rows (best first) and [nq] counts, written by whichever thread takes the block. */
  candIdx: Int32Array;
  candN: Int32Array;
  queryGroup?: Int32Array;
  baseGroup?: Int32Array;
  /** [1] next query block to take. */
  counter: Int32Array;
}

/** Takes query blocks from job.counter until none are left; `onBlock` after each block this thread finished. */
export function scanBlocks(job: ScanJob, onBlock?: () => void): void {
  const {
    memory,
    baseOff,
    nb,
    nbPad,
    d4,
    chunk,
    queryOff,
    nq,
    cOff,
    kk,
    candIdx,
    candN,
    queryGroup,
    baseGroup,
    counter,
  } = job;
  const kern = simdKernels(memory);
  const C = new Float32Array(memory.buffer, cOff, QUERY_BLOCK * chunk);
  const candSim = new Float32Array(QUERY_BLOCK * kk);
  const grouped = queryGroup !== undefined && baseGroup !== undefined;
  for (;;) {
    const q0 = Atomics.add(counter, 0, 1) * QUERY_BLOCK;
    if (q0 >= nq) return;
    const rows = Math.min(QUERY_BLOCK, nq - q0);
    const rowsPad = rows + (rows & 1);
    for (let r = 0; r < rows; r++) candN[q0 + r] = 0;
    for (let b0 = 0; b0 < nbPad; b0 += chunk) {
      const cols = Math.min(chunk, nbPad - b0);
      kern.nt32(queryOff + q0 * d4 * 4, baseOff + b0 * d4 * 4, cOff, rowsPad, cols, d4, cols, 0);
      const valid = Math.min(cols, nb - b0);
      for (let r = 0; r < rows; r++) {
        const co = r * cols;
        const so = r * kk;
        const ko = (q0 + r) * kk;
        let cnt = candN[q0 + r];
        // The worst kept similarity; anything not above it is skipped with one comparison.
        let thr = cnt === kk ? candSim[so + kk - 1] : -Infinity;
        const g = grouped ? queryGroup[q0 + r] : 0;
        for (let c = 0; c < valid; c++) {
          const v = C[co + c];
          if (!(v > thr)) continue;
          const j = b0 + c;
          if (grouped && baseGroup[j] === g) continue;
          // Sorted insertion (descending) into the candidate list.
          let p = cnt === kk ? kk - 1 : cnt++;
          while (p > 0 && candSim[so + p - 1] < v) {
            candSim[so + p] = candSim[so + p - 1];
            candIdx[ko + p] = candIdx[ko + p - 1];
            p--;
          }
          candSim[so + p] = v;
          candIdx[ko + p] = j;
          if (cnt === kk) thr = candSim[so + kk - 1];
        }
        candN[q0 + r] = cnt;
      }
    }
    onBlock?.();
  }
}

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
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0;
  let j = 0;
  for (; j + 4 <= d; j += 4) {
    s0 += a[ao + j] * b[bo + j];
    s1 += a[ao + j + 1] * b[bo + j + 1];
    s2 += a[ao + j + 2] * b[bo + j + 2];
    s3 += a[ao + j + 3] * b[bo + j + 3];
  }
  for (; j < d; j++) s0 += a[ao + j] * b[bo + j];
  return s0 + s1 + (s2 + s3);
}

function normaliseInto(
  dst: Float32Array,
  src: Float32Array,
  norms: Float64Array,
  n: number,
  d: number,
  d4: number,
): void {
  for (let i = 0; i < n; i++) {
    const inv = norms[i] > 0 ? 1 / norms[i] : 0;
    for (let j = 0; j < d; j++) dst[i * d4 + j] = src[i * d + j] * inv;
  }
}

function sharedInt32(n: number, shared: boolean, from?: Int32Array): Int32Array {
  const a = shared ? new Int32Array(new SharedArrayBuffer(Math.max(4, n * 4)), 0, n) : new Int32Array(n);
  if (from) a.set(from);
  return a;
}

const workerUrl = new URL(import.meta.url.endsWith('.ts') ? './topk-worker.ts' : './topk-worker.js', import.meta.url);

/**
 * The k nearest base rows of every query row by cosine similarity.
 * query [nq, d], base [nb, d] row-major float32 (not yet normalised; zero rows have similarity 0 to everything);
 * pass the same array as query and base to search a set against itself (it is then stored once).
 */
export async function cosineTopK(
  query: Float32Array,
  nq: number,
  base: Float32Array,
  nb: number,
  d: number,
  k: number,
  opts: TopKOptions = {},
): Promise<TopK> {
  if (k < 1) throw new UserError(`k must be at least 1, got ${k}`);
  const d4 = Math.ceil(d / 4) * 4;
  const nbPad = Math.ceil(nb / 4) * 4;
  const chunk = Math.min(BASE_CHUNK, nbPad);
  const blocks = Math.ceil(nq / QUERY_BLOCK);
  const auto = nq * nb * d >= PARALLEL_MIN_MACS ? os.availableParallelism() : 1;
  const threads = Math.max(1, Math.min(opts.threads ?? auto, blocks));
  const self = query === base && nq === nb;
  const nqPad = nq + (nq & 1);
  const baseBytes = nbPad * d4 * 4;
  const queryBytes = self ? 0 : nqPad * d4 * 4;
  const cBytes = QUERY_BLOCK * chunk * 4;
  const total = baseBytes + queryBytes + threads * cBytes;
  if (total > 65536 * PAGE) {
    throw new UserError(
      `cosine search over ${nq} x ${nb} rows of ${d} features needs ${(total / 2 ** 30).toFixed(1)} GiB of WebAssembly memory (4 GiB at most); evaluate on fewer samples`,
    );
  }
  const pages = Math.ceil(total / PAGE);
  const shared = threads > 1;
  const memory = new wasm.Memory(shared ? { initial: pages, maximum: pages, shared: true } : { initial: pages });
  const buf = memory.buffer;
  const baseOff = 0,
    queryOff = self ? 0 : baseBytes,
    cOff0 = baseBytes + queryBytes;

  const bNorm = rowNorms(base, nb, d);
  const qNorm = self ? bNorm : rowNorms(query, nq, d);
  normaliseInto(new Float32Array(buf, baseOff, nbPad * d4), base, bNorm, nb, d, d4);
  if (!self) normaliseInto(new Float32Array(buf, queryOff, nqPad * d4), query, qNorm, nq, d, d4);

  const kk = Math.min(k + F32_MARGIN, nb);
  const grouped = opts.queryGroup !== undefined && opts.baseGroup !== undefined;
  const job: ScanJob = {
    memory,
    baseOff,
    nb,
    nbPad,
    d4,
    chunk,
    queryOff,
    nq,
    cOff: cOff0,
    kk,
    candIdx: sharedInt32(nq * kk, shared),
    candN: sharedInt32(nq, shared),
    counter: sharedInt32(1, shared),
    queryGroup: grouped ? sharedInt32(nq, shared, opts.queryGroup) : undefined,
    baseGroup: grouped ? sharedInt32(nb, shared, opts.baseGroup) : undefined,
  };
  const workers: Promise<void>[] = [];
  for (let w = 1; w < threads; w++) {
    workers.push(
      new Promise<void>((resolve, reject) => {
        const worker = new Worker(workerUrl, { workerData: { ...job, cOff: cOff0 + w * cBytes } });
        worker.once('message', () => resolve());
        worker.once('error', reject);
        worker.once('exit', (code) =>
          code === 0 ? resolve() : reject(new Error(`top-k worker exited with code ${code}`)),
        );
      }),
    );
  }
  const progress = opts.onProgress;
  scanBlocks(job, progress && (() => progress(Math.min(nq, Atomics.load(job.counter, 0) * QUERY_BLOCK), nq)));
  await Promise.all(workers);
  progress?.(nq, nq);

  const idx = new Int32Array(nq * k).fill(-1);
  const sim = new Float64Array(nq * k).fill(NaN);
  const rescored: { s: number; j: number }[] = [];
  for (let i = 0; i < nq; i++) {
    rescored.length = 0;
    for (let t = 0; t < job.candN[i]; t++) {
      const j = job.candIdx[i * kk + t];
      const den = qNorm[i] * bNorm[j];
      rescored.push({ s: den > 0 ? dot64(query, i * d, base, j * d, d) / den : 0, j });
    }
    rescored.sort((a, b) => b.s - a.s || a.j - b.j);
    const m = Math.min(k, rescored.length);
    for (let t = 0; t < m; t++) {
      idx[i * k + t] = rescored[t].j;
      sim[i * k + t] = rescored[t].s;
    }
  }
  return { k, idx, sim };
}
