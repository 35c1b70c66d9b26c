// The log-sum loss against float64 autograd of the unfused formula (tools/make_loss_fixtures.py, torch 2.11), on
// the native engine (float64 and float32) and the pure-JS backend, and its gradients against finite differences.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsBackend, NativeBackend, loadEngineAddon } from '../../lib/backends/index.js';
import type { Backend, FloatTensor, LogSumLossOptions } from '../../lib/backends/index.js';
import { logSumLoss } from '../../lib/distill/loss.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'loss');

interface Fixture {
  name: string;
  options: { alpha: number; reduction: 'batch' | 'sample'; bnEps: number; teacherBn: boolean };
  zs: { shape: number[]; data: number[] };
  zt: { shape: number[]; data: number[] };
  W: { shape: number[]; data: number[] };
  b: { shape: number[]; data: number[] };
  loss: number;
  grads: { zs: number[]; W: number[]; b: number[] };
}

const fixtures: Fixture[] = readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(readFileSync(path.join(FIXTURES, f), 'utf8')));

function tensor(x: { shape: number[]; data: number[] }, f32: boolean): FloatTensor {
  return { shape: x.shape, data: f32 ? Float32Array.from(x.data) : Float64Array.from(x.data) };
}

/**
 * max |a - b| / max(max |b|, 1e-3): the error relative to the reference's scale. The floor matters for d/db, which is
 * zero in exact arithmetic (the student-side BN removes any shift of p), so both sides hold rounding noise there.
 */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 1e-3;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

const backends: [string, () => Backend][] = [
  ['native', () => new NativeBackend(loadEngineAddon())],
  ['js', () => new JsBackend()],
];

t.ok(fixtures.length >= 6, 'the fixtures are present (run tools/make_loss_fixtures.py)');

for (const [name, make] of backends) {
  t.test(`${name}: loss and gradients match float64 autograd`, async (t) => {
    const backend = make();
    for (const fx of fixtures) {
      for (const f32 of [false, true]) {
        // float64 in -> float64 computation (tight); float32 -> float32 computation (loose).
        const tol = f32 ? 2e-4 : 1e-10;
        const opts: LogSumLossOptions = { ...fx.options, W: tensor(fx.W, f32), b: tensor(fx.b, f32) };
        const r = await backend.logSumLoss(tensor(fx.zs, f32), tensor(fx.zt, f32), opts);
        const label = `${fx.name} ${f32 ? 'float32' : 'float64'}`;
        t.ok(
          Math.abs(r.loss - fx.loss) <= tol * Math.max(1, Math.abs(fx.loss)),
          `${label}: loss ${r.loss} vs ${fx.loss}`,
        );
        t.ok(r.grads.zs.data instanceof (f32 ? Float32Array : Float64Array), `${label}: gradients keep the dtype`);
        t.same(r.grads.W.shape, fx.W.shape);
        for (const k of ['zs', 'W', 'b'] as const) {
          const e = relErr(r.grads[k].data, fx.grads[k]);
          t.ok(e <= tol * (name === 'js' || !f32 ? 1 : 5), `${label}: d/d${k} relative error ${e.toExponential(2)}`);
        }
      }
    }
  });
}

t.test('gradients agree with central finite differences (native, float64)', async (t) => {
  const backend = new NativeBackend(loadEngineAddon());
  for (const fx of fixtures) {
    const zs = tensor(fx.zs, false);
    const zt = tensor(fx.zt, false);
    const W = tensor(fx.W, false);
    const b = tensor(fx.b, false);
    const base = await backend.logSumLoss(zs, zt, { ...fx.options, W, b });
    const h = 1e-6;
    let worst = 0;
    for (const [key, x] of [
      ['zs', zs],
      ['W', W],
      ['b', b],
    ] as const) {
      for (let i = 0; i < x.data.length; i += Math.max(1, Math.floor(x.data.length / 7))) {
        const v = x.data[i];
        x.data[i] = v + h;
        const up = (await backend.logSumLoss(zs, zt, { ...fx.options, W, b })).loss;
        x.data[i] = v - h;
        const down = (await backend.logSumLoss(zs, zt, { ...fx.options, W, b })).loss;
        x.data[i] = v;
        const numeric = (up - down) / (2 * h);
        const analytic = base.grads[key].data[i];
        worst = Math.max(worst, Math.abs(numeric - analytic) / Math.max(1e-3, Math.abs(analytic)));
      }
    }
    t.ok(worst < 1e-5, `${fx.name}: worst relative difference ${worst.toExponential(2)}`);
  }
});

