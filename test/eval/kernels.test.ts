// The SIMD product and the blocked top-k search against brute-force float64 loops, on shapes that exercise every
// padding path (d not a multiple of 4, odd query counts, base sizes across chunk boundaries, grouped exclusion).
import t from 'tap';
import { simdKernels, wasm } from '../../lib/eval/simd.js';
import { cosineTopK } from '../../lib/eval/topk.js';
import { mulberry32, percentile, bootstrapCis } from '../../lib/eval/metrics.js';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const rand = mulberry32(42);
const randn = (n: number) => Float32Array.from({ length: n }, () => rand() * 2 - 1);

t.test('nt32 and nt64 equal a brute-force A·Bᵀ (overwrite and accumulate)', async (t) => {
  const memory = new wasm.Memory({ initial: 4 });
  const k = simdKernels(memory);
  const m = 6,
    n = 8,
    d = 12;
  const buf = memory.buffer as ArrayBuffer;
  const A = new Float32Array(buf, 0, m * d),
    B = new Float32Array(buf, m * d * 4, n * d);
  A.set(randn(m * d));
  B.set(randn(n * d));
  const cOff = (m + n) * d * 4;
  const C = new Float32Array(buf, cOff, m * 10);
  C.fill(7);
  k.nt32(0, m * d * 4, cOff, m, n, d, 10, 0);
  let worst = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let x = 0; x < d; x++) s += A[i * d + x] * B[j * d + x];
      worst = Math.max(worst, Math.abs(C[i * 10 + j] - s));
    }
    t.equal(C[i * 10 + 8], 7, 'columns past n untouched');
  }
  t.ok(worst < 1e-5, `f32 worst error ${worst}`);

  const off64 = 8192;
  const A6 = new Float64Array(buf, off64, m * d),
    B6 = new Float64Array(buf, off64 + m * d * 8, n * d);
  A6.set(randn(m * d));
  B6.set(randn(n * d));
  const c6 = off64 + (m + n) * d * 8;
  const C6 = new Float64Array(buf, c6, m * n).fill(0.5);
  k.nt64(off64, off64 + m * d * 8, c6, m, n, d, n, 1);
  let worst64 = 0;
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0.5;
      for (let x = 0; x < d; x++) s += A6[i * d + x] * B6[j * d + x];
      worst64 = Math.max(worst64, Math.abs(C6[i * n + j] - s));
    }
  t.ok(worst64 < 1e-14, `f64 accumulate worst error ${worst64}`);
});

function bruteTopK(
  q: Float32Array,
  nq: number,
  b: Float32Array,
  nb: number,
  d: number,
  k: number,
  qg?: Int32Array,
  bg?: Int32Array,
) {
  const norms = (x: Float32Array, n: number) =>
    Float64Array.from({ length: n }, (_, i) => {
      let s = 0;
      for (let j = 0; j < d; j++) s += x[i * d + j] * x[i * d + j];
      return Math.sqrt(s);
    });
  const qn = norms(q, nq),
    bn = norms(b, nb);
  const out: { idx: number[]; sim: number[] }[] = [];
  for (let i = 0; i < nq; i++) {
    const cands: { j: number; s: number }[] = [];
    for (let j = 0; j < nb; j++) {
      if (qg && bg && qg[i] === bg[j]) continue;
      let s = 0;
      for (let x = 0; x < d; x++) s += q[i * d + x] * b[j * d + x];
      cands.push({ j, s: s / (qn[i] * bn[j]) });
    }
    cands.sort((a, c) => c.s - a.s || a.j - c.j);
    out.push({ idx: cands.slice(0, k).map((c) => c.j), sim: cands.slice(0, k).map((c) => c.s) });
  }
  return out;
}

