// Nothing lost, whatever stops a run: chains of `distill` processes, each stopped by SIGKILL, SIGTERM or SIGINT at a
// random moment (seeded), after a step or as a checkpoint is being written, each followed by `--resume`, until the run completes.
// Every chain must end with the exported student, the final checkpoint and the log of an uninterrupted run, bitwise
// (on the CPU, one libtorch thread in every process); a process may only end as the test made it end.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, watch } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BIN, ROOT, childEnv, runCli } from '../helpers/cli.js';
import { mulberry32 } from '../../lib/util/random.js';

const TEACHER = path.join(ROOT, 'test/fixtures/models/timm_giant_reg4_swiglu');
const STUDENT = path.join(ROOT, 'test/fixtures/models/hf_dinov2_reg_swiglu');
const ENV = { OMP_NUM_THREADS: '1' };
const STEPS = 16;
const CHAINS = Number(process.env.G2L_KILL_CHAINS ?? 4);
const SEED = Number(process.env.G2L_KILL_SEED ?? 16);
const args = (out: string) => [
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
  String(STEPS),
  '--batch-size',
  '2',
  '--seed',
  '4',
  '--checkpoint-every',
  '2',
  '--no-progress',
];
const EXPECTED: Record<string, number> = { SIGTERM: 143, SIGINT: 130 };

interface Stop {
  signal: 'SIGKILL' | 'SIGTERM' | 'SIGINT';
  /**
   * Milliseconds after the start; 'write': `delay` ms after a checkpoint's temporary folder appears; 'step': `delay` ms
   * after the process has logged `lines` steps (a moment inside the run however fast the machine is at the time).
   */
  when: number | 'write' | 'step';
  delay?: number;
  lines?: number;
}

interface Launch {
  stop: Stop | null;
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  /** The signal came while a checkpoint was being written (its temporary folder existed). */
  duringWrite: boolean;
}

/** One process of the chain: fresh or --resume, stopped as `stop` says (null: left to finish). */
function launch(run: string, stop: Stop | null): Promise<Launch> {
  const checkpoints = path.join(run, 'checkpoints');
  mkdirSync(checkpoints, { recursive: true });
  const resume = existsSync(path.join(run, 'config.json'));
  const child = spawn(
    process.execPath,
    [BIN, ...(resume ? ['distill', '--resume', run, '--no-progress'] : args(run))],
    { cwd: ROOT, env: childEnv(ENV), stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  let duringWrite = false;
  let sent = false;
  // Temporary folders of this process's writes (not those an earlier killed process left, which a resume removes).
  const TEMP = /^\.step-\d+\..*\.tmp$/;
  const stale = new Set(readdirSync(checkpoints).filter((f) => TEMP.test(f)));
  const temp = () => readdirSync(checkpoints).some((f) => TEMP.test(f) && !stale.has(f));
  const send = () => {
    if (sent || !stop || child.exitCode !== null) return;
    sent = true;
    duringWrite = temp();
    child.kill(stop.signal);
  };
  const watcher =
    stop?.when === 'write'
      ? watch(checkpoints, (_, name) => {
          if (name && TEMP.test(String(name)) && !stale.has(String(name))) setTimeout(send, stop.delay ?? 0);
        })
      : null;
  const timer = stop && typeof stop.when === 'number' ? setTimeout(send, stop.when) : null;
  const log = path.join(run, 'log.jsonl');
  const logged = () =>
    existsSync(log)
      ? readFileSync(log, 'utf8')
          .split('\n')
          .filter((l) => l.trim()).length
      : 0;
  // Counted from the fewest lines seen: a resume first cuts the log back to its checkpoint's step.
  let base = logged();
  const poll =
    stop?.when === 'step'
      ? setInterval(() => {
          const n = logged();
          base = Math.min(base, n);
          if (n - base >= stop.lines!) {
            clearInterval(poll!);
            setTimeout(send, stop.delay ?? 0);
          }
        }, 10)
      : null;
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      watcher?.close();
      if (timer) clearTimeout(timer);
      if (poll) clearInterval(poll);
      resolve({ stop: sent ? stop : null, code, signal, stderr, duringWrite });
    }),
  );
}

