// kNN, the linear probe, metrics, CKA and the robustness index against scikit-learn and NumPy references
// written by tools/make_eval_fixtures.py (test/fixtures/eval/expected.json). The searches and the probe run on each
// backend (js: the WebAssembly SIMD code; native: the engine's libtorch), with the same expectations; the native
// cases skip, saying so, when the engine is not built.
import t, { type Test } from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { readFeatureSet, splitRows, classList, labelsOf, selectRows, matchById } from '../../lib/data/feature-set.js';
import { knnClassify } from '../../lib/eval/knn.js';
import { predictProba, argmaxRows } from '../../lib/eval/logistic.js';
import { JsBackend, NativeBackend, enginePath, loadEngineAddon } from '../../lib/backends/index.js';
import type { EvalBackend, LogisticModel } from '../../lib/backends/types.js';
import { accuracy, balancedAccuracy, weightedF1, rocAuc, binaryAuc } from '../../lib/eval/metrics.js';
import { cka } from '../../lib/eval/cka.js';
import { robustnessIndex, codes } from '../../lib/eval/robustness.js';

const fx = path.join(import.meta.dirname, '..', 'fixtures', 'eval');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const expected = JSON.parse(readFileSync(path.join(fx, 'expected.json'), 'utf8')) as any;

async function load(name: string) {
  const set = await readFeatureSet(path.join(fx, name));
  const classes = classList(set);
  const tr = splitRows(set, 'train'),
    te = splitRows(set, 'test');
  const train = selectRows(set, tr),
    test = selectRows(set, te);
  return {
    set,
    classes,
    train,
    test,
    yTrain: labelsOf(set, tr, classes, 'train split'),
    yTest: labelsOf(set, te, classes, 'test split'),
  };
}

const close = (t: Test, got: number, want: number, tol: number, msg: string) =>
  t.ok(Math.abs(got - want) <= tol, `${msg}: ${got} vs ${want} (tol ${tol})`);

// Each backend with the probe implementations it has: js forces its SIMD and its plain objective in turn.
type Fit = 'simd' | 'js' | 'native';
const backends: { name: string; backend?: EvalBackend; fits: Fit[]; skip: string | false }[] = [
  { name: 'js', backend: new JsBackend(), fits: ['simd', 'js'], skip: false },
];
if (existsSync(enginePath())) {
  backends.push({ name: 'native', backend: new NativeBackend(loadEngineAddon()), fits: ['native'], skip: false });
} else {
  backends.push({
    name: 'native',
    fits: ['native'],
    skip: `the native engine is not built (${enginePath()}): run \`node tools/setup.mjs\``,
  });
}
const fitWith = (
  b: EvalBackend,
  fit: Fit,
  X: Float32Array,
  y: Int32Array,
  n: number,
  d: number,
  K: number,
  o: { C: number; maxIter?: number },
): Promise<LogisticModel> => b.fitLogistic(X, y, n, d, K, fit === 'native' ? o : { ...o, engine: fit });

