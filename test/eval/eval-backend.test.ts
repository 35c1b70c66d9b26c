// The native engine's evaluation beyond the reference fixtures (test/eval/references.test.ts runs those on both
// backends): the tiled search gives the same neighbours whatever the tile sizes (tile edges, grouped rows, a tile
// with no allowed row), the probe runs off the event loop, and bad input is refused with a clear message.
import t from 'tap';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { readFeatureSet } from '../../lib/data/feature-set.js';
import { JsBackend, NativeBackend, enginePath, loadEngineAddon } from '../../lib/backends/index.js';
import { codes } from '../../lib/eval/robustness.js';
import { mulberry32 } from '../../lib/eval/metrics.js';

const skip = existsSync(enginePath())
  ? false
  : `the native engine is not built (${enginePath()}): run \`node tools/setup.mjs\``;
const fx = path.join(import.meta.dirname, '..', 'fixtures', 'eval');

t.test("native search: any tiling gives the js search's neighbours", { skip }, async (t) => {
  const addon = loadEngineAddon();
  const set = await readFeatureSet(path.join(fx, 'multi'));
  const { n, d, features } = set;
  const slide = codes(set.meta.slide!);
  const js = new JsBackend();
  const k = 10;
  for (const grouped of [false, true]) {
    const groups = grouped ? { queryGroup: slide, baseGroup: slide } : {};
    const want = await js.cosineTopK(features, n, features, n, d, k, groups);
    for (const [qb, bb] of [
      [0, 0],
      [7, 13],
      [1, 1],
      [n, 5],
      [3, n + 4],
    ]) {
      const x = { data: features, shape: [n, d] };
      const r = await addon.evalCosineTopK(x, x, {
        k,
        queryBlock: qb,
        baseBlock: bb,
        ...(grouped
          ? {
              queryGroup: { data: Float64Array.from(slide), shape: [n] },
              baseGroup: { data: Float64Array.from(slide), shape: [n] },
            }
          : {}),
      });
      const idx = Array.from(r.idx.data, Number);
      t.same(
        idx,
        Array.from(want.idx),
        `${grouped ? 'grouped, ' : ''}tiles ${qb || 'auto'} x ${bb || 'auto'}: same neighbours`,
      );
      let worst = 0;
      for (let i = 0; i < n * k; i++) worst = Math.max(worst, Math.abs(r.sim.data[i] - want.sim[i]));
      t.ok(worst < 1e-12, `similarities within ${worst} < 1e-12`);
    }
  }
});

t.test('native search: fewer allowed neighbours than k leaves -1 and NaN, as js', { skip }, async (t) => {
  const native = new NativeBackend(loadEngineAddon()),
    js = new JsBackend();
  const rand = mulberry32(7);
  const n = 12,
    d = 5;
  const x = Float32Array.from({ length: n * d }, () => rand() - 0.5);
  x.fill(0, 0, d); // a zero row: similarity 0 to everything
  const g = Int32Array.from({ length: n }, (_, i) => (i < 8 ? 0 : 1)); // group 1 has 4 rows: 8 others allowed
  const opts = { queryGroup: g, baseGroup: g };
  const a = await native.cosineTopK(x, n, x, n, d, 9, opts),
    b = await js.cosineTopK(x, n, x, n, d, 9, opts);
  t.same(Array.from(a.idx), Array.from(b.idx), 'same neighbours, -1 where none is left');
  for (let i = 0; i < a.sim.length; i++) {
    if (Number.isNaN(b.sim[i])) t.ok(Number.isNaN(a.sim[i]), `NaN at ${i}`);
    else t.ok(Math.abs(a.sim[i] - b.sim[i]) < 1e-12, `similarity ${i}`);
  }
});

t.test('native probe: runs off the event loop and matches the js fit', { skip }, async (t) => {
  const native = new NativeBackend(loadEngineAddon()),
    js = new JsBackend();
  const rand = mulberry32(3);
  const n = 3000,
    d = 48,
    K = 4;
  const y = Int32Array.from({ length: n }, () => Math.floor(rand() * K));
  const X = Float32Array.from(
    { length: n * d },
    (_, i) => rand() - 0.5 + 0.3 * (i % d === y[Math.floor(i / d)] ? 1 : 0),
  );
  let turns = 0;
  let spinning = true;
  const spin = () => {
    turns++;
    if (spinning) setImmediate(spin);
  };
  setImmediate(spin);
  const m = await native.fitLogistic(X, y, n, d, K, { C: 1 });
  spinning = false;
  t.ok(turns > 1, `the event loop turned ${turns} times while the engine fitted`);
  t.ok(m.converged, `converged in ${m.iterations} iterations`);
  const j = await js.fitLogistic(X, y, n, d, K, { C: 1 });
  t.ok(Math.abs(m.loss - j.loss) <= 1e-9 * Math.abs(j.loss), `objective/N ${m.loss} vs js ${j.loss}`);
});

// The CPU pass (native/engine/eval/logistic_pass.cpp) works on groups of 8 classes, 8 features and 16 rows: each
// remainder, more than one group, and the binary model, against the js fit of the same objective.
t.test('native probe: feature, class and row remainders of the CPU pass match the js fit', { skip }, async (t) => {
  const native = new NativeBackend(loadEngineAddon()),
    js = new JsBackend();
  for (const [n, d, K] of [
    [203, 13, 2],
    [517, 37, 11],
    [64, 8, 8],
    [7, 3, 3],
    [1000, 70, 17],
  ]) {
    const rand = mulberry32(n + d + K);
    const y = Int32Array.from({ length: n }, (_, i) => (i < K ? i : Math.floor(rand() * K)));
    const X = Float32Array.from(
      { length: n * d },
      (_, i) => rand() - 0.5 + 0.4 * ((i % d) % K === y[Math.floor(i / d)] ? 1 : 0),
    );
    const m = await native.fitLogistic(X, y, n, d, K, { C: 0.5 });
    const j = await js.fitLogistic(X, y, n, d, K, { C: 0.5 });
    const what = `n ${n}, d ${d}, ${K} classes`;
    t.ok(Math.abs(m.loss - j.loss) <= 1e-9 * Math.abs(j.loss), `${what}: objective/N ${m.loss} vs js ${j.loss}`);
    t.equal(m.iterations, j.iterations, `${what}: ${m.iterations} iterations, as js`);
    let maxW = 0,
      errW = 0;
    for (let i = 0; i < m.W.length; i++) {
      maxW = Math.max(maxW, Math.abs(j.W[i]));
      errW = Math.max(errW, Math.abs(m.W[i] - j.W[i]));
    }
    t.ok(errW <= 1e-6 * maxW, `${what}: weights within ${(errW / maxW).toExponential(1)} of js`);
  }
});

t.test('native evaluation refuses bad input with a clear message', { skip }, async (t) => {
  const native = new NativeBackend(loadEngineAddon());
  const X = new Float32Array(8 * 3).fill(1);
  await t.rejects(
    native.fitLogistic(X, Int32Array.from([0, 1, 2, 0, 1, 2, 0, 5]), 8, 3, 3, { C: 1 }),
    /labels must lie in \[0, 3\)/,
  );
  await t.rejects(native.fitLogistic(X, new Int32Array(8), 8, 3, 3, { C: 0 }), /C must be positive/);
  await t.rejects(native.cosineTopK(X, 8, X, 8, 3, 0), /k must be at least 1/);
  await t.rejects(native.cosineTopK(X, 8, X, 8, 3, 2, { device: 'tpu' }), /tpu/);
});
