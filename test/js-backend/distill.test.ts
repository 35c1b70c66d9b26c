// The js Distiller takes the engine's step: from the same models, seed and tiles, one step leaves the same student
// weights (within 1e-4) and the same loss; and it resumes exactly from its own checkpoints.
import t from 'tap';
import path from 'node:path';
import {
  JsDistiller,
  type JsDistillerConfig,
  scheduleAt,
  stepSeed,
  takesWeightDecay,
} from '../../lib/backends/js/distill.js';
import { readModelWeights } from '../../lib/backends/js/safetensors.js';
import { toEngineConfig } from '../../lib/distill/native-types.js';
import { engine, folder, tiles } from './helpers.js';

const { addon, skip } = engine();

const config = (over: Partial<JsDistillerConfig> = {}): JsDistillerConfig => ({
  teacher: folder('timm_giant_reg4_swiglu'),
  student: folder('hf_dinov2_reg_swiglu'),
  seed: 11,
  device: 'cpu',
  teacherDtype: 'auto',
  accumulationSteps: 1,
  loss: { alpha: 4, reduction: 'batch', bnEps: 1e-4, teacherBn: true },
  optimizer: {
    lr: 1e-4,
    finalLr: 0,
    weightDecay: 0.05,
    finalWeightDecay: 0,
    warmupSteps: 0,
    totalSteps: 4,
    clipGradNorm: 0,
  },
  augment: {},
  ...over,
});

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

for (const [label, over] of [
  ['timm teacher, HF SwiGLU student with registers', {}],
  [
    'HF teacher, timm GELU student, sample reduction, 2 micro-batches, clipping',
    {
      teacher: folder('hf_dinov2_swiglu'),
      student: folder('timm_large_gelu'),
      accumulationSteps: 2,
      loss: { alpha: 3, reduction: 'sample', bnEps: 1e-4, teacherBn: true },
      optimizer: { lr: 1e-4, weightDecay: 0.05, totalSteps: 4, clipGradNorm: 0.5, warmupSteps: 1 },
    },
  ],
] as const) {
  t.test(`one step on js equals one step on the engine: ${label}`, { skip }, async (t) => {
    const cfg = config(over as Partial<JsDistillerConfig>);
    const batch = tiles(4, 256, 5);
    const native = await addon.Distiller.create(toEngineConfig(cfg));
    const js = await JsDistiller.create(cfg);
    const before = readModelWeights(cfg.student);
    const a = await native.step(batch);
    const b = await js.step(batch);
    t.ok(Math.abs(a.loss - b.loss) <= 1e-4 * Math.abs(a.loss), `loss ${a.loss} vs ${b.loss}`);
    t.ok(Math.abs(a.gradNorm - b.gradNorm) <= 1e-4 * a.gradNorm, `grad norm ${a.gradNorm} vs ${b.gradNorm}`);
    t.equal(b.lr, a.lr);
    t.equal(b.weightDecay, a.weightDecay);

    const dir = t.testdir();
    await native.exportStudent(path.join(dir, 'native'));
    const nativeAfter = readModelWeights(path.join(dir, 'native'));
    const jsState = js.trainedState();
    // Two kinds of parameter have an exactly zero gradient: key biases (softmax ignores a shift of a row of scores;
    // the middle third of timm's fused qkv.bias) and the final-norm bias (the projector's BatchNorm removes a shift
    // shared by the batch). Their float32 gradients are rounding noise, which Adam's first step turns into +-lr in
    // either direction on either backend; so they are checked for being zero (relative to the gradient norm) and
    // for moving at most lr, and every other element to 1e-4.
    const zeroGradient = (key: string, n: number): [number, number] | null =>
      /attention\.key\.bias$|^layernorm\.bias$|^norm\.bias$/.test(key)
        ? [0, n]
        : /attn\.qkv\.bias$/.test(key)
          ? [n / 3, (2 * n) / 3]
          : null;
    const grads = js.lastGradients();
    const lr = cfg.optimizer!.lr!;
    let worst = 0,
      moved = 0,
      zeroKeys = 0;
    for (const [key, w] of nativeAfter) {
      const mine = jsState.get(`student/${key}`);
      if (!mine) continue; // checkpoint entries that are not trained (mask token)
      const old = before.get(key)!.data;
      moved = Math.max(moved, maxAbsDiff(w.data, old));
      const zero = zeroGradient(key, mine.length);
      if (zero) {
        zeroKeys++;
        const g = grads.get(`student/${key}`)!.subarray(zero[0], zero[1]);
        t.ok(
          g.every((v) => Math.abs(v) <= 1e-6 * b.gradNorm),
          `${key}[${zero}]: gradient ~0`,
        );
        const span = (x: Float32Array) => x.subarray(zero[0], zero[1]);
        t.ok(
          Math.max(maxAbsDiff(span(mine), span(old)), maxAbsDiff(span(w.data), span(old))) <= lr * 1.001,
          `${key}[${zero}]: moved at most lr`,
        );
      }
      for (let i = 0; i < mine.length; i++) {
        if (!zero || i < zero[0] || i >= zero[1]) worst = Math.max(worst, Math.abs(mine[i] - w.data[i]));
      }
    }
    t.ok(zeroKeys >= 2, 'the zero-gradient parameters were found');
    t.ok(moved > 1e-5, `the step moved the weights (by up to ${moved.toExponential(2)})`);
    t.ok(worst <= 1e-4, `student weights after one step: max |js - native| = ${worst.toExponential(2)} <= 1e-4`);
    // The projector is not exported: the next step's loss depends on it (and on every student weight).
    const a2 = await native.step(batch);
    const b2 = await js.step(batch);
    t.ok(Math.abs(a2.loss - b2.loss) <= 1e-4 * Math.abs(a2.loss), `second-step loss ${a2.loss} vs ${b2.loss}`);
    const [fa, fb] = [await native.features(batch, 'student'), await js.features(batch, 'student')];
    t.ok(maxAbsDiff(fa.data, fb.data) <= 1e-3, 'centre-crop student features agree after two steps');
  });
}

