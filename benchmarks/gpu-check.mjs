#!/usr/bin/env node
// GPU host: each fused CUDA path against the unfused one it replaces, in the same run, on the tiny fixture models
// (test/fixtures/models): the Distiller's teacher and student features and three training steps (loss, gradient
// norm) with the choice on and off (DistillerConfig.kernels, lib/distill/config.ts), each side in its own process (each
// starts with the GPU's memory free).
//
//   node benchmarks/gpu-check.mjs [--device cuda]
//
//   swiglu     fusedSwiglu false vs true  the fused SwiGLU forward/backward kernel (native/engine/kernels/cuda/swiglu.cu)
//   adamw      fusedAdamw off vs on       libtorch's fused AdamW against the foreach update
//   norm       fusedNorm false vs true    the student's fused LayerNorm (+ cast) and LayerScale residual kernels
//                                          (native/engine/kernels/cuda/norm.cu) on the fixture student (width 32)
//   norm-fp8   norm with the FP8 teacher: the fused residual + LayerNorm kernel hands FP8 rows to the products
//   pinned     tiles from pageable memory vs the Distiller's page-locked tile buffer (asynchronous uploads)
//   pack-qkv   packQkv false vs true      the student's packed q/k/v product (native/engine/kernels/fused.h) at the real widths
//   sdpa-wide  sdpa flash vs cudnn        FlashAttention-2 against cuDNN attention (native/engine/models/attention.h) at the
//                                          real widths; each side must have run the backend it asked for (the fixture
//                                          models' case is test/distill/attention.test.ts, in the GPU pack)
//   norm-wide  the same with models of the real widths (student 1024 like Hibou-L, teacher 1536 like H-optimus-0; 2
//              blocks each, LayerScale 1, random weights written to a temporary folder): the kernels at the real row
//              lengths
// (The FP8 teacher's kernels have their own check: benchmarks/fp8-gpu-check.mjs.)
// Exit 1 if any comparison is outside its bound. Bounds: bf16 autocast rounds at ~4e-3 relative per operation, so
// features within 2e-2 relative (norm of the difference over norm of the reference), losses within 1e-2, gradient
// norms within 5e-2.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createJsModel } from '../dist/backends/js/model.js';
import { Distiller } from '../dist/distill/distiller.js';
import { makeTiles, ROOT } from './lib/common.mjs';

const { values: opt } = parseArgs({
  options: { device: { type: 'string', default: 'cuda' }, child: { type: 'string', default: '' } },
});
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'models');
const base = {
  teacher: path.join(FIXTURES, 'timm_giant_reg4_swiglu'),
  student: path.join(FIXTURES, 'hf_dinov2_reg_swiglu'),
  totalSteps: 10,
  device: opt.device,
  seed: 0,
  backend: 'native',
};

if (opt.child) {
  const { pinned, ...extra } = JSON.parse(opt.child);
  const d = await Distiller.create({ ...base, ...extra });
  // pinned: every batch through one Distiller tile buffer (page-locked on CUDA: asynchronous uploads), refilled
  // between the calls as `distill` does.
  const buffer = pinned ? d.allocateTileBuffer(16 * 256 * 256 * 3) : null;
  const tiles = (n, seed) => {
    const t = makeTiles(n, 256, seed);
    if (!buffer) return t;
    const data = buffer.subarray(0, t.data.length);
    data.set(t.data);
    return { data, shape: t.shape };
  };
  // The probe batch is made afresh for every call: with a pinned buffer, each refills it.
  const teacher = Array.from((await d.features(tiles(8, 99), 'teacher')).data);
  const student = Array.from((await d.features(tiles(8, 99), 'student')).data);
  const steps = [];
  for (let s = 0; s < 3; s++) steps.push(await d.step(tiles(16, s)));
  const after = Array.from((await d.features(tiles(8, 99), 'student')).data);
  // writeSync: console.log to a pipe is asynchronous, and process.exit would cut a long line short.
  const info = d.info();
  writeSync(
    1,
    `${JSON.stringify({
      teacher,
      student,
      after,
      loss: steps.map((r) => r.loss),
      gradNorm: steps.map((r) => r.gradNorm),
      fusedNorm: info.fusedNorm,
      attention: [info.teacherAttention, info.studentAttention],
    })}\n`,
  );
  process.exit(0);
}

function run(extra = {}) {
  const r = spawnSync(
    process.execPath,
    [fileURLToPath(import.meta.url), '--device', opt.device, '--child', JSON.stringify(extra)],
    { encoding: 'utf8', maxBuffer: 1 << 26 },
  );
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !last.startsWith('{'))
    throw new Error(`child failed (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-4).join(' | ')}`);
  return JSON.parse(last);
}

const relNorm = (a, b) => {
  let num = 0,
    den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
};
const relMax = (a, b) => Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.abs(b[i])));

// The wide models of the norm-wide check, random weights: a student of Hibou-L's block shape and a teacher of
// H-optimus-0's (timm vit_giant_patch14_reg4_dinov2: width 1536, 24 heads, packed SwiGLU, LayerScale), 2 blocks each.
const wideRoot = mkdtempSync(path.join(os.tmpdir(), 'g2l-gpu-check-wide-'));
process.on('exit', () => rmSync(wideRoot, { recursive: true, force: true }));
const wide = path.join(wideRoot, 'student'),
  wideTeacher = path.join(wideRoot, 'teacher');