t.test(`${CHAINS} chains of distill runs stopped at random moments end bitwise as an uninterrupted run`, async (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'g2l-kill-'));
  const reference = path.join(root, 'reference');
  const t0 = Date.now();
  const ref = await runCli(args(reference), { env: ENV });
  // Stop moments are drawn within an uninterrupted run's duration on this machine, so they land inside the run.
  const runMs = Date.now() - t0;
  t.equal(ref.code, 0, ref.stderr);
  const refStudent = readFileSync(path.join(reference, 'student', 'model.safetensors'));
  const refState = readFileSync(path.join(reference, 'checkpoints', `step-${STEPS}`, 'state.safetensors'));
  const losses = (run: string) =>
    readFileSync(path.join(run, 'log.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .map((l) => [l.step, l.loss, l.lr, l.gradNorm]);

  const rand = mulberry32(SEED);
  const signals = ['SIGKILL', 'SIGTERM', 'SIGINT'] as const;
  const tally = {
    launches: 0,
    stops: 0,
    SIGKILL: 0,
    SIGTERM: 0,
    SIGINT: 0,
    duringWrite: 0,
    crashes: 0,
    wrongResults: 0,
  };
  for (let c = 0; c < CHAINS; c++) {
    const run = path.join(root, `chain-${c}`);
    const history: string[] = [];
    for (let k = 0; ; k++) {
      // Up to 8 stops a chain, then the last process runs to the end.
      const draw = rand();
      const stop: Stop | null =
        k < 8
          ? {
              signal: signals[Math.floor(rand() * 3)],
              when: draw < 0.3 ? 'write' : draw < 0.65 ? 'step' : Math.floor(runMs * (0.1 + 0.85 * rand())),
              delay: Math.floor(rand() * 8),
              lines: 1 + Math.floor(rand() * 2),
            }
          : null;
      const l = await launch(run, stop);
      tally.launches++;
      const when =
        l.stop?.when === 'write'
          ? `write+${l.stop.delay}ms`
          : l.stop?.when === 'step'
            ? `step+${l.stop.lines}+${l.stop.delay}ms`
            : l.stop?.when;
      history.push(
        `${l.stop ? `${l.stop.signal}@${when}${l.duringWrite ? '(in write)' : ''}` : 'none'} -> ${l.signal ?? l.code}`,
      );
      if (l.stop) {
        tally.stops++;
        tally[l.stop.signal]++;
        if (l.duringWrite) tally.duringWrite++;
      }
      // The process may only end as the test made it: done (0), killed by the SIGKILL it was sent, or 143/130 for
      // SIGTERM/SIGINT; killed by those only outside the command's handlers (Node starting, or the run already done
      // and the process exiting), which nothing written depends on.
      const handled = /finishing the current step/.test(l.stderr);
      const ok =
        l.code === 0 ||
        (l.stop?.signal === 'SIGKILL' && l.signal === 'SIGKILL') ||
        (l.stop &&
          l.stop.signal !== 'SIGKILL' &&
          (l.code === EXPECTED[l.stop.signal] || (l.signal === l.stop.signal && !handled)));
      if (!ok) {
        tally.crashes++;
        t.fail(`chain ${c} launch ${k}: ${history.at(-1)}: ${l.stderr.trim().split('\n').slice(-3).join(' / ')}`);
        break;
      }
      if (l.code === 0 && existsSync(path.join(run, 'student', 'model.safetensors'))) break;
      if (k > 20) {
        t.fail(`chain ${c} did not complete: ${history.join(', ')}`);
        break;
      }
    }
    t.comment(`chain ${c}: ${history.join(', ')}`);
    const same =
      existsSync(path.join(run, 'student', 'model.safetensors')) &&
      readFileSync(path.join(run, 'student', 'model.safetensors')).equals(refStudent) &&
      readFileSync(path.join(run, 'checkpoints', `step-${STEPS}`, 'state.safetensors')).equals(refState);
    if (!same) tally.wrongResults++;
    t.ok(same, `chain ${c}: the exported student and the final state are bitwise those of the uninterrupted run`);
    t.same(
      losses(run),
      losses(reference),
      `chain ${c}: the log has each step once, with the uninterrupted run's numbers`,
    );
  }
  t.comment(`kill/resume: ${JSON.stringify(tally)}`);
  t.equal(tally.crashes, 0, 'no process ended in a way the test did not cause');
  t.equal(tally.wrongResults, 0, 'no chain ended with other weights');
  t.ok(tally.stops >= CHAINS * 4, `${tally.stops} stops`);
});
