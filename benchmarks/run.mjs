#!/usr/bin/env node
// npm run bench: distill-step and embed throughput of the native engine against the PyTorch reference
// (tools/reference_step.py) and the pure-JS backend, on the same small teacher/student pair of the real families, the
// same batch, the same augmentation and the same thread count.
//
// The engine and PyTorch are interleaved: PyTorch runs as a long-lived child (reference_step.py --serve) that times
// one operation per request, and each pair is one engine run and one PyTorch run back to back (the order alternates
// from pair to pair), so a neighbour's load lands on both sides of a pair. The ratio reported is the median of the
// per-pair ratios, with its min / max and quartiles; the load average is recorded before, between and after.
// Three operations:
//   distill        the distill step with G2L's augmentation (crop, flips, colour jitter, blur; torchvision v2 in
//                  the reference, the engine's own kernels in the engine)
//   distill-noaug  the compute-only step: centre crop, no augmentation, on both sides
//   embed          a batch of 224 px images through the teacher, no grad
// The js backend is timed alone (it is far too slow to interleave at equal counts), before the others.
// Writes benchmarks/results/latest.json and prints Markdown tables.
//
//   node benchmarks/run.mjs [--runs N] [--js-runs N] [--batch B] [--embed-batch B] [--skip native,js,pytorch]
//                           [--python PATH] [--out FILE]
//
// Goals reported (not asserted): native >= 1.1x PyTorch on the distill step and on embed (median of the per-pair
// ratios), native >= 30x js on the distill step.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeFileAtomic } from '../dist/io/atomic.js';
import {
  findPython,
  fmt as f,
  loadAverage,
  makeTiles,
  median,
  quantile,
  ROOT,
  startReference,
  timeRuns,
} from './lib/common.mjs';

/**
 * What benchmarks/results/latest.json holds.
 * @typedef {{ times_s: number[], median_s: number, img_s: number, best_img_s: number, best_over_median: number }} SideSummary
 * @typedef {{ median: number, min: number, max: number, q1: number, q3: number, pairs: number[] }} PairRatios
 * @typedef {object} OpResult one operation: its sides' summaries and the ratios between them
 * @property {string} label
 * @property {number} images
 * @property {SideSummary} [native]
 * @property {SideSummary} [pytorch]
 * @property {SideSummary} [js]
 * @property {PairRatios} [native_vs_pytorch]
 * @property {number} [native_vs_js]
 * @typedef {object} ModelSummary
 * @property {string} family
 * @property {number} dims
 * @property {number} depth
 * @property {number} heads
 * @property {number} registers
 * @property {string} mlp
 * @property {number} parameters
 * @typedef {object} Machine
 * @property {string} cpu
 * @property {number} cores
 * @property {number} memoryGiB
 * @property {string} os
 * @property {string} node
 * @property {Record<'OMP_NUM_THREADS' | 'OMP_WAIT_POLICY' | 'GOMP_SPINCOUNT', string | null>} env
 * @property {number} [jsThreads]
 * @property {string | null} [libtorch]
 * @property {number} [nativeThreads]
 * @property {string} [engineOpenMp]
 * @property {string} [torch]
 * @property {number} [pytorchThreads]
 * @property {number} [processThreads]
 * @typedef {object} BenchResult
 * @property {string} date
 * @property {string} command
 * @property {Machine} machine
 * @property {{ start: number[] } & Record<string, number[]>} loadAverage start, afterJs, before_<op>, end
 * @property {Record<string, number | string>} setup
 * @property {Record<string, ModelSummary>} models teacher, student
 * @property {Record<string, OpResult>} ops distill, distill-noaug, embed
 * @property {string[]} notes
 * @property {Record<string, boolean | null>} [goals]
 */

const { values: opt } = parseArgs({
  options: {
    runs: { type: 'string', default: '9' },
    'js-runs': { type: 'string', default: '3' },
    batch: { type: 'string', default: '8' },
    'embed-batch': { type: 'string', default: '8' },
    skip: { type: 'string', default: '' },
    python: { type: 'string', default: '' },
    out: { type: 'string', default: path.join(ROOT, 'benchmarks', 'results', 'latest.json') },
  },
});
const RUNS = Number(opt.runs),
  JS_RUNS = Number(opt['js-runs']),
  BATCH = Number(opt.batch),
  EMBED_BATCH = Number(opt['embed-batch']);
