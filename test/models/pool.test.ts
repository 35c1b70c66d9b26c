// Pooling (cls, mean over the patch tokens, cls+mean) on both backends against timm / transformers
// (tools/make_pool_fixtures.py), the poolings a config implies and their refusals, and one distillation step per
// pooling kind on the engine and on the js backend (same loss and gradient norm; projector sized from the pooled
// widths; the export records the student's pooling).
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Encoder } from '../../lib/models/encoder.js';
import { loadJsModel } from '../../lib/backends/js/model.js';
import { JsDistiller, type JsDistillerConfig } from '../../lib/backends/js/distill.js';
import { toEngineConfig } from '../../lib/distill/native-types.js';
import type { EmbedInput, ModelPool } from '../../lib/backends/types.js';
import { engine, tiles } from '../js-backend/helpers.js';
import { floatImages, nativeBackend, relativeError } from './helpers.js';
import { runCli } from '../helpers/cli.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FIXTURES = path.join(HERE, '..', 'fixtures', 'pool');
interface PoolFixture {
  layout: 'timm' | 'hf';
  width: number;
  prefixTokens: number;
  fcNorm: boolean;
  defaultPool: ModelPool | null;
  mean: number[];
  std: number[];
  expected: Record<string, Record<string, number[][]>>;
}
const manifest: {
  inputs: Record<string, string>;
  cases: Record<string, [string, 'uint8' | 'float32']>;
  models: Record<string, PoolFixture>;
} = JSON.parse(readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8'));
const folder = (name: string) => path.join(FIXTURES, name);
const TOLERANCE = 1e-4;
const { skip } = engine();

function caseInput(caseName: string): EmbedInput {
  const [input, kind] = manifest.cases[caseName];
  const u8 = new Uint8Array(readFileSync(path.join(FIXTURES, manifest.inputs[input])));
  const size = input === 'images_224' ? 224 : 168;
  const images = { data: u8, shape: [2, size, size, 3] };
  return kind === 'uint8' ? images : floatImages(images);
}

for (const [name, fx] of Object.entries(manifest.models)) {
  for (const [pool, expected] of Object.entries(fx.expected)) {
    const dims = pool === 'cls+mean' ? 2 * fx.width : fx.width;
    t.test(`${name} pool ${pool}: native engine against its reference library`, { skip }, async (t) => {
      const enc = await Encoder.load(folder(name), {
        backend: nativeBackend(),
        device: 'cpu',
        pool: pool as ModelPool,
      });
      t.teardown(() => enc.dispose());
      t.equal(enc.info.pool, pool);
      t.equal(enc.info.dims, dims);
      t.equal(enc.info.width, fx.width);
      for (const [caseName, want] of Object.entries(expected)) {
        const y = await enc.embed(caseInput(caseName));
        t.same(y.shape, [2, dims]);
        const err = relativeError(y.data, want.flat());
        t.ok(
          err.rel <= TOLERANCE && err.elementwise <= TOLERANCE,
          `${caseName}: relative error ${err.rel.toExponential(2)}, element-wise ${err.elementwise.toExponential(2)} <= ${TOLERANCE}`,
        );
      }
    });
    t.test(`${name} pool ${pool}: js backend against its reference library`, async (t) => {
      const model = loadJsModel(folder(name), '', { pool });
      t.equal(model.info().pool, pool);
      t.equal(model.info().dims, dims);
      for (const [caseName, want] of Object.entries(expected)) {
        const y = model.embed(caseInput(caseName) as never);
        t.same(y.shape, [2, dims]);
        const err = relativeError(y.data, want.flat());
        t.ok(
          err.rel <= TOLERANCE && err.elementwise <= TOLERANCE,
          `${caseName}: relative error ${err.rel.toExponential(2)}, element-wise ${err.elementwise.toExponential(2)} <= ${TOLERANCE}`,
        );
      }
    });
  }
}

t.test('the pooling a config implies, and the ones refused', async (t) => {
  for (const [name, fx] of Object.entries(manifest.models)) {
    if (!fx.defaultPool) continue;
    t.equal(loadJsModel(folder(name)).info().pool, fx.defaultPool, `${name}: ${fx.defaultPool} from its config (js)`);
    if (!skip)
      t.equal(
        (await nativeBackend().describeModel({ folder: folder(name) })).pool,
        fx.defaultPool,
        `${name}: ${fx.defaultPool} (native)`,
      );
  }
  // global_pool '' says no pooling: a preset or --pool must.
  t.throws(() => loadJsModel(folder('timm_reg4_tokens')), /global_pool '' returns every token.*--pool/);
  t.throws(
    () => loadJsModel(folder('timm_avg_fc_norm'), '', { pool: 'cls+mean' }),
    /cls\+mean pooling on a model with fc_norm/,
  );
  t.throws(() => loadJsModel(folder('hf_reg_swiglu'), '', { pool: 'max' }), /unknown pooling 'max'/);
  if (!skip) {
    const native = nativeBackend();
    await t.rejects(
      native.describeModel({ folder: folder('timm_reg4_tokens') }),
      /global_pool '' returns every token.*--pool/,
    );
    await t.rejects(
      native.describeModel({ folder: folder('timm_avg_fc_norm'), pool: 'cls+mean' }),
      /cls\+mean pooling on a model with fc_norm/,
    );
  }
  await t.rejects(
    Encoder.load(folder('hf_reg_swiglu'), { backend: 'js', pool: 'max' as ModelPool }),
    /unknown pooling 'max'/,
  );
});

t.test('js backward through each pooling agrees with central finite differences', async (t) => {
  for (const [name, pool] of [
    ['timm_avg_fc_norm', 'mean'],
    ['timm_avg_fc_norm', 'cls'],
    ['timm_reg4_tokens', 'cls+mean'],
    ['hf_reg_swiglu', 'mean'],
  ] as const) {
    const vit = loadJsModel(folder(name), '', { pool }).vit;
    const out = pool === 'cls+mean' ? 2 * vit.spec.embedDim : vit.spec.embedDim,
      B = 2,
      S = 42;
    let seed = 5;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    const x = new Float32Array(B * 3 * S * S).map(rnd);
    const r = new Float32Array(B * out).map(rnd);
    const f = () => vit.forward(x, B, S, S).embeddings.reduce((acc, e, i) => acc + r[i] * e, 0);
    const { cache } = vit.forward(x, B, S, S, true);
    const grads = new Map<string, Float32Array>();
    vit.backward(cache!, r, grads);
    let worst = 0;
    for (const key of vit.trainableKeys()) {
      const w = vit.weights.get(key)!.data,
        g = grads.get(key) ?? new Float32Array(w.length);
      for (let k = 0; k < 2; k++) {
        const i = Math.floor(((rnd() + 1) / 2) * w.length);
        const old = w[i],
          h = 1e-2 * Math.max(1, Math.abs(old));
        w[i] = old + h;
        const fp = f();
        w[i] = old - h;
        const fm = f();
        w[i] = old;
        const fd = (fp - fm) / (2 * h);
        worst = Math.max(worst, Math.abs(fd - g[i]) / Math.max(1e-2, Math.abs(fd)));
      }
    }
    // As test/js-backend/vit.test.ts: float32 forward, h = 1e-2 leaves about 1e-2 at worst; a wrong term is O(1).
    t.ok(worst < 3e-2, `${name} ${pool}: worst relative difference ${worst.toExponential(2)} < 3e-2`);
  }
});

// One distillation step per pooling kind, engine and js from the same models, seed and tiles.
const { addon } = engine();
for (const [teacherPool, studentPool] of [
  ['cls', 'cls'],
  ['mean', 'mean'],
  ['cls+mean', 'cls+mean'],
  ['cls+mean', 'mean'],
] as const) {
  t.test(
    `one distill step, teacher ${teacherPool} / student ${studentPool}: engine and js agree`,
    { skip },
    async (t) => {
      const cfg: JsDistillerConfig = {
        teacher: folder('timm_reg4_tokens'),
        teacherPool,
        student: folder('hf_reg_swiglu'),
        studentPool,
        seed: 3,
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
      };
      const batch = tiles(4, 256, 9);
      const native = await addon.Distiller.create(toEngineConfig(cfg));
      const js = await JsDistiller.create(cfg);
      const D = 32;
      const dt = teacherPool === 'cls+mean' ? 2 * D : D,
        ds = studentPool === 'cls+mean' ? 2 * D : D;
      t.equal(native.info().teacherDim, dt, 'engine: teacher width from its pooling');
      t.equal(native.info().studentDim, ds, 'engine: student width from its pooling');
      t.equal(js.info().teacherDim, dt);
      t.equal(js.info().studentDim, ds);
      t.same(js.trainedState().get('projector.weight')!.length, dt * ds, 'projector (Dt, Ds)');
      const a = await native.step(batch);
      const b = await js.step(batch);
      t.ok(Number.isFinite(a.loss) && a.gradNorm > 0, `engine loss ${a.loss}, grad norm ${a.gradNorm}`);
      t.ok(Math.abs(a.loss - b.loss) <= 1e-4 * Math.abs(a.loss), `loss ${a.loss} vs ${b.loss}`);
      t.ok(Math.abs(a.gradNorm - b.gradNorm) <= 1e-4 * a.gradNorm, `grad norm ${a.gradNorm} vs ${b.gradNorm}`);
      // The exported student records its pooling (config.json g2l_pool when not the config's own) and reloads with it.
      const dir = t.testdir();
      await native.exportStudent(path.join(dir, 'native'));
      await js.exportStudent(path.join(dir, 'js'));
      for (const side of ['native', 'js']) {
        const cfgJson = JSON.parse(readFileSync(path.join(dir, side, 'config.json'), 'utf8'));
        t.equal(
          cfgJson.g2l_pool,
          studentPool === 'cls' ? undefined : studentPool,
          `${side} export records the pooling`,
        );
        t.equal(
          loadJsModel(path.join(dir, side)).info().pool,
          studentPool,
          `${side} export reloads with pool ${studentPool}`,
        );
      }
    },
  );
}

t.test(
  'distill --teacher-pool / --student-pool: recorded in config.json, the projector sized from them, a resume keeps them',
  async (t) => {
    const run = path.join(t.testdir(), 'run');
    const args = [
      'distill',
      '--teacher',
      folder('timm_reg4_tokens'),
      '--student',
      folder('hf_reg_swiglu'),
      '--teacher-pool',
      'cls+mean',
      '--student-pool',
      'mean',
      '--slides',
      'synthetic:16',
      '--batch-size',
      '4',
      '--out',
      run,
      '--no-progress',
      ...(skip ? ['--backend', 'js'] : []),
    ];
    const d = await runCli([...args, '--steps', '2', '--until', '1']);
    t.equal(d.code, 0, d.stderr);
    const cfg = JSON.parse(readFileSync(path.join(run, 'config.json'), 'utf8'));
    t.same([cfg.teacherPool, cfg.studentPool], ['cls+mean', 'mean'], 'config.json records both poolings');
    const again = await runCli([
      'distill',
      '--resume',
      '--out',
      run,
      '--no-progress',
      ...(skip ? ['--backend', 'js'] : []),
    ]);
    t.equal(again.code, 0, again.stderr);
    const student = JSON.parse(readFileSync(path.join(run, 'student', 'config.json'), 'utf8'));
    t.equal(student.g2l_pool, 'mean', 'the exported student records its pooling');
    t.equal(loadJsModel(path.join(run, 'student')).info().pool, 'mean', 'and reloads with it');
    const bad = await runCli([
      'distill',
      '--teacher',
      folder('timm_reg4_tokens'),
      '--student',
      folder('hf_reg_swiglu'),
      '--student-pool',
      'max',
      '--slides',
      'synthetic:16',
      '--steps',
      '1',
      '--out',
      path.join(t.testdir(), 'bad'),
    ]);
    t.equal(bad.code, 2, 'an unknown pooling is a usage error');
    t.match(bad.stderr, /student-pool.*Choices: "cls", "mean", "cls\+mean"/s);
  },
);
