// `g2l-native demo [--out ./g2l-demo] [--steps 300] [--batch-size 16] [--nproc 1] [--seed 0]`: the whole pipeline at
// toy size on the CPU (lib/distill/demo.ts), ending with report.json/report.md in the output folder.
import type { CommandModule } from 'yargs';
import { runDemo } from '../distill/demo.js';
import { distFromEnv } from '../parallel/env.js';

interface DemoArgs {
  out: string;
  steps: number;
  'batch-size': number;
  nproc: number;
  seed: number;
}

export const demoCommand: CommandModule<object, DemoArgs> = {
  command: 'demo',
  describe: 'Run G2L end to end on synthetic slides with small random models (CPU, a few minutes)',
  builder: (y) =>
    y
      .option('out', { type: 'string', default: 'g2l-demo', describe: 'Output folder (also the run folder)' })
      .option('steps', { type: 'number', default: 300, describe: 'Distillation steps' })
      .option('batch-size', { type: 'number', default: 16, describe: 'Tiles per step' })
      .option('nproc', { type: 'number', default: 1, describe: 'Processes (data parallel)' })
      .option('seed', {
        type: 'number',
        default: 0,
        describe: 'Seed of slides, models, tile order and augmentation',
      }) as never,
  handler: async (argv) => {
    const r = await runDemo({
      out: argv.out,
      steps: argv.steps,
      batchSize: argv['batch-size'],
      nproc: argv.nproc,
      seed: argv.seed,
      progress: process.stderr.isTTY === true,
    });
    if (distFromEnv()) return; // a --nproc worker: the launching process reports
    process.stdout.write(
      `demo: ${r.steps} steps, loss ${r.loss.first.toFixed(3)} -> ${r.loss.last.toFixed(3)}, ` +
        `linear CKA (student vs teacher, held-out tiles) ${r.cka.before.toFixed(3)} -> ${r.cka.after.toFixed(3)}\n` +
        `  report: ${argv.out}/report.md\n`,
    );
  },
};