for (const [name, v] of /** @type {const} */ ([
  ['--runs', RUNS],
  ['--js-runs', JS_RUNS],
  ['--batch', BATCH],
  ['--embed-batch', EMBED_BATCH],
])) {
  if (!Number.isInteger(v) || v < 1) {
    process.stderr.write(`bench: ${name} must be a positive integer\n`);
    process.exit(2);
  }
}
const WARMUP = 2,
  TILE = 256,
  CROP = 224;
const skip = new Set(opt.skip.split(',').filter(Boolean));
/** @param {string} m */
const log = (m) => process.stderr.write(`bench: ${m}\n`);

// Nothing here sets OpenMP's environment: PyTorch runs with the user's settings (libgomp's defaults when unset), the
// engine with its own default spin count unless the user set one (lib/backends/native.ts ENGINE_GOMP_SPINCOUNT);
// both are recorded below.
const { chooseBackend, JsBackend } = await import('../dist/backends/index.js');
const { ENGINE_GOMP_SPINCOUNT } = await import('../dist/backends/native.js');
const { JsDistiller } = await import('../dist/backends/js/distill.js');
const { Distiller } = await import('../dist/distill/distiller.js');
const { Encoder } = await import('../dist/models/encoder.js');
const { writeBenchModels } = await import('./lib/models.mjs');

const tiles = makeTiles(BATCH, TILE, 1);
const images = makeTiles(EMBED_BATCH, CROP, 2);
const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-bench-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const models = await writeBenchModels(dir, 0);
const totalSteps = WARMUP + Math.max(RUNS, JS_RUNS);
const distillConfig = { teacher: models.teacher, student: models.student, totalSteps, seed: 0 };

const OPS = {
  distill: { label: 'distill step', images: BATCH },
  'distill-noaug': { label: 'distill step, no augmentation', images: BATCH },
  embed: { label: 'embed', images: EMBED_BATCH },
};
/** @param {string} k */
const env = (k) => process.env[k] ?? null;
/** @type {BenchResult} */
const result = {
  date: new Date().toISOString(),
  command: 'npm run bench',
  machine: {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism?.() ?? os.cpus().length,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    env: {
      OMP_NUM_THREADS: env('OMP_NUM_THREADS'),
      OMP_WAIT_POLICY: env('OMP_WAIT_POLICY'),
      GOMP_SPINCOUNT: env('GOMP_SPINCOUNT'),
    },
  },
  loadAverage: { start: loadAverage() },
  setup: {
    batch: BATCH,
    embedBatch: EMBED_BATCH,
    tilePx: TILE,
    cropPx: CROP,
    warmup: WARMUP,
    pairs: RUNS,
    jsRuns: JS_RUNS,
    method: 'native and PyTorch interleaved pair by pair (order alternating); js timed alone before them',
  },
  models: {},
  ops: Object.fromEntries(Object.entries(OPS).map(([k, o]) => [k, { label: o.label, images: o.images }])),
  notes: [],
};

/**
 * { times_s, median_s, img_s, best_img_s, best_over_median } of one side's times.
 * @param {number[]} times
 * @param {number} n
 * @returns {SideSummary}
 */
function summarize(times, n) {
  const med = median(times),
    best = Math.min(...times);
  return {
    times_s: times,
    median_s: med,
    img_s: n / med,
    best_img_s: n / best,
    best_over_median: +(med / best).toFixed(3),
  };
}

/**
 * The per-pair ratios native / PyTorch (PyTorch's time over the engine's) with their spread.
 * @param {number[]} nativeTimes
 * @param {number[]} refTimes
 * @returns {PairRatios}
 */
