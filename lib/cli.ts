// The g2l-native command line: yargs over the command modules in lib/commands/. Each user error is printed as
// one line with its exit code; anything else is a bug and shows its stack with --verbose.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { allowBackendFallback } from './backends/index.js';
import { commands } from './commands/index.js';
import { ExitCode, isUserError } from './errors.js';
import { VERSION } from './version.js';

export async function main(argv: string[] = hideBin(process.argv)): Promise<number> {
  const verbose = argv.includes('--verbose');
  // Commands keep working without the engine: one warning naming the setup command, then the js backend.
  allowBackendFallback();
  let parser = yargs(argv)
    .scriptName('g2l-native')
    .usage(
      '$0 <command> [options]\n\nDistil giga-scale pathology foundation models into cancer-specific ones (G2L), and evaluate them.',
    )
    .option('verbose', { type: 'boolean', default: false, describe: 'Print stack traces and engine logs' })
    .option('backend', {
      choices: ['native', 'js'] as const,
      describe: 'Compute backend (default: native, falling back to js when the engine cannot load)',
    })
    .version(VERSION)
    .strict()
    .demandCommand(1, 'Name a command: g2l-native --help lists them.')
    .recommendCommands()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((msg, err) => {
      throw err ?? new CliUsageError(msg);
    });
  for (const c of commands) parser = parser.command(c);
  try {
    await parser.parseAsync();
    return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.ok;
  } catch (e) {
    if (e instanceof CliUsageError) {
      process.stderr.write(`g2l-native: ${e.message}\nRun g2l-native --help for usage.\n`);
      return ExitCode.usage;
    }
    if (isUserError(e)) {
      process.stderr.write(`g2l-native: ${e.message}\n`);
      if (verbose && e.stack) process.stderr.write(`${e.stack}\n`);
      return e.exitCode;
    }
    const err = e as Error;
    process.stderr.write(`g2l-native: internal error: ${err?.message ?? String(e)}\n`);
    process.stderr.write(verbose && err?.stack ? `${err.stack}\n` : 'Run again with --verbose for the stack trace.\n');
    return ExitCode.failure;
  }
}

class CliUsageError extends Error {}
