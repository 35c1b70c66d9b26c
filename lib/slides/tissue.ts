// Tissue detection on a slide thumbnail, as CLAM and eva do it: HSV saturation, median blur, Otsu threshold,
// morphological close. Glass is bright and grey (low saturation); stained tissue is saturated.
import sharp from 'sharp';
import type { RgbPixels } from './addon.js';

export interface TissueMaskOptions {
  /** Median blur kernel in thumbnail pixels (odd; CLAM: 7). */
  medianKernel?: number;
  /** Morphological close kernel in thumbnail pixels (square; CLAM: 4, eva: 5). */
  closeKernel?: number;
  /** Saturation (0-255) below which a pixel is never tissue, whatever Otsu says: an empty slide stays empty. */
  minSaturation?: number;
}

export const DEFAULT_TISSUE_MASK: Required<TissueMaskOptions> = { medianKernel: 7, closeKernel: 5, minSaturation: 20 };

export interface TissueMask {
  width: number;
  height: number;
  /** 1 = tissue, (height,width). */
  mask: Uint8Array;
  threshold: number;
}

/** OpenCV's 8-bit HSV saturation: 255 (max - min) / max. */
export function saturation(img: RgbPixels): Uint8Array {
  const n = img.width * img.height;
  const s = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = img.data[3 * i],
      g = img.data[3 * i + 1],
      b = img.data[3 * i + 2];
    const max = Math.max(r, g, b);
    s[i] = max === 0 ? 0 : Math.round((255 * (max - Math.min(r, g, b))) / max);
  }
  return s;
}

/** Otsu's threshold of 8-bit values: the t maximising the between-class variance of {<= t} and {> t}. */
export function otsuThreshold(values: Uint8Array): number {
  const hist = new Float64Array(256);
  for (const v of values) hist[v]++;
  const total = values.length;
  let sumAll = 0;
  for (let t = 0; t < 256; t++) sumAll += t * hist[t];
  let wB = 0,
    sumB = 0,
    best = 0,
    bestVar = -1;
  for (let t = 0; t < 256; t++) {
    wB += hist[t];
    if (wB === 0) continue;
    const wF = total - wB;
    if (wF === 0) break;
    sumB += t * hist[t];
    const mB = sumB / wB,
      mF = (sumAll - sumB) / wF;
    const between = wB * wF * (mB - mF) ** 2;
    if (between > bestVar) {
      bestVar = between;
      best = t;
    }
  }
  return best;
}

/** Separable square max (dilate) or min (erode) filter of a 0/1 image, kernel k, edges replicated. */
function morph(src: Uint8Array, w: number, h: number, k: number, op: 'max' | 'min'): Uint8Array {
  const lo = Math.floor((k - 1) / 2),
    hi = k - 1 - lo;
  const pick = op === 'max' ? Math.max : Math.min;
  const tmp = new Uint8Array(src.length);
  const out = new Uint8Array(src.length);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let v = src[y * w + x];
      for (let d = -lo; d <= hi; d++) v = pick(v, src[y * w + Math.min(w - 1, Math.max(0, x + d))]);
      tmp[y * w + x] = v;
    }
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let v = tmp[y * w + x];
      for (let d = -lo; d <= hi; d++) v = pick(v, tmp[Math.min(h - 1, Math.max(0, y + d)) * w + x]);
      out[y * w + x] = v;
    }
  return out;
}

export async function tissueMask(thumb: RgbPixels, options: TissueMaskOptions = {}): Promise<TissueMask> {
  const o = { ...DEFAULT_TISSUE_MASK, ...options };
  const { width, height } = thumb;
  let s: Uint8Array = saturation(thumb);
  if (o.medianKernel > 1 && width >= o.medianKernel && height >= o.medianKernel) {
    const blurred = await sharp(Buffer.from(s.buffer, s.byteOffset, s.byteLength), {
      raw: { width, height, channels: 1 },
    })
      .median(o.medianKernel)
      .extractChannel(0)
      .raw()
      .toBuffer();
    if (blurred.length !== s.length)
      throw new Error(`median blur returned ${blurred.length} values for ${s.length} pixels`);
    s = new Uint8Array(blurred.buffer, blurred.byteOffset, blurred.byteLength);
  }
  const threshold = Math.max(otsuThreshold(s), o.minSaturation);
  let mask: Uint8Array = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) mask[i] = s[i] > threshold ? 1 : 0;
  if (o.closeKernel > 1)
    mask = morph(morph(mask, width, height, o.closeKernel, 'max'), width, height, o.closeKernel, 'min');
  return { width, height, mask, threshold };
}

/** Summed-area table of a mask, for the tissue fraction of any rectangle in O(1). */
export class MaskIntegral {
  private readonly sat: Float64Array;
  constructor(readonly m: TissueMask) {
    const { width: w, height: h, mask } = m;
    this.sat = new Float64Array((w + 1) * (h + 1));
    for (let y = 0; y < h; y++) {
      let row = 0;
      for (let x = 0; x < w; x++) {
        row += mask[y * w + x];
        this.sat[(y + 1) * (w + 1) + x + 1] = this.sat[y * (w + 1) + x + 1] + row;
      }
    }
  }

  /** Fraction of mask pixels whose centres lie in [x0,x1) x [y0,y1) (thumbnail coordinates, fractional). */
  fraction(x0: number, y0: number, x1: number, y1: number): number {
    const w = this.m.width;
    const cx0 = Math.max(0, Math.ceil(x0 - 0.5)),
      cx1 = Math.min(this.m.width, Math.ceil(x1 - 0.5));
    const cy0 = Math.max(0, Math.ceil(y0 - 0.5)),
      cy1 = Math.min(this.m.height, Math.ceil(y1 - 0.5));
    if (cx1 <= cx0 || cy1 <= cy0) return 0;
    const area = (cx1 - cx0) * (cy1 - cy0);
    const s = this.sat;
    const sum = s[cy1 * (w + 1) + cx1] - s[cy0 * (w + 1) + cx1] - s[cy1 * (w + 1) + cx0] + s[cy0 * (w + 1) + cx0];
    return sum / area;
  }
}
