// Which rank this process is, from the environment torchrun, SLURM scripts and the --nproc launcher set:
// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. A process without WORLD_SIZE (or with WORLD_SIZE=1) is a
// world of one and runs exactly as without data parallelism.
import { UserError } from '../errors.js';

/** This process's place in a data-parallel world; the engine's `dist` config (native/addon/dist.cpp) reads it. */
export interface DistSettings {
  rank: number;
  worldSize: number;
  /** Index of this process on its node: its GPU is cuda:<localRank>. */
  localRank: number;
  masterAddr: string;
  masterPort: number;
  /** "auto" (nccl on CUDA, gloo on the CPU), "nccl" or "gloo". */
  backend?: 'auto' | 'nccl' | 'gloo';
  /** Rendezvous and collective timeout. */
  timeoutMs?: number;
  /** Gradient all-reduce bucket size (default 25 MB): the run's distBucketBytes (lib/distill/config.ts), not the environment. */
  bucketBytes?: number;
}

function intVar(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v.trim() === '') return undefined;
  if (!/^\d+$/.test(v.trim())) {
    throw new UserError(
      `environment variable ${name}="${v}" is not a non-negative integer: set it as torchrun does (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_PORT are integers)`,
    );
  }
  return Number(v.trim());
}

/** The world this process belongs to, or null for a single process (WORLD_SIZE unset or 1). */
export function distFromEnv(env: NodeJS.ProcessEnv = process.env): DistSettings | null {
  const worldSize = intVar(env, 'WORLD_SIZE');
  if (worldSize === undefined || worldSize === 1) return null;
  if (worldSize < 1) throw new UserError('WORLD_SIZE must be at least 1');
  const rank = intVar(env, 'RANK');
  if (rank === undefined)
    throw new UserError(
      `WORLD_SIZE=${worldSize} is set but RANK is not: give every process its rank (0..${worldSize - 1}), as torchrun or srun do`,
    );
  if (rank >= worldSize)
    throw new UserError(`RANK=${rank} is outside the world of WORLD_SIZE=${worldSize} processes (0..${worldSize - 1})`);
  const localRank = intVar(env, 'LOCAL_RANK') ?? intVar(env, 'SLURM_LOCALID') ?? 0;
  const masterAddr = env.MASTER_ADDR?.trim() || '';
  if (!masterAddr)
    throw new UserError(
      `WORLD_SIZE=${worldSize} is set but MASTER_ADDR is not: set it to rank 0's host name or address`,
    );
  const masterPort = intVar(env, 'MASTER_PORT') ?? 29500;
  if (masterPort < 1 || masterPort > 65535)
    throw new UserError(`MASTER_PORT=${masterPort} is not a TCP port (1-65535)`);
  const timeoutMs = intVar(env, 'G2L_DIST_TIMEOUT_MS');
  return { rank, worldSize, localRank, masterAddr, masterPort, ...(timeoutMs ? { timeoutMs } : {}) };
}

/** One device per process: "cuda" becomes cuda:<localRank>; an explicit index or the CPU stays as given. */
export function deviceForRank(device: string, dist: DistSettings | null): string {
  if (!dist) return device;
  return device === 'cuda' ? `cuda:${dist.localRank}` : device;
}
