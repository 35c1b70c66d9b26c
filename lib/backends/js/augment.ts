// Tile augmentation in plain JavaScript: the same function as the engine (native/engine/train/augment.cpp), computed
// per pixel in float64 from torchvision 0.26's definitions, and the same parameter draws (mt19937, as libtorch's
// CPU generator) so a seed gives the same parameters on both backends.
import { UserError } from '../../errors.js';
import {
  AugmentParam as P,
  DEFAULT_AUGMENT_CONFIG,
  type AugmentConfig,
  type AugmentedBatch,
  type Float32Tensor,
  type Normalization,
  type TeacherDtype,
  type Uint8Tensor,
} from '../types.js';

// ---------------------------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------------------------

/** MT19937 seeded as at::mt19937(seed): the low 32 bits of the seed, Knuth's initialisation. */
export class Mt19937 {
  private readonly state = new Uint32Array(624);
  private index = 624;

  constructor(seed: number | bigint) {
    const s = BigInt.asUintN(32, BigInt(seed));
    this.state[0] = Number(s);
    for (let i = 1; i < 624; i++) {
      const prev = this.state[i - 1] ^ (this.state[i - 1] >>> 30);
      // 1812433253 * prev + i, mod 2^32 (split to stay exact in float64)
      this.state[i] =
        (((((prev & 0xffff0000) >>> 16) * 1812433253) << 16) + (prev & 0x0000ffff) * 1812433253 + i) >>> 0;
    }
  }

  next(): number {
    const mt = this.state;
    if (this.index >= 624) {
      for (let i = 0; i < 624; i++) {
        const y = (mt[i] & 0x80000000) | (mt[(i + 1) % 624] & 0x7fffffff);
        mt[i] = mt[(i + 397) % 624] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.index = 0;
    }
    let y = mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** 24 high bits -> [0, 1), as the engine's sample_augment_params. */
  uniform(): number {
    return (this.next() >>> 8) * (1 / 16777216);
  }
}

export function resolveAugmentConfig(config: AugmentConfig = {}): Required<AugmentConfig> {
  const c = {
    ...DEFAULT_AUGMENT_CONFIG,
    ...Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined)),
  };
  for (const k of ['pHflip', 'pVflip', 'pJitter', 'pBlur'] as const) {
    if (!(c[k] >= 0 && c[k] <= 1)) throw new UserError(`augment: ${k} must be in [0, 1], got ${c[k]}`);
  }
  if (!(c.brightness >= 0 && c.contrast >= 0 && c.saturation >= 0)) {
    throw new UserError('augment: brightness, contrast and saturation must be non-negative');
  }
  if (!(c.hue >= 0 && c.hue <= 0.5)) throw new UserError(`augment: hue must be in [0, 0.5], got ${c.hue}`);
  if (!Number.isInteger(c.blurKernel) || c.blurKernel <= 0 || c.blurKernel % 2 === 0 || c.blurKernel >> 1 >= c.crop) {
    throw new UserError(
      `augment: blurKernel must be odd, positive and smaller than twice the crop, got ${c.blurKernel}`,
    );
  }
  if (!(c.blurSigmaMin > 0 && c.blurSigmaMax >= c.blurSigmaMin))
    throw new UserError('augment: blur sigma range must satisfy 0 < min <= max');
  return c;
}

function checkCrop(c: Required<AugmentConfig>, tileH: number, tileW: number): void {
  if (!Number.isInteger(c.crop) || c.crop <= 0 || c.crop > tileH || c.crop > tileW) {
    throw new UserError(
      `augment: crop ${c.crop} does not fit tiles of ${tileH}x${tileW}: use a crop no larger than the tile`,
    );
  }
}

