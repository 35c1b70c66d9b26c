// npm's install hook: quiet and safe. Without it npm would run `node-gyp rebuild` on its own (binding.gyp is
// present), which may try to download Node headers. It builds only when asked (G2L_BUILD=1 npm install g2l-native:
// `g2l-native setup`, which finds or installs libtorch and builds into the per-user cache); otherwise it prints one
// line naming the command that does. In the repository the set-up is `npm run setup`.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const checkout = existsSync(path.join(root, '.git'));

if (checkout) {
  process.stdout.write('g2l-native: the native addons and the TypeScript are built by `npm run setup`\n');
} else if (process.env.G2L_BUILD === '1') {
  const r = spawnSync(process.execPath, [path.join(root, 'bin', 'g2l-native'), 'setup'], {
    cwd: root,
    stdio: 'inherit',
  });
  process.exitCode = r.status ?? 1;
} else {
  process.stdout.write(
    'g2l-native: run `npx g2l-native setup` to build the native engine (or install with G2L_BUILD=1)\n',
  );
}
