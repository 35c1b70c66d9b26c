// Evaluation at scale: kNN (k=20, weighted vote) and the linear probe (C=1, L-BFGS to max |gradient| 1e-8) on
// synthetic 100k x 1536 float32 features (the size of an H-optimus-0 feature set of 100k tiles), 80/20 train/test,
// kNN on --threads threads (default: all CPUs), the probe on one. Prints a table and writes benchmarks/results/eval.json.
//
//   npx tsc -p tsconfig.json && node benchmarks/eval.mjs [--n 100000] [--d 1536] [--classes 8] [--test 0.2] [--threads 2]
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { knnClassify } from '../dist/eval/knn.js';
import { fitLogistic, predictProba, argmaxRows } from '../dist/eval/logistic.js';
import { accuracy, balancedAccuracy, rocAuc } from '../dist/eval/metrics.js';
import { mulberry32 } from '../dist/eval/metrics.js';
import { writeFileAtomic } from '../dist/io/atomic.js';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '100000' },
    d: { type: 'string', default: '1536' },
    classes: { type: 'string', default: '8' },
    test: { type: 'string', default: '0.2' },
    k: { type: 'string', default: '20' },
    C: { type: 'string', default: '1' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    out: { type: 'string', default: path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'eval.json') },
  },
});
const n = Number(values.n), d = Number(values.d), K = Number(values.classes), k = Number(values.k), C = Number(values.C);
const nTest = Math.round(n * Number(values.test)), nTrain = n - nTest;
const threads = Number(values.threads);

// Class means plus unit Gaussian noise: separable enough to be a real probe, noisy enough to need many iterations.
const rand = mulberry32(1234);
const gauss = () => {
  const u = 1 - rand(), v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
};
const t0 = performance.now();
const means = Float32Array.from({ length: K * d }, () => gauss() * 0.08);
const make = (rows) => {
  const x = new Float32Array(rows * d), y = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    y[i] = Math.floor(rand() * K);
    for (let j = 0; j < d; j++) x[i * d + j] = means[y[i] * d + j] + gauss();
  }
  return { x, y };
};
const train = make(nTrain), test = make(nTest);
const genS = (performance.now() - t0) / 1000;

const rows = [];
const time = (fn) => {
  const t = performance.now();
  const r = fn();
  return [r, (performance.now() - t) / 1000];
};

const t1 = performance.now();
const knn = await knnClassify(train.x, nTrain, train.y, test.x, nTest, d, K, [k], 'weighted', { threads });
const knnS = (performance.now() - t1) / 1000;
const kp = knn.get(k).pred;
rows.push({ stage: `kNN k=${k} weighted, ${threads} thread${threads > 1 ? 's' : ''}`, seconds: knnS, detail: `${nTest} queries x ${nTrain} train x ${d} dims; acc ${accuracy(test.y, kp).toFixed(4)}, bacc ${balancedAccuracy(test.y, kp, K).toFixed(4)}`, gmacPerS: (nTest * nTrain * d) / knnS / 1e9 });

const [model, fitS] = time(() => fitLogistic(train.x, train.y, nTrain, d, K, { C }));
const [proba, predS] = time(() => predictProba(model, test.x, nTest));
const lp = argmaxRows(proba, K);
rows.push({ stage: `linear probe C=${C} fit`, seconds: fitS, detail: `${nTrain} x ${d}, ${K} classes; ${model.iterations} L-BFGS iterations, max|grad| ${model.gradMax.toExponential(2)}${model.converged ? '' : ' (not converged)'}, ${model.engine}`, secondsPerIteration: fitS / Math.max(1, model.iterations) });
rows.push({ stage: 'linear probe predict', seconds: predS, detail: `AUC ${rocAuc(test.y, proba, K).toFixed(4)}, acc ${accuracy(test.y, lp).toFixed(4)}, bacc ${balancedAccuracy(test.y, lp, K).toFixed(4)}` });

const result = {
  created: new Date().toISOString(),
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, loadavg: os.loadavg(), node: process.version, knnThreads: threads, probeThreads: 1 },
  size: { n, d, classes: K, train: nTrain, test: nTest },
  generateSeconds: genS,
  rows,
  totalSeconds: rows.reduce((s, r) => s + r.seconds, 0),
};

const w = Math.max(...rows.map((r) => r.stage.length));
console.log(`eval benchmark: ${n} x ${d} float32 features, ${K} classes, ${nTrain} train / ${nTest} test, load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} CPUs`);
console.log(`| ${'stage'.padEnd(w)} | seconds | detail |`);
console.log(`| ${'-'.repeat(w)} | ------- | ------ |`);
for (const r of rows) console.log(`| ${r.stage.padEnd(w)} | ${r.seconds.toFixed(1).padStart(7)} | ${r.detail} |`);
console.log(`total ${result.totalSeconds.toFixed(1)} s (data generation ${genS.toFixed(1)} s not counted); wrote ${values.out}`);
await writeFileAtomic(values.out, JSON.stringify(result, null, 2) + '\n');
