// One interface over the slide readers: OpenSlide (the binding.gyp addon: SVS, NDPI, MRXS, SCN, BIF, generic tiled
// TIFF) and sharp/libvips (plain images, and TIFF when OpenSlide is absent or cannot open it). Both report the
// pyramid, microns per pixel and objective power the same way, and read RGB regions off the JS thread.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { UserError } from '../errors.js';
import { openslideAddon, type OpenSlideHandle, type RgbPixels } from './addon.js';

export type MppSource = 'openslide' | 'aperio' | 'tiff-resolution' | 'csv' | 'default';

export interface SlideProperties {
  path: string;
  reader: 'openslide' | 'sharp';
  /** OpenSlide's vendor (aperio, hamamatsu, generic-tiff...) or the image format sharp read. */
  vendor: string | null;
  width: number;
  height: number;
  levelDimensions: [number, number][];
  levelDownsamples: number[];
  /** Microns per pixel at level 0, with where it came from; null when the file does not say. */
  mpp: { x: number; y: number; source: MppSource } | null;
  objectivePower: number | null;
  associatedImages: Record<string, [number, number]>;
  /** Whether the file carries an ICC colour profile (null: unknown). */
  hasIccProfile: boolean | null;
  /** OpenSlide's properties (openslide.*, aperio.*, tiff.*), or a few tiff.* ones from sharp. */
  properties: Record<string, string>;
}

export interface Slide {
  readonly info: SlideProperties;
  /** RGB (height,width,3) of `level`, starting at level-0 coordinates (x, y); outside the slide is white. */
  readRegion(x: number, y: number, level: number, width: number, height: number): Promise<RgbPixels>;
  readAssociatedImage(name: string): Promise<RgbPixels>;
  close(): Promise<void>;
  /** The OpenSlide handle when OpenSlide reads this slide (for batched reads, lib/data/batches.ts). */
  readonly openslideHandle?: OpenSlideHandle;
}

/** Extensions the tile command picks up from a folder. */
export const SLIDE_EXTENSIONS = [
  '.svs',
  '.tif',
  '.tiff',
  '.ndpi',
  '.vms',
  '.vmu',
  '.scn',
  '.mrxs',
  '.bif',
  '.svslide',
  '.dcm',
  '.png',
  '.jpg',
  '.jpeg',
];
const PLAIN_IMAGE = new Set(['.png', '.jpg', '.jpeg']);

/** TIFF resolutions above this many um/px are screen placeholders (72 or 96 dpi), not a microscope's. */
const MAX_PLAUSIBLE_MPP = 50;

// ---------------------------------------------------------------------------------------------------------------
// Microns per pixel and objective power from properties
// ---------------------------------------------------------------------------------------------------------------

const positive = (v: string | undefined): number | null => {
  const n = v === undefined ? NaN : Number.parseFloat(v);
  return Number.isFinite(n) && n > 0 ? n : null;
};

/** openslide.mpp-x/y, else Aperio's MPP, else the TIFF resolution (centimeter or inch units); screen placeholders never. */
export function mppFromProperties(p: Record<string, string>): SlideProperties['mpp'] {
  const ox = positive(p['openslide.mpp-x']);
  const oy = positive(p['openslide.mpp-y']);
  // OpenSlide 4 also derives openslide.mpp-* from a generic TIFF's resolution tags, 72 dpi placeholders included.
  // (It then comes from the TIFF resolution, and is labelled so, as with OpenSlide 3.4, where we read the tags.)
  if (ox && oy && ox <= MAX_PLAUSIBLE_MPP && oy <= MAX_PLAUSIBLE_MPP) {
    const fromTiff = p['openslide.vendor'] === 'generic-tiff' && p['tiff.XResolution'] !== undefined;
    return { x: ox, y: oy, source: fromTiff ? 'tiff-resolution' : 'openslide' };
  }
  const aperio = positive(p['aperio.MPP']);
  if (aperio) return { x: aperio, y: aperio, source: 'aperio' };
  const unit = p['tiff.ResolutionUnit'];
  const rx = positive(p['tiff.XResolution']);
  const ry = positive(p['tiff.YResolution']) ?? rx;
  const umPerUnit = unit === 'centimeter' ? 1e4 : unit === 'inch' ? 25400 : null;
  if (umPerUnit && rx && ry) {
    const x = umPerUnit / rx;
    const y = umPerUnit / ry;
    if (x <= MAX_PLAUSIBLE_MPP && y <= MAX_PLAUSIBLE_MPP) return { x, y, source: 'tiff-resolution' };
  }
  return null;
}

