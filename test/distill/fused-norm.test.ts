// kernels.fusedNorm (native/engine/kernels/fused.h, g2l/kernels.h): the student's block LayerNorms and LayerScale residuals through the fused
// autograd Functions. On CUDA under autocast they run the kernels of native/engine/kernels/cuda/norm.cu (checked against the
// unfused ops on a GPU host by test/distill/fused-paths.test.ts); on the CPU the same Functions run with at:: bodies, which is
// what this test checks: forward values, every gradient (LayerNorm weight and bias, LayerScale gamma, the residual
// stream) and hence the training steps must match the unfused ops. Each Distiller's models hold their own choice, so
// both sides run in this process.
import t from 'tap';
import path from 'node:path';
import { Distiller, toBackendConfig } from '../../lib/distill/distiller.js';
import { toEngineConfig } from '../../lib/distill/native-types.js';
import { JsDistiller } from '../../lib/backends/js/distill.js';
import { loadEngineAddon } from '../../lib/backends/index.js';
import { ROOT } from '../helpers/cli.js';
import { relMax, relNorm, switchSide } from '../helpers/switch-sides.js';

const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'models');

t.test(
  "kernels.fusedNorm on the CPU: the fused Functions give the unfused ops' features, losses and updates",
  async (t) => {
    const off = await switchSide({ fusedNorm: false });
    const on = await switchSide({ fusedNorm: true });
    t.equal(off.fusedNorm, false, 'info().fusedNorm reports the choice off');
    t.equal(on.fusedNorm, true, 'info().fusedNorm reports the choice on');
    // float32 both ways; the only differences are rounding (x + gamma * y against addcmul's, summation order). The
    // losses and gradient norms of all three steps are the tight checks: a wrong or missing gradient of any input
    // (the LayerNorm weight or bias, gamma, y, the residual stream) changes the gradient norm far beyond 1e-5.
    t.ok(
      relNorm(on.before, off.before) < 1e-6,
      `features before training: ${relNorm(on.before, off.before).toExponential(2)}`,
    );
    t.ok(relMax(on.loss, off.loss) < 1e-5, `losses ${on.loss.join(', ')} vs ${off.loss.join(', ')}`);
    t.ok(
      relMax(on.gradNorm, off.gradNorm) < 1e-5,
      `gradient norms ${on.gradNorm.join(', ')} vs ${off.gradNorm.join(', ')}`,
    );
    // The parameters after the steps: AdamW's first updates are nearly lr * sign(gradient), so the gradients' rounding
    // differences flip the update of the few parameters whose gradient is at rounding level. Measured on this model:
    // changing only the CPU thread count moves the features after three steps by 0.3% of how far the steps moved them;
    // the fused path by 0.4%. Bound: 2%.
    const moved = relNorm(off.after, off.before),
      diff = relNorm(on.after, off.after);
    t.ok(moved > 1e-2, `the three steps move the student (${moved.toExponential(2)})`);
    t.ok(
      diff < 0.02 * moved,
      `features after three steps differ by ${diff.toExponential(2)}, ${((100 * diff) / moved).toFixed(2)}% of the movement`,
    );
  },
);

const models = {
  teacher: path.join(FIXTURES, 'timm_giant_reg4_swiglu'),
  student: path.join(FIXTURES, 'hf_dinov2_reg_swiglu'),
  device: 'cpu',
  totalSteps: 1,
};

