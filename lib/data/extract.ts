// Whole-slide feature extraction (`g2l-native embed --slides <tile manifest> --model ... --out <folder>`): the features
// of every tile of every slide, one file per slide, in TRIDENT's layout so that Python tools read them unchanged:
//
//   <out>/<slide>.h5     features (N, D) float32, coords (N, 2) int64 (level-0 x, y of each tile's top-left corner,
//                        in manifest order); attributes on coords as TRIDENT writes them (patch_size at the target
//                        resolution, patch_size_level0, target_magnification, level0_magnification, name, ...) plus
//                        target_mpp; on the file: model, dims, g2l_native version.
//   <out>/<slide>/       with --format npy: a feature set (features.npy + meta.csv with id, slide) and coords.csv.
//   <out>/slides.csv     slide, status (ok | failed | pending), tiles, dims, seconds, error: rewritten (atomically)
//                        after every slide.
//
// The manifest is read by the one tile sampler (lib/data/sampler.ts) and the pixels by the one slide reader
// (lib/data/batches.ts), strictly: a tile that cannot be read fails its slide (its row says why) and the next slide
// goes on. At most one slide's features are in memory; each output is written under a temporary name and renamed, so
// a killed run leaves finished slides and nothing half-written, and a rerun skips the slides already done. Reading a
// slide's next batch overlaps the model's forward on the current one. Ranks (--nproc, torchrun) take slides i with
// i mod worldSize = rank.
//
// HDF5 through h5wasm (lib/io/hdf5.ts: why h5wasm rather than libhdf5 in the addon).
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { formatCsv } from '../io/csv.js';
import { hdf5 } from '../io/hdf5.js';
import { trackTemp, writeFileAtomic } from '../io/atomic.js';
import { writeFeatureSet } from './feature-set.js';
import { SlideTileReader } from './batches.js';
import { TileSampler, type ManifestSlide } from './sampler.js';
import type { Encoder } from '../models/encoder.js';
import { VERSION } from '../version.js';

export type ExtractFormat = 'h5' | 'npy';

export interface ExtractOptions {
  /** A tile manifest folder of `g2l-native tile`. */
  manifest: string;
  out: string;
  encoder: Encoder;
  /** The model as the user named it (recorded in each file). */
  modelName: string;
  format?: ExtractFormat;
  /** Tiles per forward pass (default: the encoder's batch size). */
  batchSize?: number;
  /** This process's share of the slides (data parallelism). */
  rank?: number;
  worldSize?: number;
  /** Slides open at once in the reader (default 16). */
  maxOpenSlides?: number;
  onSlide?: (row: SlideRow) => void;
}

export interface SlideRow {
  slide: string;
  status: 'ok' | 'failed' | 'pending' | 'done';
  tiles: number;
  dims: number;
  seconds: number;
  error: string;
}

export interface ExtractSummary {
  out: string;
  /** This process's slides: extracted now, already done (skipped), failed. */
  extracted: number;
  skipped: number;
  failed: SlideRow[];
  tiles: number;
  dims: number;
  seconds: number;
}

const STATUS_DIR = '.status';

/** A slide's tiles could not be read: that slide fails, the others go on. */
class SlideReadError extends Error {}

/** The output of `slide` in `out`. */
export function slideOutput(out: string, slide: string, format: ExtractFormat): string {
  return path.join(out, format === 'h5' ? `${slide}.h5` : slide);
}

/** Writes one slide's features and coordinates as a TRIDENT-style .h5, under a temporary name renamed into place. */
async function writeSlideH5(
  file: string,
  features: Float32Array,
  coords: BigInt64Array,
  n: number,
  dims: number,
  attrs: Record<string, number | string>,
  fileAttrs: Record<string, number | string>,
): Promise<void> {
  const h5 = await hdf5();
  const tmp = `${file}.${process.pid}.tmp`;
  const release = trackTemp(tmp, file);
  const f = new h5.File(tmp, 'w');
  try {
    f.create_dataset({ name: 'features', data: features, shape: [n, dims], dtype: '<f' });
    const c = f.create_dataset({ name: 'coords', data: coords, shape: [n, 2], dtype: '<q' });
    for (const [k, v] of Object.entries(attrs))
      c.create_attribute(k, v, null, typeof v === 'number' && Number.isInteger(v) ? '<q' : undefined);
    for (const [k, v] of Object.entries(fileAttrs))
      f.create_attribute(k, v, null, typeof v === 'number' && Number.isInteger(v) ? '<q' : undefined);
  } finally {
    f.close();
  }
  await fs.rename(tmp, file);
  release();
}

