// Each fused path of the Distiller against the unfused one it replaces (DistillerConfig.kernels, lib/distill/config.ts),
// end to end: the teacher's and the student's features of a probe batch, three training steps (loss, gradient norm)
// and the student's features after them, with the choice one way and the other. Each Distiller's models hold their
// own choices, so the two sides run one after the other in this process (the comparisons are of numbers, not memory).
//
// On CUDA (a GPU host: this file is in tools/gpu-host/pack.mjs's CUDA_TESTS), under bf16 autocast:
//   swiglu     fusedSwiglu false vs true   the fused SwiGLU forward/backward kernel (native/engine/kernels/cuda/swiglu.cu)
//   adamw      fusedAdamw off vs on        libtorch's fused AdamW against the foreach update
//   norm       fusedNorm false vs true     the student's fused LayerNorm (+ cast) and LayerScale residual kernels
//                                          (native/engine/kernels/cuda/norm.cu) on the fixture student (width 32)
//   norm-fp8   norm with the FP8 teacher: the fused residual + LayerNorm kernel hands FP8 rows to the products
//              (compute capability 8.9+)
//   pinned     tiles from pageable memory vs the Distiller's page-locked tile buffer (asynchronous uploads)
//   and with models of the real widths (student 1024 like Hibou-L, teacher 1536 like H-optimus-0; 2 blocks each,
//   LayerScale 1, random weights written to a temporary folder), the kernels at the real row lengths:
//   norm-wide  fusedNorm false vs true
//   pack-qkv   packQkv false vs true       the student's packed q/k/v product (native/engine/kernels/fused.h)
//   sdpa-wide  sdpa flash vs cudnn         FlashAttention-2 against cuDNN attention (native/engine/models/attention.h);
//                                          each side must have run the backend it asked for
// Bounds: bf16 autocast rounds at ~4e-3 relative per operation, so features within 2e-2 relative (norm of the
// difference over norm of the reference), losses within 1e-2, gradient norms within 5e-2.
//
// On the CPU (float32), the switches whose CPU path no other test compares end to end:
//   swiglu     the unfused expression whatever fusedSwiglu says (fused.h): the same numbers bit for bit
//   adamw      'on' runs libtorch's fused AdamW on the CPU too; 'auto' is the foreach update there, as 'off'
// The other CPU paths are compared elsewhere: fusedNorm in test/distill/fused-norm.test.ts (op by op in
// test/models/fused-ops.test.ts), packQkv in test/distill/packed-qkv.test.ts, sdpa in test/distill/attention.test.ts,
// a reused tile buffer in test/distill/distiller.test.ts, the FP8 teacher in test/distill/teacher-fp8.test.ts.
import t, { type Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NativeBackend, loadEngineAddon } from '../../lib/backends/index.js';
import { createJsModel } from '../../lib/backends/js/model.js';
import { Distiller, type DistillerConfig } from '../../lib/distill/distiller.js';
import { syntheticTile } from '../../lib/distill/tiles.js';
import { ROOT } from '../helpers/cli.js';
import { relMax, relNorm } from '../helpers/switch-sides.js';

const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'models');
const FIXTURE_MODELS = {
  teacher: path.join(FIXTURES, 'timm_giant_reg4_swiglu'),
  student: path.join(FIXTURES, 'hf_dinov2_reg_swiglu'),
};

const info = await new NativeBackend(loadEngineAddon()).info();
const NO_CUDA = info.cudaAvailable ? false : 'no CUDA device here: the fused CUDA paths are compared on a GPU host';
const cc = Number(info.devices[0]?.computeCapability ?? '0');
const NO_FP8 =
  NO_CUDA ||
  (cc >= 8.9 ? false : `the FP8 teacher needs compute capability 8.9+ (this GPU: ${cc}): runs on a newer GPU`);

