// Loads the slide-reader addon (binding.gyp: OpenSlide through dlopen). Its absence is not fatal: plain images and
// TIFF still read through sharp/libvips.
import { createRequire } from 'node:module';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT, SETUP_COMMAND, nativeBuildRoots } from '../version.js';
import { exitAtOnceWhileBusy, type ExitIfBusy } from '../util/exit.js';

/** An open OpenSlide handle (opaque; closed by closeSlide or garbage collection). */
export type OpenSlideHandle = { readonly __openslide: unique symbol };

export interface OpenSlideOpened {
  handle: OpenSlideHandle;
  vendor: string | null;
  levelDimensions: [number, number][];
  levelDownsamples: number[];
  properties: Record<string, string>;
  associatedImages: Record<string, [number, number]>;
  /** null with OpenSlide < 4.0, which cannot report it. */
  iccProfileSize: number | null;
}

/** RGB pixels, composited on white where the slide is transparent. */
export interface RgbPixels {
  data: Uint8Array;
  width: number;
  height: number;
}

export interface SlidesAddon extends ExitIfBusy {
  openslideVersion(): string | null;
  /** The OpenSlide library file loaded, or null. */
  openslideLibrary(): string | null;
  /** Libraries to try before the system's (before OpenSlide's first use). */
  useOpenSlideLibraries(paths: string[]): void;
  openslideError(): string | null;
  /** Every call below runs on the libuv threadpool. */
  detectVendor(path: string): Promise<string | null>;
  /** properties: false: no properties, associated images or ICC profile size (empty, empty, null); levels only. */
  openSlide(path: string, options?: { properties?: boolean }): Promise<OpenSlideOpened>;
  /** x, y at level 0; width, height in pixels of `level`. */
  readRegion(
    handle: OpenSlideHandle,
    x: number,
    y: number,
    level: number,
    width: number,
    height: number,
  ): Promise<RgbPixels>;
  readAssociatedImage(handle: OpenSlideHandle, name: string): Promise<RgbPixels>;
  /**
   * Square regions of `size` straight into `out` (n,size,size,3), on `threads` threads of the addon's own (default:
   * all cores); resolves to one error message or null per region.
   */
  readTilesInto(
    handles: OpenSlideHandle[],
    xs: number[],
    ys: number[],
    levels: number[],
    size: number,
    out: Uint8Array,
    threads?: number,
  ): Promise<(string | null)[]>;
  closeSlide(handle: OpenSlideHandle): void;
}

export const DEFAULT_SLIDES_ADDON_PATH = path.join(PACKAGE_ROOT, 'build', 'Release', 'g2l_slides.node');

/** G2L_SLIDES_ADDON_PATH, else the package folder's build, else (installed package) the setup cache's. */
function slidesAddonPath(): string {
  if (process.env.G2L_SLIDES_ADDON_PATH) return process.env.G2L_SLIDES_ADDON_PATH;
  for (const dir of nativeBuildRoots()) {
    const file = path.join(dir, 'build', 'Release', 'g2l_slides.node');
    if (existsSync(file)) return file;
  }
  return DEFAULT_SLIDES_ADDON_PATH;
}

let cached: SlidesAddon | null = null;
let cachedError: string | null = null;

/** The addon, or null with slidesAddonError() telling why. */
export function loadSlidesAddon(): SlidesAddon | null {
  if (cached || cachedError) return cached;
  const file = slidesAddonPath();
  if (!existsSync(file)) {
    cachedError = `the slide-reader addon is not built (no ${file}): run \`${SETUP_COMMAND}\``;
    return null;
  }
  try {
    cached = createRequire(import.meta.url)(file) as SlidesAddon;
    cached.useOpenSlideLibraries(openslideBinLibraries());
    exitAtOnceWhileBusy(cached);
  } catch (e) {
    cachedError = `the slide-reader addon could not be loaded from ${file}: ${(e as Error).message.split('\n')[0]}; run \`${SETUP_COMMAND}\``;
  }
  return cached;
}

/**
 * OpenSlide 4 from PyPI's openslide-bin (self-contained libopenslide.so.1; reads DICOM whole-slide images, which
 * Debian 12's OpenSlide 3.4.1 cannot), where setup installed it: the project's .venv, or (installed package) the
 * Python environment `g2l-native setup` made in its cache when it installed libtorch. Preferred over the system's.
 */
export function openslideBinLibraries(): string[] {
  const out: string[] = [];
  const envs = [
    path.join(PACKAGE_ROOT, '.venv'),
    ...nativeBuildRoots()
      .slice(1)
      .map((d) => path.join(d, 'python')),
  ];
  for (const env of envs) {
    const lib = path.join(env, 'lib');
    if (!existsSync(lib)) continue;
    for (const py of readdirSync(lib)
      .filter((d) => d.startsWith('python'))
      .sort()
      .reverse()) {
      const f = path.join(lib, py, 'site-packages', 'openslide_bin', 'libopenslide.so.1');
      if (existsSync(f)) out.push(f);
    }
  }
  return out;
}

export function slidesAddonError(): string | null {
  loadSlidesAddon();
  return cachedError;
}

/** The addon when OpenSlide itself loads too, else null (slidesAddonError / openslideStatus say why). */
export function openslideAddon(): SlidesAddon | null {
  const addon = loadSlidesAddon();
  return addon && addon.openslideVersion() ? addon : null;
}

/** OpenSlide's version and library file, or null with the reason when OpenSlide (or the addon) is unavailable. */
export function openslideStatus(): { version: string | null; library: string | null; error: string | null } {
  const addon = loadSlidesAddon();
  if (!addon) return { version: null, library: null, error: slidesAddonError() };
  return { version: addon.openslideVersion(), library: addon.openslideLibrary(), error: addon.openslideError() };
}
