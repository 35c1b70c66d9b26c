// The tile run over a cohort: every slide of a folder or CSV is opened, tissue-masked and tiled into a manifest
// folder; corrupt slides become `failed` rows and the run goes on; a second run skips the slides already done.
//
// <out>/tiling.json          the options the folder was made with (a resumed run must use the same)
// <out>/slides.csv           slide, path, status (ok|failed), tiles, mpp, width, height, error
// <out>/tiles/<slide>.csv    x, y (level 0), level, read_size, tissue_fraction
// <out>/thumbs/<slide>.png   the thumbnail with the kept tiles outlined
// <out>/tile.log.jsonl       one JSON line per slide processed
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { readJson, readText } from '../io/read.js';
import { parseCsv, formatCsv, readCsv } from '../io/csv.js';
import { SLIDE_EXTENSIONS, openSlide, type Slide } from './reader.js';
import { outlineTiles, planTiles, tileSlide } from './tiling.js';
import { readTridentCoords, tridentCoordsFile } from './trident.js';
import type { TissueMaskOptions } from './tissue.js';

export interface TileRunOptions {
  /** A folder of slides, or a CSV with a `path` column (optional `slide` name and `mpp` columns). */
  slides: string;
  out: string;
  /** Target microns per pixel (G2L: 0.5, "20x"). */
  mpp?: number;
  tileSizePx?: number;
  tissueThreshold?: number;
  /** Microns per pixel for slides whose file and CSV row give none. */
  defaultMpp?: number;
  /** Slides processed at once (their reads run on the libuv threadpool). */
  workers?: number;
  mask?: TissueMaskOptions;
  /** A folder of TRIDENT `<slide>_patches.h5` files (or its patches/ subfolder): tile at those coordinates. */
  coordsFrom?: string;
  onSlide?: (row: SlideRow, done: number, total: number) => void;
}

export interface SlideRow {
  slide: string;
  path: string;
  status: 'ok' | 'failed';
  tiles: number;
  mpp: number | null;
  width: number | null;
  height: number | null;
  error: string;
}

export interface TileRunResult {
  rows: SlideRow[];
  ok: number;
  failed: number;
  /** Slides found done by an earlier run and skipped. */
  skipped: number;
}

export const SLIDES_CSV_HEADER = ['slide', 'path', 'status', 'tiles', 'mpp', 'width', 'height', 'error'];
export const TILES_CSV_HEADER = ['x', 'y', 'level', 'read_size', 'tissue_fraction'];

interface SlideInput {
  slide: string;
  path: string;
  mpp: number | null;
}

/** A slide's name as a file name: its characters outside [A-Za-z0-9._-] become '_'. */
export const safeSlideName = (name: string): string => name.replace(/[^A-Za-z0-9._-]/g, '_');

