// The student's training-only dropout and drop path on the native engine (native/engine/models/vit.cpp, model.h
// Regularization), through the test entry embed_train (g2l/testing.h; the forward a distillation step runs for the
// student):
//   - under the same masks as timm / transformers: one rate at 1 (deterministic masks) against the train-mode outputs
//     the libraries computed (tools/make_drop_fixtures.py -> test/fixtures/models/drop.json), rates given as
//     overrides and read from a config.json;
//   - at intermediate rates, with fixed seeds: dropout keeps each element with probability 1 - p and scales the
//     survivors by exactly 1 / (1 - p); drop path drops whole samples' branches at the rate, survivors scaled by
//     1 / keep (checked against a model whose LayerScale carries the scale);
//   - eval (embed) is unchanged by non-zero rates in config.json; refusals of what would otherwise be ignored.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import type { Float32Tensor, StudentDrop } from '../../lib/backends/types.js';
import { loadJsModel } from '../../lib/backends/js/model.js';
import { caseInput, FIXTURES, modelFolder, nativeBackend, relativeError } from './helpers.js';
import { embedTrain } from '../helpers/engine-testing.js';

const TOLERANCE = 1e-4;
const backend = nativeBackend();
const drop = JSON.parse(readFileSync(path.join(FIXTURES, 'drop.json'), 'utf8')) as {
  input: string;
  models: Record<string, Record<string, number[][]>>;
};
const input = caseInput(drop.input) as Float32Tensor;

interface DropModel {
  embed(images: Float32Tensor): Promise<Float32Tensor>;
  /** The test module's training-mode forward of the same folder (test/helpers/engine-testing.ts). */
  embedTrain(images: Float32Tensor, seed: number, drop: StudentDrop): Promise<Float32Tensor>;
  dispose(): Promise<void>;
}

async function load(folder: string): Promise<DropModel> {
  const model = await backend.loadModel({ folder }, { device: 'cpu', dtype: 'fp32' });
  return {
    embed: (images) => model.embed(images),
    embedTrain: (images, seed, rates) => embedTrain(folder, images, seed, rates),
    dispose: () => model.dispose(),
  };
}

