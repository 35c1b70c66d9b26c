// The --nproc option of `distill` and `demo`: the command's handler calls launchIfRequested() first; with --nproc
// above 1 (and outside a launched worker) it runs the workers and reports, otherwise the command runs as this rank.
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { distFromEnv } from './env.js';
import { followLauncher, launchWorkers, withoutNproc } from './launcher.js';

export const nprocOption = {
  type: 'number',
  default: 1,
  describe:
    'Data-parallel workers on this machine: one process per GPU (or CPU share); see also RANK/WORLD_SIZE for torchrun/SLURM',
} as const;

/** The newest complete checkpoint of a run folder (checkpoints/step-N with its distiller.json), or null. */
export function latestCheckpoint(runDir: string): string | null {
  const dir = path.join(runDir, 'checkpoints');
  if (!existsSync(dir)) return null;
  const steps = readdirSync(dir)
    .map((n) => /^step-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null && existsSync(path.join(dir, m[0], 'distiller.json')))
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  return steps.length ? path.join(dir, `step-${steps.at(-1)}`) : null;
}

/**
 * With nproc > 1: runs `nproc` workers of this same command line (without --nproc) and returns the exit code for
 * process.exitCode; `runDir` is named in the failure report with its last checkpoint. Otherwise returns null and the
 * caller runs the command itself (as the rank the environment gives, if any).
 */
export async function launchIfRequested(
  nproc: number | undefined,
  runDir: string | undefined,
  resumeHint: string,
): Promise<number | null> {
  const n = nproc ?? 1;
  if (!Number.isInteger(n) || n < 1) throw new UserError(`--nproc must be a positive integer, got ${nproc}`);
  if (n === 1) {
    followLauncher();
    return null;
  }
  if (distFromEnv()) {
    throw new UserError(
      '--nproc was given to a process that already has a rank (RANK/WORLD_SIZE are set): use one or the other',
    );
  }
  const args = [process.argv[1], ...withoutNproc(process.argv.slice(2))];
  const result = await launchWorkers({
    nproc: n,
    args,
    recovery: async () => {
      if (!runDir) return null;
      const last = latestCheckpoint(path.resolve(runDir));
      return last
        ? `Its last checkpoint is ${last}; continue with ${resumeHint}`
        : `No checkpoint had been written yet in ${path.resolve(runDir)}.`;
    },
  });
  return result.exitCode;
}
