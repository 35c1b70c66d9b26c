// Synthetic slides for tests and the demo, written by this package alone (no Python): an Aperio-style SVS (JPEG
// tiles in YCbCr, a pyramid, an ImageDescription with MPP and AppMag) and a generic pyramidal TIFF (deflate tiles,
// resolution tags), both showing tissue-like regions (pink stroma with purple nuclei) on a near-white glass, plus a
// truncated slide and a non-slide file for the error paths. The drawn regions are returned, so tests can compare
// tile counts with the true tissue area.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { writeFileAtomic } from '../io/atomic.js';
import { mulberry32 } from '../util/random.js';

/** An ellipse of tissue in level-0 pixels. */
export interface TissueRegion {
  cx: number;
  cy: number;
  rx: number;
  ry: number;
}

export interface SyntheticSlideSpec {
  width: number;
  height: number;
  /** Microns per pixel at level 0. */
  mpp: number;
  regions: TissueRegion[];
  /** Objective power written as AppMag (SVS). */
  objectivePower?: number;
  tileSize?: number;
  seed?: number;
  /** The chance that a 12 um cell of tissue holds a nucleus (default 0.45): the demo's slide task labels slides by it. */
  nucleusDensity?: number;
}

export const insideTissue = (regions: readonly TissueRegion[], x: number, y: number): boolean =>
  regions.some((r) => ((x - r.cx) / r.rx) ** 2 + ((y - r.cy) / r.ry) ** 2 <= 1);

/** The true tissue fraction of a level-0 square (x, y, size), by sampling an n x n grid of pixel centres. */
export function trueTissueFraction(
  regions: readonly TissueRegion[],
  x: number,
  y: number,
  size: number,
  n = 32,
): number {
  let k = 0;
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) if (insideTissue(regions, x + ((j + 0.5) * size) / n, y + ((i + 0.5) * size) / n)) k++;
  return k / (n * n);
}

/** A few tissue-like ellipses that cover roughly a third of the slide, placed from `seed`. */
export function randomTissueRegions(width: number, height: number, seed: number, count = 3): TissueRegion[] {
  const rnd = mulberry32(seed);
  const regions: TissueRegion[] = [];
  for (let i = 0; i < count; i++) {
    const rx = width * (0.12 + 0.12 * rnd());
    const ry = height * (0.12 + 0.12 * rnd());
    regions.push({ cx: rx + (width - 2 * rx) * rnd(), cy: ry + (height - 2 * ry) * rnd(), rx, ry });
  }
  return regions;
}

/** Cheap per-pixel hash noise in [0, 1). */
function hash2(x: number, y: number, seed: number): number {
  let h = Math.imul(x, 0x27d4eb2d) ^ Math.imul(y, 0x165667b1) ^ Math.imul(seed, 0x9e3779b9);
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
  h ^= h >>> 13;
  return (h >>> 0) / 4294967296;
}

/** Level 0 as RGB (height,width,3): glass ~ (243,242,245), stroma pink, nuclei purple (one per 24 px cell, p nucleusDensity, 0.45). */
export function renderSlide(spec: SyntheticSlideSpec): Uint8Array {
  const { width, height, regions } = spec;
  const seed = spec.seed ?? 1;
  const out = new Uint8Array(width * height * 3);
  const cell = Math.max(8, Math.round(12 / spec.mpp)); // nuclei ~ every 12 um
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      const n = hash2(x, y, seed) - 0.5;
      if (!insideTissue(regions, x, y)) {
        out[o] = 243 + n * 6;
        out[o + 1] = 242 + n * 6;
        out[o + 2] = 245 + n * 6;
        continue;
      }
      const cx = Math.floor(x / cell),
        cy = Math.floor(y / cell);
      let nucleus = false;
      if (hash2(cx, cy, seed + 7) < (spec.nucleusDensity ?? 0.45)) {
        const px = (cx + 0.2 + 0.6 * hash2(cx, cy, seed + 11)) * cell;
        const py = (cy + 0.2 + 0.6 * hash2(cx, cy, seed + 13)) * cell;
        const r = cell * 0.22;
        nucleus = (x - px) ** 2 + (y - py) ** 2 <= r * r;
      }
      if (nucleus) {
        out[o] = 95 + n * 30;
        out[o + 1] = 55 + n * 30;
        out[o + 2] = 145 + n * 30;
      } else {
        out[o] = 222 + n * 24;
        out[o + 1] = 150 + n * 24;
        out[o + 2] = 192 + n * 24;
      }
    }
  }
  return out;
}

