// Magnification-aware tiling of one slide: which pyramid level to read, at what size, on which grid, and which
// grid cells hold enough tissue. Tiles are non-overlapping squares of `tileSizePx` at the target mpp.
import sharp from 'sharp';
import type { RgbPixels } from './addon.js';
import type { Slide } from './reader.js';
import { MaskIntegral, tissueMask, type TissueMask, type TissueMaskOptions } from './tissue.js';

/** A level whose mpp is within this of the target is read as is; further off, the read is resized. */
export const MPP_TOLERANCE = 0.05;

export interface TilePlan {
  /** Level-0 microns per pixel used for this slide. */
  slideMpp: number;
  targetMpp: number;
  tileSizePx: number;
  /** The level read and the square size read from it (level pixels); resized to tileSizePx when they differ. */
  level: number;
  readSizePx: number;
  /** Grid step in level-0 pixels (= one tile's footprint). */
  stepL0: number;
  cols: number;
  rows: number;
}

/**
 * Chooses the level: the coarsest whose downsample does not exceed the one the target needs (so tiles are never
 * upsampled from a coarser level), allowing MPP_TOLERANCE. Within tolerance the read is tileSizePx as is.
 */
export function planTiles(
  levelDimensions: [number, number][],
  levelDownsamples: number[],
  slideMpp: number,
  targetMpp: number,
  tileSizePx: number,
): TilePlan {
  const wanted = targetMpp / slideMpp; // level-0 pixels per target pixel
  let level = 0;
  for (let l = 0; l < levelDownsamples.length; l++) {
    if (levelDownsamples[l] <= wanted * (1 + MPP_TOLERANCE) && levelDownsamples[l] >= levelDownsamples[level])
      level = l;
  }
  const ds = levelDownsamples[level];
  const levelMpp = slideMpp * ds;
  const readSizePx =
    Math.abs(levelMpp - targetMpp) / targetMpp <= MPP_TOLERANCE ? tileSizePx : Math.round((tileSizePx * wanted) / ds);
  const stepL0 = Math.round(readSizePx * ds);
  const [w, h] = levelDimensions[0];
  return {
    slideMpp,
    targetMpp,
    tileSizePx,
    level,
    readSizePx,
    stepL0,
    cols: Math.floor(w / stepL0),
    rows: Math.floor(h / stepL0),
  };
}

export interface Thumbnail extends RgbPixels {
  /** Level-0 pixels per thumbnail pixel. */
  downsample: number;
}

/**
 * A thumbnail at about `downsample` level-0 px per pixel: read from the coarsest level not coarser than that, in
 * strips, box-averaged by an integer factor (no huge single reads, whatever the slide size).
 */
export async function readThumbnail(slide: Slide, downsample: number): Promise<Thumbnail> {
  const ds = slide.info.levelDownsamples;
  let level = 0;
  for (let l = 0; l < ds.length; l++) if (ds[l] <= downsample && ds[l] >= ds[level]) level = l;
  const f = Math.max(1, Math.round(downsample / ds[level]));
  const [lw, lh] = slide.info.levelDimensions[level];
  const tw = Math.max(1, Math.floor(lw / f)),
    th = Math.max(1, Math.floor(lh / f));
  const out = new Uint8Array(tw * th * 3);
  // Thumbnail rows per read: at most ~16 M level pixels per read, whatever the slide's width.
  const stripRows = Math.max(1, Math.floor(2 ** 24 / (Math.min(lw, tw * f) * f * f)));
  for (let ty0 = 0; ty0 < th; ty0 += stripRows) {
    const rows = Math.min(stripRows, th - ty0);
    const readW = Math.min(lw, tw * f),
      readH = Math.min(lh - ty0 * f, rows * f);
    const region = await slide.readRegion(0, Math.round(ty0 * f * ds[level]), level, readW, readH);
    const acc = new Float64Array(tw * 3);
    for (let r = 0; r < rows; r++) {
      acc.fill(0);
      let n = 0;
      for (let dy = 0; dy < f && r * f + dy < readH; dy++, n++) {
        const row = (r * f + dy) * readW * 3;
        for (let x = 0; x < tw * f && x < readW; x++) {
          const tx = Math.floor(x / f);
          acc[tx * 3] += region.data[row + x * 3];
          acc[tx * 3 + 1] += region.data[row + x * 3 + 1];
          acc[tx * 3 + 2] += region.data[row + x * 3 + 2];
        }
      }
      const o = (ty0 + r) * tw * 3;
      for (let i = 0; i < tw * 3; i++) out[o + i] = Math.round(acc[i] / (n * f));
    }
  }
  return { data: out, width: tw, height: th, downsample: ds[level] * f };
}