function batch(n: number, seed: number) {
  const data = new Uint8Array(n * 256 * 256 * 3);
  for (let i = 0; i < n; i++) syntheticTile(seed * 1000 + i, 256, data, i * 256 * 256 * 3);
  return { data, shape: [n, 256, 256, 3] };
}

interface Side {
  teacher: number[];
  student: number[];
  after: number[];
  loss: number[];
  gradNorm: number[];
  info: ReturnType<Distiller['info']>;
}

/** How a side runs: tiles per probe batch and per step, and fields of DistillerConfig over the models'. */
interface Run {
  device: string;
  probe: number;
  batch: number;
  config: Partial<DistillerConfig>;
}

/** CUDA: the Distiller's defaults (learning rate and warm-up included), as benchmarks/gpu.mjs runs it. */
const CUDA_RUN: Run = { device: 'cuda', probe: 8, batch: 16, config: { totalSteps: 10, seed: 0 } };
/** CPU: small batches, and a learning rate that moves every parameter in three steps. */
const CPU_RUN: Run = {
  device: 'cpu',
  probe: 4,
  batch: 4,
  config: { totalSteps: 10, seed: 0, lr: 1e-3, warmupSteps: 0 },
};

/**
 * One side: a Distiller with `extra` over the run's configuration. pinned: every batch goes through one tile buffer of
 * the Distiller (page-locked on CUDA), refilled between the calls as `distill` does.
 */
async function side(run: Run, extra: Partial<DistillerConfig>, pinned = false): Promise<Side> {
  const d = await Distiller.create({
    ...FIXTURE_MODELS,
    backend: 'native',
    device: run.device,
    ...run.config,
    ...extra,
  } as DistillerConfig);
  const buffer = pinned ? d.allocateTileBuffer(run.batch * 256 * 256 * 3) : null;
  // The probe batch is made afresh for every call: with a buffer, each refills it.
  const tiles = (n: number, seed: number) => {
    const b = batch(n, seed);
    if (!buffer) return b;
    const data = buffer.subarray(0, b.data.length);
    data.set(b.data);
    return { data, shape: b.shape };
  };
  const teacher = Array.from((await d.features(tiles(run.probe, 99), 'teacher')).data);
  const student = Array.from((await d.features(tiles(run.probe, 99), 'student')).data);
  const steps = [];
  for (let s = 0; s < 3; s++) steps.push(await d.step(tiles(run.batch, s)));
  const after = Array.from((await d.features(tiles(run.probe, 99), 'student')).data);
  return {
    teacher,
    student,
    after,
    loss: steps.map((r) => r.loss),
    gradNorm: steps.map((r) => r.gradNorm),
    info: d.info(),
  };
}

/** The CUDA comparison: each side's numbers within bf16 rounding of the reference side's. */
function withinBf16(t: Test, name: string, ref: Side, got: Side) {
  const ft = relNorm(got.teacher, ref.teacher),
    fs = relNorm(got.student, ref.student),
    fa = relNorm(got.after, ref.after);
  const dl = relMax(got.loss, ref.loss),
    dg = relMax(got.gradNorm, ref.gradNorm);
  t.ok(ft <= 2e-2, `${name}: teacher features ${ft.toExponential(2)}`);
  t.ok(fs <= 2e-2, `${name}: student features ${fs.toExponential(2)}`);
  t.ok(
    dl <= 1e-2,
    `${name}: losses ${got.loss.map((x) => x.toFixed(4)).join(' ')} vs ${ref.loss.map((x) => x.toFixed(4)).join(' ')} (${dl.toExponential(2)})`,
  );
  t.ok(dg <= 5e-2, `${name}: gradient norms ${dg.toExponential(2)}`);
  t.ok(fa <= 2e-2, `${name}: student features after 3 steps ${fa.toExponential(2)}`);
}