/** TRIDENT's coordinate attributes for a slide tiled at `targetMpp` with tiles of `tileSizePx`. */
function coordAttrs(
  slide: ManifestSlide,
  tileSizePx: number,
  targetMpp: number | null,
): Record<string, number | string> {
  const attrs: Record<string, number | string> = { name: slide.name, patch_size: tileSizePx, overlap: 0 };
  if (targetMpp !== null) {
    attrs.target_mpp = targetMpp;
    attrs.target_magnification = Math.round((10 / targetMpp) * 100) / 100; // 0.5 um/px = 20x (the usual convention)
  }
  if (slide.mpp !== null) {
    attrs.level0_mpp = slide.mpp;
    attrs.level0_magnification = Math.round((10 / slide.mpp) * 100) / 100;
    if (targetMpp !== null) attrs.patch_size_level0 = Math.round((tileSizePx * targetMpp) / slide.mpp);
  }
  if (slide.width !== null) attrs.level0_width = slide.width;
  if (slide.height !== null) attrs.level0_height = slide.height;
  return attrs;
}

async function readStatus(out: string, slide: string): Promise<SlideRow | null> {
  try {
    return JSON.parse(await fs.readFile(path.join(out, STATUS_DIR, `${slide}.json`), 'utf8')) as SlideRow;
  } catch {
    return null;
  }
}

/** Every slide's status as the status files say now (absent: no process has finished it). */
async function readStatuses(out: string, slides: ManifestSlide[]): Promise<Map<string, SlideRow>> {
  const all = new Map<string, SlideRow>();
  for (const s of slides) {
    const r = await readStatus(out, s.name);
    if (r) all.set(s.name, r);
  }
  return all;
}

/** slides.csv from the statuses (the slides without one: pending). */
async function writeSlidesCsv(out: string, slides: ManifestSlide[], statuses: Map<string, SlideRow>): Promise<void> {
  const rows: string[][] = [];
  for (const s of slides) {
    const r = statuses.get(s.name) ?? {
      slide: s.name,
      status: 'pending',
      tiles: s.tiles.length,
      dims: 0,
      seconds: 0,
      error: '',
    };
    rows.push([
      r.slide,
      r.status === 'done' ? 'ok' : r.status,
      String(r.tiles),
      String(r.dims),
      r.seconds.toFixed(2),
      r.error,
    ]);
  }
  await writeFileAtomic(
    path.join(out, 'slides.csv'),
    formatCsv({ header: ['slide', 'status', 'tiles', 'dims', 'seconds', 'error'], rows }),
  );
}