for (const { name: bname, backend, fits, skip } of backends) {
  t.test(`${bname} backend`, { skip }, async (t) => {
    const b = backend!;
    for (const name of ['multi', 'binary']) {
      t.test(`${name}: kNN matches numpy (weighted) and KNeighborsClassifier (majority)`, async (t) => {
        const { classes, train, test, yTrain, yTest } = await load(name);
        const exp = expected[name];
        t.same(classes, exp.classes, 'classes sorted as strings');
        const top = await b.cosineTopK(test.features, test.n, train.features, train.n, train.d, 20);
        const topIdx: number[][] = exp.knn.top_idx,
          topSim: number[][] = exp.knn.top_sim;
        let worst = 0;
        for (let i = 0; i < test.n; i++) {
          t.same(Array.from(top.idx.subarray(i * 20, i * 20 + 20)), topIdx[i], `neighbours of test row ${i}`);
          for (let j = 0; j < 20; j++) worst = Math.max(worst, Math.abs(top.sim[i * 20 + j] - topSim[i][j]));
        }
        t.ok(worst < 1e-12, `cosine similarities within 1e-12 of numpy float64 (worst ${worst})`);
        for (const vote of ['weighted', 'majority'] as const) {
          const preds = await knnClassify(
            train.features,
            train.n,
            yTrain,
            test.features,
            test.n,
            train.d,
            classes.length,
            [1, 5, 10, 20],
            vote,
            { backend: b },
          );
          for (const k of [1, 5, 10, 20]) {
            const want = exp.knn[`k${k}`][vote];
            const p = preds.get(k)!;
            t.same(Array.from(p.pred), want.pred, `k=${k} ${vote} predictions`);
            close(t, accuracy(yTest, p.pred), want.acc, 1e-9, `k=${k} ${vote} acc`);
            close(t, balancedAccuracy(yTest, p.pred, classes.length), want.bacc, 1e-9, `k=${k} ${vote} bacc`);
          }
        }
      });

      t.test(`${name}: linear probe matches scikit-learn LogisticRegression`, async (t) => {
        const { classes, train, test, yTrain, yTest } = await load(name);
        for (const [C, engine] of fits.flatMap(
          (f) =>
            [
              [0.01, f],
              [1, f],
            ] as const,
        )) {
          const want = expected[name].linear[`C${C}`];
          const model = await fitWith(b, engine, train.features, yTrain, train.n, train.d, classes.length, { C });
          t.equal(model.engine, engine);
          t.ok(
            model.converged,
            `${engine} C=${C} converged to max|grad| ${model.gradMax} in ${model.iterations} iterations`,
          );
          // Our objective (sum form) at our optimum is no higher than at scikit-learn's solution (tol 1e-12 there).
          const ours = model.loss * train.n;
          t.ok(
            ours <= want.objective + 1e-7 * Math.abs(want.objective),
            `C=${C} objective ${ours} <= sklearn's ${want.objective}`,
          );
          close(t, ours, want.objective, 1e-9 * Math.abs(want.objective), `C=${C} objective`);
          const proba = predictProba(model, test.features, test.n);
          let worst = 0;
          want.proba.forEach((row: number[], i: number) =>
            row.forEach((v, c) => {
              worst = Math.max(worst, Math.abs(v - proba[i * classes.length + c]));
            }),
          );
          t.ok(worst < 1e-5, `C=${C} test probabilities within 1e-5 of scikit-learn (worst ${worst})`);
          const pred = argmaxRows(proba, classes.length);
          close(t, rocAuc(yTest, proba, classes.length), want.auc, 1e-3, `C=${C} auc`);
          close(t, accuracy(yTest, pred), want.acc, 1e-9, `C=${C} acc`);
          close(t, balancedAccuracy(yTest, pred, classes.length), want.bacc, 1e-9, `C=${C} bacc`);
          close(t, weightedF1(yTest, pred, classes.length), want.f1, 1e-9, `C=${C} f1`);
        }
      });

      for (const scope of ['test', 'all'] as const) {
        t.test(`${name}: robustness index on ${scope} rows matches the numpy reference`, async (t) => {
          const { set, classes } = await load(name);
          const rows = splitRows(set, scope);
          const sub = selectRows(set, rows);
          const y = labelsOf(set, rows, classes, 'evaluated rows');
          const got = await robustnessIndex(
            sub.features,
            sub.n,
            sub.d,
            y,
            codes(sub.meta.site!),
            codes(sub.meta.slide!),
            [3, 5, 10, 20],
            { backend: b },
          );
          for (const k of [3, 5, 10, 20]) {
            const want = expected[name][`robustness_${scope}`][`k${k}`];
            const g = got.get(k)!;
            t.same(
              { SO: g.SO, OS: g.OS, SS: g.SS, OO: g.OO },
              { SO: want.SO, OS: want.OS, SS: want.SS, OO: want.OO },
              `k=${k} counts`,
            );
            close(t, g.ratio!, want.ratio, 1e-9, `k=${k} ratio`);
            close(t, g.bounded!, want.bounded, 1e-9, `k=${k} bounded`);
          }
        });
      }
    }

    t.test(
      "binary probe: scikit-learn's binomial LogisticRegression with the same C (0.01, 1, 100), probabilities and AUC to 1e-6",
      async (t) => {
        const { classes, train, test, yTrain, yTest } = await load('binary');
        t.equal(classes.length, 2);
        for (const C of [0.01, 1, 100]) {
          for (const engine of fits) {
            const want = expected.binary.linear[`C${C}`];
            const model = await fitWith(b, engine, train.features, yTrain, train.n, train.d, 2, { C });
            t.ok(
              model.converged,
              `${engine} C=${C} converged (max|grad| ${model.gradMax}, ${model.iterations} iterations)`,
            );
            // The binomial objective: ours at our optimum equals scikit-learn's at its own.
            close(
              t,
              model.loss * train.n,
              want.objective,
              1e-9 * Math.abs(want.objective),
              `${engine} C=${C} binomial objective`,
            );
            const proba = predictProba(model, test.features, test.n);
            let worst = 0;
            want.proba.forEach((row: number[], i: number) =>
              row.forEach((v, c) => {
                worst = Math.max(worst, Math.abs(v - proba[i * 2 + c]));
              }),
            );
            t.ok(
              worst <= 1e-6,
              `${engine} C=${C}: test probabilities within ${worst.toExponential(2)} <= 1e-6 of scikit-learn`,
            );
            close(t, rocAuc(yTest, proba, 2), want.auc, 1e-6, `${engine} C=${C} AUC`);
            close(t, accuracy(yTest, argmaxRows(proba, 2)), want.acc, 1e-9, `${engine} C=${C} accuracy`);
          }
        }
      },
    );

    t.test(
      'linear probe on shifted, scaled features (large means and norms, as real embeddings) matches scikit-learn',
      async (t) => {
        const { classes, train, test, yTrain } = await load('multi');
        const want = expected.multi.linear_shifted_C1;
        const shift = (x: Float32Array) => Float32Array.from(x, (v) => v * want.scale + want.shift);
        const model = await b.fitLogistic(shift(train.features), yTrain, train.n, train.d, classes.length, {
          C: 1,
          maxIter: 2000,
        });
        t.ok(model.converged, `converged to max|grad| ${model.gradMax} in ${model.iterations} iterations`);
        const ours = model.loss * train.n;
        t.ok(
          ours < want.sklearn_raw_objective,
          `below scikit-learn's own raw-feature fit, which stopped after ${want.sklearn_raw_n_iter} iterations (${ours} < ${want.sklearn_raw_objective})`,
        );
        close(
          t,
          ours,
          want.objective,
          1e-9 * Math.abs(want.objective),
          'objective equals the converged equivalent fit',
        );
        const proba = predictProba(model, shift(test.features), test.n);
        let worst = 0;
        want.proba.forEach((row: number[], i: number) =>
          row.forEach((v, c) => {
            worst = Math.max(worst, Math.abs(v - proba[i * classes.length + c]));
          }),
        );
        // The objective is nearly flat along some directions here (objectives agree to 1e-9 while probabilities move
        // by ~1e-4), so probabilities are held to the issue's 1e-3 rather than the well-conditioned cases' 1e-5.
        t.ok(worst < 1e-3, `test probabilities within 1e-3 of scikit-learn (worst ${worst})`);
      },
    );

    t.test('CKA matches the Gram-matrix references (Kornblith et al.), rows matched by id', async (t) => {
      const a = await readFeatureSet(path.join(fx, 'multi'));
      const b0 = await readFeatureSet(path.join(fx, 'multi_b'));
      const [, bm] = matchById(a, b0);
      const want = expected.cka_multi_multi_b;
      const got = await cka(a.features, a.d, bm.features, bm.d, a.n, { backend: b });
      close(t, got.linear, want.linear, 1e-6, 'linear');
      close(t, got.linear_debiased, want.linear_debiased, 1e-6, 'debiased linear');
      close(t, got.rbf, want.rbf, 1e-6, 'rbf');
      t.equal(got.rbf_rows, a.n);
      const self = await cka(a.features, a.d, a.features, a.d, a.n, { backend: b });
      close(t, self.linear, 1, 1e-12, 'linear CKA of a set with itself');
      close(t, self.rbf, 1, 1e-12, 'RBF CKA of a set with itself');
      close(t, self.linear_debiased, 1, 1e-12, 'debiased CKA of a set with itself');
    });
  });
}

// Backend-independent: the metrics are plain JavaScript on every backend.
t.test('metrics match scikit-learn (ties in scores, a predicted class absent from y_true)', async (t) => {
  const m = expected.metrics;
  const y = Int32Array.from(m.y),
    pred = Int32Array.from(m.pred);
  close(t, accuracy(y, pred), m.acc, 1e-12, 'accuracy_score');
  close(t, balancedAccuracy(y, pred, m.n_classes), m.bacc, 1e-12, 'balanced_accuracy_score');
  close(t, weightedF1(y, pred, m.n_classes), m.f1, 1e-12, 'f1_score weighted');
  close(t, rocAuc(y, Float64Array.from(m.proba.flat()), 3), m.auc_ovr, 1e-12, 'roc_auc_score ovr macro');
  const yb = Uint8Array.from(m.y_binary);
  close(t, binaryAuc(yb, Float64Array.from(m.score_binary)), m.auc_binary, 1e-12, 'roc_auc_score binary with ties');
});
