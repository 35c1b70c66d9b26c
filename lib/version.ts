// The package version, read once from package.json so that it has a single source, and where the package's
// native builds live.
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** Repository (package) root: dist/ and lib/ both sit one level below it. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const VERSION: string = JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')).version;

/**
 * A git checkout of the repository (set up by `npm run setup`, builds in the checkout) rather than an installed
 * package (set up by `npx g2l-native setup`, builds in the per-user cache). npm never packs .git.
 */
export const IS_CHECKOUT = existsSync(path.join(PACKAGE_ROOT, '.git'));

/** The command that installs and builds what is missing, for this copy of the package. */
export const SETUP_COMMAND = IS_CHECKOUT ? 'npm run setup' : 'npx g2l-native setup';

/**
 * Where `g2l-native setup` puts libtorch (when it installs one) and the native builds of an installed package:
 * $G2L_HOME/<version>, G2L_HOME defaulting to the user's cache folder ($XDG_CACHE_HOME or ~/.cache, or
 * ~/Library/Caches on macOS) plus g2l-native.
 */
export function setupCacheDir(): string {
  const home =
    process.env.G2L_HOME ||
    path.join(
      process.platform === 'darwin'
        ? path.join(os.homedir(), 'Library', 'Caches')
        : process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'),
      'g2l-native',
    );
  return path.join(path.resolve(home), VERSION);
}

/**
 * The folders that may hold the native builds (build-engine/, build/), in the order the loaders look: the package
 * folder, then (installed package only) the setup cache.
 */
export function nativeBuildRoots(): string[] {
  return IS_CHECKOUT ? [PACKAGE_ROOT] : [PACKAGE_ROOT, setupCacheDir()];
}
