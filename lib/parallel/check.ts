// A world of one through the real data-parallel path (c10d rendezvous, cross-rank loss statistics, bucketed gradient
// all-reduce) against the plain single-process path, plus the cost of one gradient all-reduce: the check to run on a
// one-GPU host (NCCL) and, with Gloo, on any CPU machine.
//
//   node -e "import('./dist/parallel/check.js').then((m) => m.main())"      # on the GPU host, after npm run setup
import { getBackend, NativeBackend } from '../backends/index.js';
import { toEngineConfig, type NativeDistiller, type NativeDistillerConfig } from '../distill/native-types.js';
import type { BackendDistillerConfig } from '../backends/types.js';
import { freePort } from './launcher.js';

/** Student (Hibou-L, 303.7 M) + projector (1024x1536 + 1536) float32 gradients: what a step all-reduces. */
export const HIBOU_L_GRADIENT_BYTES = (303_700_000 + 1024 * 1536 + 1536) * 4;

export interface AllReduceTiming {
  bytes: number;
  medianMs: number;
  busGbps: number;
  backend: string;
  worldSize: number;
  device: string;
}

interface DistAddon {
  distAllReduceTiming(dist: Record<string, unknown>, bytes: number, repeats: number): Promise<AllReduceTiming>;
  Distiller: { create(config: NativeDistillerConfig): Promise<NativeDistiller> };
}

function addon(): DistAddon {
  const backend = getBackend({ backend: 'native' });
  if (!(backend instanceof NativeBackend)) throw new Error('the data-parallel check needs the native engine');
  return backend.addon as unknown as DistAddon;
}

/** The median time of `repeats` all-reduces of `bytes` in a world of one on `device` (NCCL on CUDA, Gloo on the CPU). */
export async function allReduceTiming(device: string, bytes: number, repeats = 10): Promise<AllReduceTiming> {
  return addon().distAllReduceTiming(
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
  const a = addon();
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

/** The GPU-host check: an NCCL world of one on cuda:0, the all-reduce of Hibou-L + projector gradients timed. */
export async function main(): Promise<void> {
  const info = await addon().distAllReduceTiming(
    { rank: 0, worldSize: 1, masterAddr: '127.0.0.1', masterPort: await freePort(), device: 'cuda:0' },
    1 << 20,
    3,
  );
  process.stdout.write(`NCCL world of one on ${info.device}: ${info.backend}, ok\n`);
  const t = await allReduceTiming('cuda:0', HIBOU_L_GRADIENT_BYTES, 10);
  process.stdout.write(
    `all-reduce of student + projector gradients (${(t.bytes / 1e9).toFixed(3)} GB fp32), world of one: median ${t.medianMs.toFixed(2)} ms\n` +
      '(a world of one moves no data: this is the fixed cost per step of the collective path; with N GPUs add 2(N-1)/N x bytes / NVLink bus bandwidth)\n',
  );
}
