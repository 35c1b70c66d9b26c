// hf:org/name references resolved offline from a Hugging Face cache tree (made here as the hub client lays it out:
// refs/<revision> naming a commit, snapshots/<commit>/ with links into blobs/), and used by embed and distill.
import t from 'tap';
import { cpSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { hfCacheCandidates, resolveHfModel } from '../../lib/models/hub.js';
import { parseModelArg } from '../../lib/models/source.js';
import { ROOT, runCli } from '../helpers/cli.js';

const FIXTURE = path.join(ROOT, 'test/fixtures/models/hf_dinov2_reg_swiglu');

/** A cache holding `org/name` at commit `commit` (refs/main -> it), files linked from blobs/ as the hub client does. */
function fakeCache(root: string, org: string, name: string, commit: string): string {
  const repo = path.join(root, `models--${org}--${name}`);
  mkdirSync(path.join(repo, 'refs'), { recursive: true });
  mkdirSync(path.join(repo, 'blobs'), { recursive: true });
  const snap = path.join(repo, 'snapshots', commit);
  mkdirSync(snap, { recursive: true });
  writeFileSync(path.join(repo, 'refs', 'main'), commit);
  for (const f of readdirSync(FIXTURE)) {
    const blob = path.join(repo, 'blobs', `${f}.blob`);
    cpSync(path.join(FIXTURE, f), blob);
    symlinkSync(path.relative(snap, blob), path.join(snap, f));
  }
  return snap;
}

t.test('resolution: refs, commits and their prefixes, the cache variables in order', async (t) => {
  const root = t.testdir();
  const hub = path.join(root, 'hf-home', 'hub');
  const snap = fakeCache(hub, 'acme', 'tiny-vit', '0123456789abcdef0123456789abcdef01234567');
  const env = { HF_HOME: path.join(root, 'hf-home') };
  t.equal(resolveHfModel('hf:acme/tiny-vit', env), snap, 'refs/main names the snapshot');
  t.equal(resolveHfModel('hf:acme/tiny-vit@0123456789abcdef0123456789abcdef01234567', env), snap, 'a commit hash');
  t.equal(resolveHfModel('hf:acme/tiny-vit@0123456', env), snap, 'a commit prefix');
  t.equal(hfCacheCandidates({ HF_HUB_CACHE: '/a', HF_HOME: '/b' })[0], '/a', 'HF_HUB_CACHE first');
  t.equal(hfCacheCandidates({ HF_HUB_CACHE: '/a', HF_HOME: '/b' })[1], '/b/hub');
  t.throws(
    () => resolveHfModel('hf:acme/missing', env),
    /hf:acme\/missing is not in a Hugging Face cache on this machine \(nothing is downloaded\): looked in .*models--acme--missing \(absent\)/,
  );
  t.throws(() => resolveHfModel('hf:acme/tiny-vit@v2', env), /no refs\/v2 and no such snapshot/);
  t.throws(() => resolveHfModel('hf:no-slash', env), /expected hf:<org>\/<name>/);
});

t.test('embed --model hf:... and distill --student hf:... use the cached folder', async (t) => {
  const root = t.testdir();
  const hub = path.join(root, 'cache');
  const snap = fakeCache(hub, 'acme', 'tiny-vit', 'feedfacefeedfacefeedfacefeedfacefeedface');
  const env = { HF_HUB_CACHE: hub };
  const old = process.env.HF_HUB_CACHE;
  process.env.HF_HUB_CACHE = hub;
  try {
    t.same(parseModelArg('hf:acme/tiny-vit'), { folder: snap });
  } finally {
    if (old === undefined) delete process.env.HF_HUB_CACHE;
    else process.env.HF_HUB_CACHE = old;
  }
  const npy = path.join(root, 'x.npy');
  const { writeNpy } = await import('../../lib/io/npy.js');
  await writeNpy(npy, { dtype: 'uint8', shape: [2, 224, 224, 3], data: new Uint8Array(2 * 224 * 224 * 3).fill(128) });
  const viaHub = await runCli(
    ['embed', '--model', 'hf:acme/tiny-vit', '--input', npy, '--out', path.join(root, 'a.npy')],
    { env },
  );
  t.equal(viaHub.code, 0, viaHub.stderr);
  const direct = await runCli(['embed', '--model', FIXTURE, '--input', npy, '--out', path.join(root, 'b.npy')], {
    env,
  });
  t.equal(direct.code, 0, direct.stderr);
  const { readNpy } = await import('../../lib/io/npy.js');
  t.same(
    Array.from((await readNpy(path.join(root, 'a.npy'))).data as Float32Array),
    Array.from((await readNpy(path.join(root, 'b.npy'))).data as Float32Array),
    'the same embeddings',
  );
  const run = path.join(root, 'run');
  const d = await runCli(
    [
      'distill',
      '--teacher',
      path.join(ROOT, 'test/fixtures/models/timm_giant_reg4_swiglu'),
      '--student',
      'hf:acme/tiny-vit',
      '--slides',
      'synthetic:16',
      '--steps',
      '1',
      '--batch-size',
      '4',
      '--out',
      run,
      '--no-progress',
    ],
    { env },
  );
  t.equal(d.code, 0, d.stderr);
  const cfg = JSON.parse((await import('node:fs')).readFileSync(path.join(run, 'config.json'), 'utf8'));
  t.equal(cfg.student, snap, 'config.json records the snapshot folder (its commit) the run used');
  const missing = await runCli(
    ['embed', '--model', 'hf:acme/absent', '--input', npy, '--out', path.join(root, 'c.npy')],
    { env },
  );
  t.equal(missing.code, 2);
  t.match(missing.stderr, /hf:acme\/absent is not in a Hugging Face cache/);
});
