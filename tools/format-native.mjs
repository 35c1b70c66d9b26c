#!/usr/bin/env node
// clang-format over the C++/CUDA sources of native/ (.clang-format), the vendored declarations in
// native/engine/third_party excepted: `--check` fails listing the files that differ (npm run lint), `--write` applies
// the format (npm run format). clang-format comes from the .venv that `npm test` sets up (tools/requirements-dev.txt),
// else from PATH.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const mode = process.argv[2];
if (mode !== '--check' && mode !== '--write') {
  console.error('usage: node tools/format-native.mjs --check | --write');
  process.exit(2);
}
const venv = path.join(root, '.venv', 'bin', 'clang-format');
const bin = existsSync(venv) ? venv : 'clang-format';
const files = readdirSync(path.join(root, 'native'), { recursive: true })
  .map((f) => path.join('native', String(f)))
  .filter((f) => /\.(cpp|h|cu|cuh)$/.test(f) && !f.startsWith(path.join('native', 'engine', 'third_party')))
  .sort();
const args = mode === '--write' ? ['-i', ...files] : ['--dry-run', '--Werror', ...files];
const r = spawnSync(bin, args, { cwd: root, encoding: 'utf8' });
if (r.error) {
  console.error(
    `format-native: cannot run ${bin} (${r.error.message}): run node tools/setup.mjs --dev, or put clang-format on PATH`,
  );
  process.exit(2);
}
if (r.status !== 0) {
  const differ = [...new Set([...r.stderr.matchAll(/^(native\/[^:]+):\d+:\d+: (?:error|warning)/gm)].map((m) => m[1]))];
  console.error(
    `format-native: ${differ.length || 'some'} file(s) differ from .clang-format: ${differ.join(', ')}; run npm run format`,
  );
  process.exit(1);
}
