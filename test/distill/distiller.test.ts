// The Distiller on the CPU with the tiny timm teacher and HF student of test/fixtures/models: deterministic steps,
// a frozen teacher, a student that moves, save/load that continues exactly, and errors that name the problem.
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Distiller, type DistillerConfig } from '../../lib/distill/distiller.js';
import { openTileSource, syntheticTile } from '../../lib/distill/tiles.js';
import { UserError } from '../../lib/errors.js';
import { ROOT } from '../helpers/cli.js';

const config: DistillerConfig = {
  teacher: path.join(ROOT, 'test/fixtures/models/timm_giant_reg4_swiglu'),
  student: path.join(ROOT, 'test/fixtures/models/hf_dinov2_reg_swiglu'),
  totalSteps: 10,
  lr: 1e-3,
  seed: 5,
};

function tiles(b: number, seed: number) {
  const n = 256 * 256 * 3;
  const data = new Uint8Array(b * n);
  for (let i = 0; i < b; i++) syntheticTile(seed * 1000 + i, 256, data, i * n);
  return { data, shape: [b, 256, 256, 3] };
}

const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => v === b[i]);

t.test('steps are deterministic, the teacher stays frozen, the student moves', async (t) => {
  const a = await Distiller.create(config);
  const b = await Distiller.create(config);
  const info = a.info();
  t.equal(info.teacherDim, 32);
  t.equal(info.studentDim, 32);
  t.equal(info.step, 0);
  const probe = tiles(4, 99);
  const teacherBefore = await a.features(probe, 'teacher');
  const studentBefore = await a.features(probe, 'student');
  t.same(teacherBefore.shape, [4, 32]);
  for (let s = 0; s < 3; s++) {
    const batch = tiles(4, s);
    const ra = await a.step(batch);
    const rb = await b.step(batch);
    t.equal(ra.step, s);
    t.ok(Number.isFinite(ra.loss) && ra.gradNorm > 0, `step ${s}: loss ${ra.loss}, grad norm ${ra.gradNorm}`);
    t.equal(ra.loss, rb.loss, `step ${s}: same loss in two Distillers of one seed`);
    t.equal(ra.gradNorm, rb.gradNorm);
    if (s === 0) {
      t.equal(ra.lr, 1e-3, 'no warm-up: the peak learning rate');
      t.equal(ra.weightDecay, 0.05);
    }
  }
  t.equal(a.stepsTaken, 3);
  t.ok(same((await a.features(probe, 'teacher')).data, teacherBefore.data), 'teacher features unchanged: frozen');
  t.notOk(same((await a.features(probe, 'student')).data, studentBefore.data), 'student features changed');
});

t.test('save + load into a fresh Distiller continues exactly', async (t) => {
  const dir = path.join(mkdtempSync(path.join(os.tmpdir(), 'g2l-distiller-')), 'step-2');
  const a = await Distiller.create(config);
  await a.step(tiles(4, 0));
  await a.step(tiles(4, 1));
  await a.save(dir, { note: 'kept' });
  const third = await a.step(tiles(4, 2));
  const b = await Distiller.create(config);
  const extra = await b.load(dir);
  t.same(extra, { note: 'kept' }, 'the caller state comes back');
  t.equal(b.stepsTaken, 2);
  const again = await b.step(tiles(4, 2));
  t.equal(again.loss, third.loss, 'the same third step');
  t.equal(again.gradNorm, third.gradNorm);
  t.equal(again.lr, third.lr);
  const probe = tiles(3, 7);
  t.ok(same((await a.features(probe, 'student')).data, (await b.features(probe, 'student')).data), 'the same student');
});

t.test('errors name the problem', async (t) => {
  const d = await Distiller.create({ ...config, accumulationSteps: 2 });
  await t.rejects(d.step(tiles(2, 0)), /micro-batches of at least 2/);
  await t.rejects(
    d.step({ data: new Uint8Array(2 * 100 * 100 * 3), shape: [2, 100, 100, 3] }),
    /smaller than the crop \(224\)/,
  );
  const r = await d.step(tiles(4, 0));
  t.ok(Number.isFinite(r.loss), 'accumulation over 2 micro-batches runs');
  await t.rejects(Distiller.create({ ...config, teacher: path.join(ROOT, 'no-such-model') }), UserError);
  await t.rejects(Distiller.create({ ...config, totalSteps: 0 }), /totalSteps must be a positive integer/);
  await t.rejects(
    Distiller.create({ ...config, reduction: 'mean' as 'batch' }),
    /reduction must be "batch" or "sample"/,
  );
  await t.rejects(d.load(path.join(ROOT, 'test')), /not a g2l-native checkpoint/);
});

