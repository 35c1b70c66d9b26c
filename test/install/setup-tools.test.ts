// `g2l-native setup`'s prerequisites (tools/setup.mjs --package, step tools): each missing one is named once, with
// the command that installs it, before anything is built.
import t from 'tap';
import { mkdirSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { ROOT, runProcess } from '../helpers/cli.js';

const SETUP = path.join(ROOT, 'tools', 'setup.mjs');

t.test('no C++ compiler, make, cmake or python3: one message each with its install command', async (t) => {
  const dir = t.testdir();
  const bin = path.join(dir, 'bin');
  mkdirSync(bin);
  symlinkSync('/bin/sh', path.join(bin, 'sh')); // setup asks `sh -c 'command -v <tool>'`; nothing else is on PATH
  const r = await runProcess(
    process.execPath,
    [SETUP, '--package', '--out', path.join(dir, 'cache'), '--only', 'tools'],
    {
      env: { PATH: bin, CXX: '', LIBTORCH: '', Torch_DIR: '' },
    },
  );
  t.equal(r.code, 1, r.stdout);
  const missing = r.stderr.split('\n').filter((l) => l.startsWith('setup: missing'));
  t.equal(missing.length, 4, r.stderr);
  t.match(missing[0], /no C\+\+ compiler.*: sudo apt-get install g\+\+/);
  t.match(missing[1], /no make: sudo apt-get install make/);
  t.match(missing[2], /no cmake: sudo apt-get install cmake/);
  t.match(missing[3], /no python3 .*: sudo apt-get install python3 python3-venv/);
  t.match(r.stderr, /setup: failed: tools: 4 prerequisite\(s\) missing/);
});

t.test('with LIBTORCH set, python3 is not a prerequisite', async (t) => {
  const dir = t.testdir();
  const bin = path.join(dir, 'bin');
  mkdirSync(bin);
  symlinkSync('/bin/sh', path.join(bin, 'sh'));
  const r = await runProcess(
    process.execPath,
    [SETUP, '--package', '--out', path.join(dir, 'cache'), '--only', 'tools'],
    {
      env: { PATH: bin, CXX: '', LIBTORCH: dir, Torch_DIR: '' },
    },
  );
  t.equal(r.code, 1);
  t.notMatch(r.stderr, /no python3/);
  t.equal(r.stderr.split('\n').filter((l) => l.startsWith('setup: missing')).length, 3);
});

t.test('on this machine the prerequisites are present, and the step says how long it took', async (t) => {
  const dir = t.testdir();
  const r = await runProcess(process.execPath, [
    SETUP,
    '--package',
    '--out',
    path.join(dir, 'cache'),
    '--only',
    'tools',
  ]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /setup: tools\s+C\+\+ compiler .*cmake.*\[\d+\.\d s\]/);
});

t.test('--package without --out is refused', async (t) => {
  const r = await runProcess(process.execPath, [SETUP, '--package', '--only', 'tools']);
  t.equal(r.code, 1);
  t.match(r.stderr, /--package needs --out/);
});