export function objectivePowerFromProperties(p: Record<string, string>): number | null {
  return positive(p['openslide.objective-power']) ?? positive(p['aperio.AppMag']);
}

// ---------------------------------------------------------------------------------------------------------------
// OpenSlide
// ---------------------------------------------------------------------------------------------------------------

class OpenSlideSlide implements Slide {
  constructor(
    readonly info: SlideProperties,
    private readonly handle: OpenSlideHandle,
  ) {}

  get openslideHandle(): OpenSlideHandle {
    return this.handle;
  }

  // async: the addon's argument errors (a closed handle) become rejections like its read errors.
  async readRegion(x: number, y: number, level: number, width: number, height: number): Promise<RgbPixels> {
    return openslideAddon()!.readRegion(this.handle, x, y, level, width, height);
  }

  async readAssociatedImage(name: string): Promise<RgbPixels> {
    return openslideAddon()!.readAssociatedImage(this.handle, name);
  }

  async close(): Promise<void> {
    openslideAddon()!.closeSlide(this.handle);
  }
}

async function openWithOpenSlide(file: string, withProperties: boolean): Promise<Slide> {
  const addon = openslideAddon()!;
  const o = await addon.openSlide(file, { properties: withProperties });
  const [width, height] = o.levelDimensions[0] ?? [0, 0];
  let hasIcc: boolean | null = o.iccProfileSize === null ? null : o.iccProfileSize > 0;
  if (withProperties && hasIcc === null && /\.(tiff?|svs)$/i.test(file)) {
    // OpenSlide 3.4 cannot say; libvips reads the TIFF's ICC tag.
    hasIcc = await sharp(file)
      .metadata()
      .then(
        (m) => Boolean(m.hasProfile),
        () => null,
      );
  }
  const info: SlideProperties = {
    path: file,
    reader: 'openslide',
    vendor: o.vendor,
    width,
    height,
    levelDimensions: o.levelDimensions,
    levelDownsamples: o.levelDownsamples,
    mpp: mppFromProperties(o.properties),
    objectivePower: objectivePowerFromProperties(o.properties),
    associatedImages: o.associatedImages,
    hasIccProfile: hasIcc,
    properties: o.properties,
  };
  if (!(width > 0 && height > 0)) {
    addon.closeSlide(o.handle);
    throw new Error(`OpenSlide opened ${file} but it has no pixels (level 0 is ${width}x${height})`);
  }
  return new OpenSlideSlide(info, o.handle);
}

// ---------------------------------------------------------------------------------------------------------------
// sharp / libvips: plain images, and TIFF pages as pyramid levels
// ---------------------------------------------------------------------------------------------------------------

class SharpSlide implements Slide {
  constructor(readonly info: SlideProperties) {}

