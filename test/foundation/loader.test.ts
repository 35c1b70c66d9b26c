// A missing or broken engine binary gives one clear error with the fix, and commands fall back to the js backend.
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from '../helpers/cli.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'g2l-loader-'));
const missing = path.join(tmp, 'nowhere', 'g2l_engine.node');
const broken = path.join(tmp, 'broken.node');
writeFileSync(broken, 'this is not a shared library');

t.test('a missing engine: info falls back to js and says why, with the command that fixes it', async (t) => {
  const r = await runCli(['info', '--json'], { env: { G2L_ENGINE_PATH: missing } });
  t.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  t.equal(info.backend, 'js');
  t.equal(info.libtorch, null);
  t.match(info.backendFallbackReason, /could not be loaded/);
  t.match(info.backendFallbackReason, /npm run setup/);
  t.match(info.backendFallbackReason, missing);
});

t.test('a missing engine with --backend native: one clear error, exit 2', async (t) => {
  const r = await runCli(['info', '--backend', 'native'], { env: { G2L_ENGINE_PATH: missing } });
  t.equal(r.code, 2);
  t.match(r.stderr, /native engine could not be loaded/);
  t.match(r.stderr, /npm run setup/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace without --verbose');
});

t.test('a damaged engine binary is reported as such', async (t) => {
  const r = await runCli(['info', '--backend', 'native'], { env: { G2L_ENGINE_PATH: broken } });
  t.equal(r.code, 2);
  t.match(r.stderr, /could not be loaded from .*broken\.node/);
  t.match(r.stderr, /Likely: .*npm run setup/);
});

t.test(
  'the library throws the load error, or falls back with one warning when allowed, and keeps working on js',
  async (t) => {
    process.env.G2L_ENGINE_PATH = missing;
    try {
      const { chooseBackend, EngineLoadError } = await import('../../lib/backends/index.js');
      const warnings: string[] = [];
      t.throws(
        () => chooseBackend({ warn: (m) => warnings.push(m) }),
        EngineLoadError,
        'no silent fallback by default',
      );
      t.equal(warnings.length, 0);
      const choice = chooseBackend({ fallback: true, warn: (m) => warnings.push(m) });
      t.equal(choice.backend.name, 'js');
      t.equal(warnings.length, 1);
      t.match(warnings[0], /Continuing with the pure-JS backend/);
      const out = await choice.backend.normalizeImages(
        { data: new Uint8Array([255, 0, 51]), shape: [1, 1, 1, 3] },
        [0.5, 0.5, 0.5],
        [0.5, 0.5, 0.5],
      );
      t.same(
        Array.from(out.data).map((v) => Math.round(v * 1e6) / 1e6),
        [1, -1, -0.6],
      );
      t.throws(() => chooseBackend({ backend: 'native' }), /native engine could not be loaded/);
    } finally {
      delete process.env.G2L_ENGINE_PATH;
    }
  },
);