export async function listSlides(source: string): Promise<SlideInput[]> {
  const stat = await fs.stat(source).catch(() => null);
  if (!stat) throw new UserError(`--slides ${source}: no such folder or CSV file; check the path`);
  let inputs: SlideInput[];
  if (stat.isDirectory()) {
    const names = (await fs.readdir(source))
      .filter((f) => SLIDE_EXTENSIONS.includes(path.extname(f).toLowerCase()))
      .sort();
    // A slide is named by its file name without extension, or with it where two files share a stem (a.svs, a.png).
    const stem = (f: string) => path.basename(f, path.extname(f));
    const stems = new Map<string, number>();
    for (const f of names) stems.set(stem(f), (stems.get(stem(f)) ?? 0) + 1);
    inputs = names.map((f) => ({
      slide: safeSlideName(stems.get(stem(f))! > 1 ? f : stem(f)),
      path: path.resolve(source, f),
      mpp: null,
    }));
    if (inputs.length === 0) {
      throw new UserError(
        `--slides ${source}: no slide files in this folder (looked for ${SLIDE_EXTENSIONS.join(' ')}); point --slides at the slides or a CSV`,
      );
    }
  } else {
    const table = await readCsv(source);
    const col = (name: string) => table.header.indexOf(name);
    const pathCol = col('path');
    if (pathCol < 0)
      throw new UserError(
        `${source}: no 'path' column (columns: ${table.header.join(', ')}); add one with each slide's file`,
      );
    const slideCol = col('slide'),
      mppCol = col('mpp');
    inputs = table.rows.map((r, i) => {
      const file = path.resolve(path.dirname(source), r[pathCol]);
      let mpp: number | null = null;
      if (mppCol >= 0 && r[mppCol].trim() !== '') {
        mpp = Number(r[mppCol]);
        if (!(mpp > 0))
          throw new UserError(
            `${source}: row ${i + 2}: mpp '${r[mppCol]}' is not a positive number of um/px; fix or empty it`,
          );
      }
      const name = slideCol >= 0 && r[slideCol].trim() ? r[slideCol].trim() : path.basename(file, path.extname(file));
      return { slide: safeSlideName(name), path: file, mpp };
    });
    if (inputs.length === 0) throw new UserError(`${source}: the CSV lists no slides`);
  }
  const seen = new Map<string, string>();
  for (const s of inputs) {
    const other = seen.get(s.slide);
    if (other)
      throw new UserError(
        `two slides are both named '${s.slide}' (${other} and ${s.path}); give them distinct names with a 'slide' column in a CSV`,
      );
    seen.set(s.slide, s.path);
  }
  return inputs;
}

function rowToCsv(r: SlideRow): string[] {
  return [
    r.slide,
    r.path,
    r.status,
    String(r.tiles),
    r.mpp === null ? '' : String(r.mpp),
    r.width === null ? '' : String(r.width),
    r.height === null ? '' : String(r.height),
    r.error,
  ];
}

export function parseSlidesCsv(text: string, where: string): SlideRow[] {
  const t = parseCsv(text, where);
  const idx = SLIDES_CSV_HEADER.map((h) => t.header.indexOf(h));
  if (idx.some((i) => i < 0))
    throw new UserError(`${where}: not a slides.csv of the tile command (columns ${SLIDES_CSV_HEADER.join(', ')})`);
  const num = (v: string) => (v === '' ? null : Number(v));
  return t.rows.map((r) => ({
    slide: r[idx[0]],
    path: r[idx[1]],
    status: r[idx[2]] === 'ok' ? 'ok' : 'failed',
    tiles: Number(r[idx[3]]) || 0,
    mpp: num(r[idx[4]]),
    width: num(r[idx[5]]),
    height: num(r[idx[6]]),
    error: r[idx[7]],
  }));
}

/**
 * TRIDENT's coordinates of `name` (lib/slides/trident.ts), checked against the tiling these options give on this slide:
 * the same patch size at the target resolution and the same level-0 footprint (within a pixel), else an error that
 * says which option to change.
 */
async function tridentTiles(
  folder: string,
  name: string,
  slide: Slide,
  slideMpp: number,
  targetMpp: number,
  tileSizePx: number,
): Promise<[number, number][]> {
  const file = tridentCoordsFile(folder, name);
  if (!file)
    throw new Error(
      `no ${name}_patches.h5 in ${folder} (nor in its patches/ folder): --coords-from needs TRIDENT's patch file of every slide`,
    );
  const t = await readTridentCoords(file);
  if (t.patchSize !== null && t.patchSize !== tileSizePx)
    throw new Error(`${file} has patches of ${t.patchSize} px: pass --tile ${t.patchSize}`);
  const plan = planTiles(slide.info.levelDimensions, slide.info.levelDownsamples, slideMpp, targetMpp, tileSizePx);
  if (t.patchSizeLevel0 !== null && Math.abs(t.patchSizeLevel0 - plan.stepL0) > 1) {
    const mag =
      t.targetMagnification !== null
        ? ` (its target magnification is ${t.targetMagnification}x: pass --mag ${t.targetMagnification})`
        : '';
    throw new Error(
      `${file}: patches cover ${t.patchSizeLevel0} level-0 px, while --mpp ${targetMpp} gives ${plan.stepL0} on this slide (${slideMpp} um/px)${mag}`,
    );
  }
  const [w, h] = slide.info.levelDimensions[0];
  const outside = t.coords.find(([x, y]) => x < 0 || y < 0 || x >= w || y >= h);
  if (outside)
    throw new Error(`${file}: coordinate (${outside[0]}, ${outside[1]}) lies outside the slide (${w} x ${h})`);
  return t.coords;
}

