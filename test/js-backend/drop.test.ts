// The js ViT's training-only dropout and drop path (lib/backends/js/vit.ts VitDrop): the train-mode outputs timm and
// transformers computed with one rate at 1 (tools/make_drop_fixtures.py -> test/fixtures/models/drop.json), the
// rates and scaling at intermediate rates with fixed seeds, the backward pass under the same masks against central
// finite differences, and eval unchanged.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { Mt19937 } from '../../lib/backends/js/augment.js';
import { JsDistiller, type JsDistillerConfig } from '../../lib/backends/js/distill.js';
import { loadJsModel } from '../../lib/backends/js/model.js';
import { NO_DROP, resolveVitSpec, studentRegularization, type Regularization } from '../../lib/models/spec.js';
import type { VitDrop } from '../../lib/backends/js/vit.js';
import { FIXTURES, floatImages, folder, tiles, u8Images } from './helpers.js';

const drop = JSON.parse(readFileSync(path.join(FIXTURES, 'drop.json'), 'utf8')) as {
  models: Record<string, Record<string, number[][]>>;
};
const x = floatImages(u8Images('images_224'));
const [B, , S] = x.shape;

function rates(r: Partial<Regularization>): Regularization {
  return { ...NO_DROP, ...r };
}

function dropOf(r: Partial<Regularization>, seed: number): VitDrop {
  const rng = new Mt19937(seed);
  return { rates: rates(r), random: () => rng.next() * 2 ** -32 };
}

function maxRel(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let d = 0,
    s = 0;
  for (let i = 0; i < e.length; i++) {
    d = Math.max(d, Math.abs(a[i] - e[i]));
    s = Math.max(s, Math.abs(e[i]));
  }
  return s === 0 ? (d === 0 ? 0 : Infinity) : d / s;
}

for (const [name, cases] of Object.entries(drop.models)) {
  t.test(`${name}: train-mode outputs of timm / transformers with one rate at 1`, async (t) => {
    const vit = loadJsModel(folder(name)).vit;
    const evalOut = vit.forward(x.data, B, S, S).embeddings;
    for (const [key, expected] of Object.entries(cases)) {
      for (const seed of [1, 2]) {
        const y = vit.forward(x.data, B, S, S, true, dropOf({ [key]: 1 }, seed)).embeddings;
        const err = maxRel(y, expected.flat());
        t.ok(err <= 1e-4, `${key} 1 (seed ${seed}): max relative error ${err.toExponential(2)} <= 1e-4`);
      }
    }
    t.same(
      Array.from(vit.forward(x.data, B, S, S, true, dropOf({}, 1)).embeddings),
      Array.from(evalOut),
      'all rates 0: train == eval',
    );
    t.same(
      Array.from(vit.forward(x.data, B, S, S, false, dropOf({ dropPath: 0.5, attnDrop: 0.5 }, 1)).embeddings),
      Array.from(evalOut),
      'without train, rates change nothing (eval)',
    );
  });
}

/** |k/n - p| <= 4.5 sigma. */
function withinBinomial(t: Test, k: number, n: number, p: number, what: string): void {
  const sigma = Math.sqrt((p * (1 - p)) / n);
  t.ok(
    Math.abs(k / n - p) <= 4.5 * sigma,
    `${what}: ${k} of ${n} = ${(k / n).toFixed(4)}, expected ${p} +- ${(4.5 * sigma).toFixed(4)}`,
  );
}

t.test('dropout at 0.3 (timm head drop): kept at 0.7, survivors exactly eval * float32(1/0.7)', async (t) => {
  const vit = loadJsModel(folder('timm_large_gelu')).vit;
  const xs = { data: x.data.subarray(0, 3 * 42 * 42 * 2), shape: [2, 3, 42, 42] }; // 42 px: a small, fast forward
  const z = vit.forward(xs.data, 2, 42, 42).embeddings;
  const scale = Math.fround(1 / 0.7);
  let dropped = 0,
    n = 0,
    bad = 0;
  for (let seed = 0; seed < 60; seed++) {
    const y = vit.forward(xs.data, 2, 42, 42, true, dropOf({ headDrop: 0.3 }, seed)).embeddings;
    for (let i = 0; i < y.length; i++) {
      n += 1;
      if (y[i] === 0) dropped += 1;
      else if (y[i] !== Math.fround(z[i] * scale)) bad += 1;
    }
  }
  withinBinomial(t, dropped, n, 0.3, 'dropped fraction');
  t.equal(bad, 0, 'every survivor scaled by exactly 1/keep');
});

