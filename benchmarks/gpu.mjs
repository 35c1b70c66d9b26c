#!/usr/bin/env node
// npm run bench:gpu — on a GPU machine (docs/gpu.md): the distill step at real sizes, the engine against
// the PyTorch reference in eager mode and with torch.compile, timed in the same run on the same models and batch.
//
//   teacher: H-optimus-0 architecture (timm vit_giant_patch14_reg4_dinov2, 1.1 B parameters) in fp16
//   student: Hibou-L architecture (transformers Dinov2WithRegisters, SwiGLU, 303.7 M) fp32 master weights, bf16 autocast
//   batch 128 tiles of 256 px (crop 224), random weights written once as hub folders that both sides load
//
//   node benchmarks/gpu.mjs [--batch 128] [--runs 10] [--warmup 3] [--device cuda] [--models DIR] [--keep-models]
//                           [--teacher DIR --student DIR]  (existing folders instead of random real-size models)
//                           [--variants default,norm,fp8,fp8norm,flash,unpacked] [--profile-native default,fp8norm]
//                           [--skip native,eager,compile,embed,curve,curve-norm,profile]
//                           [--curve-steps 200] [--curve-batch 16] [--curve-layerscale 1|keep] [--curve-reference-tf32]
//                           [--compile-timeout 300] [--deadline UNIX_S]
//                           [--python python3] [--out FILE]
//
// Engine variants, each in its own process (so each starts with the GPU's memory free); a variant is a set of run
// configuration fields (DistillerConfig.kernels, teacherFp8...; lib/distill/config.ts):
//   default  what `distill` runs: frozen teacher with LayerScale folded, fused SwiGLU, packed student q/k/v, fused
//            loss, multi-tensor AdamW
//   unfused  the same with kernels.fusedSwiglu false (measures the SwiGLU kernel; 43 ms slower on 2026-11-29, so no longer in
//            the default list)
//   unpacked default with kernels.packQkv false: the student's q, k and v as three products instead of one packed product
//   fp8      default + teacherFp8 with the default teacherFp8Layers qkv, fc1 (E4M3 teacher products, rowwise scales;
//            refused below cosine 0.999 with the bf16 teacher)
//   norm     default with kernels.fusedNorm (the student's fused LayerNorm + cast and LayerScale residual kernels)
//   fp8norm  fp8 and norm together
//   flash    default with kernels.sdpa flash (FlashAttention-2; libtorch 2.11 itself prefers cuDNN attention on an H200)
//   cudnn    default with kernels.sdpa cudnn (not in the default list: on an H200 the default already runs cuDNN)
// Each variant's `attention` records the SDPA backend its teacher and student ran (info().teacherAttention, ...).
// (The teacher on a second CUDA stream, once variant `overlap`, measured no gain on the H200 and was removed.)
// Loss curve: the engine (default kernels, then again with kernels.fusedNorm) and the eager reference train
// --curve-steps steps from the same weights (the engine's initial projector is handed to the reference) on the same
// tiles without augmentation; the per-step losses are compared. The curve's models are the benchmark's architectures
// with LayerScale 1: at the presets' 1e-5 random class tokens hardly depend on the image, BatchNorm's eps dominates the
// loss, and rounding decides the curve (docs/gpu-benchmarks.md).
//
// Build there first (plain CMake, no npm): see the README's GPU section; point G2L_ENGINE_PATH at the built addon.
// Timing: engine steps end on the host (each reads its loss), median of --runs after --warmup; the reference
// synchronises through CUDA events. Results are written after every phase, so a run cut short keeps what it measured.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chooseBackend } from '../dist/backends/index.js';
import { Distiller } from '../dist/distill/distiller.js';
import { Encoder } from '../dist/models/encoder.js';
import { writeFileAtomic } from '../dist/io/atomic.js';
import { writeNpy } from '../dist/io/npy.js';
import { findPython, fmt, makeTiles, median, ratio, ROOT, runReference, timeRuns } from './lib/common.mjs';