for (const [dir, config, seed] of [
  [
    wide,
    {
      architectures: ['Dinov2WithRegistersModel'],
      model_type: 'dinov2_with_registers',
      hidden_size: 1024,
      num_hidden_layers: 2,
      num_attention_heads: 16,
      mlp_ratio: 4,
      use_swiglu_ffn: true,
      num_register_tokens: 4,
      image_size: 224,
      patch_size: 14,
      layer_norm_eps: 1e-6,
      layerscale_value: 1,
      hidden_act: 'gelu',
    },
    1,
  ],
  [
    wideTeacher,
    {
      architecture: 'vit_giant_patch14_reg4_dinov2',
      num_classes: 0,
      global_pool: 'token',
      model_args: { img_size: 224, init_values: 1, depth: 2 },
      pretrained_cfg: {
        input_size: [3, 224, 224],
        mean: [0.707223, 0.578729, 0.703617],
        std: [0.211883, 0.230117, 0.177517],
      },
    },
    2,
  ],
]) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  await createJsModel(dir, '', seed).exportTo(dir);
}

// [name, reference side, new side, shared]: each side's DistillerConfig fields over `base` and `shared`.
const wideModels = { student: wide, teacher: wideTeacher };
const checks = [
  ['swiglu', { kernels: { fusedSwiglu: false } }, { kernels: { fusedSwiglu: true } }, {}],
  ['adamw', { kernels: { fusedAdamw: 'off' } }, { kernels: { fusedAdamw: 'on' } }, {}],
  ['norm', { kernels: { fusedNorm: false } }, { kernels: { fusedNorm: true } }, {}],
  ['norm-wide', { kernels: { fusedNorm: false } }, { kernels: { fusedNorm: true } }, wideModels],
  // The same engine both ways; the second side's tiles come from one page-locked buffer refilled between calls, so a
  // copy still in flight when a call returns would show as different features or losses.
  ['pinned', {}, { pinned: true }, {}],
  ['pack-qkv', { kernels: { packQkv: false } }, { kernels: { packQkv: true } }, wideModels],
  ['sdpa-wide', { kernels: { sdpa: 'flash' } }, { kernels: { sdpa: 'cudnn' } }, wideModels],
];
// The FP8 teacher (qkv and fc1 in FP8, the default teacherFp8Layers, as bench:gpu's fp8 variant) with and without the fused residual + LayerNorm
// kernel writing the FP8 rows itself (FP8 products need a GPU of compute capability 8.9 or newer).
if (opt.device.startsWith('cuda')) {
  const fp8 = { teacherFp8: true, teacherDtype: 'bfloat16' };
  checks.push(['norm-fp8', { kernels: { fusedNorm: false } }, { kernels: { fusedNorm: true } }, fp8]);
}
let failed = 0,
  n = 0;
const ok = (cond, msg) => {
  n += 1;
  if (!cond) failed += 1;
  console.log(`${cond ? 'ok' : 'not ok'} ${n} - ${msg}`);
};
for (const [name, refSide, newSide, shared] of checks) {
  let ref, got;
  try {
    ref = run({ ...shared, ...refSide });
    got = run({ ...shared, ...newSide });
  } catch (e) {
    ok(false, `${name}: ${e.message}`);
    continue;
  }
  const ft = relNorm(got.teacher, ref.teacher),
    fs = relNorm(got.student, ref.student),
    fa = relNorm(got.after, ref.after);
  const dl = relMax(got.loss, ref.loss),
    dg = relMax(got.gradNorm, ref.gradNorm);
  ok(ft <= 2e-2, `${name}: teacher features ${ft.toExponential(2)}`);
  ok(fs <= 2e-2, `${name}: student features ${fs.toExponential(2)}`);
  ok(
    dl <= 1e-2,
    `${name}: losses ${got.loss.map((x) => x.toFixed(4)).join(' ')} vs ${ref.loss.map((x) => x.toFixed(4)).join(' ')} (${dl.toExponential(2)})`,
  );
  ok(dg <= 5e-2, `${name}: gradient norms ${dg.toExponential(2)}`);
  ok(fa <= 2e-2, `${name}: student features after 3 steps ${fa.toExponential(2)}`);
  if (name.startsWith('norm'))
    ok(
      ref.fusedNorm === false && got.fusedNorm === true,
      `${name}: the choice took effect (info().fusedNorm ${ref.fusedNorm} / ${got.fusedNorm})`,
    );
  // On the CPU libtorch chooses its own attention kernel whatever kernels.sdpa says.
  if (name.startsWith('sdpa') && opt.device.startsWith('cuda')) {
    const want = (a, b) => a.every((x) => x === b);
    ok(
      want(ref.attention, 'flash_attention') && want(got.attention, 'cudnn_attention'),
      `${name}: the backends that ran: ${ref.attention.join(', ')} / ${got.attention.join(', ')}`,
    );
  }
}
console.log(`# gpu-check: ${n - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