  async readRegion(x: number, y: number, level: number, width: number, height: number): Promise<RgbPixels> {
    const [lw, lh] = this.info.levelDimensions[level] ?? [0, 0];
    if (!lw) throw new Error(`${this.info.path} has no level ${level}`);
    const ds = this.info.levelDownsamples[level];
    const lx = Math.floor(x / ds);
    const ly = Math.floor(y / ds);
    // The part inside the level; the rest is white, as OpenSlide composites it.
    const left = Math.max(0, lx);
    const top = Math.max(0, ly);
    const right = Math.min(lw, lx + width);
    const bottom = Math.min(lh, ly + height);
    const out = new Uint8Array(width * height * 3).fill(255);
    if (right > left && bottom > top) {
      const { data } = await sharp(this.info.path, { page: level, limitInputPixels: false })
        .extract({ left, top, width: right - left, height: bottom - top })
        .flatten({ background: '#ffffff' })
        .removeAlpha()
        .toColourspace('srgb')
        .raw()
        .toBuffer({ resolveWithObject: true });
      const rowBytes = (right - left) * 3;
      for (let r = 0; r < bottom - top; r++) {
        const dst = ((top - ly + r) * width + (left - lx)) * 3;
        out.set(data.subarray(r * rowBytes, (r + 1) * rowBytes), dst);
      }
    }
    return { data: out, width, height };
  }

  async readAssociatedImage(name: string): Promise<RgbPixels> {
    throw new Error(`${this.info.path} has no associated image '${name}' (read without OpenSlide)`);
  }

  async close(): Promise<void> {}
}

/**
 * The first directory's ImageDescription of a classic or Big TIFF, read from the file's header (libvips does not
 * expose it): Aperio writes its MPP and AppMag there.
 */
export async function tiffImageDescription(file: string): Promise<string | null> {
  const fh = await fs.open(file, 'r');
  try {
    const read = async (pos: number, len: number) => {
      const b = Buffer.alloc(len);
      const { bytesRead } = await fh.read(b, 0, len, pos);
      return b.subarray(0, bytesRead);
    };
    const head = await read(0, 16);
    if (head.length < 8) return null;
    const le = head.toString('latin1', 0, 2) === 'II';
    if (!le && head.toString('latin1', 0, 2) !== 'MM') return null;
    const u16 = (b: Buffer, o: number) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b: Buffer, o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const u64 = (b: Buffer, o: number) => Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));
    const big = u16(head, 2) === 43;
    if (!big && u16(head, 2) !== 42) return null;
    const ifd = big ? u64(head, 8) : u32(head, 4);
    const countBuf = await read(ifd, big ? 8 : 2);
    const count = big ? u64(countBuf, 0) : u16(countBuf, 0);
    const entrySize = big ? 20 : 12;
    const entries = await read(ifd + (big ? 8 : 2), Math.min(count, 4096) * entrySize);
    for (let i = 0; i + entrySize <= entries.length; i += entrySize) {
      if (u16(entries, i) !== 270) continue;
      const n = big ? u64(entries, i + 4) : u32(entries, i + 4);
      const inline = big ? 8 : 4;
      const bytes =
        n <= inline
          ? entries.subarray(i + (big ? 12 : 8), i + (big ? 12 : 8) + n)
          : await read(big ? u64(entries, i + 12) : u32(entries, i + 8), Math.min(n, 1 << 20));
      return bytes.toString('latin1').replace(/\0+$/, '');
    }
    return null;
  } finally {
    await fh.close();
  }
}

/** Aperio's "...|MPP = 0.2500|AppMag = 40|..." as aperio.* properties, as OpenSlide names them. */
export function aperioProperties(description: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!description.startsWith('Aperio')) return out;
  for (const part of description.split('|').slice(1)) {
    const m = /^\s*([^=]+?)\s*=\s*(.*?)\s*$/.exec(part);
    if (m) out[`aperio.${m[1]}`] = m[2];
  }
  return out;
}