t.test('cosineTopK equals a brute-force float64 search on awkward shapes', async (t) => {
  for (const [nq, nb, d, k] of [
    [1, 5, 3, 5],
    [67, 4099, 13, 7],
    [3, 9, 1, 2],
    [130, 300, 64, 20],
  ]) {
    const q = randn(nq * d),
      b = randn(nb * d);
    const got = await cosineTopK(q, nq, b, nb, d, k);
    const want = bruteTopK(q, nq, b, nb, d, k);
    let sameIdx = true,
      worst = 0;
    for (let i = 0; i < nq; i++) {
      for (let j = 0; j < k; j++) {
        if (got.idx[i * k + j] !== want[i].idx[j]) sameIdx = false;
        worst = Math.max(worst, Math.abs(got.sim[i * k + j] - want[i].sim[j]));
      }
    }
    t.ok(sameIdx, `[${nq}, ${nb}, ${d}] k=${k}: same neighbours in the same order`);
    t.ok(worst < 1e-12, `[${nq}, ${nb}, ${d}] k=${k}: similarities within 1e-12 (worst ${worst})`);
  }
});

t.test('worker threads give the same neighbours as one thread and as brute force', async (t) => {
  const nq = 300,
    nb = 900,
    d = 20,
    k = 9;
  const q = randn(nq * d),
    b = randn(nb * d);
  const one = await cosineTopK(q, nq, b, nb, d, k, { threads: 1 });
  let progressed = 0;
  const three = await cosineTopK(q, nq, b, nb, d, k, {
    threads: 3,
    onProgress: (done) => {
      progressed = done;
    },
  });
  t.same(Array.from(three.idx), Array.from(one.idx));
  t.same(Array.from(three.sim), Array.from(one.sim));
  t.same(
    Array.from(three.idx),
    bruteTopK(q, nq, b, nb, d, k).flatMap((w) => w.idx),
  );
  t.equal(progressed, nq, 'progress reaches the total');
  const g = Int32Array.from({ length: nb }, (_, i) => i % 11);
  const self = await cosineTopK(b, nb, b, nb, d, k, { threads: 2, queryGroup: g, baseGroup: g });
  t.same(
    Array.from(self.idx),
    bruteTopK(b, nb, b, nb, d, k, g, g).flatMap((w) => w.idx),
    'grouped self-search in 2 threads',
  );
});

t.test("grouped exclusion never returns a neighbour from the query's own group; -1 when too few remain", async (t) => {
  const n = 50,
    d = 8;
  const x = randn(n * d);
  const g = Int32Array.from({ length: n }, (_, i) => i % 7);
  const got = await cosineTopK(x, n, x, n, d, 10, { queryGroup: g, baseGroup: g });
  const want = bruteTopK(x, n, x, n, d, 10, g, g);
  t.same(
    Array.from(got.idx),
    want.flatMap((w) => w.idx),
  );
  const two = Int32Array.from({ length: 6 }, (_, i) => (i < 5 ? 0 : 1));
  const few = await cosineTopK(x, 6, x, 6, d, 3, { queryGroup: two, baseGroup: two });
  t.same(Array.from(few.idx.subarray(0, 3)), [5, -1, -1], 'a query of group 0 has one allowed neighbour');
  t.ok(Number.isNaN(few.sim[1]));
});

t.test(
  'percentile matches numpy.percentile (linear); bootstrap interval of a constant metric is a point',
  async (t) => {
    const e = JSON.parse(
      readFileSync(path.join(import.meta.dirname, '..', 'fixtures', 'eval', 'expected.json'), 'utf8'),
    ).percentile;
    const v = [...e.values].sort((a: number, b: number) => a - b);
    for (const [p, key] of [
      [2.5, 'p2_5'],
      [97.5, 'p97_5'],
      [50, 'p50'],
    ] as const) {
      t.ok(Math.abs(percentile(v, p) - e[key]) < 1e-15, `p${p}`);
    }
    t.same(
      bootstrapCis(20, () => ({ c: 0.25 }), 50, 1),
      { c: [0.25, 0.25] },
    );
    const ci = bootstrapCis(
      200,
      (rows) => ({ p: rows.reduce((s, r) => s + (r < 100 ? 1 : 0), 0) / rows.length, never: NaN }),
      400,
      3,
    );
    const [lo, hi] = ci.p;
    // Normal approximation of a proportion 0.5 over 200 draws: 0.5 ± 1.96 * sqrt(0.25 / 200) = [0.431, 0.569].
    t.ok(
      Math.abs(lo - 0.431) < 0.02 && Math.abs(hi - 0.569) < 0.02,
      `interval of a proportion 0.5 over 200 samples: [${lo}, ${hi}]`,
    );
    t.same(ci.never, [NaN, NaN], 'a metric undefined on every resample has no interval');
  },
);
