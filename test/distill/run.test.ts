// Distillation runs end to end on the CPU with the tiny timm teacher and HF student of test/fixtures/models:
// exact resume, refused config changes, NaN stop, config files, early stopping, and SIGINT in a real child process.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readModelWeights } from '../../lib/backends/js/safetensors.js';
import { ExitCode, UserError } from '../../lib/errors.js';
import { EarlyStopping } from '../../lib/distill/early-stop.js';
import { listCheckpoints, readLog, runDistill } from '../../lib/distill/run.js';
import { readConfigFile, mergeInputs, resolveConfig, upgradeSavedConfig } from '../../lib/distill/config.js';
import { BIN, ROOT, VENV_PYTHON, childEnv, runProcess } from '../helpers/cli.js';
import { getBackend } from '../../lib/backends/index.js';
import { syntheticTile } from '../../lib/distill/tiles.js';
import { writeNpy } from '../../lib/io/npy.js';

const TEACHER = path.join(ROOT, 'test/fixtures/models/timm_giant_reg4_swiglu');
const STUDENT = path.join(ROOT, 'test/fixtures/models/hf_dinov2_reg_swiglu');
const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'g2l-distill-'));
const quiet = () => {};

const base = {
  teacher: TEACHER,
  student: STUDENT,
  slides: 'synthetic:40',
  batchSize: 4,
  seed: 3,
  checkpointEvery: 1000,
  optimizer: { lr: 1e-3, warmupSteps: 2 },
};

/** Largest absolute difference between two model folders' weights (Infinity when their keys differ). */
function maxAbsDiff(a: string, b: string): number {
  const wa = readModelWeights(a);
  const wb = readModelWeights(b);
  if ([...wa.keys()].sort().join() !== [...wb.keys()].sort().join()) return Infinity;
  let worst = 0;
  for (const [k, x] of wa) {
    const y = wb.get(k)!;
    for (let i = 0; i < x.data.length; i++) worst = Math.max(worst, Math.abs(x.data[i] - y.data[i]));
  }
  return worst;
}

t.test('N steps straight equal N/2 + resume + N/2 (max abs difference <= 1e-6)', async (t) => {
  const N = 8;
  const straight = path.join(tmp(), 'straight');
  const a = await runDistill({ out: straight, input: { ...base, steps: N }, log: quiet });
  t.equal(a.stepsDone, N);
  t.equal(a.stoppedBy, 'completed');
  t.ok(existsSync(path.join(straight, 'student', 'model.safetensors')), 'student exported');

  const halves = path.join(tmp(), 'halves');
  const b1 = await runDistill({ out: halves, input: { ...base, steps: N }, until: N / 2, log: quiet });
  t.equal(b1.stoppedBy, 'until');
  t.equal(b1.studentDir, null, 'a paused run does not export');
  t.same(
    (await listCheckpoints(halves)).map(([s]) => s),
    [N / 2],
  );
  const b2 = await runDistill({ out: halves, input: {}, resume: true, log: quiet });
  t.equal(b2.stepsDone, N);

  const diff = maxAbsDiff(path.join(straight, 'student'), path.join(halves, 'student'));
  t.ok(diff <= 1e-6, `student weights differ by ${diff}`);
  const la = await readLog(straight);
  const lb = await readLog(halves);
  t.same(
    lb.map((l) => l.step),
    la.map((l) => l.step),
    'one log line per step, none repeated',
  );
  t.same(
    lb.map((l) => l.loss),
    la.map((l) => l.loss),
    'the same losses, step by step',
  );
  t.same(
    lb.map((l) => l.lr),
    la.map((l) => l.lr),
    'the same schedule',
  );
  const cfg = JSON.parse(readFileSync(path.join(straight, 'config.json'), 'utf8'));
  t.equal(cfg.optimizer.weightDecay, 0.05, 'config.json holds the resolved defaults');
  t.equal(cfg.steps, N);
});