function fusedNormTookEffect(t: Test, name: string, ref: Side, got: Side) {
  t.ok(
    ref.info.fusedNorm === false && got.info.fusedNorm === true,
    `${name}: the choice took effect (info().fusedNorm ${ref.info.fusedNorm} / ${got.info.fusedNorm})`,
  );
}

// --- the CPU ---------------------------------------------------------------------------------------------------------

t.test('CPU: fusedSwiglu changes nothing (the unfused SwiGLU either way), bit for bit', async (t) => {
  const off = await side(CPU_RUN, { kernels: { fusedSwiglu: false } });
  const on = await side(CPU_RUN, { kernels: { fusedSwiglu: true } });
  t.equal(off.info.fusedSwiglu, false, 'info().fusedSwiglu reports the choice off');
  t.equal(on.info.fusedSwiglu, true, 'info().fusedSwiglu reports the choice on');
  t.same(on.teacher, off.teacher, 'teacher features identical (the fixture teacher has SwiGLU MLPs)');
  t.same(on.student, off.student, 'student features identical (the fixture student has SwiGLU MLPs)');
  t.same(on.loss, off.loss, 'losses identical');
  t.same(on.gradNorm, off.gradNorm, 'gradient norms identical');
  t.same(on.after, off.after, 'student features after three steps identical');
});

t.test("CPU: fusedAdamw on runs libtorch's fused AdamW, within rounding of the foreach update", async (t) => {
  const off = await side(CPU_RUN, { kernels: { fusedAdamw: 'off' } });
  const on = await side(CPU_RUN, { kernels: { fusedAdamw: 'on' } });
  const auto = await side(CPU_RUN, { kernels: { fusedAdamw: 'auto' } });
  t.same(auto.loss, off.loss, "auto is the foreach update on the CPU: losses identical to 'off'");
  t.same(auto.after, off.after, "auto: student features after three steps identical to 'off'");
  t.same(on.student, off.student, 'features before any update identical');
  t.equal(on.loss[0], off.loss[0], 'the first loss (before any update) identical');
  // float32 both ways: the updates differ by rounding (the fused kernel's order of operations), so the later losses
  // and gradient norms are the tight checks; the parameters after the steps are bounded as in fused-norm.test.ts
  // (AdamW's first updates are nearly lr * sign(gradient): rounding-level gradients flip a few of them).
  t.ok(relMax(on.loss, off.loss) < 1e-5, `losses ${on.loss.join(', ')} vs ${off.loss.join(', ')}`);
  t.ok(
    relMax(on.gradNorm, off.gradNorm) < 1e-5,
    `gradient norms ${on.gradNorm.join(', ')} vs ${off.gradNorm.join(', ')}`,
  );
  const moved = relNorm(off.after, off.student),
    diff = relNorm(on.after, off.after);
  t.ok(moved > 1e-2, `the three steps move the student (${moved.toExponential(2)})`);
  t.ok(
    diff < 0.02 * moved,
    `features after three steps differ by ${diff.toExponential(2)}, ${((100 * diff) / moved).toFixed(2)}% of the movement`,
  );
  t.notSame(on.after, off.after, 'the choice reached the optimiser (the fused update rounds differently)');
});

// --- CUDA, the fixture models ----------------------------------------------------------------------------------------

/** [name, reference side, new side]: each side's DistillerConfig fields. */
const FIXTURE_CHECKS: [string, Partial<DistillerConfig>, Partial<DistillerConfig>][] = [
  ['swiglu', { kernels: { fusedSwiglu: false } }, { kernels: { fusedSwiglu: true } }],
  ['adamw', { kernels: { fusedAdamw: 'off' } }, { kernels: { fusedAdamw: 'on' } }],
  ['norm', { kernels: { fusedNorm: false } }, { kernels: { fusedNorm: true } }],
];
for (const [name, refSide, newSide] of FIXTURE_CHECKS) {
  t.test(`CUDA ${name}: the fused path within bf16 rounding of the unfused one`, { skip: NO_CUDA }, async (t) => {
    const ref = await side(CUDA_RUN, refSide);
    const got = await side(CUDA_RUN, newSide);
    withinBf16(t, name, ref, got);
    if (name === 'norm') fusedNormTookEffect(t, name, ref, got);
  });
}

