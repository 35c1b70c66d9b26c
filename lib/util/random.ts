// The project's JavaScript random generators, both seeded and the same on every machine. mulberry32: textures
// (synthetic slides and tiles) and bootstrap resamples. SplitMix32: the tile sampler's shuffles (lib/data/sampler.ts).
// Neither is for the engine's training randomness (libtorch's generators), which must match across backends.
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** splitmix32 over (seed, epoch): a small, well-mixed generator that is the same in every process. */
export class SplitMix32 {
  private s: number;
  constructor(seed: number, stream = 0) {
    this.s = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul((stream + 1) >>> 0, 0x85ebca6b)) >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x9e3779b9) >>> 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return (z ^ (z >>> 15)) >>> 0;
  }
  /** Uniform integer in [0, n), from 53 random bits. */
  below(n: number): number {
    const u = (this.next() * 2 ** 21 + (this.next() >>> 11)) / 2 ** 53;
    return Math.floor(u * n);
  }
}

/** Fisher-Yates shuffle of `a` in place, drawing from `rng` (the sampler's, the folds' and ABMIL's orders). */
export function shuffleInPlace<T>(a: { length: number; [i: number]: T }, rng: SplitMix32): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}