async function openWithSharp(file: string): Promise<Slide> {
  const meta = await sharp(file, { limitInputPixels: false }).metadata();
  if (!meta.width || !meta.height) throw new Error(`${file} has no image size`);
  const levelDimensions: [number, number][] = [[meta.width, meta.height]];
  const pages = meta.format === 'tiff' ? (meta.pages ?? 1) : 1;
  // Further TIFF pages that shrink form the pyramid; others (label, macro) are not levels.
  for (let p = 1; p < pages; p++) {
    const m = await sharp(file, { page: p, limitInputPixels: false }).metadata();
    const prev = levelDimensions[levelDimensions.length - 1];
    if (m.width && m.height && m.width < prev[0] && m.height < prev[1] && levelDimensions.length === p) {
      levelDimensions.push([m.width, m.height]);
    }
  }
  const levelDownsamples = levelDimensions.map(([w, h]) => (meta.width! / w + meta.height! / h) / 2);
  const properties: Record<string, string> = {};
  if (meta.format === 'tiff' && meta.density && meta.resolutionUnit) {
    // sharp reports density in pixels per inch whatever the unit; give it back in the file's unit.
    const perUnit = meta.resolutionUnit === 'cm' ? meta.density / 2.54 : meta.density;
    properties['tiff.XResolution'] = String(perUnit);
    properties['tiff.YResolution'] = String(perUnit);
    properties['tiff.ResolutionUnit'] = meta.resolutionUnit === 'cm' ? 'centimeter' : 'inch';
  }
  if (meta.format === 'tiff') {
    const description = await tiffImageDescription(file).catch(() => null);
    if (description !== null) {
      properties['tiff.ImageDescription'] = description;
      Object.assign(properties, aperioProperties(description));
    }
  }
  return new SharpSlide({
    path: file,
    reader: 'sharp',
    vendor: properties['tiff.ImageDescription']?.startsWith('Aperio') ? 'aperio' : (meta.format ?? null),
    width: meta.width,
    height: meta.height,
    levelDimensions,
    levelDownsamples,
    mpp: mppFromProperties(properties),
    objectivePower: objectivePowerFromProperties(properties),
    associatedImages: {},
    hasIccProfile: Boolean(meta.hasProfile),
    properties,
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------------------------------------------

export interface OpenSlideOptions {
  /** 'auto' (default): OpenSlide for slide formats when it is installed, sharp for plain images and as fallback. */
  reader?: 'auto' | 'openslide' | 'sharp';
  /**
   * false: a slide opened only to read regions (the tile reader, which opens a slide for nearly every tile at scale):
   * OpenSlide's properties, associated images and ICC profile are not fetched, so `info` has the levels and nothing of
   * mpp, objective power, properties or associated images (null, empty). Default true.
   */
  properties?: boolean;
}

/**
 * Opens a slide. Errors say what failed for which file: a missing file, a format nobody here reads, or the
 * readers' own messages when the file is corrupt.
 */
export async function openSlide(file: string, options: OpenSlideOptions = {}): Promise<Slide> {
  const reader = options.reader ?? 'auto';
  const stat = await fs.stat(file).catch(() => null);
  if (!stat?.isFile()) throw new UserError(`slide not found: ${file}: check the path`);
  const ext = path.extname(file).toLowerCase();
  const os = openslideAddon();
  if (reader === 'openslide' && !os) {
    throw new UserError(
      `OpenSlide is not available to read ${file}: install it (Debian/Ubuntu: apt-get install libopenslide0)`,
    );
  }
  let openslideError: string | null = null;
  if (os && reader !== 'sharp' && !PLAIN_IMAGE.has(ext)) {
    try {
      return await openWithOpenSlide(file, options.properties ?? true);
    } catch (e) {
      openslideError = (e as Error).message;
      if (reader === 'openslide') throw new Error(openslideError);
      // A TIFF that OpenSlide cannot open may still be a plain TIFF libvips reads; other formats stop here.
      if (!['.tif', '.tiff'].includes(ext)) throw new Error(openslideError);
    }
  }
  try {
    return await openWithSharp(file);
  } catch (e) {
    const sharpError = (e as Error).message.split('\n')[0];
    throw new Error(
      openslideError
        ? `${openslideError}; libvips cannot read it either: ${sharpError}`
        : `cannot read ${file}: ${sharpError}`,
    );
  }
}
