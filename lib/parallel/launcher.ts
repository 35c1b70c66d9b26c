// `--nproc N`: N local workers, torchrun-style. Each worker is the same command line without --nproc, run as a child
// process with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT in its environment; the
// workers meet in the engine's c10d rendezvous (lib/parallel/env.ts, native/engine/dist/dist.cpp).
//
// Supervision: rank 0's output passes through; other ranks' stderr is kept, each line prefixed with its rank. The
// first worker that ends with an error (non-zero exit code or a signal) ends the others (SIGTERM, then SIGKILL after
// a grace period) and is reported with its rank and cause; nothing is written by the launcher, so the run folder
// keeps its last complete checkpoint (rank 0 writes them atomically).
//
// Signals: the workers run in their own process group, so a Ctrl-C reaches the launcher alone, which passes SIGINT on
// exactly once (a worker's second SIGINT means "quit now, no checkpoint"); SIGTERM and SIGHUP are passed on too. A
// worker also ends when its launcher goes away without a word (SIGKILL): its stdin is a pipe from the launcher, and
// followLauncher() ends the worker when that pipe closes.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import { ExitCode } from '../errors.js';

export interface LaunchOptions {
  nproc: number;
  /** The worker's command line after the node executable: script and arguments (without --nproc). */
  args: string[];
  /** Extra environment for every worker. */
  env?: NodeJS.ProcessEnv;
  /** Where the launcher's own messages and the workers' prefixed stderr go (default: process.stderr). */
  log?: (line: string) => void;
  /** One line telling where the run can be picked up again after a failure (e.g. its last checkpoint). */
  recovery?: () => Promise<string | null>;
  /** Seconds between SIGTERM and SIGKILL when ending the surviving workers. */
  graceSeconds?: number;
}

export interface WorkerExit {
  rank: number;
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LaunchResult {
  exitCode: number;
  /** The worker whose failure ended the run, if one did. */
  failed: WorkerExit | null;
  exits: WorkerExit[];
}

/** Set in the environment of the workers this launcher starts. */
export const LAUNCHER_ENV = 'G2L_LAUNCHER';

/**
 * In a worker started by launchWorkers: end this process (SIGTERM) when the launcher's end of stdin closes, i.e.
 * when the launcher is gone. A no-op elsewhere.
 */
export function followLauncher(): void {
  if (process.env[LAUNCHER_ENV] !== '1') return;
  process.stdin.on('data', () => undefined);
  process.stdin.on('end', () => process.kill(process.pid, 'SIGTERM'));
  process.stdin.on('error', () => process.kill(process.pid, 'SIGTERM'));
  process.stdin.unref?.();
}

/** A TCP port that is free on the loopback interface now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

/** "exited with code 3" / "was killed by SIGKILL". */
export function describeExit(e: WorkerExit): string {
  if (e.signal) return `was killed by ${e.signal}`;
  return `exited with code ${e.code}`;
}

/** Removes `--nproc N` / `--nproc=N` from an argument list. */
export function withoutNproc(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--nproc') {
      i++;
      continue;
    }
    if (args[i].startsWith('--nproc=')) continue;
    out.push(args[i]);
  }
  return out;
}

function prefixLines(stream: NodeJS.ReadableStream, prefix: string, write: (line: string) => void): void {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    pending += chunk;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      write(`${prefix}${pending.slice(0, nl)}`);
      pending = pending.slice(nl + 1);
    }
  });
  stream.on('end', () => {
    if (pending) write(`${prefix}${pending}`);
  });
}

/** Runs `nproc` workers to the end (or to the first failure) and returns the launcher's exit code. */
export async function launchWorkers(options: LaunchOptions): Promise<LaunchResult> {
  const { nproc } = options;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const grace = (options.graceSeconds ?? 10) * 1000;
  const port = await freePort();
  const children: ChildProcess[] = [];
  const exits: (WorkerExit | null)[] = new Array(nproc).fill(null);
  let failed: WorkerExit | null = null;
  let interrupted = false;
  let killTimer: NodeJS.Timeout | null = null;

  const endOthers = () => {
    for (let r = 0; r < nproc; r++) if (!exits[r]) children[r]?.kill('SIGTERM');
    killTimer = setTimeout(() => {
      for (let r = 0; r < nproc; r++) if (!exits[r]) children[r]?.kill('SIGKILL');
    }, grace);
    killTimer.unref();
  };
  const forward = (signal: NodeJS.Signals) => () => {
    interrupted = true;
    for (let r = 0; r < nproc; r++) if (!exits[r]) children[r]?.kill(signal);
  };
  const onSigint = forward('SIGINT');
  const onSigterm = forward('SIGTERM');
  const onSighup = forward('SIGHUP');
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  process.on('SIGHUP', onSighup);

  try {
    const done = Array.from({ length: nproc }, (_, rank) => {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        // The CPU's cores shared between the workers, as torchrun does, unless the user chose: N workers that each
        // start a thread per core oversubscribe the machine (GPU workers need few CPU threads anyway).
        OMP_NUM_THREADS:
          process.env.OMP_NUM_THREADS ?? String(Math.max(1, Math.floor(os.availableParallelism() / nproc))),
        ...options.env,
        RANK: String(rank),
        LOCAL_RANK: String(rank),
        WORLD_SIZE: String(nproc),
        LOCAL_WORLD_SIZE: String(nproc),
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(port),
        [LAUNCHER_ENV]: '1',
      };
      const child = spawn(process.execPath, options.args, {
        env,
        detached: true,
        stdio: ['pipe', rank === 0 ? 'inherit' : 'ignore', rank === 0 ? 'inherit' : 'pipe'],
      });
      children[rank] = child;
      if (rank !== 0 && child.stderr) prefixLines(child.stderr, `[rank ${rank}] `, log);
      return new Promise<void>((resolve) => {
        child.on('error', (err) => {
          log(`g2l-native: could not start worker rank ${rank}: ${err.message}`);
        });
        child.on('exit', (code, signal) => {
          child.stdin?.destroy();
          const e: WorkerExit = { rank, pid: child.pid, code, signal };
          exits[rank] = e;
          if ((code !== 0 || signal) && !failed && !interrupted) {
            failed = e;
            const alive = exits.filter((x) => x === null).length;
            log(
              `g2l-native: worker rank ${rank} (pid ${child.pid}) ${describeExit(e)}` +
                (alive ? `; ending the other ${alive} worker${alive === 1 ? '' : 's'}` : ''),
            );
            endOthers();
          }
          resolve();
        });
      });
    });
    await Promise.all(done);
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    process.off('SIGHUP', onSighup);
    if (killTimer) clearTimeout(killTimer);
  }

  const all = exits as WorkerExit[];
  let exitCode: number = ExitCode.ok;
  const firstFailure = failed as WorkerExit | null;
  if (firstFailure) {
    exitCode = firstFailure.code && firstFailure.code !== 0 ? firstFailure.code : ExitCode.failure;
    const where = options.recovery ? await options.recovery().catch(() => null) : null;
    log(
      `g2l-native: the run stopped because worker rank ${firstFailure.rank} ${describeExit(firstFailure)}.${where ? ` ${where}` : ''}`,
    );
  } else {
    const bad = all.find((e) => e.code !== 0 || e.signal);
    if (bad) exitCode = bad.code && bad.code !== 0 ? bad.code : ExitCode.failure;
  }
  return { exitCode, failed: firstFailure, exits: all };
}