t.test(
  'drop path at 0.5: timm linear schedule (block 1 only at depth 2), transformers every layer; survivors scaled by 1/keep',
  async (t) => {
    // timm_giant_reg4_swiglu: block 1's branches both kept and scaled by 2 = eval of a copy with ls1, ls2 doubled.
    const model = loadJsModel(folder('timm_giant_reg4_swiglu'));
    const scaled = loadJsModel(folder('timm_giant_reg4_swiglu'));
    for (const key of ['blocks.1.ls1.gamma', 'blocks.1.ls2.gamma']) {
      const g = scaled.vit.weights.get(key)!.data;
      for (let i = 0; i < g.length; i++) g[i] *= 2;
    }
    const xs = x.data.subarray(0, 3 * 42 * 42 * 2);
    const bothKept = scaled.vit.forward(xs, 2, 42, 42).embeddings;
    const D = model.spec.embedDim;
    // Both dropped: block 1 contributes nothing, as with dropPath 1.
    const bothDropped = model.vit.forward(xs, 2, 42, 42, true, dropOf({ dropPath: 1 }, 0)).embeddings;
    const same = (y: Float32Array, b: number, ref: Float32Array) =>
      maxRel(y.subarray(b * D, (b + 1) * D), ref.subarray(b * D, (b + 1) * D)) <= 1e-5;
    let kept = 0,
      gone = 0,
      other = 0,
      n = 0;
    for (let seed = 0; seed < 300; seed++) {
      const y = model.vit.forward(xs, 2, 42, 42, true, dropOf({ dropPath: 0.5 }, seed)).embeddings;
      for (let b = 0; b < 2; b++) {
        n += 1;
        if (same(y, b, bothKept)) kept += 1;
        else if (same(y, b, bothDropped)) gone += 1;
        else other += 1;
      }
    }
    withinBinomial(t, kept, n, 0.25, 'timm: both branches of block 1 kept, scaled by 2');
    withinBinomial(t, gone, n, 0.25, 'timm: both dropped');
    withinBinomial(t, other, n, 0.5, 'timm: one kept');

    const hf = loadJsModel(folder('hf_dinov2_gelu')).vit;
    const allDropped = hf.forward(xs, 2, 42, 42, true, dropOf({ dropPath: 1 }, 0)).embeddings;
    let hits = 0,
      m = 0;
    for (let seed = 0; seed < 600; seed++) {
      const y = hf.forward(xs, 2, 42, 42, true, dropOf({ dropPath: 0.5 }, seed)).embeddings;
      for (let b = 0; b < 2; b++) {
        m += 1;
        if (same(y, b, allDropped)) hits += 1;
      }
    }
    withinBinomial(t, hits, m, 1 / 16, 'transformers: all four branches dropped (the same rate in both layers)');
  },
);

t.test(
  'the backward pass under dropout and drop path agrees with central finite differences (same masks)',
  async (t) => {
    const all: Record<string, Partial<Regularization>> = {
      timm: { dropPath: 0.4, attnDrop: 0.3, projDrop: 0.3, posDrop: 0.2, headDrop: 0.2 },
      hf: { dropPath: 0.4, attnDrop: 0.3, hiddenDrop: 0.3 },
    };
    for (const name of ['timm_giant_reg4_swiglu', 'timm_large_gelu', 'hf_dinov2_gelu', 'hf_dinov2_reg_swiglu']) {
      const vit = loadJsModel(folder(name)).vit;
      const r = all[vit.spec.layout];
      const D = vit.spec.embedDim,
        Bn = 2,
        Sz = 42;
      let seed = 7;
      const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
      const xi = new Float32Array(Bn * 3 * Sz * Sz).map(rnd);
      const w8 = new Float32Array(Bn * D).map(rnd);
      // The same masks in every forward: a fresh generator of the same seed draws them in the same order.
      const f = () => {
        const e = vit.forward(xi, Bn, Sz, Sz, true, dropOf(r, 99)).embeddings;
        let s = 0;
        for (let i = 0; i < w8.length; i++) s += w8[i] * e[i];
        return s;
      };
      const { cache } = vit.forward(xi, Bn, Sz, Sz, true, dropOf(r, 99));
      t.ok(
        cache!.blocks.some((c) => c.aMask !== null) && cache!.blocks.some((c) => c.ac.mask !== undefined),
        `${name}: masks in the cache`,
      );
      const grads = new Map<string, Float32Array>();
      vit.backward(cache!, w8, grads);
      let worst = 0,
        nonzero = 0;
      for (const key of vit.trainableKeys()) {
        const w = vit.weights.get(key)!.data,
          g = grads.get(key)!;
        for (let k = 0; k < 3; k++) {
          const i = Math.floor(((rnd() + 1) / 2) * w.length);
          const old = w[i],
            h = 1e-2 * Math.max(1, Math.abs(old));
          w[i] = old + h;
          const fp = f();
          w[i] = old - h;
          const fm = f();
          w[i] = old;
          const fd = (fp - fm) / (2 * h);
          if (Math.abs(fd) > 1e-3) nonzero += 1;
          worst = Math.max(worst, Math.abs(fd - g[i]) / Math.max(1e-2, Math.abs(fd)));
        }
      }
      t.ok(nonzero > 10, `${name}: ${nonzero} probed gradients are non-zero`);
      t.ok(worst < 3e-2, `${name}: worst relative difference ${worst.toExponential(2)} < 3e-2`);
    }
  },
);

