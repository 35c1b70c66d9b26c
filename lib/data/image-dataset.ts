// Image datasets for `embed` and `eval --models`: an ImageFolder tree (root/<class>/<image>) or a CSV with a
// path column (and label, split, site, slide, patient, id where known; relative paths resolve against the CSV's
// folder). Images are decoded with sharp to RGB uint8 at the encoder's input size (centre crop to square, then
// resize); an unreadable image is skipped and listed, never fatal, and the rest are embedded into a feature set.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { UserError } from '../errors.js';
import { readCsv, formatCsv } from '../io/csv.js';
import { writeFeatureSet, META_COLUMNS, type FeatureSet } from './feature-set.js';

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.tif', '.tiff', '.webp', '.bmp', '.gif', '.avif'];

type MetaKey = Exclude<(typeof META_COLUMNS)[number], 'id'>;

export interface ImageItem {
  /** Absolute path of the image file. */
  path: string;
  id: string;
  meta: Partial<Record<MetaKey, string>>;
}

export interface ImageDataset {
  /** The folder or CSV it was read from. */
  source: string;
  items: ImageItem[];
  /** Meta columns the dataset knows (label for ImageFolder; the CSV's own columns otherwise). */
  columns: MetaKey[];
}

/** What embedDataset needs of a model: lib/models/encoder.ts's Encoder fits it. */
export interface ImageEncoder {
  info: { inputSize: number };
  /** batch [N, H, W, 3] RGB uint8 -> [N, D] float32. */
  embed(batch: {
    data: Uint8Array;
    shape: [number, number, number, number];
  }): Promise<{ data: Float32Array; shape: number[] }>;
}

export interface SkippedImage {
  id: string;
  path: string;
  reason: string;
}

export interface EmbedResult {
  /** Images embedded (rows of the written feature set). */
  embedded: number;
  skipped: SkippedImage[];
  dim: number;
}

const isImage = (f: string) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase());
const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Reads an ImageFolder tree or a dataset CSV. */
export async function readImageDataset(source: string): Promise<ImageDataset> {
  const st = await fs.stat(source).catch(() => undefined);
  if (!st)
    throw new UserError(
      `${source}: dataset not found; give an ImageFolder (root/<class>/<image>) or a CSV with a path column`,
    );
  if (st.isDirectory()) return readImageFolder(source);
  return readDatasetCsv(source);
}

async function readImageFolder(root: string): Promise<ImageDataset> {
  const entries = (await fs.readdir(root, { withFileTypes: true })).filter(
    (e) => e.isDirectory() && !e.name.startsWith('.'),
  );
  const items: ImageItem[] = [];
  for (const cls of entries.map((e) => e.name).sort(byName)) {
    const files = (await fs.readdir(path.join(root, cls), { withFileTypes: true }))
      .filter((e) => e.isFile() && isImage(e.name))
      .map((e) => e.name)
      .sort(byName);
    for (const f of files) items.push({ path: path.resolve(root, cls, f), id: `${cls}/${f}`, meta: { label: cls } });
  }
  if (items.length === 0) {
    throw new UserError(
      `${root}: no images found; an ImageFolder holds one folder per class with images in it (${IMAGE_EXTENSIONS.join(' ')})`,
    );
  }
  return { source: root, items, columns: ['label'] };
}

async function readDatasetCsv(file: string): Promise<ImageDataset> {
  const table = await readCsv(file);
  const col = (name: string) => table.header.indexOf(name);
  const pathCol = col('path');
  if (pathCol < 0)
    throw new UserError(
      `${file}: no 'path' column (header: ${table.header.join(',')}); a dataset CSV needs path and optionally label,split,site,slide,patient,id`,
    );
  const idCol = col('id');
  const columns = META_COLUMNS.filter((c): c is MetaKey => c !== 'id' && col(c) >= 0);
  const base = path.dirname(path.resolve(file));
  const seen = new Map<string, number>();
  const items = table.rows.map((r, i) => {
    const p = r[pathCol].trim();
    if (p === '') throw new UserError(`${file}: row ${i + 2} has an empty path`);
    const id = idCol >= 0 && r[idCol].trim() !== '' ? r[idCol].trim() : p;
    const prev = seen.get(id);
    if (prev !== undefined)
      throw new UserError(`${file}: id '${id}' appears twice (rows ${prev + 2} and ${i + 2}); ids must be unique`);
    seen.set(id, i);
    const meta: ImageItem['meta'] = {};
    for (const c of columns) meta[c] = r[col(c)].trim();
    return { path: path.resolve(base, p), id, meta };
  });
  if (items.length === 0) throw new UserError(`${file}: no rows; list one image per row`);
  return { source: file, items, columns };
}