/** @typedef {import('../dist/distill/distiller.js').DistillerConfig} DistillerConfig */
/** @typedef {import('../dist/backends/types.js').ModelDtype} ModelDtype */
/**
 * What runChild hands a child (--child-config) and what the child prints (its last stdout line).
 * @typedef {{ teacher: string, student: string }} ChildModels
 * @typedef {ChildModels & { variant: string, embed: boolean }} VariantChildConfig
 * @typedef {ChildModels & { steps: number, batch: number, pool: number[], init: string, kernels?: DistillerConfig['kernels'] }} CurveChildConfig
 * @typedef {object} VariantRun one engine variant's measurements (variantChild)
 * @property {string} variant
 * @property {number[]} times_s
 * @property {number} img_s
 * @property {number} best_img_s
 * @property {number} peak_memory_gib
 * @property {number} final_loss
 * @property {number | null} [fp8_min_cosine]
 * @property {{ sdpa?: string, teacher?: string | null, student?: string | null }} attention
 * @property {number[]} [embed_times_s]
 * @property {number} [embed_img_s]
 * @typedef {{ name: string, calls: number, total_ms: number, share: number }} ProfileRow
 * @typedef {object} VariantExtras what the parent adds to a variant's line in gpu-latest.json
 * @property {string} [error] the child failed: its exit and last stderr lines (and nothing else but what follows)
 * @property {Record<string, number>} [phases_ms] medians of the engine's G2L_STEP_TIMING phases
 * @property {ProfileRow[]} [profile_top]
 * @property {number} [mfu_datasheet]
 * @property {number} [mfu_measured_matmul]
 * @property {number | null} [vs_eager]
 * @property {number | null} [vs_compile]
 * @typedef {Partial<VariantRun> & VariantExtras} VariantEntry
 * @typedef {({ losses: number[], error?: undefined } | { error: string, losses?: undefined }) & { phases_ms?: Record<string, number> }} CurveLine
 */
/**
 * @typedef {object} CurveComparison
 * @property {number[]} engine
 * @property {number[]} reference
 * @property {{ engine: number, reference: number }} first_loss
 * @property {number} median_rel_diff
 * @property {number} max_rel_diff
 * @property {{ engine: number, reference: number }} last20_mean
 * @property {{ engine: number, reference: number }} drop
 * @typedef {Omit<CurveComparison, 'engine' | 'reference'>} CurveAgreement
 * @typedef {object} CurveExtras
 * @property {number} [steps]
 * @property {number} [batch]
 * @property {string} [layerScale]
 * @property {boolean} [referenceTf32]
 * @property {{ losses: number[], vs_reference: CurveAgreement, vs_unfused_engine: CurveAgreement }} [fused_norm]
 */
/**
 * What benchmarks/results/gpu-latest.json holds.
 * @typedef {object} GpuResult
 * @property {string} date
 * @property {string} command
 * @property {{ gpu: string[], cpu: string | undefined, cores: number, node: string, libtorch: string | null, cuda: string | null, torch?: string }} machine
 * @property {Record<string, string | number>} setup
 * @property {object} distill
 * @property {number | null} [distill.pytorch_eager_img_s]
 * @property {number | null} [distill.pytorch_compile_img_s]
 * @property {number | null} [distill.pytorch_eager_best_img_s]
 * @property {number | null} [distill.pytorch_compile_best_img_s]
 * @property {number | null} [distill.pytorch_eager_peak_memory_gib]
 * @property {number | null} [distill.pytorch_compile_peak_memory_gib]
 * @property {number | null} [distill.native_img_s]
 * @property {string | null} [distill.native_variant]
 * @property {Record<string, VariantEntry>} variants
 * @property {{ native_img_s?: number | null, pytorch_eager_img_s?: number | null, native_vs_eager?: number | null }} embed
 * @property {(CurveComparison & CurveExtras) | null} curve
 * @property {Partial<Record<'native_embed' | 'pytorch_eager_embed' | 'pytorch_eager_distill' | 'pytorch_compile_distill', number[]>>} times_s
 * @property {string[]} notes
 * @property {Record<string, boolean | null>} [goals]
 */

const { values: opt } = parseArgs({
  options: {
    batch: { type: 'string', default: '128' },
    'embed-batch': { type: 'string', default: '128' },
    runs: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    device: { type: 'string', default: 'cuda' },
    models: { type: 'string', default: '' },
    teacher: { type: 'string', default: '' },
    student: { type: 'string', default: '' },
    'keep-models': { type: 'boolean', default: false },
    variants: { type: 'string', default: 'default,norm,fp8,fp8norm,flash,unpacked' },
    'profile-native': { type: 'string', default: 'default,fp8norm' },
    skip: { type: 'string', default: '' },
    'curve-steps': { type: 'string', default: '200' },
    'curve-batch': { type: 'string', default: '16' },
    'curve-layerscale': { type: 'string', default: '1' }, // LayerScale of the curve's random models; 'keep': as benchmarked
    // the reference's curve with TF32 float32 products (the GPU's; emulated on the CPU), to measure what TF32 does
    'curve-reference-tf32': { type: 'boolean', default: false },
    'compile-timeout': { type: 'string', default: '300' },
    deadline: { type: 'string', default: '' }, // unix seconds: torch.compile gets what is left of it (or is skipped)
    python: { type: 'string', default: '' },
    out: { type: 'string', default: path.join(ROOT, 'benchmarks', 'results', 'gpu-latest.json') },
    // internal: one engine variant or the engine's loss curve, in a child process; prints one JSON line
    child: { type: 'string', default: '' },
    'child-config': { type: 'string', default: '' },
  },
});
const BATCH = Number(opt.batch),
  EMBED_BATCH = Number(opt['embed-batch']),
  RUNS = Number(opt.runs),
  WARMUP = Number(opt.warmup);