/** Tiles one slide; never throws for a slide's own problems (they become the row's error). */
async function runOne(
  input: SlideInput,
  o: Required<Omit<TileRunOptions, 'onSlide' | 'mask' | 'defaultMpp' | 'coordsFrom'>> & TileRunOptions,
): Promise<SlideRow> {
  const row: SlideRow = {
    slide: input.slide,
    path: input.path,
    status: 'failed',
    tiles: 0,
    mpp: null,
    width: null,
    height: null,
    error: '',
  };
  let slide: Slide | null = null;
  try {
    slide = await openSlide(input.path);
    row.width = slide.info.width;
    row.height = slide.info.height;
    const mpp = input.mpp ?? slide.info.mpp?.x ?? o.defaultMpp ?? null;
    if (mpp === null) {
      throw new Error(
        'no microns per pixel: the file has none (no openslide.mpp-x, Aperio MPP or TIFF resolution); ' +
          'pass --default-mpp <um/px> or add an mpp column to a slide CSV',
      );
    }
    row.mpp = mpp;
    const coords = o.coordsFrom
      ? await tridentTiles(o.coordsFrom, input.slide, slide, mpp, o.mpp, o.tileSizePx)
      : undefined;
    const tiling = await tileSlide(slide, mpp, {
      targetMpp: o.mpp,
      tileSizePx: o.tileSizePx,
      tissueThreshold: o.tissueThreshold,
      mask: o.mask,
      coords,
    });
    const csv = formatCsv({
      header: TILES_CSV_HEADER,
      rows: tiling.tiles.map((t) => [
        String(t.x),
        String(t.y),
        String(t.level),
        String(t.readSizePx),
        t.tissueFraction.toFixed(4),
      ]),
    });
    await writeFileAtomic(path.join(o.out, 'tiles', `${input.slide}.csv`), csv);
    const outlined = outlineTiles(tiling.thumbnail, tiling.tiles, tiling.plan.stepL0);
    const png = await sharp(Buffer.from(outlined.data.buffer, outlined.data.byteOffset, outlined.data.byteLength), {
      raw: { width: outlined.width, height: outlined.height, channels: 3 },
    })
      .png()
      .toBuffer();
    await writeFileAtomic(path.join(o.out, 'thumbs', `${input.slide}.png`), png);
    row.status = 'ok';
    row.tiles = tiling.tiles.length;
  } catch (e) {
    row.error = ((e as Error).message ?? String(e)).replace(/\s+/g, ' ').trim();
  } finally {
    await slide?.close().catch(() => {});
  }
  return row;
}

