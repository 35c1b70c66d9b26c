// Evaluation at scale: kNN (k=20, weighted vote) and the linear probe (C=1, L-BFGS to max |gradient| 1e-8) on
// synthetic 100k x 1536 float32 features (the size of an H-optimus-0 feature set of 100k tiles), 80/20 train/test,
// on the native engine (libtorch: CPU BLAS or the GPU of --device) and, in the same run, on the js backend
// (WebAssembly SIMD) for the probe (and for kNN with --js-knn: about 140 s on 2 cores).
//
// The kNN goal is stated against a bound measured in the same run: the rate of one large libtorch f32 matrix product
// (the engine's test entry evalMatmulRate, g2l/testing.h: [4096, d] x [16384, d]^T on the same device, best of 3 after a warm-up) turns the
// search's nTest x nTrain x d multiply-adds into the seconds they need at that rate; kNN's time over that is the
// ratio to the bound (goal: at most 1.5). The probe's goal is a speed-up over the js backend's fit of the same data
// (goal: at least 3x). The load average is recorded before and after: other processes on the machine slow either side.
// Prints a table and writes benchmarks/results/eval.json.
//
//   node tools/setup.mjs --only ts && node benchmarks/eval.mjs [--n 100000] [--d 1536] [--classes 8] [--test 0.2]
//     [--device cpu|cuda] [--threads 2 (js kNN)] [--js-knn] [--no-js-probe]
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { knnClassify } from '../dist/eval/knn.js';
import { predictProba, argmaxRows } from '../dist/eval/logistic.js';
import { accuracy, balancedAccuracy, rocAuc, mulberry32 } from '../dist/eval/metrics.js';
import { JsBackend, NativeBackend, loadEngineAddon } from '../dist/backends/index.js';
import { writeFileAtomic } from '../dist/io/atomic.js';
import * as nativeModule from '../dist/backends/native.js';
import { loadEngineTesting } from './lib/common.mjs';

/** @typedef {import('../dist/backends/types.js').LogisticModel} LogisticModel */
/** @typedef {import('../dist/backends/types.js').EvalBackend} EvalBackend */
/** @typedef {{ stage: string, seconds: number, detail: string, gmacPerS?: number, ofBound?: number, secondsPerIteration?: number }} Row */

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '100000' },
    d: { type: 'string', default: '1536' },
    classes: { type: 'string', default: '8' },
    test: { type: 'string', default: '0.2' },
    k: { type: 'string', default: '20' },
    C: { type: 'string', default: '1' },
    device: { type: 'string', default: 'cpu' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    'js-knn': { type: 'boolean', default: false },
    'no-js-probe': { type: 'boolean', default: false },
    out: { type: 'string', default: path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'eval.json') },
  },
});
const n = Number(values.n),
  d = Number(values.d),
  K = Number(values.classes),
  k = Number(values.k),
  C = Number(values.C);
const nTest = Math.round(n * Number(values.test)),
  nTrain = n - nTest;
const threads = Number(values.threads);
const device = values.device;
const loadBefore = os.loadavg();

let addon;
try {
  addon = loadEngineAddon();
} catch (e) {
  console.error(
    `g2l-native: the native engine is not available (${(e instanceof Error ? e.message : String(e)).split('\n')[0]}); this benchmark compares it with js: build it with node tools/setup.mjs`,
  );
  process.exit(2);
}
const native = new NativeBackend(addon),
  js = new JsBackend();

// Class means plus unit Gaussian noise: separable enough to be a real probe, noisy enough to need many iterations.
const rand = mulberry32(1234);
const gauss = () => {
  const u = 1 - rand(),
    v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
};
const t0 = performance.now();
const means = Float32Array.from({ length: K * d }, () => gauss() * 0.08);
/** @param {number} rows */
const make = (rows) => {
  const x = new Float32Array(rows * d),
    y = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    y[i] = Math.floor(rand() * K);
    for (let j = 0; j < d; j++) x[i * d + j] = means[y[i] * d + j] + gauss();
  }
  return { x, y };
};
const train = make(nTrain),
  test = make(nTest);
const genS = (performance.now() - t0) / 1000;

/**
 * Runs fn, timing it and the event loop's longest stall meanwhile (a 5 ms interval's worst lateness).
 * @template R
 * @param {() => R} fn
 * @returns {Promise<{ r: Awaited<R>, s: number, stallS: number }>}
 */
async function timed(fn) {
  let last = performance.now(),
    stall = 0;
  const iv = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - last - 5);
    last = now;
  }, 5);
  const t = performance.now();
  const r = await fn();
  const s = (performance.now() - t) / 1000;
  clearInterval(iv);
  stall = Math.max(stall, performance.now() - last - 5);
  return { r, s, stallS: Math.max(0, stall) / 1000 };
}

const macs = nTest * nTrain * d;
/** @type {Row[]} */
const rows = [];
// The bound: one large f32 product's rate on the device.
const rate = await loadEngineTesting(nativeModule).evalMatmulRate(4096, 16384, d, device, 3);
const boundS = macs / rate;
rows.push({
  stage: `bound: one f32 matmul [4096,${d}]x[16384,${d}]^T, ${device}`,
  seconds: boundS,
  detail: `${(rate / 1e9).toFixed(1)} GMAC/s best of 3; ${(macs / 1e12).toFixed(2)} T multiply-adds of kNN at that rate`,
});

/**
 * The predictions for k=`k` of knnClassify's answer (it answers every k it is asked for).
 * @param {Map<number, import('../dist/eval/knn.js').KnnPrediction>} byK
 */