export interface TileRow {
  /** Level-0 position of the tile's top-left corner. */
  x: number;
  y: number;
  level: number;
  readSizePx: number;
  tissueFraction: number;
}

export interface SlideTiling {
  plan: TilePlan;
  tiles: TileRow[];
  thumbnail: Thumbnail;
  mask: TissueMask;
}

/** Thumbnail pixels per tile side: fine enough for fractions, small enough for any slide. */
const THUMB_PX_PER_TILE = 16;
const MAX_THUMB_SIDE = 4096;

export async function tileSlide(
  slide: Slide,
  slideMpp: number,
  options: {
    targetMpp: number;
    tileSizePx: number;
    tissueThreshold: number;
    mask?: TissueMaskOptions;
    /** Level-0 corners to tile instead of the grid's tissue tiles (TRIDENT's coordinates): all kept, in this order. */
    coords?: readonly [number, number][];
  },
): Promise<SlideTiling> {
  const { levelDimensions, levelDownsamples } = slide.info;
  const plan = planTiles(levelDimensions, levelDownsamples, slideMpp, options.targetMpp, options.tileSizePx);
  const [w, h] = levelDimensions[0];
  const thumbDs = Math.max(1, plan.stepL0 / THUMB_PX_PER_TILE, Math.max(w, h) / MAX_THUMB_SIDE);
  const thumbnail = await readThumbnail(slide, thumbDs);
  const mask = await tissueMask(thumbnail, options.mask);
  const integral = new MaskIntegral(mask);
  const tiles: TileRow[] = [];
  const k = thumbnail.downsample;
  if (options.coords) {
    for (const [x, y] of options.coords) {
      tiles.push({
        x,
        y,
        level: plan.level,
        readSizePx: plan.readSizePx,
        tissueFraction: integral.fraction(x / k, y / k, (x + plan.stepL0) / k, (y + plan.stepL0) / k),
      });
    }
    return { plan, tiles, thumbnail, mask };
  }
  for (let r = 0; r < plan.rows; r++) {
    for (let c = 0; c < plan.cols; c++) {
      const x = c * plan.stepL0,
        y = r * plan.stepL0;
      const tissueFraction = integral.fraction(x / k, y / k, (x + plan.stepL0) / k, (y + plan.stepL0) / k);
      if (tissueFraction >= options.tissueThreshold)
        tiles.push({ x, y, level: plan.level, readSizePx: plan.readSizePx, tissueFraction });
    }
  }
  return { plan, tiles, thumbnail, mask };
}

/** The thumbnail with each kept tile outlined (2 px, green), as PNG-ready RGB. */
export function outlineTiles(thumb: Thumbnail, tiles: readonly TileRow[], stepL0: number): RgbPixels {
  const out = new Uint8Array(thumb.data);
  const { width: w, height: h } = thumb;
  const put = (x: number, y: number) => {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    const o = (y * w + x) * 3;
    out[o] = 0;
    out[o + 1] = 200;
    out[o + 2] = 0;
  };
  for (const t of tiles) {
    const x0 = Math.round(t.x / thumb.downsample),
      y0 = Math.round(t.y / thumb.downsample);
    const x1 = Math.round((t.x + stepL0) / thumb.downsample) - 1,
      y1 = Math.round((t.y + stepL0) / thumb.downsample) - 1;
    for (let x = x0; x <= x1; x++) for (const y of [y0, y0 + 1, y1 - 1, y1]) put(x, y);
    for (let y = y0; y <= y1; y++) for (const x of [x0, x0 + 1, x1 - 1, x1]) put(x, y);
  }
  return { data: out, width: w, height: h };
}

/**
 * A thumbnail that fits in maxWidth x maxHeight keeping the aspect ratio, as openslide-python's get_thumbnail
 * sizes it (boxes.tiff 300x250 in 100x100 -> 100x83): read near that scale, then resized with lanczos3.
 */
export async function slideThumbnail(slide: Slide, maxWidth: number, maxHeight: number): Promise<RgbPixels> {
  const { width, height } = slide.info;
  const downsample = Math.max(width / maxWidth, height / maxHeight);
  const scale = 1 / downsample;
  const w = Math.max(1, Math.round(width * scale)),
    h = Math.max(1, Math.round(height * scale));
  const near = await readThumbnail(slide, Math.max(1, downsample / 2));
  const data = await sharp(Buffer.from(near.data.buffer, near.data.byteOffset, near.data.byteLength), {
    raw: { width: near.width, height: near.height, channels: 3 },
  })
    .resize(w, h, { fit: 'fill', kernel: 'lanczos3' })
    .raw()
    .toBuffer();
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: w, height: h };
}
