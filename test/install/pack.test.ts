// The tarball (package.json `files`) holds what `g2l-native setup` and the CLI need and nothing else: no tests or
// fixtures, no benchmarks or their runs, no TypeScript sources or source maps, no fixture scripts.
import t from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, runProcess } from '../helpers/cli.js';

t.test('npm pack: what setup and the CLI need, nothing else', async (t) => {
  // --ignore-scripts: prepack (tsc) is the setup's ts step, already run; the packed test runs a real `npm pack`.
  const r = await runProcess('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { timeoutMs: 120_000 });
  t.equal(r.code, 0, r.stderr);
  const files = new Set(
    (JSON.parse(r.stdout.slice(r.stdout.search(/^\[$/m))) as { files: { path: string }[] }[])[0].files.map(
      (f) => f.path,
    ),
  );
  const list = [...files];

  // The CLI and the library.
  for (const f of [
    'package.json',
    'README.md',
    'bin/g2l-native',
    'dist/cli.js',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/commands/setup.js',
  ]) {
    t.ok(files.has(f), `has ${f}`);
  }
  for (const f of readdirSync(path.join(ROOT, 'dist', 'eval')).filter((n) => n.endsWith('.js')))
    t.ok(files.has(`dist/eval/${f}`), `has dist/eval/${f} (workers load by URL)`);
  // What setup reads: the script, its requirement files, the engine's and the slide addon's sources and build files.
  for (const f of [
    'tools/setup.mjs',
    'tools/install-note.mjs',
    'tools/requirements.txt',
    'tools/requirements-cpu.txt',
    'CMakeLists.txt',
    'binding.gyp',
  ]) {
    t.ok(files.has(f), `has ${f}`);
  }
  const setup = readFileSync(path.join(ROOT, 'tools', 'setup.mjs'), 'utf8');
  for (const m of setup.matchAll(/path\.join\(root, 'tools', '([^']+)'\)/g)) {
    if (m[1] !== 'requirements-dev.txt') t.ok(files.has(`tools/${m[1]}`), `setup.mjs reads tools/${m[1]}: packed`);
  }
  for (const dir of [
    'native/engine',
    'native/engine/kernels/cuda',
    'native/engine/include',
    'native/addon',
    'native/slides',
  ]) {
    if (!existsSync(path.join(ROOT, dir))) continue;
    const sources = readdirSync(path.join(ROOT, dir), { recursive: true, withFileTypes: true }).filter((e) =>
      e.isFile(),
    );
    for (const e of sources) {
      const rel = path.relative(ROOT, path.join(e.parentPath, e.name)).split(path.sep).join('/');
      t.ok(files.has(rel), `has ${rel}`);
    }
  }

  // Nothing else.
  const allowed =
    /^(package\.json|README\.md|LICENSE|bin\/|dist\/|native\/|tools\/(setup\.mjs|install-note\.mjs|requirements(-cpu)?\.txt)$|CMakeLists\.txt$|binding\.gyp$)/;
  t.same(
    list.filter((f) => !allowed.test(f)),
    [],
    'no file outside the list',
  );
  t.same(
    list.filter((f) => /^(test|benchmarks|lib|\.ci|\.venv|build|build-engine)\//.test(f)),
    [],
    'no tests, fixtures, benchmarks, sources or builds',
  );
  t.same(
    list.filter((f) => /\.(map|tsbuildinfo|py|npy|safetensors|tgz)$/.test(f)),
    [],
    'no source maps, build info, fixture scripts or data',
  );
  t.same(
    list.filter((f) => f.startsWith('dist/') && !/\.(js|d\.ts)$/.test(f)),
    [],
    'dist/ holds JavaScript and declarations only',
  );
});