const predictionsAtK = (byK) => {
  const p = byK.get(k);
  if (!p) throw new Error(`knnClassify gave no predictions for k=${k}`);
  return p.pred;
};
const knnN = await timed(() =>
  knnClassify(train.x, nTrain, train.y, test.x, nTest, d, K, [k], 'weighted', { backend: native, device }),
);
const kpN = predictionsAtK(knnN.r);
rows.push({
  stage: `kNN k=${k} weighted, native ${device}`,
  seconds: knnN.s,
  detail: `${nTest} queries x ${nTrain} train x ${d} dims; ${(knnN.s / boundS).toFixed(2)}x the bound (goal <= 1.5); acc ${accuracy(test.y, kpN).toFixed(4)}, bacc ${balancedAccuracy(test.y, kpN, K).toFixed(4)}; event loop stalled at most ${(knnN.stallS * 1000).toFixed(0)} ms`,
  gmacPerS: macs / knnN.s / 1e9,
  ofBound: knnN.s / boundS,
});
let knnJ;
if (values['js-knn']) {
  knnJ = await timed(() =>
    knnClassify(train.x, nTrain, train.y, test.x, nTest, d, K, [k], 'weighted', { backend: js, threads }),
  );
  const kpJ = predictionsAtK(knnJ.r);
  const same = kpJ.every((v, i) => v === kpN[i]);
  rows.push({
    stage: `kNN k=${k} weighted, js ${threads} thread${threads > 1 ? 's' : ''}`,
    seconds: knnJ.s,
    detail: `native ${(knnJ.s / knnN.s).toFixed(1)}x faster; predictions ${same ? 'identical' : 'DIFFER'}; ${(knnJ.s / boundS).toFixed(2)}x the bound`,
    gmacPerS: macs / knnJ.s / 1e9,
    ofBound: knnJ.s / boundS,
  });
}

/** @param {EvalBackend} backend */
const probe = (backend) =>
  timed(() => backend.fitLogistic(train.x, train.y, nTrain, d, K, { C, device: backend === native ? device : 'cpu' }));
const fitN = await probe(native);
/** @param {LogisticModel} m */
const describe = (m) =>
  `${m.iterations} L-BFGS iterations, objective/N ${m.loss.toPrecision(12)}, max|grad| ${m.gradMax.toExponential(2)}${m.converged ? '' : ' (not converged)'}`;
rows.push({
  stage: `linear probe C=${C} fit, native ${device}`,
  seconds: fitN.s,
  detail: `${nTrain} x ${d}, ${K} classes; ${describe(fitN.r)}; event loop stalled at most ${(fitN.stallS * 1000).toFixed(0)} ms`,
  secondsPerIteration: fitN.s / Math.max(1, fitN.r.iterations),
});
let fitJ;
if (!values['no-js-probe']) {
  fitJ = await probe(js);
  rows.push({
    stage: `linear probe C=${C} fit, js (${fitJ.r.engine})`,
    seconds: fitJ.s,
    detail: `${describe(fitJ.r)}; native ${(fitJ.s / fitN.s).toFixed(1)}x faster (goal >= 3), per iteration ${(fitJ.s / fitJ.r.iterations / (fitN.s / fitN.r.iterations)).toFixed(1)}x`,
    secondsPerIteration: fitJ.s / Math.max(1, fitJ.r.iterations),
  });
}
const pred = await timed(() => predictProba(fitN.r, test.x, nTest));
const lp = argmaxRows(pred.r, K);
rows.push({
  stage: 'linear probe predict (native fit)',
  seconds: pred.s,
  detail: `AUC ${rocAuc(test.y, pred.r, K).toFixed(4)}, acc ${accuracy(test.y, lp).toFixed(4)}, bacc ${balancedAccuracy(test.y, lp, K).toFixed(4)}`,
});
const loadAfter = os.loadavg();

const result = {
  created: new Date().toISOString(),
  machine: {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model,
    loadavgBefore: loadBefore,
    loadavgAfter: loadAfter,
    node: process.version,
    device,
    jsKnnThreads: threads,
  },
  size: { n, d, classes: K, train: nTrain, test: nTest },
  generateSeconds: genS,
  bound: { gmacPerS: rate / 1e9, seconds: boundS },
  goals: {
    knnOfBound: knnN.s / boundS,
    probeSpeedup: fitJ ? fitJ.s / fitN.s : null,
  },
  rows,
};

const w = Math.max(...rows.map((r) => r.stage.length));
console.log(
  `eval benchmark: ${n} x ${d} float32 features, ${K} classes, ${nTrain} train / ${nTest} test; load average ${loadBefore.map((v) => v.toFixed(1)).join(' ')} before, ${loadAfter.map((v) => v.toFixed(1)).join(' ')} after, on ${os.cpus().length} CPUs`,
);
console.log(`| ${'stage'.padEnd(w)} | seconds | detail |`);
console.log(`| ${'-'.repeat(w)} | ------- | ------ |`);
for (const r of rows) console.log(`| ${r.stage.padEnd(w)} | ${r.seconds.toFixed(1).padStart(7)} | ${r.detail} |`);
console.log(
  `kNN ${result.goals.knnOfBound.toFixed(2)}x the bound (goal <= 1.5)${result.goals.probeSpeedup !== null ? `; probe ${result.goals.probeSpeedup.toFixed(1)}x faster than js (goal >= 3)` : ''}; data generation ${genS.toFixed(1)} s not counted; wrote ${values.out}`,
);
await writeFileAtomic(values.out, JSON.stringify(result, null, 2) + '\n');
