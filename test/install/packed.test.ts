// The package as a user gets it: `npm pack`, `npm install <tarball>` into a new project, `npx g2l-native setup` there,
// then `info --json` reports the native engine and `demo --steps 20` runs on it.
//
// SLOW: setup really builds the engine from the tarball's sources (no reuse of the repository's objects): measured
// 327-328 s of this file's 5.9-6.5 min on the 2-core machine (shared with other builds), so about 6 more minutes
// of `npm test` (docs/install.md). To save a
// second 530 MB download it points Torch_DIR at the repository's own torch (the one build-engine/ was built against);
// the README shows the same command once with nothing set. The build goes to a temporary G2L_HOME.
import t from 'tap';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { mkdtempSync } from 'node:fs';
import { ROOT, runProcess } from '../helpers/cli.js';

t.setTimeout(45 * 60_000);

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
const record = (() => {
  try {
    return JSON.parse(readFileSync(path.join(ROOT, 'build-engine', 'g2l-build.json'), 'utf8')) as {
      libtorch: { root: string };
    };
  } catch {
    return null;
  }
})();
const torchDir = record ? path.join(record.libtorch.root, 'share', 'cmake', 'Torch') : null;

const work = mkdtempSync(path.join(os.tmpdir(), 'g2l-packed-'));
const app = path.join(work, 'app');
const home = path.join(work, 'g2l-home');
const MIN = 60_000;
t.teardown(() => rmSync(work, { recursive: true, force: true }));
// The user's environment, minus anything that would point the installed package at the repository's builds.
const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => {
  const e: NodeJS.ProcessEnv = {
    G2L_HOME: home,
    LIBTORCH: '',
    Torch_DIR: '',
    G2L_ENGINE_PATH: '',
    G2L_SLIDES_ADDON_PATH: '',
    ...extra,
  };
  return e;
};
const npx = (args: string[], extra: NodeJS.ProcessEnv = {}, timeoutMs = 5 * MIN) =>
  runProcess('npx', ['--no-install', 'g2l-native', ...args], { cwd: app, env: env(extra), timeoutMs });

