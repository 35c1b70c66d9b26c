// The torchrun-style environment, the launcher's argument handling and the shard layout, without processes; and the
// built engine's link-level promise about the declarations-only gloo headers (native/engine/third_party/gloo/README.md).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { distFromEnv, deviceForRank } from '../../lib/parallel/env.js';
import { describeExit, withoutNproc } from '../../lib/parallel/launcher.js';
import { shardPosition } from '../../lib/parallel/shard.js';
import { UserError } from '../../lib/errors.js';
import { enginePath } from '../../lib/backends/native.js';

t.test('distFromEnv reads torchrun variables and names what is wrong', async (t) => {
  t.equal(distFromEnv({}), null, 'no WORLD_SIZE: one process');
  t.equal(distFromEnv({ WORLD_SIZE: '1', RANK: '0' }), null, 'a world of one is one process');
  t.same(distFromEnv({ WORLD_SIZE: '4', RANK: '2', LOCAL_RANK: '0', MASTER_ADDR: 'node1', MASTER_PORT: '29400' }), {
    rank: 2,
    worldSize: 4,
    localRank: 0,
    masterAddr: 'node1',
    masterPort: 29400,
  });
  t.equal(
    distFromEnv({ WORLD_SIZE: '2', RANK: '1', SLURM_LOCALID: '1', MASTER_ADDR: 'h' })!.localRank,
    1,
    'SLURM_LOCALID when LOCAL_RANK is unset',
  );
  t.equal(distFromEnv({ WORLD_SIZE: '2', RANK: '1', MASTER_ADDR: 'h' })!.masterPort, 29500, "torchrun's default port");
  t.throws(() => distFromEnv({ WORLD_SIZE: '2', MASTER_ADDR: 'h' }), /RANK is not/);
  t.throws(() => distFromEnv({ WORLD_SIZE: '2', RANK: '2', MASTER_ADDR: 'h' }), /outside the world/);
  t.throws(() => distFromEnv({ WORLD_SIZE: '2', RANK: '0' }), /MASTER_ADDR/);
  t.throws(() => distFromEnv({ WORLD_SIZE: 'two', RANK: '0' }), UserError);
  t.throws(() => distFromEnv({ WORLD_SIZE: '2', RANK: '0', MASTER_ADDR: 'h', MASTER_PORT: '70000' }), /not a TCP port/);
  const d = distFromEnv({ WORLD_SIZE: '8', RANK: '5', LOCAL_RANK: '5', MASTER_ADDR: 'h' });
  t.equal(deviceForRank('cuda', d), 'cuda:5', 'one GPU per process');
  t.equal(deviceForRank('cpu', d), 'cpu');
  t.equal(deviceForRank('cuda', null), 'cuda');
});

t.test('the launcher strips --nproc and describes exits', async (t) => {
  t.same(withoutNproc(['distill', '--nproc', '4', '--steps', '2']), ['distill', '--steps', '2']);
  t.same(withoutNproc(['demo', '--nproc=2']), ['demo']);
  t.equal(describeExit({ rank: 1, pid: 5, code: null, signal: 'SIGKILL' }), 'was killed by SIGKILL');
  t.equal(describeExit({ rank: 1, pid: 5, code: 3, signal: null }), 'exited with code 3');
});

t.test('shards: ranks take disjoint rows whose union is the one-process batch, in the sampler layout', async (t) => {
  const B = 3,
    W = 4;
  for (let step = 0; step < 3; step++) {
    const union: number[] = [];
    for (let r = 0; r < W; r++)
      for (let i = 0; i < B; i++) union.push(shardPosition(step, B, i, { rank: r, worldSize: W }));
    const single = Array.from({ length: B * W }, (_, j) => shardPosition(step, B * W, j));
    t.same(
      union.sort((a, b) => a - b),
      single,
      `step ${step}`,
    );
  }
  // Row i of rank r is global row i*W + r: the row the engine draws its augmentation for.
  t.equal(shardPosition(2, B, 1, { rank: 3, worldSize: W }) - 2 * B * W, 1 * W + 3);
});

t.test('the engine neither defines nor calls any gloo:: symbol (only c10d:: ones from libtorch)', async (t) => {
  const addon = enginePath();
  let nm = '';
  try {
    nm = execFileSync('nm', ['-DC', addon], { encoding: 'utf8', maxBuffer: 256 << 20 });
  } catch {
    t.comment(`skipped: nm is not available or ${addon} is not built`);
    return;
  }
  t.ok(existsSync(addon));
  const gloo = nm.split('\n').filter((l) => /\s(gloo::)/.test(l));
  t.same(gloo, [], 'no gloo:: symbols');
  t.match(nm, /U c10d::ProcessGroupGloo::ProcessGroupGloo\(/, 'the Gloo backend comes from libtorch_cpu');
});