/** Python's round(): halves to even, as torchvision's CenterCrop. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export function sampleAugmentParams(
  batch: number,
  tileH: number,
  tileW: number,
  config: AugmentConfig,
  seed: number | bigint,
): Float32Tensor {
  const c = resolveAugmentConfig(config);
  checkCrop(c, tileH, tileW);
  const out = new Float32Array(batch * P.count);
  const rng = new Mt19937(seed);
  const between = (lo: number, hi: number) => lo + (hi - lo) * rng.uniform();
  for (let b = 0; b < batch; b++) {
    const row = out.subarray(b * P.count, (b + 1) * P.count);
    const order = [0, 1, 2, 3];
    row[P.brightness] = row[P.contrast] = row[P.saturation] = 1;
    if (!c.enabled) {
      row[P.cropX] = roundHalfEven((tileW - c.crop) / 2);
      row[P.cropY] = roundHalfEven((tileH - c.crop) / 2);
      order.forEach((v, k) => (row[P.order0 + k] = v));
      continue;
    }
    row[P.cropX] = Math.floor(rng.uniform() * (tileW - c.crop + 1));
    row[P.cropY] = Math.floor(rng.uniform() * (tileH - c.crop + 1));
    row[P.hflip] = rng.uniform() < c.pHflip ? 1 : 0;
    row[P.vflip] = rng.uniform() < c.pVflip ? 1 : 0;
    row[P.jitter] = rng.uniform() < c.pJitter ? 1 : 0;
    row[P.brightness] = between(Math.max(0, 1 - c.brightness), 1 + c.brightness);
    row[P.contrast] = between(Math.max(0, 1 - c.contrast), 1 + c.contrast);
    row[P.saturation] = between(Math.max(0, 1 - c.saturation), 1 + c.saturation);
    row[P.hue] = between(-c.hue, c.hue);
    for (let i = 3; i > 0; i--) {
      const j = Math.floor(rng.uniform() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    order.forEach((v, k) => (row[P.order0 + k] = v));
    row[P.blur] = rng.uniform() < c.pBlur ? 1 : 0;
    row[P.sigma] = between(c.blurSigmaMin, c.blurSigmaMax);
  }
  return { data: out, shape: [batch, P.count] };
}

// ---------------------------------------------------------------------------------------------------------------
// torchvision's colour kernels on a (3,H,W) float64 image in [0,1], in place
// ---------------------------------------------------------------------------------------------------------------

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);
const gray = (r: number, g: number, b: number) => r * 0.2989 + g * 0.587 + b * 0.114;

function adjustBrightness(x: Float64Array, f: number): void {
  for (let i = 0; i < x.length; i++) x[i] = clamp01(x[i] * f);
}

/** blend(x, target, f) = clamp(f x + (1-f) target); target is the image's mean gray (contrast) or the pixel's (saturation). */
function adjustContrastOrSaturation(x: Float64Array, n: number, f: number, perPixel: boolean): void {
  let mean = 0;
  if (!perPixel) {
    for (let i = 0; i < n; i++) mean += gray(x[i], x[n + i], x[2 * n + i]);
    mean /= n;
  }
  for (let i = 0; i < n; i++) {
    const t = perPixel ? gray(x[i], x[n + i], x[2 * n + i]) : mean;
    for (let ch = 0; ch < 3; ch++) x[ch * n + i] = clamp01(f * x[ch * n + i] + (1 - f) * t);
  }
}

function adjustHue(x: Float64Array, n: number, f: number): void {
  for (let i = 0; i < n; i++) {
    const r = x[i],
      g = x[n + i],
      b = x[2 * n + i];
    const maxc = Math.max(r, g, b),
      minc = Math.min(r, g, b);
    const eqc = maxc === minc;
    const range = maxc - minc;
    const s = range / (eqc ? 1 : maxc);
    const div = eqc ? 1 : range;
    const rc = (maxc - r) / div,
      gc = (maxc - g) / div,
      bc = (maxc - b) / div;
    let h = maxc === r ? bc - gc : maxc === g ? 2 + rc - bc : 4 + gc - rc;
    h = ((h / 6 + 1) % 1) + f;
    h -= Math.floor(h);
    const h6 = h * 6;
    const sector = ((Math.floor(h6) % 6) + 6) % 6;
    const fr = h6 - Math.floor(h6);
    const v = maxc;
    const q = clamp01((1 - s * fr) * v);
    const t = clamp01((s * fr + (1 - s)) * v);
    const p = clamp01((1 - s) * v);
    const rgb = [
      [v, t, p],
      [q, v, p],
      [p, v, t],
      [p, q, v],
      [t, p, v],
      [v, p, q],
    ][sector];
    x[i] = rgb[0];
    x[n + i] = rgb[1];
    x[2 * n + i] = rgb[2];
  }
}

