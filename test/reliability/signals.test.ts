// Stopping and damage as a cluster user meets them (issue 16), with the real CLI in child processes: SIGTERM and
// SIGHUP end `distill` with a checkpoint (exit 143 / 129), a second signal quits at once, ranks of --nproc stop on the
// same step; a truncated state.safetensors is reported and the run resumes from the checkpoint before it, ending with the
// weights of an uninterrupted run; tile, embed and eval leave no half-written file and a rerun continues.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BIN, ROOT, childEnv, runCli } from '../helpers/cli.js';
import { makeSyntheticSlides } from '../../lib/slides/synthetic.js';
import { encodeNpy, readNpy } from '../../lib/io/npy.js';

const TEACHER = path.join(ROOT, 'test/fixtures/models/timm_giant_reg4_swiglu');
const STUDENT = path.join(ROOT, 'test/fixtures/models/hf_dinov2_reg_swiglu');
const ENV = { OMP_NUM_THREADS: '1' };
const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'g2l-signals-'));
const distill = (out: string, steps: number, extra: string[] = [], batch = 2) => [
  'distill',
  '--teacher',
  TEACHER,
  '--student',
  STUDENT,
  '--slides',
  'synthetic:64',
  '--out',
  out,
  '--steps',
  String(steps),
  '--batch-size',
  String(batch),
  '--seed',
  '9',
  '--no-progress',
  ...extra,
];