const CURVE_STEPS = Number(opt['curve-steps']),
  CURVE_BATCH = Number(opt['curve-batch']);
const skip = new Set(opt.skip.split(',').filter(Boolean));
/** @param {string} m */
const log = (m) => process.stderr.write(`bench:gpu: ${new Date().toISOString().slice(11, 19)} ${m}\n`);
// The same step in PyTorch on one H200, batch 128, as the GPU host's README gave them on 2026-11-29 (this run
// re-measures them); G2L's FLOPs per image (teacher forward + student forward and backward, 224 px), and the dense
// bf16 rate of that host's matrix products (about 800 TFLOP/s measured; 989 on the datasheet).
const HOST = { eager: 328, compile: 408 };
const TFLOP_PER_IMAGE = 1.1,
  DATASHEET_TFLOPS = 989,
  MEASURED_TFLOPS = 800;
/** @type {Record<string, Partial<DistillerConfig>>} */
const VARIANTS = {
  default: {},
  unfused: { kernels: { fusedSwiglu: false } },
  // FP8 products give bf16 (rowwise scales). On random H-optimus-0 weights FP8 in proj (and fc2) takes the teacher's
  // features below the acceptance cosine 0.999 (0.9988 measured on the H200), qkv and fc1 (the default
  // teacherFp8Layers) keep 0.9996.
  fp8: { teacherFp8: true, teacherDtype: 'bfloat16' },
  // The student's fused LayerNorm (+ cast) and LayerScale residual kernels (native/engine/kernels/cuda/norm.cu).
  norm: { kernels: { fusedNorm: true } },
  fp8norm: { teacherFp8: true, teacherDtype: 'bfloat16', kernels: { fusedNorm: true } },
  // The attention backend (native/engine/models/attention.h). libtorch 2.11 with cuDNN > 9.15 on an H200 already puts cuDNN
  // first by itself (each variant's `attention` says what ran), so `flash` is the comparison there.
  flash: { kernels: { sdpa: 'flash' } },
  cudnn: { kernels: { sdpa: 'cudnn' } },
  // The student's three q/k/v products instead of the packed one (native/engine/kernels/fused.h, kernels.packQkv).
  unpacked: { kernels: { packQkv: false } },
};

const { backend, fallbackReason } = chooseBackend({ backend: 'native' });
if (fallbackReason) throw new Error(fallbackReason);
const info = await backend.info();
if (opt.device.startsWith('cuda') && !info.cudaAvailable) {
  console.error(
    `bench:gpu: the engine sees no CUDA device (built with CUDA: ${info.cudaBuilt}); run this on the GPU host with a CUDA build`,
  );
  process.exit(2);
}
const cuda = opt.device.startsWith('cuda');