/** 2x box downsample of RGB (h,w,3). */
function halve(img: Uint8Array, w: number, h: number): { data: Uint8Array; width: number; height: number } {
  const W = Math.floor(w / 2),
    H = Math.floor(h / 2);
  const out = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++)
      for (let c = 0; c < 3; c++) {
        const a = (2 * y * w + 2 * x) * 3 + c;
        const b = a + w * 3;
        out[(y * W + x) * 3 + c] = (img[a] + img[a + 3] + img[b] + img[b + 3] + 2) >> 2;
      }
  return { data: out, width: W, height: H };
}

/** The pyramid: level 0, then halvings while the level is larger than one tile. */
function pyramid(level0: Uint8Array, width: number, height: number, tileSize: number) {
  const levels = [{ data: level0, width, height }];
  while (Math.max(levels[levels.length - 1].width, levels[levels.length - 1].height) > tileSize * 2) {
    const l = levels[levels.length - 1];
    levels.push(halve(l.data, l.width, l.height));
  }
  return levels;
}

/** Cuts a level into tileSize tiles (row-major), padding edges with white. */
function cutTiles(img: Uint8Array, w: number, h: number, t: number): Uint8Array[] {
  const tiles: Uint8Array[] = [];
  for (let ty = 0; ty < h; ty += t)
    for (let tx = 0; tx < w; tx += t) {
      const tile = new Uint8Array(t * t * 3).fill(255);
      const cw = Math.min(t, w - tx);
      for (let y = 0; y < Math.min(t, h - ty); y++)
        tile.set(img.subarray(((ty + y) * w + tx) * 3, ((ty + y) * w + tx + cw) * 3), y * t * 3);
      tiles.push(tile);
    }
  return tiles;
}

// ---------------------------------------------------------------------------------------------------------------
// A minimal classic-TIFF writer: tiled, chunky RGB, tile data first and the directories at the end
// ---------------------------------------------------------------------------------------------------------------

interface TiffDirectory {
  width: number;
  height: number;
  tileSize: number;
  tiles: Uint8Array[]; // encoded
  compression: 1 | 7 | 8; // none, JPEG, deflate
  photometric: 2 | 6; // RGB, YCbCr
  reduced: boolean;
  description?: string;
  resolutionPerCm?: number;
}

const SHORT = 3,
  LONG = 4,
  RATIONAL = 5,
  ASCII = 2;