interface Running {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(args: string[], env: Record<string, string> = ENV): Running {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return { child, stderr: () => stderr, exited };
}

const logLines = (run: string) => {
  const f = path.join(run, 'log.jsonl');
  return existsSync(f)
    ? readFileSync(f, 'utf8')
        .split('\n')
        .filter((l) => l.trim()).length
    : 0;
};

async function until(check: () => boolean, what: string, ms = 240_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const stateOf = (run: string, steps: number) =>
  readFileSync(path.join(run, 'checkpoints', `step-${steps}`, 'state.safetensors'));

for (const [signal, code] of [
  ['SIGTERM', 143],
  ['SIGHUP', 129],
] as const) {
  t.test(
    `${signal} during distill: the step in flight finishes, a checkpoint is written, exit ${code}; --resume continues`,
    async (t) => {
      const run = path.join(tmp(), 'run');
      const r = start(distill(run, 400, ['--checkpoint-every', '1000']));
      await until(() => logLines(run) >= 3, 'three steps');
      r.child.kill(signal);
      const { code: got, signal: died } = await r.exited;
      t.equal(died, null, 'not killed by the signal');
      t.equal(got, code, r.stderr());
      const m = /interrupted after step (\d+): checkpoint written to (\S+);/.exec(r.stderr());
      t.ok(m, 'names the checkpoint');
      const steps = Number(m?.[1]);
      t.equal(logLines(run), steps, 'the log has every finished step');
      t.ok(
        existsSync(path.join(run, 'checkpoints', `step-${steps}`, 'manifest.json')),
        'the checkpoint is complete (manifest written)',
      );
      const again = await runCli(['distill', '--resume', run, '--until', String(steps + 2), '--no-progress'], {
        env: ENV,
      });
      t.equal(again.code, 0, again.stderr);
      t.match(again.stderr, new RegExp(`resuming .* from checkpoints/step-${steps}`));
      t.equal(logLines(run), steps + 2, 'continued from the stopped step');
    },
  );
}

// Three times, with two intra-op threads: the exit while the engine thread is inside a step is what crashed (SIGSEGV
// in libtorch's static destructors, 4 of 15 tries) before exitIfBusy (lib/util/exit.ts).
t.test('a second SIGTERM quits at once, without waiting for the step', async (t) => {
  for (let i = 0; i < 3; i++) {
    const run = path.join(tmp(), 'run');
    // Batches of 32 tiles: a step long enough for the second signal to come while it runs.
    const r = start(distill(run, 400, ['--checkpoint-every', '1000'], 32), { OMP_NUM_THREADS: '2' });
    await until(() => logLines(run) >= 1, 'one step');
    r.child.kill('SIGTERM');
    await until(() => /finishing the current step/.test(r.stderr()), 'the first signal to be seen', 30_000);
    await new Promise((res) => setTimeout(res, 20 * i));
    r.child.kill('SIGTERM');
    const { code, signal } = await r.exited;
    t.same({ code, signal }, { code: 143, signal: null }, r.stderr());
    t.notMatch(r.stderr(), /interrupted after step/, 'it did not wait for the step and the checkpoint');
    // What the first signal got to write is whole or absent: the run resumes.
    const again = await runCli(['distill', '--resume', run, '--until', '2', '--force', '--no-progress'], { env: ENV });
    t.equal(again.code, 0, `resumes: ${again.stderr}`);
  }
});

t.test(
  'a truncated newest state.safetensors: reported, the run resumes from the checkpoint before it and ends as an uninterrupted run',
  async (t) => {
    const dir = tmp();
    const straight = path.join(dir, 'straight');
    const a = await runCli(distill(straight, 8, ['--checkpoint-every', '2']), { env: ENV });
    t.equal(a.code, 0, a.stderr);
    const run = path.join(dir, 'run');
    const b = await runCli(distill(run, 8, ['--checkpoint-every', '2', '--until', '6']), { env: ENV });
    t.equal(b.code, 0, b.stderr);
    const state = path.join(run, 'checkpoints', 'step-6', 'state.safetensors');
    const size = readFileSync(state).length;
    truncateSync(state, Math.floor(size / 2));
    const c = await runCli(['distill', '--resume', run, '--no-progress'], { env: ENV });
    t.equal(c.code, 0, c.stderr);
    t.match(
      c.stderr,
      new RegExp(
        `checkpoint checkpoints/step-6 is damaged: state\\.safetensors has ${Math.floor(size / 2)} bytes, the manifest says ${size}`,
      ),
      'which file, what is wrong',
    );
    t.match(
      c.stderr,
      /resuming .* from the newest intact checkpoint, checkpoints\/step-4; 2 steps are repeated \(5-6\)/,
      'how many steps are repeated',
    );
    t.ok(
      readFileSync(path.join(run, 'student', 'model.safetensors')).equals(
        readFileSync(path.join(straight, 'student', 'model.safetensors')),
      ),
      'the exported student is bitwise that of the uninterrupted run',
    );
    t.ok(stateOf(run, 8).equals(stateOf(straight, 8)), 'so is the final state (optimiser moments included)');
    t.ok(existsSync(path.join(run, 'checkpoints', 'step-6.damaged')), 'the damaged checkpoint is kept aside');
    const losses = (r: string) =>
      readFileSync(path.join(r, 'log.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l))
        .map((l) => [l.step, l.loss, l.lr]);
    t.same(losses(run), losses(straight), "one log line a step, with the uninterrupted run's losses");

    // No intact checkpoint at all: exit 2, one line.
    for (const s of [4, 8]) truncateSync(path.join(run, 'checkpoints', `step-${s}`, 'state.safetensors'), 100);
    writeFileSync(path.join(run, 'checkpoints', 'step-6', 'distiller.json'), '{');
    const d = await runCli(['distill', '--resume', run, '--no-progress'], { env: ENV });
    t.equal(d.code, 2, d.stderr);
    t.equal(d.stderr.trim().split('\n').length, 1, 'one message');
    t.match(
      d.stderr,
      /no intact checkpoint to resume in .*checkpoints: step-8: state\.safetensors has 100 bytes.*step-6: .*step-4: state\.safetensors has 100 bytes/,
    );
  },
);

t.test('--nproc 2 and SIGTERM: every rank stops after the same step, rank 0 checkpoints, exit 143', async (t) => {
  const run = path.join(tmp(), 'run');
  const r = start(distill(run, 400, ['--checkpoint-every', '1000', '--nproc', '2']));
  await until(() => logLines(run) >= 2, 'two steps');
  r.child.kill('SIGTERM');
  const { code } = await r.exited;
  t.equal(code, 143, r.stderr());
  const steps = logLines(run);
  t.ok(
    existsSync(path.join(run, 'checkpoints', `step-${steps}`, 'manifest.json')),
    `checkpoint after the last logged step (${steps})`,
  );
  t.match(r.stderr(), /interrupted after step \d+: checkpoint written/);
  t.notMatch(r.stderr(), /the run stopped because/, 'a stop is not reported as a failed worker');
});

t.test('tile and embed stopped by SIGTERM: exit 143, no half-written file, a rerun continues', async (t) => {
  const dir = tmp();
  const slides = path.join(dir, 'slides');
  await makeSyntheticSlides(slides, { count: 6, width: 2048, height: 1536, seed: 4 });
  const ref = await runCli(['tile', '--slides', slides, '--out', path.join(dir, 'ref'), '--workers', '1'], {
    env: ENV,
  });
  t.equal(ref.code, 0, ref.stderr);
  const out = path.join(dir, 'tiles');
  const r = start(['tile', '--slides', slides, '--out', out, '--workers', '1']);
  await until(() => existsSync(path.join(out, 'slides.csv')), 'the first slide');
  r.child.kill('SIGTERM');
  const { code } = await r.exited;
  t.equal(code, 143, r.stderr());
  t.match(r.stderr(), /tile stopped by SIGTERM: the outputs written so far are complete/);
  const files = (d: string): string[] =>
    readdirSync(d, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? files(path.join(d, e.name)) : [path.join(d, e.name)],
    );
  t.same(
    files(out).filter((f) => /\.tmp$/.test(f)),
    [],
    'no temporary file left',
  );
  const done = readFileSync(path.join(out, 'slides.csv'), 'utf8').trim().split('\n').length - 1;
  t.ok(done >= 1 && done < 6, `${done} of 6 slides done when stopped`);
  const again = await runCli(['tile', '--slides', slides, '--out', out, '--workers', '1'], { env: ENV });
  t.equal(again.code, 0, again.stderr);
  t.match(again.stdout, new RegExp(`tiled 6 of 6 slides \\(${done} already done\\)`));
  for (const f of ['slides.csv', ...readdirSync(path.join(out, 'tiles')).map((x) => `tiles/${x}`)]) {
    t.equal(
      readFileSync(path.join(out, f), 'utf8').replace(new RegExp(out, 'g'), ''),
      readFileSync(path.join(dir, 'ref', f), 'utf8').replace(new RegExp(path.join(dir, 'ref'), 'g'), ''),
      `${f} as an uninterrupted run's`,
    );
  }

  // embed: stopped while it works, no output at all (it is one file), or the whole output when the signal came after
  // it was renamed in place; the rerun writes it whole, with the same rows.
  const images = path.join(dir, 'images.npy');
  const n = 400;
  writeFileSync(
    images,
    encodeNpy({
      dtype: 'uint8',
      shape: [n, 224, 224, 3],
      data: new Uint8Array(n * 224 * 224 * 3).map((_, i) => (i * 7) % 256),
    }),
  );
  const emb = path.join(dir, 'emb.npy');
  const e = start(['embed', '--model', TEACHER, '--input', images, '--out', emb, '--batch-size', '2']);
  await new Promise((res) => setTimeout(res, 2000));
  e.child.kill('SIGTERM');
  const ec = await e.exited;
  let stopped: Float32Array | null = null;
  if (ec.code === 0) t.comment('embed finished before the signal');
  else {
    // Under load the signal may find Node still starting (no handler yet) or done (the output renamed in place, the
    // handlers removed): the default action, killed by SIGTERM. Otherwise the handler: exit 143.
    if (ec.signal === 'SIGTERM')
      t.comment(`killed by the signal's default action (${existsSync(emb) ? 'after' : 'before'} the command's work)`);
    else {
      t.equal(ec.code, 143, e.stderr());
      t.match(e.stderr(), /embed stopped by SIGTERM/);
    }
    if (existsSync(emb)) {
      const whole = await readNpy(emb);
      t.equal(whole.shape[0], n, 'an output in place is whole: every row');
      stopped = whole.data as Float32Array;
    } else t.comment('no output: nothing half-written in its place');
    t.same(
      readdirSync(dir).filter((f) => f.endsWith('.tmp')),
      [],
      'no temporary file left',
    );
  }
  const e2 = await runCli(['embed', '--model', TEACHER, '--input', images, '--out', emb, '--batch-size', '2'], {
    env: ENV,
  });
  t.equal(e2.code, 0, e2.stderr);
  t.ok(existsSync(emb), 'the rerun writes it');
  if (stopped)
    t.same(
      Array.from((await readNpy(emb)).data as Float32Array),
      Array.from(stopped),
      'the same rows as the stopped run wrote',
    );
});