function pairRatios(nativeTimes, refTimes) {
  const r = nativeTimes.map((t, i) => refTimes[i] / t);
  /** @param {number} x */
  const round = (x) => +x.toFixed(3);
  return {
    median: round(median(r)),
    min: round(Math.min(...r)),
    max: round(Math.max(...r)),
    q1: round(quantile(r, 0.25)),
    q3: round(quantile(r, 0.75)),
    pairs: r.map(round),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// js: timed alone (tens of seconds a step on one thread)
// ---------------------------------------------------------------------------------------------------------------
const js = new JsBackend();
for (const [role, folder] of Object.entries(models)) {
  const d = await js.describeModel({ folder });
  result.models[role] = {
    family: `${d.layout} ${d.family}`,
    dims: d.dims,
    depth: d.depth,
    heads: d.numHeads,
    registers: d.numRegisters,
    mlp: d.mlp,
    parameters: d.parameters,
  };
}
if (!skip.has('js')) {
  log(`js distill: batch ${BATCH}, 1 + ${JS_RUNS} steps (tens of seconds each)`);
  const d = await JsDistiller.create({ ...distillConfig, optimizer: { totalSteps } });
  result.ops.distill.js = summarize(await timeRuns(() => d.step(tiles), 1, JS_RUNS), BATCH);
  log(`js embed: batch ${EMBED_BATCH}`);
  const enc = await Encoder.load(models.teacher, { backend: js, batchSize: EMBED_BATCH });
  result.ops.embed.js = summarize(await timeRuns(() => enc.embed(images), 1, JS_RUNS), EMBED_BATCH);
  await enc.dispose();
  result.machine.jsThreads = 1;
  result.loadAverage.afterJs = loadAverage();
}

// ---------------------------------------------------------------------------------------------------------------
// native and PyTorch, interleaved
// ---------------------------------------------------------------------------------------------------------------
/**
 * op -> () => Promise: one engine run.
 * @type {Record<string, () => Promise<unknown>>}
 */
const native = {};
if (!skip.has('native')) {
  const { backend, fallbackReason } = chooseBackend({ fallback: true, warn: () => {} });
  if (fallbackReason) {
    result.notes.push(`native engine not loadable: ${fallbackReason}`);
    log(`native engine not loadable, skipped: ${fallbackReason.split('\n')[0]}`);
  } else {
    const info = await backend.info();
    result.machine.libtorch = info.libtorchVersion;
    result.machine.nativeThreads = info.cpuThreads;
    result.machine.engineOpenMp =
      (env('GOMP_SPINCOUNT') ?? env('OMP_WAIT_POLICY'))
        ? "the user's"
        : `GOMP_SPINCOUNT=${ENGINE_GOMP_SPINCOUNT} (engine default)`;
    const d = await Distiller.create({ ...distillConfig, backend: 'native', device: 'cpu' });
    const d0 = await Distiller.create({
      ...distillConfig,
      backend: 'native',
      device: 'cpu',
      augment: { enabled: false },
    });
    const enc = await Encoder.load(models.teacher, { backend, device: 'cpu', batchSize: EMBED_BATCH });
    native.distill = () => d.step(tiles);
    native['distill-noaug'] = () => d0.step(tiles);
    native.embed = () => enc.embed(images);
  }
}

/** @type {Awaited<ReturnType<typeof startReference>> | null} */
let ref = null;
if (!skip.has('pytorch')) {
  const py = findPython(opt.python);
  if (!py) {
    result.notes.push(
      'PyTorch reference skipped: no python with torch, timm, transformers and safetensors (.venv, G2L_PYTHON or python3)',
    );
    log('no python with torch/timm/transformers: PyTorch reference skipped');
  } else {
    const threads = result.machine.nativeThreads ?? result.machine.cores;
    log(`PyTorch reference: loading (${threads} threads)`);
    try {
      ref = await startReference(py, [
        '--teacher',
        models.teacher,
        '--student',
        models.student,
        '--batch',
        String(BATCH),
        '--embed-batch',
        String(EMBED_BATCH),
        '--steps',
        String(RUNS),
        '--warmup',
        String(WARMUP),
        '--threads',
        String(threads),
      ]);
      result.machine.torch = ref.info.torch;
      result.machine.pytorchThreads = ref.info.threads;
    } catch (e) {
      result.notes.push(`PyTorch reference failed (${/** @type {Error} */ (e).message})`);
      log(`PyTorch reference failed: ${/** @type {Error} */ (e).message}`);
    }
  }
}

/** @param {() => Promise<unknown>} fn */
const elapsed = async (fn) => {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
};
for (const [op, o] of Object.entries(OPS)) {
  // [side, one run]: the engine's runs resolve when done, PyTorch's to the seconds its child measured.
  const sides = /** @type {['native' | 'pytorch', () => Promise<unknown>][]} filter(Boolean): the sides that run */ (
    [native[op] && ['native', native[op]], ref && ['pytorch', () => ref.time(op)]].filter(Boolean)
  );
  if (!sides.length) continue;
  log(
    `${o.label}: ${WARMUP} warm-up + ${RUNS} ${sides.length === 2 ? 'interleaved pairs' : `runs (${sides[0][0]} only)`}, batch ${o.images}`,
  );
  result.loadAverage[`before_${op}`] = loadAverage();
  /** @type {Record<string, number[]>} */
  const times = Object.fromEntries(sides.map(([name]) => [name, []]));
  try {
    for (let i = 0; i < WARMUP; i++) for (const [, run] of sides) await run();
    for (let i = 0; i < RUNS; i++) {
      for (const [name, run] of i % 2 ? [...sides].reverse() : sides) {
        times[name].push(name === 'pytorch' ? /** @type {number} */ (await run()) : await elapsed(run));
      }
    }
  } catch (e) {
    result.notes.push(`${o.label}: ${/** @type {Error} */ (e).message}`);
    log(`${o.label} failed: ${/** @type {Error} */ (e).message}`);
    continue;
  }
  for (const [name] of sides) result.ops[op][name] = summarize(times[name], o.images);
  if (sides.length === 2) result.ops[op].native_vs_pytorch = pairRatios(times.native, times.pytorch);
}
result.loadAverage.end = loadAverage();
if (ref) await ref.close();
// Threads of this process at the end (Node's own, libuv's, the engine's and OpenMP's): a check on thread placement.
try {
  result.machine.processThreads = readdirSync('/proc/self/task').length;
} catch {
  /* not Linux */
}

// ---------------------------------------------------------------------------------------------------------------
// Ratios, goals, outputs
// ---------------------------------------------------------------------------------------------------------------
const ops = result.ops;
for (const op of ['distill', 'embed']) {
  if (ops[op].native && ops[op].js) ops[op].native_vs_js = +(ops[op].native.img_s / ops[op].js.img_s).toFixed(1);
}
/**
 * @param {number | null | undefined} x
 * @param {number} min
 */
const goal = (x, min) => (x === undefined || x === null ? null : x >= min);
result.goals = {
  'distill native >= 1.1x PyTorch (median of pairs)': goal(ops.distill.native_vs_pytorch?.median, 1.1),
  'embed native >= 1.1x PyTorch (median of pairs)': goal(ops.embed.native_vs_pytorch?.median, 1.1),
  'distill native >= 30x js': goal(ops.distill.native_vs_js, 30),
};
await writeFileAtomic(opt.out, `${JSON.stringify(result, null, 2)}\n`);

const m = result.models,
  la = result.loadAverage;
console.log(
  `\n### g2l-native CPU benchmark (${result.date.slice(0, 10)}, ${result.machine.cpu}, ${result.machine.cores} cores)\n`,
);
console.log(
  `teacher ${m.teacher.family} (dim ${m.teacher.dims}, depth ${m.teacher.depth}, ${(m.teacher.parameters / 1e6).toFixed(2)} M params), ` +
    `student ${m.student.family} (dim ${m.student.dims}, depth ${m.student.depth}, ${(m.student.parameters / 1e6).toFixed(2)} M params); ` +
    `distill batch ${BATCH} of ${TILE} px tiles (crop ${CROP}), embed batch ${EMBED_BATCH}; native and PyTorch in ${RUNS} interleaved pairs ` +
    `after ${WARMUP} warm-up each; js ${JS_RUNS} runs alone\n`,
);
console.log(
  '| img/s (median) | native | PyTorch | native / PyTorch, median of pairs [min, max] | native best / median | js (alone) | native / js |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const r of Object.values(ops)) {
  const v = r.native_vs_pytorch;
  console.log(
    `| ${r.label} | ${f(r.native?.img_s)} | ${f(r.pytorch?.img_s)} | ${v ? `${v.median.toFixed(2)}x [${v.min.toFixed(2)}, ${v.max.toFixed(2)}]` : 'n/a'} | ` +
      `${r.native ? r.native.best_over_median.toFixed(2) : 'n/a'} | ${f(r.js?.img_s)} | ${r.native_vs_js ? `${r.native_vs_js}x` : 'n/a'} |`,
  );
}
console.log(
  `\nthreads: native ${result.machine.nativeThreads ?? 'n/a'}, PyTorch ${result.machine.pytorchThreads ?? 'n/a'}, js 1; ` +
    `load average (1, 5, 15 min) at start ${la.start.join(', ')}, at end ${la.end.join(', ')}`,
);
for (const [g, ok] of Object.entries(result.goals)) console.log(`goal: ${g}: ${ok ?? 'n/a'}`);
for (const n of result.notes) console.log(`note: ${n}`);
console.log(`\nwrote ${path.relative(process.cwd(), opt.out) || opt.out}`);
