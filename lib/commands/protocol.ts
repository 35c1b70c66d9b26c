// `g2l-native protocol <file.yaml> [--out <folder>]`: the paper's protocol end to end (lib/protocol/run.ts): tile,
// distill, features of every model on every dataset, evaluation, one table. Each stage is cached; run it again to
// resume after an interruption or after adding a dataset or a model.
import type { CommandModule } from 'yargs';
import path from 'node:path';
import { readProtocol, runProtocol } from '../protocol/run.js';

interface ProtocolArgs {
  file: string;
  out?: string;
}

export const protocolCommand: CommandModule<object, ProtocolArgs> = {
  command: 'protocol <file>',
  describe: "Run the paper's protocol from a YAML file: tile, distill, extract features, evaluate, one report",
  builder: (y) =>
    y
      .positional('file', {
        type: 'string',
        demandOption: true,
        describe: 'Protocol file (YAML or JSON; see the README)',
      })
      .option('out', {
        type: 'string',
        describe: 'Output folder (default: <file without extension>.out beside the file)',
      }) as never,
  handler: async (argv) => {
    const protocol = readProtocol(argv.file);
    const out =
      argv.out ??
      path.join(path.dirname(path.resolve(argv.file)), `${path.basename(argv.file, path.extname(argv.file))}.out`);
    const r = await runProtocol({ out, protocol });
    const cached = Object.entries(r.stages)
      .filter(([, v]) => v === 'cached')
      .map(([k]) => k);
    process.stdout.write(
      `protocol done: ${path.join(out, 'report.md')}${cached.length ? ` (reused: ${cached.join(', ')})` : ''}\n`,
    );
  },
};