t.test('N steps straight equal N/2, save, load into a new distiller, N/2', async (t) => {
  const cfg = config();
  const batches = [1, 2, 3, 4].map((s) => tiles(2, 240, s));
  const straight = await JsDistiller.create(cfg);
  for (const x of batches) await straight.step(x);
  const first = await JsDistiller.create(cfg);
  for (const x of batches.slice(0, 2)) await first.step(x);
  const ckpt = path.join(t.testdir(), 'step-2');
  await first.save(ckpt);
  const resumed = await JsDistiller.create(cfg);
  await resumed.load(ckpt);
  t.equal(resumed.stepsTaken, 2);
  for (const x of batches.slice(2)) await resumed.step(x);
  const s1 = straight.trainedState(),
    s2 = resumed.trainedState();
  let worst = 0;
  for (const [k, v] of s1) worst = Math.max(worst, maxAbsDiff(v, s2.get(k)!));
  t.equal(worst, 0, 'bit-identical weights');
});

t.test('schedules, decay groups and step seeds follow the engine', async (t) => {
  const c = {
    lr: 1e-4,
    finalLr: 0,
    weightDecay: 0.05,
    finalWeightDecay: 0,
    warmupSteps: 0,
    totalSteps: 10,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    clipGradNorm: 0,
  };
  t.equal(scheduleAt(c, 0).lr, 1e-4);
  t.ok(Math.abs(scheduleAt(c, 5).lr - 5e-5) < 1e-18, 'half-way: half the learning rate');
  t.equal(scheduleAt(c, 10).weightDecay, 0);
  t.equal(scheduleAt({ ...c, warmupSteps: 4 }, 1).lr, 5e-5, 'linear warm-up');
  t.notOk(takesWeightDecay('student/embeddings.cls_token', [1, 1, 8]));
  t.notOk(takesWeightDecay('student/blocks.0.ls1.gamma', [8]));
  t.notOk(takesWeightDecay('student/pos_embed', [1, 4, 8]));
  t.ok(takesWeightDecay('student/blocks.0.attn.qkv.weight', [24, 8]));
  t.ok(takesWeightDecay('projector.weight', [8, 8]));
  // splitmix64 reference values (seed 0, step 0 is splitmix64's first output for state 0).
  t.equal(stepSeed(0, 0), 0xe220a8397b1dcdafn);
});

