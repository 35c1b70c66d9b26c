// mulberry32: a small, fast, well-mixed 32-bit generator for reproducible shuffles, textures and bootstrap
// resamples. Not for the engine's training randomness (libtorch's generators), which must match across backends.
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