export async function extractSlides(options: ExtractOptions): Promise<ExtractSummary> {
  const started = Date.now();
  const format = options.format ?? 'h5';
  const rank = options.rank ?? 0;
  const world = options.worldSize ?? 1;
  const sampler = await TileSampler.open(options.manifest, { batchSize: 1 });
  const enc = options.encoder;
  const batchSize = Math.max(1, options.batchSize ?? enc.batchSize);
  const size = sampler.tileSizePx;
  const out = path.resolve(options.out);
  await fs.mkdir(path.join(out, STATUS_DIR), { recursive: true });
  const reader = new SlideTileReader({ maxOpenSlides: options.maxOpenSlides ?? 16 });
  const summary: ExtractSummary = {
    out,
    extracted: 0,
    skipped: 0,
    failed: [],
    tiles: 0,
    dims: enc.info.dims,
    seconds: 0,
  };
  const fileAttrs = {
    model: options.modelName,
    dims: enc.info.dims,
    g2l_native: VERSION,
    tile_manifest: path.resolve(options.manifest),
  };
  // Read once; this process updates its own slides' entries, and re-reads the others' at the end.
  const statuses = await readStatuses(out, sampler.slides);
  try {
    for (let i = rank; i < sampler.slides.length; i += world) {
      const slide = sampler.slides[i];
      const target = slideOutput(out, slide.name, format);
      if (existsSync(target) && statuses.get(slide.name)?.status === 'done') {
        summary.skipped++;
        continue;
      }
      const t0 = Date.now();
      const row: SlideRow = {
        slide: slide.name,
        status: 'done',
        tiles: slide.tiles.length,
        dims: enc.info.dims,
        seconds: 0,
        error: '',
      };
      try {
        const { features, coords } = await embedSlide(slide, sampler, reader, enc, batchSize, size);
        const n = slide.tiles.length;
        if (format === 'h5') {
          await writeSlideH5(
            target,
            features,
            coords,
            n,
            enc.info.dims,
            coordAttrs(slide, size, sampler.mpp),
            fileAttrs,
          );
        } else {
          // A feature set (ids <slide>_<x>_<y>, a slide column) with the coordinates beside it in coords.csv.
          const ids: string[] = [];
          const lines = ['x,y'];
          for (let k = 0; k < n; k++) {
            ids.push(`${slide.name}_${coords[2 * k]}_${coords[2 * k + 1]}`);
            lines.push(`${coords[2 * k]},${coords[2 * k + 1]}`);
          }
          await writeFeatureSet(
            target,
            { n, d: enc.info.dims, features, ids, meta: { slide: Array(n).fill(slide.name) } },
            { 'coords.csv': `${lines.join('\n')}\n` },
          );
        }
        summary.extracted++;
        summary.tiles += n;
      } catch (e) {
        if (!(e instanceof SlideReadError)) throw e; // the model or the disk: the same for every slide
        row.status = 'failed';
        row.error = (e as Error).message.split('\n')[0];
        summary.failed.push(row);
      }
      row.seconds = (Date.now() - t0) / 1000;
      await writeFileAtomic(path.join(out, STATUS_DIR, `${slide.name}.json`), `${JSON.stringify(row)}\n`);
      statuses.set(slide.name, row);
      await writeSlidesCsv(out, sampler.slides, statuses);
      options.onSlide?.(row);
    }
    await writeSlidesCsv(out, sampler.slides, await readStatuses(out, sampler.slides));
  } finally {
    await reader.close();
  }
  summary.seconds = (Date.now() - started) / 1000;
  return summary;
}

/**
 * The features of every tile of `slide`, in manifest order, with their level-0 coordinates. The next batch is read
 * while the model runs on the current one.
 */
async function embedSlide(
  slide: ManifestSlide,
  sampler: TileSampler,
  reader: SlideTileReader,
  enc: Encoder,
  batchSize: number,
  size: number,
): Promise<{ features: Float32Array; coords: BigInt64Array }> {
  const n = slide.tiles.length;
  const dims = enc.info.dims;
  const features = new Float32Array(n * dims);
  const coords = new BigInt64Array(n * 2);
  const tileBytes = size * size * 3;
  const read = async (start: number) => {
    const refs = Array.from(slide.tiles.subarray(start, Math.min(n, start + batchSize)), (k) => sampler.tiles[k]);
    const data = new Uint8Array(refs.length * tileBytes);
    try {
      await reader.readInto(refs, size, data, { strict: true });
    } catch (e) {
      throw new SlideReadError((e as Error).message);
    }
    return { refs, data };
  };
  let next: ReturnType<typeof read> | null = read(0);
  next.catch(() => {});
  for (let start = 0; start < n; start += batchSize) {
    const { refs, data } = await next!;
    next = start + batchSize < n ? read(start + batchSize) : null;
    next?.catch(() => {});
    const y = await enc.embed({ data, shape: [refs.length, size, size, 3] });
    features.set(y.data, start * dims);
    refs.forEach((r, k) => {
      coords[2 * (start + k)] = BigInt(r.x);
      coords[2 * (start + k) + 1] = BigInt(r.y);
    });
  }
  return { features, coords };
}