if (opt.child) {
  /** @type {VariantChildConfig | CurveChildConfig} what runChild passed */
  const c = JSON.parse(opt['child-config']);
  const line =
    opt.child === 'curve'
      ? await curveChild(/** @type {CurveChildConfig} */ (c))
      : await variantChild(/** @type {VariantChildConfig} */ (c));
  // writeSync: console.log to a pipe is asynchronous, and process.exit would cut a long line short.
  writeSync(1, `${JSON.stringify(line)}\n`);
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------------------------------
/**
 * @param {ChildModels} c
 * @param {Partial<DistillerConfig> & { totalSteps: number }} extra
 * @returns {DistillerConfig}
 */
function distillerConfig(c, extra) {
  return {
    teacher: c.teacher,
    student: c.student,
    device: opt.device,
    teacherDtype: cuda ? 'float16' : 'float32',
    autocast: true,
    backend: 'native',
    seed: 0,
    ...extra,
  };
}

/**
 * One engine variant: the step at batch BATCH (and, for the default, the teacher's embedding throughput).
 * @param {VariantChildConfig} c
 */
async function variantChild(c) {
  /** @type {Partial<VariantRun>} */
  const out = { variant: c.variant };
  const d = await Distiller.create(distillerConfig(c, { totalSteps: WARMUP + RUNS, ...VARIANTS[c.variant] }));
  // The batch in the Distiller's tile buffer (page-locked on CUDA), as `distill` feeds it: the upload is asynchronous.
  const host = makeTiles(BATCH, 256, 1);
  const tiles = { data: d.allocateTileBuffer(host.data.length), shape: host.shape };
  tiles.data.set(host.data);
  let last = /** @type {import('../dist/distill/distiller.js').StepResult | null} */ (null);
  const t = await timeRuns(
    async () => {
      last = await d.step(tiles);
    },
    WARMUP,
    RUNS,
  );
  if (!last) throw new Error(`no step ran (--warmup ${WARMUP}, --runs ${RUNS})`);
  out.times_s = t;
  out.img_s = BATCH / median(t);
  out.best_img_s = BATCH / Math.min(...t);
  out.peak_memory_gib = +(last.deviceMemoryBytes / 2 ** 30).toFixed(2);
  out.final_loss = last.loss;
  const dinfo = d.info();
  if (dinfo.teacherFp8MinCosine !== undefined) out.fp8_min_cosine = dinfo.teacherFp8MinCosine;
  out.attention = { sdpa: dinfo.sdpa, teacher: dinfo.teacherAttention, student: dinfo.studentAttention };
  if (c.embed) {
    const enc = await Encoder.load(c.teacher, {
      backend,
      device: opt.device,
      dtype: cuda ? 'fp16' : 'fp32',
      batchSize: EMBED_BATCH,
    });
    const images = makeTiles(EMBED_BATCH, 224, 2);
    const te = await timeRuns(() => enc.embed(images), WARMUP, RUNS);
    out.embed_times_s = te;
    out.embed_img_s = EMBED_BATCH / median(te);
    await enc.dispose();
  }
  return out;
}

/**
 * The engine's loss curve: c.steps steps on the pool's batches in turn, no augmentation; saves its initial state.
 * @param {CurveChildConfig} c
 */
async function curveChild(c) {
  const pool = c.pool.map((seed) => makeTiles(c.batch, 256, seed));
  const d = await Distiller.create(
    distillerConfig(c, {
      totalSteps: c.steps,
      augment: { enabled: false },
      ...(c.kernels ? { kernels: c.kernels } : {}),
    }),
  );
  await d.save(c.init);
  const losses = [];
  for (let k = 0; k < c.steps; k++) losses.push((await d.step(pool[k % pool.length])).loss);
  return { losses };
}

/**
 * @overload
 * @param {'variant'} kind
 * @param {VariantChildConfig} config
 * @param {Record<string, string>} [env]
 * @returns {VariantEntry}
 */
/**
 * @overload
 * @param {'curve'} kind
 * @param {CurveChildConfig} config
 * @param {Record<string, string>} [env]
 * @returns {CurveLine}
 */
/**
 * One child of this script (--child kind): its JSON line with the engine's step phases, or { error }.
 * @param {'variant' | 'curve'} kind
 * @param {VariantChildConfig | CurveChildConfig} config
 * @param {Record<string, string>} [env]
 * @returns {VariantEntry | CurveLine}
 */
function runChild(kind, config, env = {}) {
  const r = spawnSync(
    process.execPath,
    [
      fileURLToPath(import.meta.url),
      '--child',
      kind,
      '--child-config',
      JSON.stringify(config),
      '--batch',
      String(BATCH),
      '--embed-batch',
      String(EMBED_BATCH),
      '--runs',
      String(RUNS),
      '--warmup',
      String(WARMUP),
      '--device',
      opt.device,
    ],
    { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 26 },
  );
  if (r.stderr) process.stderr.write(r.stderr);
  const lastLine = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !lastLine.startsWith('{')) {
    return {
      error: `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}: ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`,
    };
  }
  const parsed = JSON.parse(lastLine);
  const phases = stepPhases(r.stderr ?? '');
  if (phases) parsed.phases_ms = phases;
  return parsed;
}

/**
 * Median per phase of the engine's G2L_STEP_TIMING lines (native/engine/train/step_timer.h), warm-up steps left out.
 * @param {string} stderr
 * @returns {Record<string, number> | null}
 */
function stepPhases(stderr) {
  /** @type {Record<string, number | string>[]} `key=value` fields: numbers but for device */
  const rows = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('g2l-step-timing ')) continue;
    const row = Object.fromEntries(
      line
        .split(' ')
        .slice(1)
        .map((kv) => kv.split('='))
        .map(([k, v]) => [k, Number.isNaN(Number(v)) ? v : Number(v)]),
    );
    if (Number(row.step) >= WARMUP) rows.push(row);
  }
  if (rows.length === 0) return null;
  const keys = Object.keys(rows[0]).filter((k) => k !== 'step' && k !== 'device');
  return Object.fromEntries(keys.map((k) => [k, +median(rows.map((r) => /** @type {number} */ (r[k]))).toFixed(2)]));
}

// ---------------------------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------------------------
const modelsDir = opt.models || mkdtempSync(path.join(os.tmpdir(), 'g2l-bench-gpu-'));
if (!opt['keep-models'] && !opt.models) process.on('exit', () => rmSync(modelsDir, { recursive: true, force: true }));
mkdirSync(modelsDir, { recursive: true });
let teacherDir = opt.teacher,
  studentDir = opt.student;
