// A world of one runs the whole data-parallel path (rendezvous, cross-rank loss statistics, bucketed all-reduce) and
// must match the plain single-process path; Gloo here, NCCL too where a CUDA device is present (the GPU-host check).
import t from 'tap';
import path from 'node:path';
import { getBackend } from '../../lib/backends/index.js';
import { allReduceTiming, HIBOU_L_GRADIENT_BYTES, worldOfOneLosses } from '../helpers/world-of-one.js';
import { ROOT } from '../helpers/cli.js';

const TEACHER = path.join(ROOT, 'test/fixtures/models/timm_giant_reg4_swiglu');
const STUDENT = path.join(ROOT, 'test/fixtures/models/hf_dinov2_reg_swiglu');

// Deterministic tiles with some structure per row and step: (B,240,240,3) uint8.
const tiles = (step: number) => {
  const B = 4,
    S = 240;
  const data = new Uint8Array(B * S * S * 3);
  for (let i = 0; i < data.length; i++) data[i] = (Math.imul(i, 2654435761) >>> 24) ^ ((i >> 9) + step * 37);
  return { data, shape: [B, S, S, 3] };
};

const devices = async (): Promise<string[]> => {
  const info = await getBackend({ backend: 'native' }).info();
  return info.cudaAvailable ? ['cpu', 'cuda:0'] : ['cpu'];
};

t.test('a world of one equals the plain path, step by step', async (t) => {
  for (const device of await devices()) {
    const config = { teacher: TEACHER, student: STUDENT, device, seed: 2, optimizer: { totalSteps: 3 } };
    const r = await worldOfOneLosses(config, tiles, 3);
    t.ok(r.maxRelativeDifference <= 1e-5, `${device}: losses ${r.world.join(', ')} vs ${r.plain.join(', ')}`);
  }
});

t.test('with student dropout and drop path, a world of one draws the masks of the plain path (rank 0)', async (t) => {
  const config = {
    teacher: TEACHER,
    student: STUDENT,
    device: 'cpu',
    seed: 2,
    optimizer: { totalSteps: 3 },
    studentDrop: { dropPath: 0.5, attnDrop: 0.2, hiddenDrop: 0.2 },
  };
  const r = await worldOfOneLosses(config, tiles, 3);
  t.ok(r.maxRelativeDifference <= 1e-5, `losses ${r.world.join(', ')} vs ${r.plain.join(', ')}`);
});

t.test('the all-reduce of a world of one runs and is timed', async (t) => {
  for (const device of await devices()) {
    const bytes = device === 'cpu' ? 4 << 20 : HIBOU_L_GRADIENT_BYTES;
    const r = await allReduceTiming(device, bytes, 5);
    t.equal(r.backend, device === 'cpu' ? 'gloo' : 'nccl');
    t.equal(r.worldSize, 1);
    t.ok(r.bytes > 0 && r.medianMs >= 0, `${device}: ${(r.bytes / 1e6).toFixed(1)} MB in ${r.medianMs.toFixed(3)} ms`);
    t.comment(
      `${r.backend} world of one on ${r.device}: all-reduce of ${(r.bytes / 1e9).toFixed(3)} GB, median ${r.medianMs.toFixed(3)} ms`,
    );
  }
});
