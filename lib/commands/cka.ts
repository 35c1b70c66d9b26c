// `g2l-native cka <featuresA> <featuresB> [--json]`: linear, RBF and debiased linear CKA between two feature sets
// of the same samples, rows matched by id.
import type { CommandModule } from 'yargs';
import { UserError } from '../errors.js';
import { readFeatureSet, matchById } from '../data/feature-set.js';
import { cka, type CkaResult } from '../eval/cka.js';

export interface CkaArgs {
  featuresA: string;
  featuresB: string;
  json: boolean;
  rbfMaxRows: number;
  seed: number;
}

/** Reads both sets, matches rows by id and computes the three CKA values. */
export async function ckaBetween(
  dirA: string,
  dirB: string,
  opts: { rbfMaxRows?: number; seed?: number } = {},
): Promise<CkaResult & { n: number }> {
  const [a, b0] = await Promise.all([readFeatureSet(dirA), readFeatureSet(dirB)]);
  const [, b] = matchById(a, b0);
  return {
    ...(await cka(a.features, a.d, b.features, b.d, a.n, { maxRbfRows: opts.rbfMaxRows, seed: opts.seed })),
    n: a.n,
  };
}

export const ckaCommand: CommandModule<object, CkaArgs> = {
  command: 'cka <featuresA> <featuresB>',
  describe: 'Linear, RBF and debiased linear CKA between two feature sets (rows matched by id)',
  builder: (y) =>
    y
      .positional('featuresA', {
        type: 'string',
        demandOption: true,
        describe: 'Feature-set folder (features.npy + meta.csv)',
      })
      .positional('featuresB', {
        type: 'string',
        demandOption: true,
        describe: 'Feature-set folder of the same samples',
      })
      .option('json', {
        type: 'boolean',
        default: false,
        describe: 'Print {"linear", "rbf", "linear_debiased"} as JSON',
      })
      .option('rbf-max-rows', {
        type: 'number',
        default: 5000,
        describe: 'RBF CKA is N x N: above this many rows it uses a seeded random subset',
      })
      .option('seed', { type: 'number', default: 0, describe: 'Seed of the RBF subset' }) as never,
  handler: async (argv) => {
    if (!Number.isInteger(argv.rbfMaxRows) || argv.rbfMaxRows < 4)
      throw new UserError(`--rbf-max-rows must be an integer of at least 4, got ${argv.rbfMaxRows}`);
    const r = await ckaBetween(argv.featuresA, argv.featuresB, { rbfMaxRows: argv.rbfMaxRows, seed: argv.seed });
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ linear: r.linear, rbf: r.rbf, linear_debiased: r.linear_debiased })}\n`);
      return;
    }
    const lines = [
      `linear CKA           ${r.linear.toFixed(6)}`,
      `RBF CKA              ${r.rbf.toFixed(6)}${r.rbf_rows < r.n ? `  (on a random ${r.rbf_rows} of the ${r.n} rows; --rbf-max-rows)` : ''}`,
      `debiased linear CKA  ${r.linear_debiased.toFixed(6)}`,
      `${r.n} samples matched by id`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  },
};