t.test('the library function runs on either backend and rejects bad shapes', async (t) => {
  const fx = fixtures[0];
  const args = [tensor(fx.zs, false), tensor(fx.zt, false)] as const;
  for (const backend of ['native', 'js'] as const) {
    const r = await logSumLoss(...args, { ...fx.options, W: tensor(fx.W, false), b: tensor(fx.b, false), backend });
    t.ok(Math.abs(r.loss - fx.loss) < 1e-10, `${backend}: loss`);
    await t.rejects(
      logSumLoss(args[0], args[1], { W: tensor(fx.zs, false), b: tensor(fx.b, false), backend }),
      /W \(Dt,Ds\)|expected zs/,
      `${backend}: a projector of the wrong shape is refused`,
    );
    await t.rejects(
      logSumLoss(args[0], args[1], {
        W: tensor(fx.W, false),
        b: tensor(fx.b, false),
        reduction: 'mean' as 'batch',
        backend,
      }),
      /reduction must be "batch" or "sample"/,
    );
  }
  const one = { shape: [1, fx.zs.shape[1]], data: Float64Array.from(fx.zs.data.slice(0, fx.zs.shape[1])) };
  const oneT = { shape: [1, fx.zt.shape[1]], data: Float64Array.from(fx.zt.data.slice(0, fx.zt.shape[1])) };
  await t.rejects(
    logSumLoss(one, oneT, { W: tensor(fx.W, false), b: tensor(fx.b, false), backend: 'native' }),
    /at least 2 samples/,
  );
});

t.test('CUDA: the fused kernels match float64 autograd (float32)', async (t) => {
  const backend = new NativeBackend(loadEngineAddon());
  const info = await backend.info();
  if (!info.cudaAvailable) {
    t.skip('no CUDA device here: this runs on a GPU host', () => {});
    return;
  }
  for (const fx of fixtures) {
    const opts: LogSumLossOptions = { ...fx.options, W: tensor(fx.W, true), b: tensor(fx.b, true), device: 'cuda' };
    const r = await backend.logSumLoss(tensor(fx.zs, true), tensor(fx.zt, true), opts);
    t.ok(
      Math.abs(r.loss - fx.loss) <= 2e-4 * Math.max(1, Math.abs(fx.loss)),
      `${fx.name}: loss ${r.loss} vs ${fx.loss}`,
    );
    for (const k of ['zs', 'W', 'b'] as const) {
      const e = relErr(r.grads[k].data, fx.grads[k]);
      t.ok(e <= 1e-3, `${fx.name}: d/d${k} relative error ${e.toExponential(2)}`);
    }
  }
  // A teacher-sized case (B 64, D 1536) on both devices: the fused path against the CPU's libtorch ops.
  const B = 64,
    Ds = 1024,
    Dt = 1536;
  let s = 1;
  const rand = (n: number) =>
    Float32Array.from({ length: n }, () => ((s = (s * 16807) % 2147483647) / 2147483647 - 0.5) * 2);
  const zs = { data: rand(B * Ds), shape: [B, Ds] };
  const zt = { data: rand(B * Dt), shape: [B, Dt] };
  const W = { data: rand(Dt * Ds).map((v) => v / 32), shape: [Dt, Ds] };
  const b = { data: rand(Dt), shape: [Dt] };
  for (const reduction of ['batch', 'sample'] as const) {
    const cpu = await backend.logSumLoss(zs, zt, { W, b, reduction });
    const gpu = await backend.logSumLoss(zs, zt, { W, b, reduction, device: 'cuda' });
    t.ok(
      Math.abs(cpu.loss - gpu.loss) <= 1e-4 * Math.abs(cpu.loss),
      `${reduction}: loss cpu ${cpu.loss} cuda ${gpu.loss}`,
    );
    t.ok(relErr(gpu.grads.zs.data, cpu.grads.zs.data) <= 1e-3, `${reduction}: d/dzs`);
  }
});