t.test('createBackendDistiller gives the same step on either backend', { skip }, async (t) => {
  const { createBackendDistiller, JsBackend, NativeBackend } = await import('../../lib/backends/index.js');
  const cfg = config();
  const batch = tiles(2, 232, 9);
  const [n, j] = [
    await createBackendDistiller(new NativeBackend(addon), cfg),
    await createBackendDistiller(new JsBackend(), cfg),
  ];
  const a = await n.step(batch);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const b = await j.step(batch);
  clearInterval(timer);
  t.ok(ticks >= 3, `the js step ran off the event loop (${ticks} timer ticks meanwhile)`);
  t.ok(Math.abs(a.loss - b.loss) <= 1e-4 * Math.abs(a.loss), `loss ${a.loss} vs ${b.loss}`);
  t.equal(n.info().step, 1);
  t.equal(j.info().step, 1);
  const dir = t.testdir();
  await j.save(path.join(dir, 'js'));
  const again = await createBackendDistiller(new JsBackend(), cfg);
  await again.load(path.join(dir, 'js'));
  t.equal(again.info().step, 1, 'load through the worker');
  const [fa, fb] = [await j.features(batch, 'teacher'), await again.features(batch, 'teacher')];
  t.same(fa.shape, [2, 32]);
  t.same(Array.from(fa.data), Array.from(fb.data));
  await t.rejects(createBackendDistiller(new JsBackend(), { ...cfg, device: 'cuda' }), /CPU only/);
});

t.test('a checkpoint of either backend resumes on the other (state.safetensors, same keys)', { skip }, async (t) => {
  const cfg = config();
  const batches = [1, 2, 3, 4].map((s) => tiles(2, 240, s + 20));
  const dir = t.testdir();
  // native 2 steps -> save -> js resumes 2 steps; js 2 steps -> save -> native resumes 2 steps; against straight runs
  const native = await addon.Distiller.create(toEngineConfig(cfg));
  const js = await JsDistiller.create(cfg);
  const nLoss: number[] = [],
    jLoss: number[] = [];
  for (const x of batches.slice(0, 2)) {
    nLoss.push((await native.step(x)).loss);
    jLoss.push((await js.step(x)).loss);
  }
  await native.save(path.join(dir, 'native'));
  await js.save(path.join(dir, 'js'));
  const { readStoredTensors } = await import('../../lib/backends/js/safetensors.js');
  const read = (file: string) => readStoredTensors(file, 'the test reads it').tensors;
  const nState = read(path.join(dir, 'native', 'state.safetensors')),
    jState = read(path.join(dir, 'js', 'state.safetensors'));
  t.same([...jState.keys()].sort(), [...nState.keys()].sort(), 'same keys');
  t.same(
    [...jState].map(([k, v]) => [k, v.dtype, v.shape]),
    [...nState].map(([k, v]) => [k, v.dtype, v.shape]),
    'same dtypes and shapes',
  );
  t.same(jState.get('step')!.data, nState.get('step')!.data);
  const jsFromNative = await JsDistiller.create(cfg);
  await jsFromNative.load(path.join(dir, 'native'));
  const nativeFromJs = await addon.Distiller.create(toEngineConfig(cfg));
  await nativeFromJs.load(path.join(dir, 'js'));
  t.equal(jsFromNative.stepsTaken, 2);
  t.equal(nativeFromJs.info().step, 2);
  for (const x of batches.slice(2)) {
    const [a, b, c, d] = [
      await native.step(x),
      await jsFromNative.step(x),
      await js.step(x),
      await nativeFromJs.step(x),
    ];
    t.ok(
      Math.abs(a.loss - b.loss) <= 1e-4 * Math.abs(a.loss),
      `step ${a.step}: native ${a.loss} vs js resumed from native ${b.loss}`,
    );
    t.ok(
      Math.abs(c.loss - d.loss) <= 1e-4 * Math.abs(c.loss),
      `step ${c.step}: js ${c.loss} vs native resumed from js ${d.loss}`,
    );
    t.equal(b.lr, a.lr, 'schedules continue from the saved step');
  }
  t.ok(nLoss.every((l, i) => Math.abs(l - jLoss[i]) <= 1e-4 * Math.abs(l)));
});
