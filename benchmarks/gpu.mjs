#!/usr/bin/env node
// npm run bench:gpu — on the GPU host (../shared/gpu/README.md): the distill step at real sizes, the engine against
// the PyTorch reference in eager mode and with torch.compile, timed in the same run on the same models and batch.
//
//   teacher: H-optimus-0 architecture (timm vit_giant_patch14_reg4_dinov2, 1.1 B parameters) in fp16
//   student: Hibou-L architecture (transformers Dinov2WithRegisters, SwiGLU, 303.7 M) fp32 master weights, bf16 autocast
//   batch 128 tiles of 256 px (crop 224), random weights written once as hub folders that both sides load
//
//   node benchmarks/gpu.mjs [--batch 128] [--runs 10] [--warmup 3] [--device cuda] [--models DIR] [--keep-models]
//                           [--skip native,eager,compile,embed] [--python python3] [--out FILE]
//
// Build there first (plain CMake, no npm): see the README's GPU section; point G2L_ENGINE_PATH at the built addon.
// Order: the PyTorch references run first (each in its own process, its memory freed when it exits), then the
// engine. Every timing is of whole steps ending on the host (the engine reads the loss each step; the reference
// synchronises through CUDA events), median of --runs after --warmup.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chooseBackend } from '../dist/backends/index.js';
import { Distiller } from '../dist/distill/distiller.js';
import { Encoder } from '../dist/models/encoder.js';
import { writeFileAtomic } from '../dist/io/atomic.js';
import { findPython, fmt, makeTiles, median, ratio, ROOT, runReference, timeRuns } from './lib/common.mjs';

const { values: opt } = parseArgs({
  options: {
    batch: { type: 'string', default: '128' },
    'embed-batch': { type: 'string', default: '128' },
    runs: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    device: { type: 'string', default: 'cuda' },
    models: { type: 'string', default: '' },
    'keep-models': { type: 'boolean', default: false },
    skip: { type: 'string', default: '' },
    python: { type: 'string', default: '' },
    out: { type: 'string', default: path.join(ROOT, 'benchmarks', 'results', 'gpu-latest.json') },
  },
});
const BATCH = Number(opt.batch), EMBED_BATCH = Number(opt['embed-batch']), RUNS = Number(opt.runs), WARMUP = Number(opt.warmup);
const skip = new Set(opt.skip.split(',').filter(Boolean));
const log = (m) => process.stderr.write(`bench:gpu: ${new Date().toISOString().slice(11, 19)} ${m}\n`);
// DESIGN.md "Performance": the same step in PyTorch on one H200, batch 128 (the numbers this run re-measures).
const DESIGN = { eager: 328, compile: 408 };

const { backend, fallbackReason } = chooseBackend({ backend: 'native' });
if (fallbackReason) throw new Error(fallbackReason);
const info = await backend.info();
if (opt.device.startsWith('cuda') && !info.cudaAvailable) {
  console.error(`bench:gpu: the engine sees no CUDA device (built with CUDA: ${info.cudaBuilt}); run this on the GPU host with a CUDA build`);
  process.exit(2);
}

// Random real-size models, written once as hub folders (teacher in fp16: 2.3 GB; student fp32: 1.2 GB).
const modelsDir = opt.models || mkdtempSync(path.join(os.tmpdir(), 'g2l-bench-gpu-'));
const teacherDir = path.join(modelsDir, 'h-optimus-0'), studentDir = path.join(modelsDir, 'hibou-l');
if (!opt['keep-models']) process.on('exit', () => rmSync(modelsDir, { recursive: true, force: true }));
mkdirSync(modelsDir, { recursive: true });
for (const [preset, dir, dtype] of [['h-optimus-0', teacherDir, 'fp16'], ['hibou-l', studentDir, 'fp32']]) {
  if (existsSync(path.join(dir, 'config.json'))) continue;
  log(`writing a random ${preset} (${dtype}) to ${dir}`);
  const m = await backend.createModel({ preset }, { device: opt.device, dtype, seed: 0 });
  await m.exportTo(dir);
  await m.dispose();
}

const result = {
  date: new Date().toISOString(),
  command: 'npm run bench:gpu',
  machine: { gpu: info.devices.map((d) => `${d.name} (sm ${d.computeCapability}, ${(d.totalMemoryBytes / 2 ** 30).toFixed(0)} GiB)`), cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, libtorch: info.libtorchVersion, cuda: info.cudaRuntimeVersion },
  setup: { teacher: 'h-optimus-0 architecture, fp16', student: 'hibou-l architecture, fp32 + bf16 autocast', batch: BATCH, embedBatch: EMBED_BATCH, tilePx: 256, cropPx: 224, warmup: WARMUP, runs: RUNS },
  distill: { native_img_s: null, pytorch_eager_img_s: null, pytorch_compile_img_s: null },
  embed: { native_img_s: null, pytorch_eager_img_s: null },
  times_s: {},
  notes: [],
};

