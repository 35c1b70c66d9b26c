// `demo --nproc N`: the launching process has prepared the demo's slides, tiles and models in `out`; N workers (the
// demo command again, without --nproc, with PREPARED_ENV naming the folder) distil them as ranks of one world, and
// rank 0 writes report.json, which this returns.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.js';
import { launchWorkers } from './launcher.js';
import { latestCheckpoint } from './cli.js';
import type { DemoReport } from '../distill/demo.js';

/** Set (to the demo folder) in the workers' environment: the inputs are there, go straight to distillation. */
export const PREPARED_ENV = 'G2L_DEMO_PREPARED';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'g2l-native');

export interface DemoLaunch {
  out: string;
  steps: number;
  batchSize: number;
  seed: number;
  nproc: number;
}

export async function launchDemoWorkers(o: DemoLaunch): Promise<DemoReport> {
  const args = [
    BIN,
    'demo',
    '--out',
    o.out,
    '--steps',
    String(o.steps),
    '--batch-size',
    String(o.batchSize),
    '--seed',
    String(o.seed),
  ];
  const r = await launchWorkers({
    nproc: o.nproc,
    args,
    env: { [PREPARED_ENV]: o.out },
    recovery: async () => {
      const last = latestCheckpoint(o.out);
      return last
        ? `Its last checkpoint is ${last}; continue with g2l-native distill --resume --out ${o.out} --nproc ${o.nproc}`
        : null;
    },
  });
  if (r.exitCode !== 0) {
    throw new UserError(
      `demo: the ${o.nproc} workers did not finish (exit code ${r.exitCode}); see the messages above`,
      r.exitCode,
    );
  }
  return JSON.parse(readFileSync(path.join(o.out, 'report.json'), 'utf8'));
}