t.test(
  'npm pack, install into a new project, npx g2l-native setup, info, demo',
  {
    skip:
      torchDir && existsSync(path.join(torchDir, 'TorchConfig.cmake'))
        ? false
        : 'no engine build record (build-engine/g2l-build.json): run npm run setup',
  },
  async (t) => {
    // npm pack runs prepack (the TypeScript), as `npm publish` would.
    const packed = await runProcess('npm', ['pack', '--json', '--pack-destination', work], { timeoutMs: 5 * MIN });
    t.equal(packed.code, 0, `npm pack: ${packed.stderr.slice(-2000)}`);
    const tarball = path.join(
      work,
      (JSON.parse(packed.stdout.slice(packed.stdout.search(/^\[$/m))) as { filename: string }[])[0].filename,
    );
    t.ok(existsSync(tarball), `tarball ${path.basename(tarball)}`);

    mkdirSync(app);
    writeFileSync(
      path.join(app, 'package.json'),
      `${JSON.stringify({ name: 'app', version: '1.0.0', private: true }, null, 2)}\n`,
    );
    const installed = await runProcess('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], {
      cwd: app,
      env: env(),
      timeoutMs: 10 * MIN,
    });
    t.equal(installed.code, 0, `npm install: ${installed.stderr.slice(-2000)}`);
    const pkgDir = path.join(app, 'node_modules', pkg.name);
    t.ok(existsSync(path.join(pkgDir, 'dist', 'cli.js')), 'the tarball holds the compiled CLI');

    // The install hook's one line (npm shows it only with --foreground-scripts; run it as npm does).
    const note = await runProcess(process.execPath, [path.join(pkgDir, 'tools', 'install-note.mjs')], {
      cwd: pkgDir,
      env: env(),
    });
    t.equal(note.code, 0);
    t.equal(note.stdout.trim().split('\n').length, 1, 'one line');
    t.match(note.stdout, /npx g2l-native setup/);

    // Before setup: the CLI keeps working on js, and its one warning names the command.
    const before = await npx(['info']);
    t.equal(before.code, 0, before.stderr);
    t.match(before.stdout, /backend\s+js \(native engine unavailable/);
    t.match(before.stdout, /run `npx g2l-native setup`/);

    const started = Date.now();
    const setup = await npx(['setup'], { Torch_DIR: torchDir! }, 40 * MIN);
    const setupSeconds = (Date.now() - started) / 1000;
    t.equal(setup.code, 0, `setup: ${setup.stdout.slice(-3000)}\n${setup.stderr.slice(-3000)}`);
    t.comment(`npx g2l-native setup (engine build from the tarball's sources): ${setupSeconds.toFixed(0)} s`);
    t.match(setup.stdout, /setup: libtorch .* from Torch_DIR/);
    t.match(setup.stdout, /setup: engine\s+built .*\[\d+\.\d s\]/);
    t.match(setup.stdout, /setup: slides\s+built .*\[\d+\.\d s\]/);
    t.match(setup.stdout, /backend\s+native\n/, 'ends with the info summary, on the engine');
    const cache = path.join(home, pkg.version);
    t.ok(existsSync(path.join(cache, 'build-engine', 'Release', 'g2l_engine.node')), 'the engine is in the cache');
    t.ok(existsSync(path.join(cache, 'build', 'Release', 'g2l_slides.node')), 'the slide addon is in the cache');
    const leftovers = readdirSync(path.join(cache, 'build-engine'), { recursive: true })
      .map(String)
      .filter((f) => /\.(gch|pch)$/.test(f));
    t.same(leftovers, [], 'the precompiled header (~700 MB) is not kept in the cache');
    t.match(setup.stdout, /removed the precompiled header \(\d+ MiB\)/);
    t.notOk(existsSync(path.join(pkgDir, 'build-engine')), 'nothing built in the package folder');
    t.notOk(existsSync(path.join(pkgDir, 'build')), 'nothing built in the package folder');

    const againStarted = Date.now();
    const again = await npx(['setup'], { Torch_DIR: torchDir! });
    const againSeconds = (Date.now() - againStarted) / 1000;
    t.equal(again.code, 0, again.stderr);
    t.match(again.stdout, /setup: engine\s+up to date/);
    t.match(again.stdout, /setup: slides\s+up to date/);
    t.ok(againSeconds < 60, `a second setup is a no-op in seconds (${againSeconds.toFixed(1)} s)`);

    // The install hook with G2L_BUILD=1 runs the same setup (here a no-op) and ends with the summary.
    const hook = await runProcess(process.execPath, [path.join(pkgDir, 'tools', 'install-note.mjs')], {
      cwd: pkgDir,
      env: env({ G2L_BUILD: '1', Torch_DIR: torchDir! }),
      timeoutMs: 5 * MIN,
    });
    t.equal(hook.code, 0, hook.stderr);
    t.match(hook.stdout, /setup: engine\s+up to date/);
    t.match(hook.stdout, /backend\s+native\n/);

    const info = await npx(['info', '--json']);
    t.equal(info.code, 0, info.stderr);
    const i = JSON.parse(info.stdout);
    t.equal(i.backend, 'native');
    t.equal(i.version, pkg.version);
    t.equal(i.enginePath, path.join(cache, 'build-engine', 'Release', 'g2l_engine.node'));
    t.equal(i.libtorch.source, 'Torch_DIR');
    t.notMatch(i.openslide.error ?? '', /not built/, 'the slide addon loads from the cache');

    const demo = await npx(['demo', '--steps', '20', '--out', path.join(work, 'demo')], {}, 20 * MIN);
    t.equal(demo.code, 0, demo.stderr.slice(-2000));
    t.match(demo.stdout, /demo: 20 steps, loss/);
    t.notMatch(demo.stderr, /warning: .*native engine/, 'on the engine, no fallback warning');
  },
);