t.test('step({ stop }): the request comes back in the result (one process: its own), on both backends', async (t) => {
  for (const backend of ['native', 'js'] as const) {
    const d = await Distiller.create({ ...config, backend });
    t.equal((await d.step(tiles(2, 1))).stop, false, `${backend}: no request, no stop`);
    t.equal((await d.step(tiles(2, 2), { stop: true })).stop, true, `${backend}: a request comes back`);
    t.equal((await d.step(tiles(2, 3), { stop: false })).stop, false, `${backend}: and is not remembered`);
  }
});

t.test('tile buffers: batches filled into one reused buffer step like fresh ones', async (t) => {
  const source = await openTileSource('synthetic:64', { seed: 3, tileSizePx: 256 });
  const a = await Distiller.create(config);
  const b = await Distiller.create(config);
  const buffer = b.allocateTileBuffer(4 * 256 * 256 * 3);
  t.ok(buffer instanceof Uint8Array && buffer.length === 4 * 256 * 256 * 3, 'a Uint8Array of the size asked for');
  for (let s = 0; s < 3; s++) {
    const fresh = await source.batch(s, 4);
    const reused = await source.batch(s, 4, null, buffer);
    t.equal(reused.data, buffer, `step ${s}: the batch is the buffer itself`);
    t.ok(Buffer.from(reused.data).equals(Buffer.from(fresh.data)), `step ${s}: the same tiles`);
    t.equal((await b.step(reused)).loss, (await a.step(fresh)).loss, `step ${s}: the same loss`);
  }
  await t.rejects(source.batch(0, 2, null, buffer), RangeError, 'a buffer of another size is refused');
  await source.close();
});

t.test('CUDA: fp16 teacher, bf16-autocast student, fused loss', async (t) => {
  const { NativeBackend, loadEngineAddon } = await import('../../lib/backends/index.js');
  if (!(await new NativeBackend(loadEngineAddon()).info()).cudaAvailable) {
    t.skip('no CUDA device here: this runs on a GPU host', () => {});
    return;
  }
  const gpu = await Distiller.create({ ...config, device: 'cuda' });
  const cpu = await Distiller.create(config);
  const probe = tiles(4, 99);
  const tg = await gpu.features(probe, 'teacher');
  const tc = await cpu.features(probe, 'teacher');
  let worst = 0;
  tc.data.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - tg.data[i]))));
  t.ok(worst < 5e-2, `fp16 teacher on CUDA vs fp32 on the CPU: ${worst}`);
  for (let s = 0; s < 3; s++) {
    const batch = tiles(8, s);
    const rg = await gpu.step(batch);
    const rc = await cpu.step(batch);
    t.ok(
      Number.isFinite(rg.loss) && rg.deviceMemoryBytes > 0,
      `step ${s}: cuda loss ${rg.loss}, cpu ${rc.loss}, ${rg.deviceMemoryBytes} bytes`,
    );
    if (s === 0)
      t.ok(
        Math.abs(rg.loss - rc.loss) < 0.05 * Math.abs(rc.loss),
        'first step: the same loss within bf16/fp16 rounding',
      );
  }
  // Page-locked tile buffers (asynchronous uploads): the same results as pageable tiles, refilled between calls.
  const pinnedGpu = await Distiller.create({ ...config, device: 'cuda' });
  const plainGpu = await Distiller.create({ ...config, device: 'cuda' });
  const buffer = pinnedGpu.allocateTileBuffer(8 * 256 * 256 * 3);
  for (let s = 0; s < 3; s++) {
    const batch = tiles(8, 10 + s);
    buffer.set(batch.data);
    const rp = await pinnedGpu.step({ data: buffer, shape: batch.shape });
    const rq = await plainGpu.step(batch);
    // Not bit-equal necessarily (attention's backward may use atomics), but a copy read before it landed would give
    // another batch's loss, far outside 1e-3.
    t.ok(Math.abs(rp.loss - rq.loss) <= 1e-3 * Math.abs(rq.loss), `pinned step ${s}: loss ${rp.loss} vs ${rq.loss}`);
  }
});
