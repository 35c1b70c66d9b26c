// `g2l-native info --json` reports the installation; the libtorch version is checked against Python's torch.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, VENV_PYTHON, runCli } from '../helpers/cli.js';

t.test('info --json has the documented fields', async (t) => {
  const r = await runCli(['info', '--json']);
  t.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  t.equal(info.version, pkg.version);
  t.equal(info.backend, 'native');
  t.type(info.libtorch.version, 'string');
  t.type(info.libtorch.source, 'string');
  t.type(info.cuda.available, 'boolean');
  t.ok(Array.isArray(info.cuda.architectures));
  t.ok(Array.isArray(info.cuda.devices));
  t.type(info.sharp.version, 'string');
  t.type(info.sharp.libvips, 'string');
  t.ok('openslide' in info);
  if (info.libtorch.source === '.venv' && existsSync(VENV_PYTHON)) {
    const pyVersion = execFileSync(VENV_PYTHON, ['-c', 'import torch;print(torch.__version__.split("+")[0])'], {
      encoding: 'utf8',
    }).trim();
    t.equal(info.libtorch.version, pyVersion, 'the engine runs the libtorch of the .venv torch it was built against');
  }
});

t.test('info prints a readable summary', async (t) => {
  const r = await runCli(['info']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^g2l-native \d+\.\d+\.\d+/);
  t.match(r.stdout, /libtorch\s+\d+\.\d+/);
  t.match(r.stdout, /OpenSlide\s+/);
});

t.test('usage errors: unknown command and unknown flag exit 2 with one line', async (t) => {
  const r = await runCli(['distil-everything']);
  t.equal(r.code, 2);
  t.match(r.stderr, /Unknown argument|Unknown command/i);
  const r2 = await runCli(['info', '--bogus-flag']);
  t.equal(r2.code, 2);
  t.match(r2.stderr, /bogus-flag/);
});

t.test('the slide-reader addon loads', async (t) => {
  const { loadSlidesAddon, slidesAddonError } = await import('../../lib/slides/addon.js');
  const addon = loadSlidesAddon();
  t.ok(addon, `slides addon loaded (${slidesAddonError() ?? 'ok'})`);
  const version = addon!.openslideVersion();
  const error = addon!.openslideError();
  t.ok((version === null) !== (error === null), 'either a version or the reason it is absent');
});
