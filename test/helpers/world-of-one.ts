// A world of one through the real data-parallel path (c10d rendezvous, cross-rank loss statistics, bucketed gradient
// all-reduce) against the plain single-process path, plus the cost of one gradient all-reduce
// (test/parallel/world-of-one.test.ts: Gloo on any machine, NCCL too where a GPU is present).
import { loadEngineAddon } from '../../lib/backends/index.js';
import { toEngineConfig, type NativeDistillerConfig } from '../../lib/distill/native-types.js';
import type { BackendDistillerConfig } from '../../lib/backends/types.js';
import { freePort } from '../../lib/parallel/launcher.js';
import { loadEngineTesting, type AllReduceTiming } from './engine-testing.js';

/** Student (Hibou-L, 303.7 M) + projector (1024x1536 + 1536) float32 gradients: what a step all-reduces. */
export const HIBOU_L_GRADIENT_BYTES = (303_700_000 + 1024 * 1536 + 1536) * 4;

/** The median time of `repeats` all-reduces of `bytes` in a world of one on `device` (NCCL on CUDA, Gloo on the CPU). */
export async function allReduceTiming(device: string, bytes: number, repeats = 10): Promise<AllReduceTiming> {
  return loadEngineTesting().distAllReduceTiming(
    { rank: 0, worldSize: 1, masterAddr: '127.0.0.1', masterPort: await freePort(), device },
    bytes,
    repeats,
  );
}

export interface WorldOfOneResult {
  plain: number[];
  world: number[];
  maxRelativeDifference: number;
}

/** The same `steps` steps without and with a world of one: the losses of each. */
export async function worldOfOneLosses(
  backendConfig: BackendDistillerConfig,
  tiles: (step: number) => { data: Uint8Array; shape: number[] },
  steps: number,
): Promise<WorldOfOneResult> {
  const a = loadEngineAddon();
  const config = toEngineConfig(backendConfig);
  const run = async (c: NativeDistillerConfig) => {
    const d = await a.Distiller.create(c);
    const losses: number[] = [];
    for (let s = 0; s < steps; s++) losses.push((await d.step(tiles(s))).loss);
    return losses;
  };
  const plain = await run(config);
  const world = await run({
    ...config,
    dist: { rank: 0, worldSize: 1, masterAddr: '127.0.0.1', masterPort: await freePort() },
  });
  const maxRelativeDifference = Math.max(...plain.map((l, i) => Math.abs(l - world[i]) / Math.abs(l)));
  return { plain, world, maxRelativeDifference };
}