if (!teacherDir || !studentDir) {
  // Random real-size models, written once as hub folders (teacher in fp16: 2.3 GB; student fp32: 1.2 GB).
  teacherDir = path.join(modelsDir, 'h-optimus-0');
  studentDir = path.join(modelsDir, 'hibou-l');
  for (const [preset, dir, dtype] of /** @type {const} */ ([
    ['h-optimus-0', teacherDir, 'fp16'],
    ['hibou-l', studentDir, 'fp32'],
  ])) {
    if (existsSync(path.join(dir, 'config.json'))) continue;
    log(`writing a random ${preset} (${dtype}) to ${dir}`);
    const m = await backend.createModel({ preset }, { device: opt.device, dtype, seed: 0 });
    await m.exportTo(dir);
    await m.dispose();
  }
}

/** @type {GpuResult} */
const result = {
  date: new Date().toISOString(),
  command: 'npm run bench:gpu',
  machine: {
    gpu: info.devices.map(
      (d) => `${d.name} (sm ${d.computeCapability}, ${(d.totalMemoryBytes / 2 ** 30).toFixed(0)} GiB)`,
    ),
    cpu: os.cpus()[0]?.model,
    cores: os.cpus().length,
    node: process.version,
    libtorch: info.libtorchVersion,
    cuda: info.cudaRuntimeVersion,
  },
  setup: {
    teacher: teacherDir,
    student: studentDir,
    batch: BATCH,
    embedBatch: EMBED_BATCH,
    tilePx: 256,
    cropPx: 224,
    warmup: WARMUP,
    runs: RUNS,
    tflopPerImage: TFLOP_PER_IMAGE,
  },
  distill: { pytorch_eager_img_s: null, pytorch_compile_img_s: null },
  variants: {},
  embed: { native_img_s: null, pytorch_eager_img_s: null },
  curve: null,
  times_s: {},
  notes: [],
};
const save = () => writeFileAtomic(opt.out, `${JSON.stringify(result, null, 2)}\n`);

// Engine variants first: they are what this benchmark is for, and a run cut short should still have them. The
// --profile-native variants run their last warm-up step under the profiler (G2L_PROFILE, native/engine/
// step_profile.h): the kernel tables go to gpu-profile-native.txt beside --out, the top rows into the JSON.
if (!skip.has('native')) {
  const profiled = new Set(opt['profile-native'].split(',').filter(Boolean));
  const profileDir = mkdtempSync(path.join(os.tmpdir(), 'g2l-profile-'));
  process.on('exit', () => rmSync(profileDir, { recursive: true, force: true }));
  const tables = [];
  for (const variant of opt.variants.split(',').filter(Boolean)) {
    if (!VARIANTS[variant])
      throw new Error(`unknown variant '${variant}' (known: ${Object.keys(VARIANTS).join(', ')})`);
    log(`native ${variant}: batch ${BATCH}, ${WARMUP} + ${RUNS} steps`);
    const env = { G2L_STEP_TIMING: '1' };
    const prefix = path.join(profileDir, variant);
    if (profiled.has(variant))
      Object.assign(env, { G2L_PROFILE: prefix, G2L_PROFILE_STEP: String(Math.max(0, WARMUP - 1)) });
    const r = runChild(
      'variant',
      { variant, teacher: teacherDir, student: studentDir, embed: variant === 'default' && !skip.has('embed') },
      env,
    );
    if (r.error) {
      result.notes.push(`native ${variant} failed: ${r.error}`);
      log(`native ${variant} failed: ${r.error}`);
    }
    if (existsSync(`${prefix}.kernels.tsv`)) {
      const lines = readFileSync(`${prefix}.kernels.tsv`, 'utf8').trim().split('\n');
      const rows = lines
        .slice(1)
        .map((l) => l.split('\t'))
        .filter(([device]) => device === (cuda ? 'cuda' : 'cpu'));
      r.profile_top = rows.slice(0, 12).map(([, name, calls, total, , share]) => ({
        name: name.slice(0, 100),
        calls: Number(calls),
        total_ms: Number(total),
        share: Number(share),
      }));
      tables.push(
        `## native ${variant}: one step (the last warm-up step), ${cuda ? 'CUDA kernels and copies' : 'CPU ops'}\n${[lines[0], ...rows.slice(0, 80).map((c) => c.join('\t'))].join('\n')}\n`,
      );
      await writeFileAtomic(path.join(path.dirname(opt.out), 'gpu-profile-native.txt'), tables.join('\n'));
    }
    result.variants[variant] = r;
    if (r.embed_img_s) {
      result.embed.native_img_s = r.embed_img_s;
      result.times_s.native_embed = r.embed_times_s;
    }
    await save();
  }
}

// PyTorch references: eager (with a profile of one step), the loss curves, then torch.compile with a time limit (its
// compilation takes minutes; a run cut short still has everything before it).
const py = findPython(opt.python);
if (!py) result.notes.push('no python with torch, timm, transformers and safetensors: PyTorch references skipped');
const resultsDir = path.dirname(opt.out);