function writeTiff(dirs: TiffDirectory[]): Buffer {
  const chunks: Buffer[] = [];
  let offset = 8;
  const push = (b: Uint8Array) => {
    const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    chunks.push(buf);
    const at = offset;
    offset += buf.length;
    if (offset % 2) {
      chunks.push(Buffer.alloc(1));
      offset += 1;
    }
    return at;
  };
  const header = Buffer.alloc(8);
  header.write('II', 0, 'ascii');
  header.writeUInt16LE(42, 2);
  const tileOffsets = dirs.map((d) => d.tiles.map((t) => push(t)));
  const ifdOffsets: number[] = [];
  const ifdBuffers: Buffer[] = [];
  // Lay out each directory with its out-of-line values right after it.
  for (let i = 0; i < dirs.length; i++) {
    const d = dirs[i];
    type Entry = [tag: number, type: number, values: number[] | string];
    const entries: Entry[] = [
      [254, LONG, [d.reduced ? 1 : 0]],
      [256, LONG, [d.width]],
      [257, LONG, [d.height]],
      [258, SHORT, [8, 8, 8]],
      [259, SHORT, [d.compression]],
      [262, SHORT, [d.photometric]],
    ];
    if (d.description !== undefined) entries.push([270, ASCII, d.description]);
    entries.push([277, SHORT, [3]]);
    if (d.resolutionPerCm) {
      entries.push([282, RATIONAL, [Math.round(d.resolutionPerCm * 1000), 1000]]);
      entries.push([283, RATIONAL, [Math.round(d.resolutionPerCm * 1000), 1000]]);
    }
    entries.push([284, SHORT, [1]]);
    if (d.resolutionPerCm) entries.push([296, SHORT, [3]]);
    entries.push([322, SHORT, [d.tileSize]], [323, SHORT, [d.tileSize]]);
    entries.push([324, LONG, tileOffsets[i]], [325, LONG, d.tiles.map((t) => t.length)]);
    if (d.photometric === 6) entries.push([530, SHORT, [2, 2]]);
    const start = offset;
    const ifdSize = 2 + entries.length * 12 + 4;
    let extra = start + ifdSize;
    const ifd = Buffer.alloc(ifdSize);
    const extras: Buffer[] = [];
    ifd.writeUInt16LE(entries.length, 0);
    entries.forEach(([tag, type, values], k) => {
      const e = 2 + k * 12;
      ifd.writeUInt16LE(tag, e);
      ifd.writeUInt16LE(type, e + 2);
      let payload: Buffer;
      let count: number;
      if (type === ASCII) {
        payload = Buffer.from(`${values as string}\0`, 'latin1');
        count = payload.length;
      } else {
        const v = values as number[];
        const size = type === SHORT ? 2 : 4;
        payload = Buffer.alloc(v.length * size);
        v.forEach((x, j) => (size === 2 ? payload.writeUInt16LE(x, j * 2) : payload.writeUInt32LE(x >>> 0, j * 4)));
        count = type === RATIONAL ? v.length / 2 : v.length;
      }
      ifd.writeUInt32LE(count, e + 4);
      if (payload.length <= 4) {
        payload.copy(ifd, e + 8);
      } else {
        ifd.writeUInt32LE(extra, e + 8);
        extras.push(payload);
        extra += payload.length + (payload.length % 2);
        if (payload.length % 2) extras.push(Buffer.alloc(1));
      }
    });
    ifdOffsets.push(start);
    ifdBuffers.push(ifd);
    chunks.push(ifd, ...extras);
    offset = extra;
  }
  ifdBuffers.forEach((ifd, i) => ifd.writeUInt32LE(i + 1 < ifdOffsets.length ? ifdOffsets[i + 1] : 0, ifd.length - 4));
  header.writeUInt32LE(ifdOffsets[0], 4);
  return Buffer.concat([header, ...chunks]);
}

async function jpegTile(tile: Uint8Array, t: number): Promise<Uint8Array> {
  return sharp(Buffer.from(tile.buffer, tile.byteOffset, tile.byteLength), {
    raw: { width: t, height: t, channels: 3 },
  })
    .jpeg({ quality: 90, chromaSubsampling: '4:2:0' })
    .toBuffer();
}

// ---------------------------------------------------------------------------------------------------------------
// Slides
// ---------------------------------------------------------------------------------------------------------------

/** An Aperio-style SVS: JPEG (YCbCr 4:2:0) tiles, a pyramid, and Aperio's ImageDescription with MPP and AppMag. */
export async function svsBytes(spec: SyntheticSlideSpec): Promise<Buffer> {
  const t = spec.tileSize ?? 256;
  const levels = pyramid(renderSlide(spec), spec.width, spec.height, t);
  const appMag = spec.objectivePower ?? Math.round(10 / spec.mpp);
  const dirs: TiffDirectory[] = [];
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i];
    const tiles = await Promise.all(cutTiles(l.data, l.width, l.height, t).map((tile) => jpegTile(tile, t)));
    const description =
      `Aperio Image Library v12.0.15 \r\n${spec.width}x${spec.height} [0,0 ${spec.width}x${spec.height}] (${t}x${t}) JPEG/RGB Q=90` +
      (i === 0
        ? `|AppMag = ${appMag}|MPP = ${spec.mpp.toFixed(4)}|Filename = g2l-synthetic`
        : ` -> ${l.width}x${l.height} - `);
    dirs.push({
      width: l.width,
      height: l.height,
      tileSize: t,
      tiles,
      compression: 7,
      photometric: 6,
      reduced: i > 0,
      description,
    });
  }
  return writeTiff(dirs);
}

