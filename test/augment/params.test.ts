// The random parameters: the same draws on both backends for a seed, and the distributions G2L asks for, tested
// statistically (binomial z, chi-square, Kolmogorov-Smirnov at p ~ 0.001) on 20000 samples.
import t from 'tap';
import { AugmentParam as P, DEFAULT_AUGMENT_CONFIG } from '../../lib/backends/types.js';
import { Mt19937 } from '../../lib/backends/js/augment.js';
import { backends } from './helpers.js';

const N = 20000;
const col = (data: Float32Array, c: number, where: (row: number) => boolean = () => true) => {
  const out: number[] = [];
  for (let r = 0; r < data.length / P.count; r++) if (where(r)) out.push(data[r * P.count + c]);
  return out;
};

/** |z| of a binomial proportion against p. */
function binomialZ(xs: number[], p: number): number {
  const k = xs.filter((v) => v === 1).length;
  return Math.abs(k - xs.length * p) / Math.sqrt(xs.length * p * (1 - p));
}

/** Kolmogorov-Smirnov sqrt(n) * D against U[lo, hi]; 1.95 is the p = 0.001 critical value. */
function ksUniform(xs: number[], lo: number, hi: number): number {
  const s = [...xs].sort((a, b) => a - b);
  let d = 0;
  for (let i = 0; i < s.length; i++) {
    const f = (s[i] - lo) / (hi - lo);
    d = Math.max(d, Math.abs(f - i / s.length), Math.abs(f - (i + 1) / s.length));
  }
  return Math.sqrt(s.length) * d;
}

/** Chi-square statistic of integer values against the uniform distribution over `k` categories. */
function chiSquare(counts: number[]): number {
  const n = counts.reduce((a, b) => a + b, 0);
  const e = n / counts.length;
  return counts.reduce((a, c) => a + ((c - e) * (c - e)) / e, 0);
}

// chi-square critical values at p = 0.001
const CHI2_001: Record<number, number> = { 23: 49.73, 32: 62.49 };

t.test('MT19937 matches the reference sequence (seed 5489: 3499211612, 581869302, 3890346734)', async (t) => {
  const rng = new Mt19937(5489);
  t.same([rng.next(), rng.next(), rng.next()], [3499211612, 581869302, 3890346734]);
});

t.test('a seed gives the same parameters on both backends, and another seed other ones', async (t) => {
  const [native, js] = backends();
  const a = await native.sampleAugmentParams(64, 256, 256, {}, 42);
  const b = await js.sampleAugmentParams(64, 256, 256, {}, 42);
  t.same(a.shape, [64, P.count]);
  t.same(Array.from(a.data), Array.from(b.data), 'identical draws');
  const c = await native.sampleAugmentParams(64, 256, 256, {}, 43);
  t.notSame(Array.from(a.data), Array.from(c.data));
  const big = await native.sampleAugmentParams(4, 256, 256, {}, 2n ** 40n + 7n);
  const bigJs = await js.sampleAugmentParams(4, 256, 256, {}, 2n ** 40n + 7n);
  t.same(Array.from(big.data), Array.from(bigJs.data), 'bigint seeds too');
});

for (const backendIndex of [0, 1]) {
  t.test(`parameter distributions (${backendIndex === 0 ? 'native' : 'js'})`, async (t) => {
    const backend = backends()[backendIndex];
    const cfg = DEFAULT_AUGMENT_CONFIG;
    const { data } = await backend.sampleAugmentParams(N, 256, 256, {}, 20261129 + backendIndex);
    for (const [c, p, name] of [
      [P.hflip, cfg.pHflip, 'hflip'],
      [P.vflip, cfg.pVflip, 'vflip'],
      [P.jitter, cfg.pJitter, 'jitter'],
      [P.blur, cfg.pBlur, 'blur'],
    ] as const) {
      const xs = col(data, c);
      t.ok(
        xs.every((v) => v === 0 || v === 1),
        `${name} is 0 or 1`,
      );
      t.ok(binomialZ(xs, p) < 3.3, `${name} ~ Bernoulli(${p}): z = ${binomialZ(xs, p).toFixed(2)}`);
    }
    const jitterOn = (r: number) => data[r * P.count + P.jitter] === 1;
    for (const [c, lo, hi, name] of [
      [P.brightness, 0.85, 1.15, 'brightness'],
      [P.contrast, 0.85, 1.15, 'contrast'],
      [P.saturation, 0.9, 1.1, 'saturation'],
      [P.hue, -0.05, 0.05, 'hue'],
    ] as const) {
      const xs = col(data, c, jitterOn);
      t.ok(
        xs.every((v) => v >= lo - 1e-6 && v <= hi + 1e-6),
        `${name} within [${lo}, ${hi}]`,
      );
      const ks = ksUniform(xs, lo, hi);
      t.ok(ks < 1.95, `${name} ~ U[${lo}, ${hi}]: sqrt(n) D = ${ks.toFixed(3)}`);
    }
    const sigmas = col(data, P.sigma, (r) => data[r * P.count + P.blur] === 1);
    t.ok(ksUniform(sigmas, 0.1, 2.0) < 1.95, `sigma ~ U[0.1, 2.0] over ${sigmas.length} blurred samples`);
    for (const c of [P.cropX, P.cropY]) {
      const counts = new Array(33).fill(0);
      for (const v of col(data, c)) counts[v]++;
      const chi = chiSquare(counts);
      t.ok(chi < CHI2_001[32], `crop offset ~ U{0..32}: chi2 = ${chi.toFixed(1)} (df 32)`);
    }
    const perms = new Map<string, number>();
    for (let r = 0; r < N; r++) {
      const key = Array.from(data.subarray(r * P.count + P.order0, r * P.count + P.order0 + 4)).join('');
      perms.set(key, (perms.get(key) ?? 0) + 1);
    }
    t.equal(perms.size, 24, 'every order of the four jitter ops occurs');
    const chi = chiSquare([...perms.values()]);
    t.ok(chi < CHI2_001[23], `jitter order ~ uniform over 24 permutations: chi2 = ${chi.toFixed(1)} (df 23)`);
  });
}