// ---------------------------------------------------------------------------------------------------------------
// PyTorch references (eager, then torch.compile)
// ---------------------------------------------------------------------------------------------------------------
const py = findPython(opt.python);
if (!py) result.notes.push('no python with torch, timm, transformers and safetensors: PyTorch references skipped');
for (const mode of ['eager', 'compile']) {
  if (!py || skip.has(mode)) continue;
  log(`PyTorch ${mode}: batch ${BATCH}, ${WARMUP} + ${RUNS} steps`);
  const ref = runReference(py, ['--gpu', '--teacher', teacherDir, '--student', studentDir, '--batch', String(BATCH),
    '--embed-batch', String(EMBED_BATCH), '--steps', String(RUNS), '--warmup', String(WARMUP),
    '--mode', mode === 'eager' && !skip.has('embed') ? 'both' : 'distill', ...(mode === 'compile' ? ['--compile'] : [])]);
  if (ref.error) {
    result.notes.push(`PyTorch ${mode} failed: ${ref.error}`);
    log(`PyTorch ${mode} failed: ${ref.error}`);
    continue;
  }
  result.machine.torch = ref.torch;
  result.distill[`pytorch_${mode}_img_s`] = ref.distill_img_s;
  result.times_s[`pytorch_${mode}_distill`] = ref.step_times_s;
  if (ref.embed_img_s) {
    result.embed.pytorch_eager_img_s = ref.embed_img_s;
    result.times_s.pytorch_eager_embed = ref.embed_times_s;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------------------------
if (!skip.has('native')) {
  log(`native distill: batch ${BATCH}, ${WARMUP} + ${RUNS} steps`);
  const tiles = makeTiles(BATCH, 256, 1);
  const d = await Distiller.create({ teacher: teacherDir, student: studentDir, totalSteps: WARMUP + RUNS, device: opt.device,
    teacherDtype: 'float16', autocast: true, backend: 'native', seed: 0 });
  let last = null;
  const t = await timeRuns(async () => { last = await d.step(tiles); }, WARMUP, RUNS);
  result.times_s.native_distill = t;
  result.distill.native_img_s = BATCH / median(t);
  result.distill.native_peak_memory_gib = +(last.deviceMemoryBytes / 2 ** 30).toFixed(1);
  if (!Number.isFinite(last.loss)) result.notes.push(`native loss not finite: ${last.loss}`);
}
if (!skip.has('native') && !skip.has('embed')) {
  log(`native embed (teacher fp16): batch ${EMBED_BATCH}`);
  const enc = await Encoder.load(teacherDir, { backend, device: opt.device, dtype: 'fp16', batchSize: EMBED_BATCH });
  const images = makeTiles(EMBED_BATCH, 224, 2);
  const te = await timeRuns(() => enc.embed(images), WARMUP, RUNS);
  result.times_s.native_embed = te;
  result.embed.native_img_s = EMBED_BATCH / median(te);
  await enc.dispose();
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------------------------
// Best runs too (steadier when something else shares the machine); medians are the headline.
result.distill.native_best_img_s = result.times_s.native_distill ? BATCH / Math.min(...result.times_s.native_distill) : null;
result.distill.pytorch_eager_best_img_s = result.times_s.pytorch_eager_distill ? BATCH / Math.min(...result.times_s.pytorch_eager_distill) : null;
result.distill.pytorch_compile_best_img_s = result.times_s.pytorch_compile_distill ? BATCH / Math.min(...result.times_s.pytorch_compile_distill) : null;
result.distill.native_vs_eager = ratio(result.distill.native_img_s, result.distill.pytorch_eager_img_s);
result.distill.native_vs_compile = ratio(result.distill.native_img_s, result.distill.pytorch_compile_img_s);
result.embed.native_vs_eager = ratio(result.embed.native_img_s, result.embed.pytorch_eager_img_s);
result.goals = { 'distill native >= torch.compile (same run)': result.distill.native_vs_compile === null ? null : result.distill.native_vs_compile >= 1 };
await writeFileAtomic(opt.out, `${JSON.stringify(result, null, 2)}\n`);

const d = result.distill, e = result.embed;
console.log(`\n### g2l-native GPU benchmark (${result.date.slice(0, 10)}, ${result.machine.gpu.join(', ')})\n`);
console.log(`H-optimus-0 architecture teacher fp16, Hibou-L architecture student (bf16 autocast), random weights, batch ${BATCH} of 256 px tiles (crop 224); median of ${RUNS} after ${WARMUP} warm-up\n`);
console.log('| img/s | native | PyTorch eager | PyTorch compile | native / eager | native / compile |');
console.log('| --- | --- | --- | --- | --- | --- |');
console.log(`| distill step, median | ${fmt(d.native_img_s)} | ${fmt(d.pytorch_eager_img_s)} | ${fmt(d.pytorch_compile_img_s)} | ${d.native_vs_eager ?? 'n/a'} | ${d.native_vs_compile ?? 'n/a'} |`);
console.log(`| distill step, best run | ${fmt(d.native_best_img_s)} | ${fmt(d.pytorch_eager_best_img_s)} | ${fmt(d.pytorch_compile_best_img_s)} | ${ratio(d.native_best_img_s, d.pytorch_eager_best_img_s) ?? 'n/a'} | ${ratio(d.native_best_img_s, d.pytorch_compile_best_img_s) ?? 'n/a'} |`);
console.log(`| embed (teacher fp16, batch ${EMBED_BATCH}) | ${fmt(e.native_img_s)} | ${fmt(e.pytorch_eager_img_s)} | n/a | ${e.native_vs_eager ?? 'n/a'} | n/a |`);
console.log(`\nDESIGN.md's PyTorch numbers for this step: eager ${DESIGN.eager}, compile ${DESIGN.compile} img/s; goal: native >= compile in the same run: ${result.goals['distill native >= torch.compile (same run)'] ?? 'n/a'}`);
for (const n of result.notes) console.log(`note: ${n}`);
console.log(`\nwrote ${path.relative(process.cwd(), opt.out) || opt.out}`);