/** @param {'eager' | 'compile'} mode */
async function reference(mode) {
  if (!py || skip.has(mode)) return;
  log(`PyTorch ${mode}: batch ${BATCH}, ${WARMUP} + ${RUNS} steps`);
  const ref = runReference(
    py,
    [
      '--teacher',
      teacherDir,
      '--student',
      studentDir,
      '--batch',
      String(BATCH),
      '--embed-batch',
      String(EMBED_BATCH),
      '--steps',
      String(RUNS),
      '--warmup',
      String(WARMUP),
      ...(cuda ? ['--gpu'] : []),
      ...(mode === 'eager' && !skip.has('profile')
        ? ['--profile', path.join(resultsDir, 'gpu-profile-eager.txt')]
        : []),
      '--mode',
      mode === 'eager' && !skip.has('embed') ? 'both' : 'distill',
      ...(mode === 'compile' ? ['--compile'] : []),
    ],
    mode === 'compile' ? compileTimeoutS() * 1000 : undefined,
  );
  if (ref.error !== undefined) {
    result.notes.push(`PyTorch ${mode} failed: ${ref.error}`);
    log(`PyTorch ${mode} failed: ${ref.error}`);
    return;
  }
  result.machine.torch = ref.torch;
  result.distill[`pytorch_${mode}_img_s`] = ref.distill_img_s;
  result.distill[`pytorch_${mode}_peak_memory_gib`] = ref.peak_memory_gib ?? null;
  result.times_s[`pytorch_${mode}_distill`] = ref.step_times_s;
  if (ref.embed_img_s) {
    result.embed.pytorch_eager_img_s = ref.embed_img_s;
    result.times_s.pytorch_eager_embed = ref.embed_times_s;
  }
  await save();
}

await reference('eager');

// Loss curves: the engine and the eager reference from the same weights on the same tiles.
if (!skip.has('curve') && py && !skip.has('eager')) {
  log(`loss curves: ${CURVE_STEPS} steps at batch ${CURVE_BATCH}, engine then PyTorch eager`);
  const init = path.join(modelsDir, 'curve-init');
  const poolSeeds = [11, 12, 13, 14];
  const poolFile = path.join(modelsDir, 'curve-pool.npy');
  const tiles = poolSeeds.map((s) => makeTiles(CURVE_BATCH, 256, s).data);
  const all = new Uint8Array(tiles.reduce((n, t) => n + t.length, 0));
  tiles.forEach((t, i) => all.set(t, i * t.length));
  await writeNpy(poolFile, { dtype: 'uint8', shape: [poolSeeds.length, CURVE_BATCH, 256, 256, 3], data: all });
  const [curveTeacher, curveStudent] =
    opt['curve-layerscale'] === 'keep'
      ? [teacherDir, studentDir]
      : [
          await withLayerScale(
            teacherDir,
            path.join(modelsDir, 'curve-teacher'),
            cuda ? 'fp16' : 'fp32',
            Number(opt['curve-layerscale']),
          ),
          await withLayerScale(
            studentDir,
            path.join(modelsDir, 'curve-student'),
            'fp32',
            Number(opt['curve-layerscale']),
          ),
        ];
  const mine = runChild('curve', {
    teacher: curveTeacher,
    student: curveStudent,
    steps: CURVE_STEPS,
    batch: CURVE_BATCH,
    pool: poolSeeds,
    init,
  });
  const lossesFile = path.join(modelsDir, 'curve-reference.json');
  const ref = mine.error
    ? { error: 'engine curve failed' }
    : runReference(py, [
        '--teacher',
        curveTeacher,
        '--student',
        curveStudent,
        '--tiles-npy',
        poolFile,
        '--no-augment',
        '--projector',
        path.join(init, 'state.safetensors'),
        '--steps',
        String(CURVE_STEPS),
        '--warmup',
        '0',
        '--mode',
        'distill',
        '--losses-out',
        lossesFile,
        ...(cuda ? ['--gpu'] : []),
        ...(opt['curve-reference-tf32'] ? ['--tf32'] : []),
      ]);
  if (mine.error !== undefined || ref.error !== undefined) {
    result.notes.push(`loss curves failed: ${mine.error ?? ref.error}`);
  } else {
    result.curve = compareCurves(mine.losses, JSON.parse(readFileSync(lossesFile, 'utf8')));
    result.curve.steps = CURVE_STEPS;
    result.curve.batch = CURVE_BATCH;
    result.curve.layerScale = opt['curve-layerscale'];
    result.curve.referenceTf32 = opt['curve-reference-tf32'];
    // The same engine curve with kernels.fusedNorm (same start: same seed and folders): the fused LayerNorm /
    // LayerScale kernels over 200 training steps, against the reference and against the unfused engine.
    if (!skip.has('curve-norm')) {
      log('loss curve: the engine again with kernels.fusedNorm');
      const fused = runChild('curve', {
        teacher: curveTeacher,
        student: curveStudent,
        steps: CURVE_STEPS,
        batch: CURVE_BATCH,
        pool: poolSeeds,
        init: `${init}-norm`,
        kernels: { fusedNorm: true },
      });
      if (fused.error !== undefined) {
        result.notes.push(`fused-norm loss curve failed: ${fused.error}`);
      } else {
        const { engine: _e, reference: _r, ...vsReference } = compareCurves(fused.losses, result.curve.reference);
        const { engine: _e2, reference: _r2, ...vsUnfused } = compareCurves(fused.losses, result.curve.engine);
        result.curve.fused_norm = { losses: fused.losses, vs_reference: vsReference, vs_unfused_engine: vsUnfused };
      }
    }
  }
  await save();
}