t.test(
  'CUDA norm-fp8: with the FP8 teacher, the fused residual + LayerNorm kernel writing the FP8 rows',
  { skip: NO_FP8 },
  async (t) => {
    // qkv and fc1 in FP8 (the default teacherFp8Layers), as bench:gpu's fp8 variant.
    const fp8: Partial<DistillerConfig> = { teacherFp8: true, teacherDtype: 'bfloat16' };
    const ref = await side(CUDA_RUN, { ...fp8, kernels: { fusedNorm: false } });
    const got = await side(CUDA_RUN, { ...fp8, kernels: { fusedNorm: true } });
    withinBf16(t, 'norm-fp8', ref, got);
    fusedNormTookEffect(t, 'norm-fp8', ref, got);
  },
);

t.test('CUDA pinned: batches through one page-locked tile buffer = pageable tiles', { skip: NO_CUDA }, async (t) => {
  // The same engine both ways; the second side's tiles come from one page-locked buffer refilled between calls, so a
  // copy still in flight when a call returns would show as different features or losses.
  const ref = await side(CUDA_RUN, {});
  const got = await side(CUDA_RUN, {}, true);
  withinBf16(t, 'pinned', ref, got);
});

// --- CUDA, models of the real widths -----------------------------------------------------------------------------------

/** A student of Hibou-L's block shape and a teacher of H-optimus-0's (timm vit_giant_patch14_reg4_dinov2: width 1536,
 *  24 heads, packed SwiGLU, LayerScale), 2 blocks each, random weights, written under `root`. */
async function writeWideModels(root: string) {
  const student = path.join(root, 'student'),
    teacher = path.join(root, 'teacher');
  const models: [string, object, number][] = [
    [
      student,
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
      teacher,
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
  ];
  for (const [dir, config, seed] of models) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    await createJsModel(dir, '', seed).exportTo(dir);
  }
  return { student, teacher };
}

t.test('CUDA, models of the real widths (student 1024, teacher 1536)', { skip: NO_CUDA }, async (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'g2l-fused-paths-wide-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const wide = await writeWideModels(root);
  const WIDE_CHECKS: [string, Partial<DistillerConfig>, Partial<DistillerConfig>][] = [
    ['norm-wide', { kernels: { fusedNorm: false } }, { kernels: { fusedNorm: true } }],
    ['pack-qkv', { kernels: { packQkv: false } }, { kernels: { packQkv: true } }],
    ['sdpa-wide', { kernels: { sdpa: 'flash' } }, { kernels: { sdpa: 'cudnn' } }],
  ];
  for (const [name, refSide, newSide] of WIDE_CHECKS) {
    await t.test(name, async (t) => {
      const ref = await side(CUDA_RUN, { ...wide, ...refSide });
      const got = await side(CUDA_RUN, { ...wide, ...newSide });
      withinBf16(t, name, ref, got);
      if (name === 'norm-wide') fusedNormTookEffect(t, name, ref, got);
      if (name === 'pack-qkv') {
        t.ok(
          ref.info.packedQkv === false && got.info.packedQkv === true,
          `${name}: the choice took effect (info().packedQkv ${ref.info.packedQkv} / ${got.info.packedQkv})`,
        );
      }
      if (name === 'sdpa-wide') {
        const ran = (s: Side) => [s.info.teacherAttention, s.info.studentAttention];
        t.ok(
          ran(ref).every((b) => b === 'flash_attention') && ran(got).every((b) => b === 'cudnn_attention'),
          `${name}: the backends that ran: ${ran(ref).join(', ')} / ${ran(got).join(', ')}`,
        );
      }
    });
  }
});