t.test(
  'student dropout and drop path: a run with non-zero studentDrop resumes exactly and differs from one without',
  async (t) => {
    // The HF student with drop path, attention and hidden dropout; the masks are a function of (seed, step).
    const N = 6;
    const drop = { ...base, steps: N, studentDrop: { dropPath: 0.3, attnDrop: 0.2, hiddenDrop: 0.2 } };
    const straight = path.join(tmp(), 'straight');
    const messages: string[] = [];
    await runDistill({ out: straight, input: drop, log: (m) => messages.push(m) });
    t.ok(
      messages.some((m) =>
        m.includes('student dropout / drop path in training: dropPath 0.3, attnDrop 0.2, hiddenDrop 0.2'),
      ),
      'the run says which rates are in use',
    );
    const halves = path.join(tmp(), 'halves');
    await runDistill({ out: halves, input: drop, until: N / 2, log: quiet });
    await runDistill({ out: halves, input: {}, resume: true, log: quiet });
    const diff = maxAbsDiff(path.join(straight, 'student'), path.join(halves, 'student'));
    t.ok(diff <= 1e-6, `student weights differ by ${diff}`);
    const la = await readLog(straight);
    t.same(
      (await readLog(halves)).map((l) => l.loss),
      la.map((l) => l.loss),
      'the same losses, step by step',
    );
    const plain = path.join(tmp(), 'plain');
    await runDistill({ out: plain, input: { ...base, steps: N }, log: quiet });
    const lp = await readLog(plain);
    t.not(lp[0].loss, la[0].loss, 'non-zero rates change the loss from the first step (not silently zero)');
    t.same(
      JSON.parse(readFileSync(path.join(straight, 'config.json'), 'utf8')).studentDrop,
      drop.studentDrop,
      'config.json holds studentDrop',
    );
    t.same(
      JSON.parse(readFileSync(path.join(plain, 'config.json'), 'utf8')).studentDrop,
      {},
      'default: {} (the student config.json rates)',
    );
    await t.rejects(
      runDistill({ out: halves, input: { studentDrop: { dropPath: 0.1 } }, resume: true, log: quiet }),
      /studentDrop\.dropPath: 0\.3 -> 0\.1/,
    );
  },
);

t.test('a resume that changes the configuration is refused with the differences, unless --force', async (t) => {
  const run = path.join(tmp(), 'run');
  await runDistill({ out: run, input: { ...base, steps: 4 }, until: 2, log: quiet });
  const refused = await runDistill({
    out: run,
    input: { optimizer: { lr: 5e-4 }, batchSize: 6 },
    resume: true,
    log: quiet,
  }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(refused instanceof UserError, 'refused');
  t.match((refused as Error).message, /optimizer\.lr: 0\.001 -> 0\.0005/);
  t.match((refused as Error).message, /batchSize: 4 -> 6/);
  t.match((refused as Error).message, /--force/);
  const messages: string[] = [];
  const r = await runDistill({
    out: run,
    input: { steps: 5 },
    resume: true,
    force: true,
    log: (m) => messages.push(m),
  });
  t.equal(r.stepsDone, 5);
  t.match(messages.join('\n'), /steps: 4 -> 5/);
  await t.rejects(
    runDistill({ out: run, input: { ...base, steps: 4 }, log: quiet }),
    /already holds a run: continue it with --resume/,
  );
  await t.rejects(
    runDistill({ out: path.join(tmp(), 'none'), input: {}, resume: true, log: quiet }),
    /nothing to resume/,
  );
});

t.test('a NaN/Inf loss stops the run, naming the step and the last good checkpoint', async (t) => {
  const run = path.join(tmp(), 'nan');
  const err = await runDistill({
    out: run,
    input: { ...base, steps: 12, checkpointEvery: 1, optimizer: { lr: 1e15 } },
    log: quiet,
  }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof UserError, 'a user error');
  const e = err as UserError;
  t.equal(e.exitCode, ExitCode.failure);
  const m = /the loss became (NaN|-?Infinity) at step (\d+).*Last good checkpoint: (\S+);/.exec(e.message);
  t.ok(m, e.message);
  if (m) {
    const step = Number(m[2]);
    t.equal(m[3], path.join(run, 'checkpoints', `step-${step - 1}`), 'the checkpoint of the step before');
    const last = (await listCheckpoints(run)).at(-1);
    t.equal(last?.[0], step - 1, 'nothing was saved after the bad step');
  }
});

t.test('config files (YAML, JSON) are validated; flags win over them', async (t) => {
  const dir = tmp();
  const yamlFile = path.join(dir, 'run.yaml');
  writeFileSync(
    yamlFile,
    'teacher: teacher-folder\nsteps: 100\noptimizer:\n  lr: 0.0002\n  warmupSteps: 10\nloss:\n  reduction: sample\n',
  );
  const fromFile = readConfigFile(yamlFile);
  t.equal(fromFile.teacher, path.join(dir, 'teacher-folder'), 'paths are relative to the file');
  const cfg = resolveConfig(mergeInputs(fromFile, { student: 's', slides: 'synthetic', optimizer: { lr: 3e-4 } }));
  t.equal(cfg.optimizer.lr, 3e-4, 'the flag wins');
  t.equal(cfg.optimizer.warmupSteps, 10, 'the file fills the rest of the group');
  t.equal(cfg.optimizer.weightDecay, 0.05, 'defaults fill what neither says');
  t.equal(cfg.loss.reduction, 'sample');
  const bad = path.join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ optimizer: { lr: -1 }, bogus: 1 }));
  t.throws(() => readConfigFile(bad), /bad\.json: .*optimizer\.lr.*/);
  t.throws(() => resolveConfig({ teacher: 'a', student: 'b', slides: 'synthetic' }), /no steps given: pass --steps/);
});