function compileTimeoutS() {
  const limit = Number(opt['compile-timeout']);
  return opt.deadline ? Math.floor(Math.min(limit, Number(opt.deadline) - Date.now() / 1000 - 15)) : limit;
}
if (opt.deadline && compileTimeoutS() < 60) {
  result.notes.push(`PyTorch compile skipped: ${Math.round(compileTimeoutS())} s left before the deadline`);
} else {
  await reference('compile');
}

/**
 * `src`'s architecture with random weights and every LayerScale at `value`, written to `dst` (once).
 * @param {string} src
 * @param {string} dst
 * @param {ModelDtype} dtype
 * @param {number} value
 */
async function withLayerScale(src, dst, dtype, value) {
  if (existsSync(path.join(dst, 'config.json'))) return dst;
  const spec = `${dst}.config`;
  mkdirSync(spec, { recursive: true });
  for (const name of ['config.json', 'preprocessor_config.json']) {
    if (!existsSync(path.join(src, name))) continue;
    /** @type {{ model_args?: Record<string, unknown>, layerscale_value?: number }} a hub config file, in part */
    const c = JSON.parse(readFileSync(path.join(src, name), 'utf8'));
    if (c.model_args && 'init_values' in c.model_args) c.model_args.init_values = value; // timm
    if ('layerscale_value' in c) c.layerscale_value = value; // transformers
    // transformers' config classes insist on a float: write 1 as 1.0
    const text = JSON.stringify(c, null, 2).replace(/("(?:init_values|layerscale_value)": )(-?\d+)(,?\n)/g, '$1$2.0$3');
    await writeFileAtomic(path.join(spec, name), `${text}\n`);
  }
  log(`writing ${path.basename(src)} with LayerScale ${value} (${dtype}) to ${dst}`);
  const m = await backend.createModel({ folder: spec }, { device: opt.device, dtype, seed: 1 });
  await m.exportTo(dst);
  await m.dispose();
  rmSync(spec, { recursive: true, force: true });
  return dst;
}

/**
 * Per-step agreement of two loss curves, and of their trends (means of 20-step windows).
 * @param {number[]} a
 * @param {number[]} b
 * @returns {CurveComparison}
 */
