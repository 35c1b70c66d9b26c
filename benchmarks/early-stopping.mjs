#!/usr/bin/env node
// Where each early-stopping rule stops a run: replays the losses of a run folder's log.jsonl through every rule
// (lib/distill/early-stop.ts) with the run's window, patience, factor and minSteps. A rule stops on the losses alone,
// so on the log of a run that went on (a run with rule consecutive or early stopping off) the replay gives the step at
// which each rule would have ended the same run.
//
//   node benchmarks/early-stopping.mjs <run folder> [<run folder> ...]      (after `npm run build:ts`)
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { EarlyStopping } from '../dist/distill/early-stop.js';

/** @typedef {import('../dist/distill/config.js').RunConfig} RunConfig */
/** @typedef {import('../dist/distill/early-stop.js').EarlyStopRule} EarlyStopRule */

for (const run of process.argv.slice(2)) {
  /** @type {Pick<RunConfig, 'steps' | 'earlyStopping'>} a run folder's resolved config.json */
  const config = JSON.parse(readFileSync(path.join(run, 'config.json'), 'utf8'));
  const losses = readFileSync(path.join(run, 'log.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => /** @type {{ loss: number }} a log.jsonl line */ (JSON.parse(l)).loss);
  /** @type {{ run: string, steps: number, planned: number } & Partial<Record<EarlyStopRule, number | null>>} */
  const out = { run, steps: losses.length, planned: config.steps };
  for (const rule of /** @type {const} */ (['consecutive', 'total', 'ratio'])) {
    const e = new EarlyStopping({ ...config.earlyStopping, rule });
    const at = losses.findIndex((l) => e.update(l).stop);
    out[rule] = at < 0 ? null : at + 1;
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}
