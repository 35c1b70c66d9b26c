#!/usr/bin/env node
// npm run bench: distill-step and embed throughput of the native engine, the pure-JS backend and the PyTorch
// reference step (tools/reference_step.py, when torch is installed) on the same small teacher/student pair of the
// real families, the same batch and the same step. Each is timed after warm-up over several runs; the median is
// reported. Writes benchmarks/results/latest.json and prints a Markdown table.
//
//   node benchmarks/run.mjs [--runs N] [--js-runs N] [--batch B] [--embed-batch B] [--skip native,js,pytorch]
//                           [--python PATH] [--out FILE]
//
// Goals reported (not asserted): native >= 30x js and >= 1.0x PyTorch on the distill step.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chooseBackend, JsBackend } from '../dist/backends/index.js';
import { JsDistiller } from '../dist/backends/js/distill.js';
import { Distiller } from '../dist/distill/distiller.js';
import { Encoder } from '../dist/models/encoder.js';
import { writeFileAtomic } from '../dist/io/atomic.js';
import { findPython, fmt as f, makeTiles, median, ratio, ROOT, runReference, timeRuns } from './lib/common.mjs';
import { writeBenchModels } from './lib/models.mjs';

const { values: opt } = parseArgs({
  options: {
    runs: { type: 'string', default: '7' },
    'js-runs': { type: 'string', default: '3' },
    batch: { type: 'string', default: '8' },
    'embed-batch': { type: 'string', default: '8' },
    skip: { type: 'string', default: '' },
    python: { type: 'string', default: '' },
    out: { type: 'string', default: path.join(ROOT, 'benchmarks', 'results', 'latest.json') },
  },
});
// Passive OpenMP waits for libtorch in this process (set before the engine is loaded) and in the PyTorch child: on a
// busy machine spinning threads otherwise measure the neighbours, not the step. The setting is in the results.
process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
const RUNS = Number(opt.runs), JS_RUNS = Number(opt['js-runs']), BATCH = Number(opt.batch), EMBED_BATCH = Number(opt['embed-batch']);
const WARMUP = 1, TILE = 256, CROP = 224;
const skip = new Set(opt.skip.split(',').filter(Boolean));
const log = (m) => process.stderr.write(`bench: ${m}\n`);
const time = (fn, runs) => timeRuns(fn, WARMUP, runs);

const tiles = makeTiles(BATCH, TILE, 1);
const images = makeTiles(EMBED_BATCH, CROP, 2);
const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-bench-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const models = await writeBenchModels(dir, 0);
const distillConfig = { teacher: models.teacher, student: models.student, totalSteps: WARMUP + Math.max(RUNS, JS_RUNS), seed: 0 };

const result = {
  date: new Date().toISOString(),
  command: 'npm run bench',
  machine: {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism?.() ?? os.cpus().length,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    loadAverage: os.loadavg().map((x) => +x.toFixed(2)),
    ompWaitPolicy: process.env.OMP_WAIT_POLICY,
  },
  setup: { batch: BATCH, embedBatch: EMBED_BATCH, tilePx: TILE, cropPx: CROP, warmup: WARMUP, runs: RUNS, jsRuns: JS_RUNS },
  models: {},
  distill: { native_img_s: null, js_img_s: null, pytorch_img_s: null },
  embed: { native_img_s: null, js_img_s: null, pytorch_img_s: null },
  times_s: {},
  notes: [],
};

// ---------------------------------------------------------------------------------------------------------------
// js
// ---------------------------------------------------------------------------------------------------------------
const js = new JsBackend();
for (const [role, folder] of Object.entries(models)) {
  const d = await js.describeModel({ folder });
  result.models[role] = { family: `${d.layout} ${d.family}`, dims: d.dims, depth: d.depth, heads: d.numHeads, registers: d.numRegisters, mlp: d.mlp, parameters: d.parameters };
}
if (!skip.has('js')) {
  log(`js distill: batch ${BATCH}, ${WARMUP} + ${JS_RUNS} steps (tens of seconds each)`);
  const d = await JsDistiller.create({ ...distillConfig, optimizer: { totalSteps: distillConfig.totalSteps } });
  const t = await time(() => d.step(tiles), JS_RUNS);
  result.times_s.js_distill = t;
  result.distill.js_img_s = BATCH / median(t);
  log(`js embed: batch ${EMBED_BATCH}`);
  const enc = await Encoder.load(models.teacher, { backend: js, batchSize: EMBED_BATCH });
  const te = await time(() => enc.embed(images), JS_RUNS);
  result.times_s.js_embed = te;
  result.embed.js_img_s = EMBED_BATCH / median(te);
  await enc.dispose();
}
result.machine.jsThreads = 1;