function compareCurves(a, b) {
  const rel = a.map((x, i) => Math.abs(x - b[i]) / Math.max(Math.abs(b[i]), 1e-12));
  /**
   * @param {number[]} xs
   * @param {number} from
   */
  const win = (xs, from) => xs.slice(from, from + 20).reduce((s, x) => s + x, 0) / Math.min(20, xs.length - from);
  const n = a.length;
  const last = Math.max(0, n - 20);
  return {
    engine: a,
    reference: b,
    first_loss: { engine: a[0], reference: b[0] },
    median_rel_diff: median(rel),
    max_rel_diff: Math.max(...rel),
    last20_mean: { engine: win(a, last), reference: win(b, last) },
    drop: { engine: a[0] - win(a, last), reference: b[0] - win(b, last) },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------------------------
/** @param {number[] | undefined} xs */
const best = (xs) => (xs ? BATCH / Math.min(...xs) : null);
result.distill.pytorch_eager_best_img_s = best(result.times_s.pytorch_eager_distill);
result.distill.pytorch_compile_best_img_s = best(result.times_s.pytorch_compile_distill);
for (const v of Object.values(result.variants)) {
  if (!v.img_s) continue;
  v.mfu_datasheet = +((v.img_s * TFLOP_PER_IMAGE) / DATASHEET_TFLOPS).toFixed(3);
  v.mfu_measured_matmul = +((v.img_s * TFLOP_PER_IMAGE) / MEASURED_TFLOPS).toFixed(3);
  v.vs_eager = ratio(v.img_s, result.distill.pytorch_eager_img_s);
  v.vs_compile = ratio(v.img_s, result.distill.pytorch_compile_img_s ?? null);
}
/** @type {(v: VariantEntry) => v is VariantEntry & { img_s: number }} */
const measured = (v) => !!v.img_s;
const fastest = Object.values(result.variants)
  .filter(measured)
  .sort((x, y) => y.img_s - x.img_s)[0];
result.distill.native_img_s = fastest?.img_s ?? null;
result.distill.native_variant = fastest?.variant ?? null;
result.embed.native_vs_eager = ratio(result.embed.native_img_s, result.embed.pytorch_eager_img_s);
result.goals = {
  'distill native >= 1.25x torch.compile (same run)':
    fastest && result.distill.pytorch_compile_img_s
      ? fastest.img_s >= 1.25 * result.distill.pytorch_compile_img_s
      : null,
};
await save();

const e = result.embed,
  d = result.distill;
console.log(`\n### g2l-native GPU benchmark (${result.date.slice(0, 10)}, ${result.machine.gpu.join(', ')})\n`);
console.log(
  `teacher ${path.basename(teacherDir)} fp16, student ${path.basename(studentDir)} (bf16 autocast), batch ${BATCH} of 256 px tiles (crop 224); median of ${RUNS} after ${WARMUP} warm-up\n`,
);
console.log('| distill step | img/s (median) | best | peak GiB | MFU (989 / 800 TFLOP/s) | / eager | / compile |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const v of Object.values(result.variants)) {
  if (v.error) {
    console.log(`| native ${v.variant ?? '?'} | failed | | | | | |`);
    continue;
  }
  console.log(
    `| native ${v.variant}${v.fp8_min_cosine != null ? ` (cos ${v.fp8_min_cosine.toFixed(5)})` : ''} | ${fmt(v.img_s)} | ${fmt(v.best_img_s)} | ${v.peak_memory_gib} | ${v.mfu_datasheet} / ${v.mfu_measured_matmul} | ${v.vs_eager ?? 'n/a'} | ${v.vs_compile ?? 'n/a'} |`,
  );
}
console.log(
  `| PyTorch eager | ${fmt(d.pytorch_eager_img_s)} | ${fmt(d.pytorch_eager_best_img_s)} | ${d.pytorch_eager_peak_memory_gib?.toFixed?.(2) ?? 'n/a'} | | 1 | |`,
);
console.log(
  `| PyTorch compile | ${fmt(d.pytorch_compile_img_s)} | ${fmt(d.pytorch_compile_best_img_s)} | ${d.pytorch_compile_peak_memory_gib?.toFixed?.(2) ?? 'n/a'} | | | 1 |`,
);
console.log(
  `\nembed (teacher fp16, batch ${EMBED_BATCH}): native ${fmt(e.native_img_s)} img/s, PyTorch eager ${fmt(e.pytorch_eager_img_s)} (x${e.native_vs_eager ?? 'n/a'})`,
);
if (result.curve) {
  const c = result.curve;
  console.log(
    `loss curves (${c.steps} steps, batch ${c.batch}, same start and tiles): first ${c.first_loss.engine.toFixed(4)} / ${c.first_loss.reference.toFixed(4)}, last-20 mean ${c.last20_mean.engine.toFixed(4)} / ${c.last20_mean.reference.toFixed(4)}, per-step relative difference median ${c.median_rel_diff.toExponential(2)} max ${c.max_rel_diff.toExponential(2)}`,
  );
  if (c.fused_norm) {
    const f = c.fused_norm;
    console.log(
      `loss curve with kernels.fusedNorm: last-20 mean ${f.vs_reference.last20_mean.engine.toFixed(4)}; per-step relative difference to the reference median ${f.vs_reference.median_rel_diff.toExponential(2)}, to the unfused engine median ${f.vs_unfused_engine.median_rel_diff.toExponential(2)} max ${f.vs_unfused_engine.max_rel_diff.toExponential(2)}`,
    );
  }
}
console.log(
  `\nthe GPU host's README gave PyTorch ${HOST.eager} eager / ${HOST.compile} compile img/s; goal: native >= 1.25x compile in the same run: ${result.goals['distill native >= 1.25x torch.compile (same run)'] ?? 'n/a'}`,
);
for (const v of Object.values(result.variants)) {
  if (v.attention)
    console.log(
      `attention of native ${v.variant}: sdpa ${v.attention.sdpa}, teacher ${v.attention.teacher}, student ${v.attention.student}`,
    );
}
for (const v of Object.values(result.variants)) {
  if (v.phases_ms)
    console.log(
      `phases of native ${v.variant} (ms, median): ${Object.entries(v.phases_ms)
        .map(([k, x]) => `${k} ${x}`)
        .join(', ')}`,
    );
}
for (const n of result.notes) console.log(`note: ${n}`);
console.log(`\nwrote ${path.relative(process.cwd(), opt.out) || opt.out}`);