t.test('studentRegularization: config rates, overrides, refusals (as the engine)', async (t) => {
  const timm = resolveVitSpec(folder('timm_large_gelu'));
  const hf = resolveVitSpec(folder('hf_dinov2_gelu'));
  t.same(studentRegularization(timm), NO_DROP, 'fixtures carry no rates');
  t.equal(studentRegularization(timm, { dropPath: 0.1 }).dropPath, 0.1);
  t.equal(studentRegularization(hf, { hiddenDrop: 0.2 }).hiddenDrop, 0.2);
  t.throws(() => studentRegularization(hf, { projDrop: 0.1 }), /studentDrop\.projDrop is not a rate of a transformers/);
  t.throws(() => studentRegularization(timm, { hiddenDrop: 0.1 }), /studentDrop\.hiddenDrop is not a rate of a timm/);
  t.throws(() => studentRegularization(timm, { attnDrop: 2 }), /must be a rate in \[0, 1\]/);
  t.throws(
    () => studentRegularization({ ...timm, drop: { ...NO_DROP, patchDrop: 0.25 } }),
    /patch_drop_rate 0\.25.*not supported/,
  );
  t.same(studentRegularization({ ...timm, drop: { ...NO_DROP, patchDrop: 0.25 } }, { patchDrop: 0 }).patchDrop, 0);
});

t.test(
  'js Distiller: non-zero studentDrop changes the step, is seeded per step, resumes exactly, never touches the teacher',
  async (t) => {
    const config = (over: Partial<JsDistillerConfig> = {}): JsDistillerConfig => ({
      teacher: folder('timm_giant_reg4_swiglu'),
      student: folder('hf_dinov2_reg_swiglu'),
      seed: 11,
      device: 'cpu',
      loss: { alpha: 4, reduction: 'batch', bnEps: 1e-4, teacherBn: true },
      optimizer: { lr: 1e-3, weightDecay: 0.05, totalSteps: 4 },
      augment: { crop: 42 },
      ...over,
    });
    const rates = { dropPath: 0.3, attnDrop: 0.2, hiddenDrop: 0.2 };
    const batches = [1, 2, 3, 4].map((s) => tiles(2, 48, s));
    const plain = await JsDistiller.create(config());
    const dropped = await JsDistiller.create(config({ studentDrop: rates }));
    const again = await JsDistiller.create(config({ studentDrop: rates }));
    t.same(
      dropped.info().studentDrop,
      { dropPath: 0.3, attnDrop: 0.2, hiddenDrop: 0.2 },
      'info reports the effective rates',
    );
    t.same(plain.info().studentDrop, { dropPath: 0, attnDrop: 0, hiddenDrop: 0 });
    const lp: number[] = [],
      ld: number[] = [],
      la: number[] = [];
    for (const x of batches) {
      lp.push((await plain.step(x)).loss);
      ld.push((await dropped.step(x)).loss);
      la.push((await again.step(x)).loss);
    }
    t.notSame(ld, lp, 'non-zero rates change the losses (not silently zero)');
    t.same(la, ld, 'the same seed gives the same masks, step by step');
    // features() (eval) after the same weights: deterministic, no dropout.
    const probe = tiles(2, 48, 9);
    t.same(
      Array.from((await dropped.features(probe, 'student')).data),
      Array.from((await dropped.features(probe, 'student')).data),
      'features are deterministic',
    );
    t.same(
      Array.from((await dropped.features(probe, 'teacher')).data),
      Array.from((await plain.features(probe, 'teacher')).data),
      'the teacher is untouched',
    );
    // Resume: 2 steps, save, load, 2 steps == 4 straight, bit for bit.
    const first = await JsDistiller.create(config({ studentDrop: rates }));
    for (const x of batches.slice(0, 2)) await first.step(x);
    const ckpt = path.join(t.testdir(), 'step-2');
    await first.save(ckpt);
    const resumed = await JsDistiller.create(config({ studentDrop: rates }));
    await resumed.load(ckpt);
    for (const x of batches.slice(2)) await resumed.step(x);
    let worst = 0;
    for (const [k, v] of dropped.trainedState()) {
      const w = resumed.trainedState().get(k)!;
      for (let i = 0; i < v.length; i++) worst = Math.max(worst, Math.abs(v[i] - w[i]));
    }
    t.equal(worst, 0, 'resumed weights bit-identical to the straight run');
    await t.rejects(
      JsDistiller.create(config({ studentDrop: { projDrop: 0.1 } })),
      /studentDrop\.projDrop is not a rate of a transformers/,
    );
  },
);