function tmp(t: Test): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-drop-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A copy of a fixture folder with config.json edited by `edit`. */
function withConfig(
  t: Test,
  name: string,
  edit: (cfg: Record<string, unknown> & { model_args: Record<string, unknown> }) => void,
): string {
  const dir = path.join(tmp(t), name);
  cpSync(modelFolder(name), dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  edit(cfg);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  return dir;
}

function checkCase(t: Test, y: Float32Tensor, expected: number[][], what: string): void {
  const flat = expected.flat();
  t.same(y.shape, [expected.length, expected[0].length], `${what}: shape`);
  if (flat.every((v) => v === 0)) {
    t.ok(
      Array.from(y.data).every((v) => v === 0),
      `${what}: all zero, as the reference`,
    );
    return;
  }
  const err = relativeError(y.data, flat);
  t.ok(err.rel <= TOLERANCE, `${what}: max relative error ${err.rel.toExponential(2)} <= ${TOLERANCE}`);
}

for (const [name, cases] of Object.entries(drop.models)) {
  t.test(`${name}: train-mode outputs of timm / transformers with one rate at 1`, async (t) => {
    const model = await load(modelFolder(name));
    t.teardown(() => model.dispose());
    const evalOut = await model.embed(input);
    for (const [key, expected] of Object.entries(cases)) {
      const y = await model.embedTrain(input, 7, { [key]: 1 } as StudentDrop);
      checkCase(t, y, expected, `${key} 1`);
      // Another seed: the masks at rate 1 are not random.
      checkCase(t, await model.embedTrain(input, 8, { [key]: 1 } as StudentDrop), expected, `${key} 1, another seed`);
    }
    // Rates 0: the training forward is the eval forward, bit for bit; and eval is untouched by the calls above.
    t.same(
      Array.from((await model.embedTrain(input, 7, {})).data),
      Array.from(evalOut.data),
      'all rates 0: train == eval',
    );
    t.same(
      Array.from((await model.embed(input)).data),
      Array.from(evalOut.data),
      'eval after training forwards: unchanged',
    );
  });
}

t.test('rates read from config.json (not silently zero); eval unchanged by them', async (t) => {
  const timmDir = withConfig(t, 'timm_large_gelu', (c) => {
    c.model_args.drop_path_rate = 1;
  });
  const hfDir = withConfig(t, 'hf_dinov2_reg_swiglu', (c) => {
    c.hidden_dropout_prob = 1;
  });
  for (const [dir, name, key] of [
    [timmDir, 'timm_large_gelu', 'dropPath'],
    [hfDir, 'hf_dinov2_reg_swiglu', 'hiddenDrop'],
  ] as const) {
    const withRates = await load(dir);
    const plain = await load(modelFolder(name));
    t.teardown(() => Promise.all([withRates.dispose(), plain.dispose()]));
    checkCase(
      t,
      await withRates.embedTrain(input, 3, {}),
      drop.models[name][key],
      `${name}: ${key} 1 from config.json`,
    );
    // An explicit override replaces the config's value.
    t.same(
      Array.from((await withRates.embedTrain(input, 3, { [key]: 0 } as StudentDrop)).data),
      Array.from((await plain.embed(input)).data),
      `${name}: override ${key} 0 replaces the config's 1`,
    );
    t.same(
      Array.from((await withRates.embed(input)).data),
      Array.from((await plain.embed(input)).data),
      `${name}: eval with non-zero rates in config.json is bitwise the eval without`,
    );
  }
});

t.test('refusals: patch drop, a rate of the other library, out of range', async (t) => {
  const patch = withConfig(t, 'timm_large_gelu', (c) => {
    c.model_args.patch_drop_rate = 0.25;
  });
  const m = await load(patch);
  t.teardown(() => m.dispose());
  await t.rejects(m.embedTrain(input, 0, {}), /patch_drop_rate 0\.25.*PatchDropout.*not supported/);
  t.ok((await m.embedTrain(input, 0, { patchDrop: 0 })).data.length > 0, 'studentDrop.patchDrop 0 overrides it');
  const hf = await load(modelFolder('hf_dinov2_gelu'));
  const timm = await load(modelFolder('timm_large_gelu'));
  t.teardown(() => Promise.all([hf.dispose(), timm.dispose()]));
  await t.rejects(hf.embedTrain(input, 0, { projDrop: 0.1 }), /studentDrop\.projDrop is not a rate of a transformers/);
  await t.rejects(timm.embedTrain(input, 0, { hiddenDrop: 0.1 }), /studentDrop\.hiddenDrop is not a rate of a timm/);
  await t.rejects(timm.embedTrain(input, 0, { dropPath: 1.5 }), /must be a rate in \[0, 1\]/);
  const bad = withConfig(t, 'hf_dinov2_gelu', (c) => {
    c.attention_probs_dropout_prob = -0.1;
  });
  await t.rejects(load(bad), /attention_probs_dropout_prob' must be a rate in \[0, 1\]/);
});

/** Binomial bound: |k/n - p| <= 4.5 sigma (a fixed-seed test that can fail only when the rate is wrong). */
function withinBinomial(t: Test, k: number, n: number, p: number, what: string): void {
  const sigma = Math.sqrt((p * (1 - p)) / n);
  t.ok(
    Math.abs(k / n - p) <= 4.5 * sigma,
    `${what}: ${k} of ${n} = ${(k / n).toFixed(4)}, expected ${p} +- ${(4.5 * sigma).toFixed(4)}`,
  );
}

t.test('dropout at 0.3 (timm head drop): elements kept at rate 0.7, survivors scaled by exactly 1/0.7', async (t) => {
  const model = await load(modelFolder('timm_large_gelu'));
  t.teardown(() => model.dispose());
  const z = (await model.embed(input)).data;
  const p = 0.3,
    scale = Math.fround(1 / (1 - p));
  let dropped = 0,
    n = 0,
    badScale = 0;
  const seen = new Set<string>();
  for (let seed = 0; seed < 60; seed++) {
    const y = (await model.embedTrain(input, seed, { headDrop: p })).data;
    seen.add(Array.from(y.slice(0, 16)).join(','));
    for (let i = 0; i < y.length; i++) {
      n += 1;
      if (y[i] === 0) dropped += 1;
      else if (y[i] !== Math.fround(z[i] * scale)) badScale += 1;
    }
  }
  withinBinomial(t, dropped, n, p, 'dropped fraction');
  t.equal(badScale, 0, 'every survivor is the eval value times float32(1/0.7), bit for bit');
  t.equal(seen.size, 60, 'different seeds draw different masks');
  t.same(
    Array.from((await model.embedTrain(input, 5, { headDrop: p })).data),
    Array.from((await model.embedTrain(input, 5, { headDrop: p })).data),
    'the same seed draws the same masks',
  );
});

t.test(
  'drop path at 0.5 (timm, depth 2: block 1 at 0.5): per-sample branches, survivors scaled by 1/keep',
  async (t) => {
    // timm_giant_reg4_swiglu has LayerScale: a copy with block 1's ls1 and ls2 doubled (written by the js backend)
    // computes in eval mode what block 1 computes with both branches kept and scaled by 1/keep = 2.
    const name = 'timm_giant_reg4_swiglu';
    const js = loadJsModel(modelFolder(name));
    for (const key of ['blocks.1.ls1.gamma', 'blocks.1.ls2.gamma']) {
      const g = js.vit.weights.get(key)!.data;
      for (let i = 0; i < g.length; i++) g[i] *= 2;
    }
    const scaledDir = path.join(tmp(t), 'scaled');
    await js.exportTo(scaledDir);
    const model = await load(modelFolder(name));
    const scaled = await load(scaledDir);
    t.teardown(() => Promise.all([model.dispose(), scaled.dispose()]));
    const bothKept = (await scaled.embed(input)).data;
    const bothDropped = drop.models[name].dropPath.flat();
    const D = bothDropped.length / 2;
    const close = (y: Float32Array, b: number, ref: ArrayLike<number>) => {
      let m = 0,
        r = 0;
      for (let d = 0; d < D; d++) {
        m = Math.max(m, Math.abs(y[b * D + d] - ref[b * D + d]));
        r = Math.max(r, Math.abs(ref[b * D + d]));
      }
      return m <= TOLERANCE * r;
    };
    let kept = 0,
      droppedBoth = 0,
      other = 0,
      n = 0;
    for (let seed = 0; seed < 400; seed++) {
      const y = (await model.embedTrain(input, seed, { dropPath: 0.5 })).data;
      for (let b = 0; b < 2; b++) {
        n += 1;
        if (close(y, b, bothKept)) kept += 1;
        else if (close(y, b, bothDropped)) droppedBoth += 1;
        else other += 1;
      }
    }
    // Two independent branches at 0.5: both kept 1/4, both dropped 1/4, one of each 1/2.
    withinBinomial(t, kept, n, 0.25, 'both branches kept (and scaled by 2)');
    withinBinomial(t, droppedBoth, n, 0.25, 'both branches dropped');
    withinBinomial(t, other, n, 0.5, 'one branch kept');
  },
);

t.test('transformers drop path at 0.5: the same rate in every layer (not linear), per sample', async (t) => {
  // hf_dinov2_gelu, depth 2: four branches at 0.5 each; all four dropped with probability 1/16 (timm's linear
  // schedule would keep layer 0 always, and never drop all four).
  const model = await load(modelFolder('hf_dinov2_gelu'));
  t.teardown(() => model.dispose());
  const allDropped = drop.models.hf_dinov2_gelu.dropPath.flat();
  const D = allDropped.length / 2;
  let hits = 0,
    n = 0;
  for (let seed = 0; seed < 800; seed++) {
    const y = (await model.embedTrain(input, seed, { dropPath: 0.5 })).data;
    for (let b = 0; b < 2; b++) {
      n += 1;
      let m = 0;
      for (let d = 0; d < D; d++) m = Math.max(m, Math.abs(y[b * D + d] - allDropped[b * D + d]));
      if (m <= 1e-4) hits += 1;
    }
  }
  withinBinomial(t, hits, n, 1 / 16, 'samples with every branch dropped');
});

t.test('attention dropout at 0.5: train outputs differ from eval, finite, seeded', async (t) => {
  const model = await load(modelFolder('hf_dinov2_reg_swiglu'));
  t.teardown(() => model.dispose());
  const z = Array.from((await model.embed(input)).data);
  const a = Array.from((await model.embedTrain(input, 11, { attnDrop: 0.5 })).data);
  const b = Array.from((await model.embedTrain(input, 11, { attnDrop: 0.5 })).data);
  const c = Array.from((await model.embedTrain(input, 12, { attnDrop: 0.5 })).data);
  t.same(a, b, 'same seed, same output');
  t.notSame(a, c, 'another seed, another output');
  t.notSame(a, z, 'differs from eval');
  t.ok(a.every(Number.isFinite), 'finite');
});

t.test(
  'native Distiller: studentDrop reported, changes steps, seeded per step; features and the teacher never drop',
  async (t) => {
    const { Distiller } = await import('../../lib/distill/distiller.js');
    const { syntheticTile } = await import('../../lib/distill/tiles.js');
    const tileBatch = (b: number, seed: number) => {
      const n = 256 * 256 * 3;
      const data = new Uint8Array(b * n);
      for (let i = 0; i < b; i++) syntheticTile(seed * 1000 + i, 256, data, i * n);
      return { data, shape: [b, 256, 256, 3] };
    };
    const config = {
      teacher: modelFolder('timm_giant_reg4_swiglu'),
      student: modelFolder('timm_large_gelu'),
      totalSteps: 4,
      lr: 1e-3,
      seed: 5,
      backend: 'native' as const,
    };
    const rates = { dropPath: 0.5, attnDrop: 0.2, projDrop: 0.2, posDrop: 0.1, headDrop: 0.1 };
    const plain = await Distiller.create(config);
    const a = await Distiller.create({ ...config, studentDrop: rates });
    const b = await Distiller.create({ ...config, studentDrop: rates });
    t.same(a.info().studentDrop, rates, 'info reports the effective rates');
    t.same(plain.info().studentDrop, { dropPath: 0, attnDrop: 0, projDrop: 0, posDrop: 0, headDrop: 0 });
    const probe = tileBatch(2, 99);
    t.same(
      Array.from((await a.features(probe, 'student')).data),
      Array.from((await plain.features(probe, 'student')).data),
      'features before training: the same as without rates (no dropout in features)',
    );
    const la: number[] = [],
      lb: number[] = [],
      lp: number[] = [];
    for (let s = 0; s < 3; s++) {
      const batch = tileBatch(4, s);
      la.push((await a.step(batch)).loss);
      lb.push((await b.step(batch)).loss);
      lp.push((await plain.step(batch)).loss);
    }
    t.same(la, lb, 'the same seed draws the same masks, step by step');
    t.ok(
      la.every((l, i) => l !== lp[i]),
      'non-zero rates change every step (not silently zero)',
    );
    t.same(
      Array.from((await a.features(probe, 'teacher')).data),
      Array.from((await plain.features(probe, 'teacher')).data),
      'the teacher is untouched',
    );
    t.same(
      Array.from((await a.features(probe, 'student')).data),
      Array.from((await a.features(probe, 'student')).data),
      'features are deterministic',
    );
    await t.rejects(
      Distiller.create({ ...config, studentDrop: { hiddenDrop: 0.1 } }),
      /studentDrop\.hiddenDrop is not a rate of a timm/,
    );
  },
);

t.test(
  "native Distiller: rates in the teacher's config.json never apply (its steps and features are those of the plain teacher)",
  async (t) => {
    const { Distiller } = await import('../../lib/distill/distiller.js');
    const { syntheticTile } = await import('../../lib/distill/tiles.js');
    const tileBatch = (b: number, seed: number) => {
      const n = 256 * 256 * 3;
      const data = new Uint8Array(b * n);
      for (let i = 0; i < b; i++) syntheticTile(seed * 7000 + i, 256, data, i * n);
      return { data, shape: [b, 256, 256, 3] };
    };
    const teacherWithRates = withConfig(t, 'timm_giant_reg4_swiglu', (c) => {
      Object.assign(c.model_args, {
        drop_path_rate: 1,
        attn_drop_rate: 0.5,
        proj_drop_rate: 0.5,
        pos_drop_rate: 0.5,
        drop_rate: 0.5,
      });
    });
    const config = {
      student: modelFolder('hf_dinov2_gelu'),
      totalSteps: 3,
      lr: 1e-3,
      seed: 1,
      backend: 'native' as const,
    };
    const plain = await Distiller.create({ ...config, teacher: modelFolder('timm_giant_reg4_swiglu') });
    const rated = await Distiller.create({ ...config, teacher: teacherWithRates });
    for (let s = 0; s < 2; s++) {
      const batch = tileBatch(4, s);
      t.equal((await rated.step(batch)).loss, (await plain.step(batch)).loss, `step ${s}: the same loss`);
    }
    const probe = tileBatch(2, 5);
    t.same(
      Array.from((await rated.features(probe, 'teacher')).data),
      Array.from((await plain.features(probe, 'teacher')).data),
      'the same teacher features',
    );
  },
);