/** A deterministic noise source for the loss curves below (mulberry32). */
function noise(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

const rules = { window: 100, patience: 10, factor: 10, minSteps: 0 };
/** The step (1-based) at which `rule` stops on `losses`, or 0. */
function stopStep(losses: number[], settings: ConstructorParameters<typeof EarlyStopping>[0]): number {
  const e = new EarlyStopping(settings);
  for (let i = 0; i < losses.length; i++) if (e.update(losses[i]).stop) return i + 1;
  return 0;
}

t.test(
  'early stopping, rule total: the literal count of losses above the running mean of the previous window',
  async (t) => {
    const e = new EarlyStopping({ ...rules, rule: 'total', window: 3, patience: 2 });
    const decisions = [5, 4, 3, 2, 4, 1, 5, 6].map((l) => e.update(l).stop);
    // window full from the 4th loss: 2 < 4 (no), 4 > 3 (1), 1 < 3 (no), 5 > 2.33 (2), 6 > 3.33 (3 > patience)
    t.same(decisions, [false, false, false, false, false, false, false, true]);
    t.equal(e.exceeded, 3);
    // A noisy falling curve: about half its steps are above the mean of the window before them once it flattens, so
    // the count passes 10 long before 20,000 steps (the behaviour the rule name warns about).
    const r = noise(1);
    const falling = Array.from({ length: 20_000 }, (_, i) => 2 * Math.exp(-i / 4000) + 0.05 * r());
    const at = stopStep(falling, { ...rules, rule: 'total' });
    t.ok(at > 100 && at < 400, `total stops a falling noisy curve early, at step ${at}`);
  },
);

t.test('early stopping, rule consecutive: a falling noisy curve runs to the end, a plateau stops', async (t) => {
  // Falling by 1e-4 a step under uniform noise of +-0.01: a step is above the mean of the 100 before it (which lies
  // 5e-3 above the trend) with probability about 0.2, so 10 in a row (about 1e-7 a step) do not happen in 20,000
  // steps, while the literal count passes 10 within the first few hundred.
  const r = noise(2);
  const falling = Array.from({ length: 20_000 }, (_, i) => 3 - 2 * (i / 20_000) + 0.02 * r());
  t.equal(stopStep(falling, { ...rules, rule: 'consecutive' }), 0, 'never stops a falling noisy curve');
  const total = stopStep(falling, { ...rules, rule: 'total' });
  t.ok(total > 100 && total < 1000, `where rule total stops it at step ${total}`);
  // A falling curve, then a level above where it had fallen to: every step from 1001 on is above the running mean
  // of the 100 before it (which climbs towards 1.5 but reaches it only after 100 steps).
  const plateau = Array.from({ length: 2000 }, (_, i) => (i < 1000 ? 2 - i / 1000 : 1.5));
  t.equal(stopStep(plateau, { ...rules, rule: 'consecutive' }), 1010, 'stops after 10 steps in a row above the mean');
  // A streak that is broken starts again.
  const e = new EarlyStopping({ ...rules, rule: 'consecutive', window: 2, patience: 3 });
  const d = [1, 1, 2, 3, 1, 2, 3, 4].map((l) => e.update(l).stop);
  // means: 1 (2 > 1: 1), 1.5 (3: 2), 2.5 (1: 0), 2 (2: 0, not above), 1.5 (3: 1), 2.5 (4: 2)
  t.same(d, [false, false, false, false, false, false, false, false]);
  t.equal(e.streak, 2);
  const stop = e.update(10);
  t.ok(stop.stop, 'the third in a row stops');
  t.match(stop.reason!, /^consecutive: 3 steps in a row had a loss above the running mean of the previous 2/);
});

t.test('early stopping, rule ratio: a spike stops, noise does not', async (t) => {
  const r = noise(3);
  const losses = Array.from({ length: 500 }, (_, i) => 1 + 0.3 * r() + (i === 400 ? 50 : 0));
  t.equal(stopStep(losses, { ...rules, rule: 'ratio' }), 401, 'the spike at step 401 (50x the mean) stops');
  t.equal(stopStep(losses.slice(0, 400), { ...rules, rule: 'ratio' }), 0, 'noise alone never does');
  // The magnitude of a negative mean (the log-sum loss goes below zero when the features align).
  const negative = [...Array(100).fill(-2), 25];
  t.equal(stopStep(negative, { ...rules, rule: 'ratio' }), 101, '25 > 10 x |-2|');
});

t.test('early stopping: minSteps, and a resumed state decides as the uninterrupted one', async (t) => {
  const rising = Array.from({ length: 2000 }, (_, i) => (i < 1000 ? 2 - i / 1000 : 1 + (i - 1000) * 1e-3));
  t.equal(stopStep(rising, { ...rules, rule: 'consecutive', minSteps: 1500 }), 1500, 'no stop before minSteps');
  for (const rule of ['consecutive', 'total', 'ratio'] as const) {
    const settings = { ...rules, rule, window: 5, patience: 3, factor: 1.5 };
    const r = noise(4);
    const losses = Array.from({ length: 300 }, (_, i) => 1 + 0.2 * r() + (i > 200 ? (i - 200) * 0.01 : 0));
    const straight = new EarlyStopping(settings);
    const decisions = losses.map((l) => straight.update(l).stop);
    for (const cut of [3, 57, 150]) {
      const first = new EarlyStopping(settings);
      losses.slice(0, cut).forEach((l) => first.update(l));
      const saved = JSON.parse(JSON.stringify(first.snapshot()));
      const resumed = new EarlyStopping(settings, saved, cut);
      t.same(
        losses.slice(cut).map((l) => resumed.update(l).stop),
        decisions.slice(cut),
        `${rule}: resumed after ${cut} steps`,
      );
    }
  }
  // A checkpoint of an earlier version ({ recent, exceeded }) resumes with an empty streak and the caller's step count.
  const old = new EarlyStopping(
    { ...rules, rule: 'total', window: 3, patience: 2 },
    { recent: [1, 2, 3], exceeded: 2 },
    40,
  );
  t.same(old.snapshot(), { recent: [1, 2, 3], exceeded: 2, streak: 0, steps: 40 });
  t.ok(old.update(9).stop, 'the third exceedance stops (total)');
});

t.test(
  'a saved config.json without the newer keys resumes as it ran: the literal early-stopping count, global BatchNorm, uniform tiles',
  async (t) => {
    const saved = { earlyStopping: { enabled: true, window: 100, patience: 10 } };
    t.same((upgradeSavedConfig(saved) as typeof saved).earlyStopping, {
      rule: 'total',
      factor: 10,
      minSteps: 0,
      enabled: true,
      window: 100,
      patience: 10,
    });
    const old = upgradeSavedConfig({ ...saved, loss: { alpha: 4 } }) as { loss: object; tileSampling: string };
    t.same(old.loss, { sync: 'global', alpha: 4 });
    t.equal(old.tileSampling, 'tiles');
    // Engine choices read from G2L_* environment variables then: their defaults, and FP8 in all four layer kinds.
    const oldKernels = old as unknown as { kernels: object; teacherFp8Layers: string[]; distBucketBytes: number };
    t.same(oldKernels.kernels, {
      packQkv: true,
      fusedNorm: false,
      fusedSwiglu: true,
      fusedAdamw: 'auto',
      sdpa: 'auto',
      fp8Quant: 'cuda',
      fp8FastAccum: false,
    });
    t.same(oldKernels.teacherFp8Layers, ['qkv', 'proj', 'fc1', 'fc2']);
    t.equal(oldKernels.distBucketBytes, 25 * 1024 * 1024);
    const current = {
      tileSampling: 'slides',
      loss: { sync: 'local' },
      earlyStopping: { enabled: true, rule: 'ratio', window: 100, patience: 10, factor: 3, minSteps: 0 },
      kernels: {
        packQkv: false,
        fusedNorm: true,
        fusedSwiglu: true,
        fusedAdamw: 'on',
        sdpa: 'flash',
        fp8Quant: 'aten',
        fp8FastAccum: true,
      },
      teacherFp8Layers: ['qkv'],
      distBucketBytes: 1 << 20,
    };
    t.same(upgradeSavedConfig(current), current, 'a current config is unchanged');
    t.equal(
      resolveConfig({ teacher: 'a', student: 'b', slides: 'synthetic', steps: 5 }).earlyStopping.rule,
      'consecutive',
      'the default rule',
    );
  },
);

t.test('SIGINT writes a checkpoint and exits 130; --resume continues from it', async (t) => {
  const run = path.join(tmp(), 'sigint');
  const args = [
    BIN,
    'distill',
    '--teacher',
    TEACHER,
    '--student',
    STUDENT,
    '--slides',
    'synthetic:40',
    '--out',
    run,
    '--steps',
    '400',
    '--batch-size',
    '4',
    '--checkpoint-every',
    '1000',
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  // Interrupt once a few steps are logged.
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      const log = path.join(run, 'log.jsonl');
      if (existsSync(log) && readFileSync(log, 'utf8').split('\n').length > 3) {
        clearInterval(timer);
        child.kill('SIGINT');
        resolve();
      }
    }, 100);
    child.on('exit', () => {
      clearInterval(timer);
      reject(new Error(`the run ended before it was interrupted: ${stderr}`));
    });
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  t.equal(code, 130, stderr);
  t.match(stderr, /interrupted after step (\d+): checkpoint written to/);
  const steps = Number(/interrupted after step (\d+)/.exec(stderr)?.[1]);
  const cps = await listCheckpoints(run);
  t.equal(cps.at(-1)?.[0], steps, 'the checkpoint is of the last finished step');
  t.equal((await readLog(run)).length, steps, 'the log has every finished step');
  const r = await runDistill({ out: run, input: {}, resume: true, until: steps + 2, log: quiet });
  t.equal(r.stepsDone, steps + 2, 'resumed from the interrupted step');
});