/** Decodes one image to RGB uint8 [size, size, 3]: centre crop to square, then resize. */
export async function decodeRgb(file: string, size: number): Promise<Uint8Array> {
  const { data, info } = await sharp(file)
    .rotate()
    .resize(size, size, { fit: 'cover', position: 'centre' })
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels === 3 && info.width === size && info.height === size)
    return new Uint8Array(data.buffer, data.byteOffset, data.length);
  // Single-channel sources can come back with one channel: widen to RGB.
  const out = new Uint8Array(size * size * 3);
  for (let i = 0; i < size * size; i++)
    for (let c = 0; c < 3; c++) out[i * 3 + c] = data[i * info.channels + Math.min(c, info.channels - 1)];
  return out;
}

/**
 * Embeds every readable image of the dataset and writes a feature-set folder (features.npy, meta.csv, and
 * skipped.csv listing unreadable images with the reason). Returns what was embedded and skipped.
 */
export async function embedDataset(
  encoder: ImageEncoder,
  dataset: ImageDataset,
  outDir: string,
  opts: {
    batchSize?: number;
    onProgress?: (done: number, total: number) => void;
    extraFiles?: Record<string, string>;
  } = {},
): Promise<EmbedResult> {
  const size = encoder.info.inputSize;
  if (!Number.isInteger(size) || size <= 0) throw new Error(`embedDataset: encoder input size ${size}`);
  const batchSize = opts.batchSize ?? 32;
  const pixels = size * size * 3;
  const skipped: SkippedImage[] = [];
  const kept: ImageItem[] = [];
  const chunks: Float32Array[] = [];
  let dim = -1;
  let done = 0;
  const items = dataset.items;
  for (let start = 0; start < items.length; start += batchSize) {
    const slice = items.slice(start, start + batchSize);
    const decoded = await Promise.all(
      slice.map((it) =>
        decodeRgb(it.path, size).then(
          (px) => ({ it, px }),
          (e: Error) => ({ it, px: undefined, reason: e.message.split('\n')[0] }),
        ),
      ),
    );
    const ok = decoded.filter((x): x is { it: ImageItem; px: Uint8Array } => x.px !== undefined);
    for (const x of decoded)
      if (x.px === undefined) skipped.push({ id: x.it.id, path: x.it.path, reason: (x as { reason: string }).reason });
    if (ok.length > 0) {
      const batch = new Uint8Array(ok.length * pixels);
      ok.forEach((x, i) => batch.set(x.px, i * pixels));
      const out = await encoder.embed({ data: batch, shape: [ok.length, size, size, 3] });
      if (out.shape.length !== 2 || out.shape[0] !== ok.length || out.data.length !== out.shape[0] * out.shape[1]) {
        throw new Error(`encoder returned shape [${out.shape.join(', ')}] for a batch of ${ok.length}`);
      }
      if (dim < 0) dim = out.shape[1];
      chunks.push(Float32Array.from(out.data));
      kept.push(...ok.map((x) => x.it));
    }
    done += slice.length;
    opts.onProgress?.(done, items.length);
  }
  if (kept.length === 0) {
    throw new UserError(
      `${dataset.source}: none of the ${items.length} images could be read (first: ${skipped[0]?.path}: ${skipped[0]?.reason}); check the files`,
    );
  }
  const features = new Float32Array(kept.length * dim);
  let off = 0;
  for (const c of chunks) {
    features.set(c, off);
    off += c.length;
  }
  const meta: FeatureSet['meta'] = {};
  for (const c of dataset.columns) meta[c] = kept.map((it) => it.meta[c] ?? '');
  const extra: Record<string, string> = { ...opts.extraFiles };
  if (skipped.length > 0) {
    extra['skipped.csv'] = formatCsv({
      header: ['id', 'path', 'reason'],
      rows: skipped.map((s) => [s.id, s.path, s.reason]),
    });
  }
  await writeFeatureSet(outDir, { n: kept.length, d: dim, features, ids: kept.map((it) => it.id), meta }, extra);
  return { embedded: kept.length, skipped, dim };
}