/** torchvision gaussian_blur: softmax(-(x/sigma)^2) on linspace(+-(k-1)/(2 sqrt 2)), reflect padding (separable). */
function gaussianBlur(x: Float64Array, size: number, k: number, sigma: number): void {
  const lim = (k - 1) / (2 * Math.SQRT2);
  const w = new Float64Array(k);
  let sum = 0;
  for (let j = 0; j < k; j++) {
    const t = (k > 1 ? -lim + (2 * lim * j) / (k - 1) : 0) / sigma;
    w[j] = Math.exp(-t * t);
    sum += w[j];
  }
  for (let j = 0; j < k; j++) w[j] /= sum;
  const r = k >> 1;
  const reflect = (i: number) => (i < 0 ? -i : i >= size ? 2 * size - 2 - i : i);
  const tmp = new Float64Array(size * size);
  const n = size * size;
  for (let ch = 0; ch < 3; ch++) {
    const base = ch * n;
    for (let y = 0; y < size; y++) {
      for (let xx = 0; xx < size; xx++) {
        let acc = 0;
        for (let j = 0; j < k; j++) acc += w[j] * x[base + y * size + reflect(xx + j - r)];
        tmp[y * size + xx] = acc;
      }
    }
    for (let y = 0; y < size; y++) {
      for (let xx = 0; xx < size; xx++) {
        let acc = 0;
        for (let j = 0; j < k; j++) acc += w[j] * tmp[reflect(y + j - r) * size + xx];
        x[base + y * size + xx] = acc;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Batch
// ---------------------------------------------------------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float -> IEEE half bits, round to nearest even (as a float32 -> float16 cast). */
export function toHalfBits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let m = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (m ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    m |= 0x800000;
    const shift = 14 - e;
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (m >>> 13);
  const rem = m & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** float -> bfloat16 bits, round to nearest even. */
export function toBFloat16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function halfBitsToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

export function bfloat16BitsToFloat(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

function checkParams(p: Float32Array, batch: number, tileH: number, tileW: number, c: Required<AugmentConfig>): void {
  for (let b = 0; b < batch; b++) {
    const row = p.subarray(b * P.count, (b + 1) * P.count);
    const cx = row[P.cropX],
      cy = row[P.cropY];
    if (
      !Number.isInteger(cx) ||
      !Number.isInteger(cy) ||
      cx < 0 ||
      cy < 0 ||
      cx + c.crop > tileW ||
      cy + c.crop > tileH
    ) {
      throw new UserError(
        `augmentBatch: params row ${b}: crop offset (${cx}, ${cy}) does not fit a ${c.crop} crop in ${tileH}x${tileW} tiles`,
      );
    }
    const seen = new Set(Array.from(row.subarray(P.order0, P.order0 + 4)));
    if (seen.size !== 4 || ![0, 1, 2, 3].every((v) => seen.has(v))) {
      throw new UserError(`augmentBatch: params row ${b}: order is not a permutation of 0..3`);
    }
    if (row[P.blur] !== 0 && !(row[P.sigma] > 0))
      throw new UserError(`augmentBatch: params row ${b}: blur sigma must be positive`);
  }
}

export function augmentBatch(
  tiles: Uint8Tensor,
  params: Float32Tensor,
  config: AugmentConfig,
  teacherNorm: Normalization,
  studentNorm: Normalization,
  teacherDtype: TeacherDtype = 'float16',
): AugmentedBatch {
  const c = resolveAugmentConfig(config);
  if (tiles.shape.length !== 4 || tiles.shape[3] !== 3) {
    throw new UserError(`augmentBatch: expected uint8 tiles of shape (B,H,W,3), got (${tiles.shape.join(',')})`);
  }
  const [batch, tileH, tileW] = tiles.shape;
  checkCrop(c, tileH, tileW);
  if (params.shape.length !== 2 || params.shape[0] !== batch || params.shape[1] !== P.count) {
    throw new UserError(
      `augmentBatch: params must be (B,${P.count}) with B = ${batch}, got (${params.shape.join(',')})`,
    );
  }
  for (const nrm of [teacherNorm, studentNorm]) {
    if (nrm.mean.length !== 3 || nrm.std.length !== 3 || !nrm.std.every((s) => s > 0)) {
      throw new UserError('augmentBatch: a normalisation needs mean[3] and std[3] with positive std');
    }
  }
  checkParams(params.data, batch, tileH, tileW, c);
  const size = c.crop;
  const n = size * size;
  const student = new Float32Array(batch * 3 * n);
  const teacher = teacherDtype === 'float32' ? new Float32Array(batch * 3 * n) : new Uint16Array(batch * 3 * n);
  const toBits = teacherDtype === 'bfloat16' ? toBFloat16Bits : toHalfBits;
  const img = new Float64Array(3 * n);
  for (let b = 0; b < batch; b++) {
    const row = params.data.subarray(b * P.count, (b + 1) * P.count);
    const tile = tiles.data.subarray(b * tileH * tileW * 3, (b + 1) * tileH * tileW * 3);
    for (let y = 0; y < size; y++) {
      const sy = row[P.cropY] + (row[P.vflip] ? size - 1 - y : y);
      for (let x = 0; x < size; x++) {
        const sx = row[P.cropX] + (row[P.hflip] ? size - 1 - x : x);
        const s = (sy * tileW + sx) * 3;
        const i = y * size + x;
        img[i] = tile[s] / 255;
        img[n + i] = tile[s + 1] / 255;
        img[2 * n + i] = tile[s + 2] / 255;
      }
    }
    if (row[P.jitter]) {
      for (let k = 0; k < 4; k++) {
        switch (row[P.order0 + k]) {
          case 0:
            adjustBrightness(img, row[P.brightness]);
            break;
          case 1:
            adjustContrastOrSaturation(img, n, row[P.contrast], false);
            break;
          case 2:
            adjustContrastOrSaturation(img, n, row[P.saturation], true);
            break;
          default:
            adjustHue(img, n, row[P.hue]);
        }
      }
    }
    if (row[P.blur]) gaussianBlur(img, size, c.blurKernel, row[P.sigma]);
    const base = b * 3 * n;
    for (let ch = 0; ch < 3; ch++) {
      const tm = teacherNorm.mean[ch],
        ts = teacherNorm.std[ch],
        sm = studentNorm.mean[ch],
        ss = studentNorm.std[ch];
      for (let i = 0; i < n; i++) {
        const v = img[ch * n + i];
        const t = (v - tm) / ts;
        teacher[base + ch * n + i] = teacherDtype === 'float32' ? t : toBits(t);
        student[base + ch * n + i] = (v - sm) / ss;
      }
    }
  }
  const shape = [batch, 3, size, size];
  return {
    teacher: { data: teacher, shape, dtype: teacherDtype },
    student: { data: student, shape: [...shape], dtype: 'float32' },
  };
}
