// Gated-attention MIL (ABMIL) on both backends against a float64 PyTorch implementation written for the test
// (tools/make_abmil_fixtures.py, test/fixtures/mil/abmil.json): forward, loss and gradients to 1e-6, 5 full-batch AdamW
// steps to the same weights, and a plan of single-bag steps with validation and early stopping to the same best epoch
// and weights.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { JsBackend, NativeBackend, loadEngineAddon } from '../../lib/backends/index.js';
import type { MilBackend, MilBags, MilParams } from '../../lib/backends/types.js';

const fx = JSON.parse(readFileSync(path.join(import.meta.dirname, '..', 'fixtures', 'mil', 'abmil.json'), 'utf8'));

type Nested = number | Nested[];
const shapeOf = (v: Nested): number[] => (Array.isArray(v) ? [v.length, ...shapeOf(v[0])] : []);
const tensor = (v: Nested, f64 = true) => ({
  data: f64
    ? Float64Array.from((v as number[]).flat(Infinity as 1) as number[])
    : Float32Array.from((v as number[]).flat(Infinity as 1) as number[]),
  shape: shapeOf(v),
});
const params = (p: Record<string, Nested>, f64 = true): MilParams =>
  Object.fromEntries(Object.entries(p).map(([k, v]) => [k, tensor(v, f64)]));
const bags = (b: { features: Nested; offsets: number[]; labels: number[] }, f64 = true): MilBags => ({
  features: tensor(b.features, f64),
  offsets: b.offsets,
  labels: b.labels,
});

function worst(got: MilParams, want: Record<string, Nested>): number {
  let w = 0;
  for (const [k, v] of Object.entries(want)) {
    const flat = (v as number[]).flat(Infinity as 1) as number[];
    if (!got[k]) return Infinity;
    flat.forEach((x, i) => (w = Math.max(w, Math.abs(x - got[k].data[i]))));
  }
  return w;
}

const backends: [string, MilBackend][] = [['js', new JsBackend()]];
try {
  backends.unshift(['native', new NativeBackend(loadEngineAddon())]);
} catch (e) {
  t.fail(`the native engine must load for this test: ${(e as Error).message}`);
}

for (const [name, b] of backends) {
  t.test(`${name}: forward, loss and gradients equal float64 PyTorch's to 1e-6`, async (t) => {
    const r = await b.abmilLoss(params(fx.params), bags(fx.bags));
    t.ok(Math.abs(r.loss - fx.loss) <= 1e-6, `loss ${r.loss} vs ${fx.loss}`);
    const w = worst(r.grads, fx.grads);
    t.ok(w <= 1e-6, `every gradient within ${w.toExponential(2)} <= 1e-6`);
    const proba = await b.abmilPredict(params(fx.params), bags(fx.bags));
    t.same(proba.shape, [6, 3]);
    const p = worst({ proba }, { proba: fx.proba });
    t.ok(p <= 1e-6, `probabilities within ${p.toExponential(2)}`);
  });

  t.test(`${name}: 5 full-batch AdamW steps give PyTorch's weights to 1e-6`, async (t) => {
    const all = [0, 1, 2, 3, 4, 5];
    const r = await b.abmilTrain(params(fx.params), bags(fx.bags), null, {
      epochs: [fx.full_batch.lr.map(() => all)],
      lr: fx.full_batch.lr,
      weightDecay: fx.full_batch.weight_decay,
      patience: 0,
    });
    const w = worst(r.params, fx.full_batch.params);
    t.ok(w <= 1e-6, `weights within ${w.toExponential(2)} <= 1e-6`);
    t.equal(r.epochsRun, 1);
    t.equal(r.bestEpoch, 0, 'without validation bags: the last epoch');
    t.ok(r.params['fc.weight'].data instanceof Float64Array, 'float64 in, float64 out');
  });

  t.test(
    `${name}: single-bag steps with validation: early stopping at PyTorch's epoch, the best weights kept`,
    async (t) => {
      const plan = fx.plan;
      const r = await b.abmilTrain(params(fx.params), bags(fx.bags), bags(fx.val), {
        epochs: plan.epochs,
        lr: plan.lr,
        weightDecay: plan.weight_decay,
        patience: plan.patience,
      });
      t.equal(r.epochsRun, plan.epochs_run, `stopped after ${plan.epochs_run} of ${plan.epochs.length} epochs`);
      t.equal(r.bestEpoch, plan.best_epoch);
      r.valLoss.forEach((v, i) =>
        t.ok(Math.abs(v - plan.val_loss[i]) <= 1e-6, `epoch ${i} val loss ${v} vs ${plan.val_loss[i]}`),
      );
      r.trainLoss.forEach((v, i) =>
        t.ok(Math.abs(v - plan.train_loss[i]) <= 1e-6, `epoch ${i} train loss ${v} vs ${plan.train_loss[i]}`),
      );
      const w = worst(r.params, plan.params);
      t.ok(w <= 1e-6, `the best epoch's weights within ${w.toExponential(2)} <= 1e-6`);
    },
  );

  t.test(`${name}: bad input is refused with one message`, async (t) => {
    const p = params(fx.params);
    delete p['classifier.bias'];
    await t.rejects(b.abmilLoss(p, bags(fx.bags)), /classifier\.bias is missing/);
    await t.rejects(
      b.abmilLoss(params(fx.params), { ...bags(fx.bags), offsets: [0, 3, 3, fx.bags.features.length] }),
      /every bag needs at least one tile|bag offsets/,
    );
    await t.rejects(
      b.abmilLoss(params(fx.params), { ...bags(fx.bags), labels: [0, 1, 2, 3, 0, 1] }),
      /label 3 outside the 3 classes/,
    );
  });
}

t.test('float32: the engine and the js twin agree on losses, gradients and probabilities', async (t) => {
  if (backends.length < 2) return;
  const [n, j] = [backends[0][1], backends[1][1]];
  const a = await n.abmilLoss(params(fx.params, false), bags(fx.bags, false));
  const c = await j.abmilLoss(params(fx.params, false), bags(fx.bags, false));
  t.ok(
    a.grads['fc.weight'].data instanceof Float32Array && c.grads['fc.weight'].data instanceof Float32Array,
    'float32 in, float32 out',
  );
  t.ok(Math.abs(a.loss - c.loss) <= 1e-6 * Math.abs(c.loss), `loss ${a.loss} vs ${c.loss}`);
  const w = worst(a.grads, Object.fromEntries(Object.entries(c.grads).map(([k, v]) => [k, Array.from(v.data)])));
  t.ok(w <= 1e-6, `gradients within ${w.toExponential(2)} (float32 rounding)`);
  const pa = await n.abmilPredict(params(fx.params, false), bags(fx.bags, false));
  const pc = await j.abmilPredict(params(fx.params, false), bags(fx.bags, false));
  t.ok(worst({ p: pa }, { p: Array.from(pc.data) }) <= 1e-6, 'probabilities');
});