export async function runTiling(options: TileRunOptions): Promise<TileRunResult> {
  const o = { mpp: 0.5, tileSizePx: 256, tissueThreshold: 0.5, workers: 2, ...options };
  if (!(o.mpp > 0)) throw new UserError(`--mpp ${o.mpp}: must be a positive number of um/px (G2L: 0.5)`);
  if (!Number.isInteger(o.tileSizePx) || o.tileSizePx < 16)
    throw new UserError(`--tile ${o.tileSizePx}: must be an integer of at least 16 px`);
  if (!(o.tissueThreshold >= 0 && o.tissueThreshold <= 1))
    throw new UserError(`--tissue-threshold ${o.tissueThreshold}: must be in [0, 1]`);
  if (o.defaultMpp !== undefined && !(o.defaultMpp > 0))
    throw new UserError(`--default-mpp ${o.defaultMpp}: must be a positive number of um/px`);
  if (!Number.isInteger(o.workers) || o.workers < 1)
    throw new UserError(`--workers ${o.workers}: must be a positive integer`);
  const inputs = await listSlides(o.slides);
  await fs.mkdir(o.out, { recursive: true });

  // Resuming: the folder must have been made with the same tiling options.
  const settings = {
    mpp: o.mpp,
    tileSizePx: o.tileSizePx,
    tissueThreshold: o.tissueThreshold,
    mask: o.mask ?? null,
    ...(o.coordsFrom ? { coordsFrom: path.resolve(o.coordsFrom) } : {}),
  };
  const settingsFile = path.join(o.out, 'tiling.json');
  if (existsSync(settingsFile)) {
    const before = (await readJson(
      settingsFile,
      `remove it (and ${o.out}/slides.csv) to tile again, or use another --out`,
    )) as Record<string, unknown>;
    if (JSON.stringify(before) !== JSON.stringify(settings)) {
      if (!before || typeof before !== 'object')
        throw new UserError(`${settingsFile} is not a tiling.json: remove it to tile again, or use another --out`);
      throw new UserError(
        `${o.out} holds tiles made with --mpp ${before.mpp} --tile ${before.tileSizePx} --tissue-threshold ${before.tissueThreshold}; ` +
          'use another --out, or the same options to resume',
      );
    }
  } else {
    await writeFileAtomic(settingsFile, `${JSON.stringify(settings, null, 2)}\n`);
  }
  const slidesCsv = path.join(o.out, 'slides.csv');
  const previous = new Map<string, SlideRow>();
  if (existsSync(slidesCsv)) {
    const text = await readText(slidesCsv, `remove it to tile every slide again, or use another --out`);
    for (const r of parseSlidesCsv(text, slidesCsv)) previous.set(r.slide, r);
  }
  const rows = new Map<string, SlideRow>();
  let skipped = 0;
  const todo: SlideInput[] = [];
  for (const s of inputs) {
    const p = previous.get(s.slide);
    if (p && p.status === 'ok' && p.path === s.path && existsSync(path.join(o.out, 'tiles', `${s.slide}.csv`))) {
      rows.set(s.slide, p);
      skipped++;
    } else {
      todo.push(s);
    }
  }

  const logFile = path.join(o.out, 'tile.log.jsonl');
  let writing = Promise.resolve();
  const save = () => {
    // Serialised: slides.csv always lists every slide finished so far, in input order.
    writing = writing.then(() =>
      writeFileAtomic(
        slidesCsv,
        formatCsv({
          header: SLIDES_CSV_HEADER,
          rows: inputs.filter((s) => rows.has(s.slide)).map((s) => rowToCsv(rows.get(s.slide)!)),
        }),
      ),
    );
    return writing;
  };
  let next = 0;
  let done = skipped;
  const worker = async () => {
    while (next < todo.length) {
      const input = todo[next++];
      const t0 = Date.now();
      const row = await runOne(input, o);
      rows.set(input.slide, row);
      done++;
      await fs.appendFile(
        logFile,
        `${JSON.stringify({ time: new Date().toISOString(), event: 'slide', ...row, seconds: (Date.now() - t0) / 1000 })}\n`,
      );
      await save();
      o.onSlide?.(row, done, inputs.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.workers, Math.max(1, todo.length)) }, worker));
  await save();
  const all = inputs.map((s) => rows.get(s.slide)!);
  return {
    rows: all,
    ok: all.filter((r) => r.status === 'ok').length,
    failed: all.filter((r) => r.status === 'failed').length,
    skipped,
  };
}
