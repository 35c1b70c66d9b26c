// A Distiller on the CPU run once per kernel setting (DistillerConfig.kernels; each Distiller's models hold their own,
// so the sides run one after the other in this process): the fixture teacher and a student with LayerScale (hidden
// 32), features of a probe batch, three steps at a learning rate that moves every parameter, features again. For
// tests that compare a choice's two sides (test/distill/fused-norm.test.ts, test/distill/packed-qkv.test.ts).
import path from 'node:path';
import { Distiller } from '../../lib/distill/distiller.js';
import type { KernelOptions } from '../../lib/distill/config.js';
import { syntheticTile } from '../../lib/distill/tiles.js';
import { ROOT } from './cli.js';

const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'models');

function batch(n: number, seed: number) {
  const data = new Uint8Array(n * 256 * 256 * 3);
  for (let i = 0; i < n; i++) syntheticTile(seed * 1000 + i, 256, data, i * 256 * 256 * 3);
  return { data, shape: [n, 256, 256, 3] };
}

export interface SwitchSide {
  fusedNorm: boolean;
  packedQkv: boolean;
  before: number[];
  after: number[];
  loss: number[];
  gradNorm: number[];
}

/** One side: a Distiller with these kernel choices (absent keys: the defaults). */
export async function switchSide(kernels: Partial<KernelOptions> | undefined): Promise<SwitchSide> {
  const d = await Distiller.create({
    teacher: path.join(FIXTURES, 'timm_giant_reg4_swiglu'),
    student: path.join(FIXTURES, 'hf_dinov2_reg_swiglu'),
    device: 'cpu',
    backend: 'native',
    seed: 0,
    totalSteps: 10,
    lr: 1e-3,
    warmupSteps: 0,
    ...(kernels ? { kernels } : {}),
  });
  const probe = batch(4, 99);
  const before = Array.from((await d.features(probe, 'student')).data);
  const steps = [];
  for (let s = 0; s < 3; s++) steps.push(await d.step(batch(4, s)));
  const after = Array.from((await d.features(probe, 'student')).data);
  const info = d.info();
  return {
    fusedNorm: info.fusedNorm!,
    packedQkv: info.packedQkv!,
    before,
    after,
    loss: steps.map((r) => r.loss),
    gradNorm: steps.map((r) => r.gradNorm),
  };
}

/** Norm of the difference over the norm of b. */
export const relNorm = (a: number[], b: number[]) => {
  let num = 0,
    den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
};

/** Largest elementwise relative difference. */
export const relMax = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.abs(b[i])));