// ---------------------------------------------------------------------------------------------------------------
// native
// ---------------------------------------------------------------------------------------------------------------
if (!skip.has('native')) {
  const { backend, fallbackReason } = chooseBackend({ fallback: true, warn: () => {} });
  if (fallbackReason) {
    result.notes.push(`native engine not loadable: ${fallbackReason}`);
    log(`native engine not loadable, skipped: ${fallbackReason.split('\n')[0]}`);
  } else {
    const info = await backend.info();
    result.machine.libtorch = info.libtorchVersion;
    result.machine.nativeThreads = info.cpuThreads;
    log(`native distill: batch ${BATCH}, ${WARMUP} + ${RUNS} steps`);
    const d = await Distiller.create({ ...distillConfig, backend: 'native', device: 'cpu' });
    const t = await time(() => d.step(tiles), RUNS);
    result.times_s.native_distill = t;
    result.distill.native_img_s = BATCH / median(t);
    log(`native embed: batch ${EMBED_BATCH}`);
    const enc = await Encoder.load(models.teacher, { backend, device: 'cpu', batchSize: EMBED_BATCH });
    const te = await time(() => enc.embed(images), RUNS);
    result.times_s.native_embed = te;
    result.embed.native_img_s = EMBED_BATCH / median(te);
    await enc.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// PyTorch reference (tools/reference_step.py), same folders, batch and thread count as the engine
// ---------------------------------------------------------------------------------------------------------------
if (!skip.has('pytorch')) {
  const py = findPython(opt.python);
  if (!py) {
    result.notes.push('PyTorch reference skipped: no python with torch, timm, transformers and safetensors (.venv, G2L_PYTHON or python3)');
    log('no python with torch/timm/transformers: PyTorch reference skipped');
  } else {
    const threads = result.machine.nativeThreads ?? result.machine.cores;
    log(`PyTorch reference: batch ${BATCH}, ${WARMUP} + ${RUNS} steps, ${threads} threads`);
    const ref = runReference(py, ['--teacher', models.teacher, '--student', models.student, '--batch', String(BATCH),
      '--embed-batch', String(EMBED_BATCH), '--steps', String(RUNS), '--warmup', String(WARMUP), '--threads', String(threads)]);
    if (ref.error) {
      result.notes.push(`PyTorch reference failed (${ref.error})`);
      log(`PyTorch reference failed: ${ref.error}`);
    } else {
      result.machine.torch = ref.torch;
      result.machine.pytorchThreads = ref.threads;
      result.distill.pytorch_img_s = ref.distill_img_s;
      result.embed.pytorch_img_s = ref.embed_img_s;
      result.times_s.pytorch_distill = ref.step_times_s;
      result.times_s.pytorch_embed = ref.embed_times_s;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Ratios, goals, outputs
// ---------------------------------------------------------------------------------------------------------------
// Best-of-runs throughput too: on a shared machine the neighbours only ever add time, so the fastest run is the
// steadier comparison; the median is the contract's number.
const perImage = { distill: BATCH, embed: EMBED_BATCH };
for (const k of ['distill', 'embed']) {
  for (const sys of ['native', 'js', 'pytorch']) {
    const t = result.times_s[`${sys}_${k}`];
    result[k][`${sys}_best_img_s`] = t?.length ? perImage[k] / Math.min(...t) : null;
  }
  result[k].native_vs_js = ratio(result[k].native_img_s, result[k].js_img_s);
  result[k].native_vs_pytorch = ratio(result[k].native_img_s, result[k].pytorch_img_s);
  result[k].best_native_vs_js = ratio(result[k].native_best_img_s, result[k].js_best_img_s);
  result[k].best_native_vs_pytorch = ratio(result[k].native_best_img_s, result[k].pytorch_best_img_s);
}
result.goals = {
  'distill native >= 30x js': result.distill.native_vs_js === null ? null : result.distill.native_vs_js >= 30,
  'distill native >= 1.0x PyTorch': result.distill.native_vs_pytorch === null ? null : result.distill.native_vs_pytorch >= 1.0,
};
await writeFileAtomic(opt.out, `${JSON.stringify(result, null, 2)}\n`);

const m = result.models;
console.log(`\n### g2l-native CPU benchmark (${result.date.slice(0, 10)}, ${result.machine.cpu}, ${result.machine.cores} cores)\n`);
console.log(`teacher ${m.teacher.family} (dim ${m.teacher.dims}, depth ${m.teacher.depth}, ${(m.teacher.parameters / 1e6).toFixed(2)} M params), ` +
  `student ${m.student.family} (dim ${m.student.dims}, depth ${m.student.depth}, ${(m.student.parameters / 1e6).toFixed(2)} M params); ` +
  `distill batch ${BATCH} of ${TILE} px tiles (crop ${CROP}), embed batch ${EMBED_BATCH}; median of ${RUNS} runs (js ${JS_RUNS}) after ${WARMUP} warm-up\n`);
console.log('| img/s | native | js | PyTorch | native / js | native / PyTorch |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const k of ['distill', 'embed']) {
  const r = result[k];
  const name = k === 'distill' ? 'distill step' : 'embed';
  console.log(`| ${name}, median | ${f(r.native_img_s)} | ${f(r.js_img_s)} | ${f(r.pytorch_img_s)} | ${r.native_vs_js ?? 'n/a'} | ${r.native_vs_pytorch ?? 'n/a'} |`);
  console.log(`| ${name}, best run | ${f(r.native_best_img_s)} | ${f(r.js_best_img_s)} | ${f(r.pytorch_best_img_s)} | ${r.best_native_vs_js ?? 'n/a'} | ${r.best_native_vs_pytorch ?? 'n/a'} |`);
}
console.log(`\nthreads: native ${result.machine.nativeThreads ?? 'n/a'}, js 1, PyTorch ${result.machine.pytorchThreads ?? 'n/a'}; load average at start ${result.machine.loadAverage.join(', ')}; ` +
  `goals: native >= 30x js ${result.goals['distill native >= 30x js'] ?? 'n/a'}, native >= 1.0x PyTorch ${result.goals['distill native >= 1.0x PyTorch'] ?? 'n/a'}`);
for (const n of result.notes) console.log(`note: ${n}`);
console.log(`\nwrote ${path.relative(process.cwd(), opt.out) || opt.out}`);
