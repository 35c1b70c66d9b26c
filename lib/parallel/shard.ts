// How a global batch is cut between ranks: rank r of W takes global rows r, r + W, r + 2W... of each step's batch of
// B*W tiles (as lib/data/sampler.ts and torch's DistributedSampler do). The engine draws each tile's augmentation by
// its global row (native/engine/train/distiller.cpp), so N ranks with batch B see exactly what one process with batch N*B
// sees.

export interface Shard {
  rank: number;
  worldSize: number;
}

/** The position in the tile stream of row `row` (0..batchSize-1) of this rank's batch at 0-based step `step`. */
export function shardPosition(step: number, batchSize: number, row: number, shard?: Shard | null): number {
  if (!shard || shard.worldSize === 1) return step * batchSize + row;
  return (step * batchSize + row) * shard.worldSize + shard.rank;
}
