// A Distiller on the CPU run once per engine switch setting, each in its own child process (the engine reads its
// G2L_* switches once per process): the fixture teacher and a student with LayerScale (hidden 32), features of a
// probe batch, three steps at a learning rate that moves every parameter, features again. For tests that compare a
// switch's two sides (test/distill/fused-norm.test.ts, test/distill/packed-qkv.test.ts).
import path from 'node:path';
import { ROOT, runProcess } from './cli.js';

const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'models');

const CHILD = `
import { Distiller } from ${JSON.stringify(path.join(ROOT, 'dist', 'distill', 'distiller.js'))};
import { syntheticTile } from ${JSON.stringify(path.join(ROOT, 'dist', 'distill', 'tiles.js'))};
const batch = (n, seed) => {
  const data = new Uint8Array(n * 256 * 256 * 3);
  for (let i = 0; i < n; i++) syntheticTile(seed * 1000 + i, 256, data, i * 256 * 256 * 3);
  return { data, shape: [n, 256, 256, 3] };
};
const d = await Distiller.create({
  teacher: ${JSON.stringify(path.join(FIXTURES, 'timm_giant_reg4_swiglu'))},
  student: ${JSON.stringify(path.join(FIXTURES, 'hf_dinov2_reg_swiglu'))},
  device: 'cpu', backend: 'native', seed: 0, totalSteps: 10, lr: 1e-3, warmupSteps: 0,
});
const probe = batch(4, 99);
const before = Array.from((await d.features(probe, 'student')).data);
const steps = [];
for (let s = 0; s < 3; s++) steps.push(await d.step(batch(4, s)));
const after = Array.from((await d.features(probe, 'student')).data);
const info = d.info();
console.log(JSON.stringify({ fusedNorm: info.fusedNorm, packedQkv: info.packedQkv, before, after,
  loss: steps.map((r) => r.loss), gradNorm: steps.map((r) => r.gradNorm) }));
`;

export interface SwitchSide {
  fusedNorm: boolean; packedQkv: boolean; before: number[]; after: number[]; loss: number[]; gradNorm: number[];
}

/** One side: the child with these environment variables (undefined removes one). */
export async function switchSide(env: NodeJS.ProcessEnv): Promise<SwitchSide> {
  const r = await runProcess(process.execPath, ['--input-type=module', '-e', CHILD], { env });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !last.startsWith('{')) throw new Error(`child (${JSON.stringify(env)}) failed, exit ${r.code}: ${r.stderr}`);
  return JSON.parse(last) as SwitchSide;
}

/** Norm of the difference over the norm of b. */
export const relNorm = (a: number[], b: number[]) => {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
  return Math.sqrt(num / den);
};

/** Largest elementwise relative difference. */
export const relMax = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.abs(b[i])));