/** A generic pyramidal TIFF: deflate RGB tiles, one directory per level, mpp in the resolution tags (pixels/cm). */
export async function pyramidalTiffBytes(spec: SyntheticSlideSpec): Promise<Buffer> {
  const t = spec.tileSize ?? 256;
  const levels = pyramid(renderSlide(spec), spec.width, spec.height, t);
  const dirs: TiffDirectory[] = levels.map((l, i) => ({
    width: l.width,
    height: l.height,
    tileSize: t,
    tiles: cutTiles(l.data, l.width, l.height, t).map((tile) => deflateSync(tile, { level: 6 })),
    compression: 8,
    photometric: 2,
    reduced: i > 0,
    resolutionPerCm: 1e4 / (spec.mpp * (spec.width / l.width)),
  }));
  return writeTiff(dirs);
}

export async function writeSyntheticSvs(file: string, spec: SyntheticSlideSpec): Promise<void> {
  await writeFileAtomic(file, await svsBytes(spec));
}

export async function writeSyntheticTiff(file: string, spec: SyntheticSlideSpec): Promise<void> {
  await writeFileAtomic(file, await pyramidalTiffBytes(spec));
}

/** An SVS cut off at `keep` of its bytes: its directories (written last) are gone. */
export async function writeTruncatedSlide(file: string, spec: SyntheticSlideSpec, keep = 0.5): Promise<void> {
  const bytes = await svsBytes(spec);
  await writeFileAtomic(file, bytes.subarray(0, Math.floor(bytes.length * keep)));
}

/** A file with a slide's extension that is not an image at all. */
export async function writeNonSlide(file: string): Promise<void> {
  await writeFileAtomic(file, 'This is a note about the cohort, saved with the wrong extension.\n');
}

export interface SyntheticSet {
  dir: string;
  slides: { name: string; file: string; kind: 'svs' | 'tiff' | 'truncated' | 'non-slide'; spec?: SyntheticSlideSpec }[];
}

/**
 * A small cohort for the demo and tests: `count` good slides alternating SVS (0.25 um/px, "40x") and generic TIFF
 * (0.5 um/px), plus, with `withBroken`, a truncated SVS and a non-slide file.
 */
export async function makeSyntheticSlides(
  dir: string,
  options: {
    count?: number;
    width?: number;
    height?: number;
    seed?: number;
    withBroken?: boolean;
    /** Each slide's nucleus density (slide i gets density(i)); default 0.45 for all. */
    density?: (i: number) => number;
  } = {},
): Promise<SyntheticSet> {
  const count = options.count ?? 3;
  const seed = options.seed ?? 1;
  await fs.mkdir(dir, { recursive: true });
  const set: SyntheticSet = { dir, slides: [] };
  for (let i = 0; i < count; i++) {
    const svs = i % 2 === 0;
    const mpp = svs ? 0.25 : 0.5;
    const width = options.width ?? (svs ? 4096 : 2560);
    const height = options.height ?? (svs ? 3072 : 2048);
    const spec: SyntheticSlideSpec = {
      width,
      height,
      mpp,
      regions: randomTissueRegions(width, height, seed * 1000 + i),
      seed: seed + i,
      ...(options.density ? { nucleusDensity: options.density(i) } : {}),
    };
    const name = `synthetic-${String(i + 1).padStart(2, '0')}`;
    const file = path.join(dir, `${name}.${svs ? 'svs' : 'tiff'}`);
    await (svs ? writeSyntheticSvs(file, spec) : writeSyntheticTiff(file, spec));
    set.slides.push({ name, file, kind: svs ? 'svs' : 'tiff', spec });
  }
  if (options.withBroken) {
    const spec: SyntheticSlideSpec = {
      width: 1024,
      height: 1024,
      mpp: 0.25,
      regions: randomTissueRegions(1024, 1024, seed),
      seed,
    };
    const truncated = path.join(dir, 'truncated.svs');
    await writeTruncatedSlide(truncated, spec);
    set.slides.push({ name: 'truncated', file: truncated, kind: 'truncated', spec });
    const non = path.join(dir, 'not-a-slide.tiff');
    await writeNonSlide(non);
    set.slides.push({ name: 'not-a-slide', file: non, kind: 'non-slide' });
  }
  return set;
}