t.test('--epochs plans steps from the tile count', async (t) => {
  const run = path.join(tmp(), 'epochs');
  const r = await runDistill({ out: run, input: { ...base, steps: undefined }, epochs: 0.5, until: 1, log: quiet });
  t.equal(r.config.steps, 5, 'half of 40 tiles in batches of 4');
  await t.rejects(
    runDistill({ out: path.join(tmp(), 'both'), input: { ...base, steps: 3 }, epochs: 1, log: quiet }),
    /--steps or --epochs, not both/,
  );
});

t.test('a timm-layout student is exported in its layout and timm loads it unchanged', async (t) => {
  const run = path.join(tmp(), 'timm-student');
  const r = await runDistill({
    out: run,
    input: { ...base, teacher: STUDENT, student: TEACHER, steps: 2 },
    log: quiet,
  });
  const studentDir = r.studentDir!;
  t.same(
    JSON.parse(readFileSync(path.join(studentDir, 'config.json'), 'utf8')).architecture,
    'vit_giant_patch14_reg4_dinov2',
  );
  const n = 3;
  const crop = new Uint8Array(n * 224 * 224 * 3);
  for (let i = 0; i < n; i++) syntheticTile(i + 1, 224, crop, i * 224 * 224 * 3);
  const model = await getBackend({ backend: 'native' }).loadModel({ folder: studentDir });
  const z = await model.embed({ data: crop, shape: [n, 224, 224, 3] });
  await model.dispose();
  const dir = path.dirname(studentDir);
  await writeNpy(path.join(dir, 'images.npy'), { dtype: 'uint8', shape: [n, 224, 224, 3], data: crop });
  await writeNpy(path.join(dir, 'features.npy'), { dtype: 'float32', shape: z.shape, data: z.data });
  const p = await runProcess(
    VENV_PYTHON,
    [
      path.join(ROOT, 'tools', 'check_student_export.py'),
      studentDir,
      path.join(dir, 'images.npy'),
      path.join(dir, 'features.npy'),
    ],
    { timeoutMs: 300_000 },
  );
  t.equal(p.code, 0, p.stderr || p.stdout);
  const check = JSON.parse(p.stdout.trim().split('\n').at(-1) ?? '{}');
  t.equal(check.library, 'timm');
  t.ok(check.maxRelDiff <= 1e-4, `engine vs timm: ${check.maxRelDiff}`);
});