t.test('off by default, per Distiller, and a wrong value is refused by both backends and the engine', async (t) => {
  const plain = await Distiller.create({ ...models, backend: 'native' });
  const fused = await Distiller.create({ ...models, backend: 'native', kernels: { fusedNorm: true } });
  t.equal(plain.info().fusedNorm, false, 'off by default');
  t.equal(fused.info().fusedNorm, true, 'on where this Distiller asked for it');
  t.equal(plain.info().fusedNorm, false, 'the other Distiller in the process keeps its own');
  // The js backend's Distiller itself (in this thread: its worker wrapper keeps a tap process alive) on the resolved
  // configuration lib/ hands every backend.
  const js = await JsDistiller.create(
    toBackendConfig({ ...models, kernels: { fusedNorm: true, sdpa: 'flash', fusedAdamw: 'on' } }),
  );
  t.notOk(
    'fusedNorm' in js.info(),
    'the js backend accepts valid kernel choices and ignores them (one implementation each)',
  );
  for (const backend of ['native', 'js'] as const) {
    await t.rejects(
      Distiller.create({ ...models, backend, kernels: { fusedNorm: 'yes' as unknown as boolean } }),
      /Distiller: kernels: fusedNorm: Invalid input: expected boolean, received string/,
      `${backend}: a non-boolean refused, naming the key`,
    );
    await t.rejects(
      Distiller.create({ ...models, backend, kernels: { fusedNorms: true } as never }),
      /Distiller: kernels: \(object\): Unrecognized key: "fusedNorms"/,
      `${backend}: an unknown key refused`,
    );
  }
  // The addon's own check, for callers that bypass lib/ (a wrong type is a TypeError naming the key).
  const addon = loadEngineAddon();
  await t.rejects(
    Promise.resolve().then(() =>
      addon.Distiller.create(toEngineConfig({ ...models, kernels: { fusedNorm: 1 } } as never)),
    ),
    /kernels.*fusedNorm/,
  );
});

t.test(
  'config.json records the kernel choices and --resume runs the saved ones; an older config.json reads as before',
  async (t) => {
    const { runDistill } = await import('../../lib/distill/run.js');
    const { readFileSync, writeFileSync, mkdtempSync } = await import('node:fs');
    const os = await import('node:os');
    const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'g2l-kernels-')), 'run');
    const input = {
      teacher: models.teacher,
      student: models.student,
      slides: 'synthetic:16',
      steps: 2,
      batchSize: 2,
      device: 'cpu',
    };
    const seen: (boolean | undefined)[] = [];
    const onReady = async (d: Distiller) => {
      seen.push(d.info().fusedNorm);
    };
    await runDistill({
      out,
      input: { ...input, kernels: { fusedNorm: true } },
      until: 1,
      backend: 'native',
      log: () => {},
      onReady,
    });
    const saved = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
    t.same(
      saved.kernels,
      {
        packQkv: true,
        fusedNorm: true,
        fusedSwiglu: true,
        fusedAdamw: 'auto',
        sdpa: 'auto',
        fp8Quant: 'cuda',
        fp8FastAccum: false,
      },
      'every kernel choice recorded',
    );
    await runDistill({ out, input: {}, resume: true, backend: 'native', log: () => {}, onReady });
    t.same(seen, [true, true], 'the resumed run runs the saved fusedNorm without being told');
    // A config.json of a version that read these from the environment: the values those runs used.
    const old = path.join(mkdtempSync(path.join(os.tmpdir(), 'g2l-kernels-old-')), 'run');
    await runDistill({ out: old, input, until: 1, backend: 'native', log: () => {} });
    const cfg = JSON.parse(readFileSync(path.join(old, 'config.json'), 'utf8'));
    delete cfg.kernels;
    delete cfg.teacherFp8Layers;
    delete cfg.distBucketBytes;
    writeFileSync(path.join(old, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
    const resumed: { fusedNorm?: boolean; packedQkv?: boolean }[] = [];
    // --force: the checkpoint's own copy of the configuration (written with the keys) differs from the edited file.
    await runDistill({
      out: old,
      input: {},
      resume: true,
      force: true,
      backend: 'native',
      log: () => {},
      onReady: async (d) => {
        resumed.push(d.info());
      },
    });
    t.equal(resumed[0].fusedNorm, false, 'fusedNorm as the environment default was');
    t.equal(resumed[0].packedQkv, true);
    const upgraded = JSON.parse(readFileSync(path.join(old, 'config.json'), 'utf8'));
    t.same(upgraded.teacherFp8Layers, ['qkv', 'proj', 'fc1', 'fc2'], 'the FP8 layer set those runs used');
    t.equal(upgraded.distBucketBytes, 25 * 1024 * 1024);
  },
);
