// Inputs and measures shared by the FP8 teacher's tests (test/distill/teacher-fp8.test.ts on the CPU,
// test/distill/teacher-fp8-cuda.test.ts on a GPU host).
import type { Float32Tensor } from '../../lib/backends/types.js';

/** A deterministic normal-ish matrix with rows of very different scales (activations span decades). */
export function matrix(
  rows: number,
  cols: number,
  seed: number,
  rowScale = (r: number) => 10 ** ((r % 7) - 3),
): Float32Tensor {
  let s = seed >>> 0;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const data = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) data[r * cols + c] = (rnd() + rnd() + rnd() - 1.5) * 2 * rowScale(r);
  }
  return { data, shape: [rows, cols] };
}

/** The cosine of each row of `a` with the same row of `b` (rows of `dim` values). */
export function cosines(a: Float32Array, b: Float32Array, dim: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < a.length / dim; r++) {
    let ab = 0;
    let aa = 0;
    let bb = 0;
    for (let i = r * dim; i < (r + 1) * dim; i++) {
      ab += a[i] * b[i];
      aa += a[i] * a[i];
      bb += b[i] * b[i];
    }
    out.push(ab / Math.sqrt(aa * bb));
  }
  return out;
}
