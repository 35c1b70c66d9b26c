// `g2l-native setup`: builds the native engine and the slide addon for this copy of the package, then prints the
// `info` summary. In an installed package (`npx g2l-native setup`) it finds libtorch (LIBTORCH, Torch_DIR, python3's
// torch 2.11.x, an earlier setup's cache) or installs torch==2.11.0 from PyPI into the per-user cache ($G2L_HOME/<version>,
// without the NVIDIA wheels where no NVIDIA driver is present), and builds from the sources the package ships into
// that cache, where the loaders look after the package folder. In a git checkout it is `npm run setup`.
// The steps are tools/setup.mjs's; a second run does nothing in a few seconds.
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { ExitCode, UserError } from '../errors.js';
import { IS_CHECKOUT, PACKAGE_ROOT, setupCacheDir } from '../version.js';
import { formatInfo, installationInfo } from './info.js';

interface SetupArgs {
  json: boolean;
}

/** The setup script's command line for this copy of the package. */
export function setupArgs(): string[] {
  const script = path.join(PACKAGE_ROOT, 'tools', 'setup.mjs');
  return IS_CHECKOUT ? [script] : [script, '--package', '--out', setupCacheDir()];
}

function runSetup(args: string[], toStderr: boolean): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      cwd: PACKAGE_ROOT,
      stdio: ['ignore', toStderr ? process.stderr : 'inherit', 'inherit'],
    });
    child.on('error', reject);
    child.on('close', (code) => resolve(code));
  });
}

export const setupCommand: CommandModule<object, SetupArgs> = {
  command: 'setup',
  describe: 'Build the native engine and the slide addon (installing libtorch if none is found), then show `info`',
  builder: (y) =>
    y.option('json', {
      type: 'boolean',
      default: false,
      describe: 'Print the closing summary as JSON (the steps go to stderr)',
    }) as never,
  handler: async (argv) => {
    const started = Date.now();
    if (!IS_CHECKOUT)
      process.stderr.write(`g2l-native setup: building into ${setupCacheDir()} (G2L_HOME sets the cache folder)\n`);
    const code = await runSetup(setupArgs(), argv.json);
    if (code !== 0)
      throw new UserError(`setup failed (see above); fix what it names and run it again`, ExitCode.failure);
    const info = await installationInfo();
    process.stdout.write(argv.json ? `${JSON.stringify(info, null, 2)}\n` : `\n${formatInfo(info)}\n`);
    if (!argv.json) process.stdout.write(`\nsetup: finished in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    if (info.backend !== 'native')
      throw new UserError('setup: the engine was built but does not load (above)', ExitCode.failure);
  },
};
