// Tile pixels: the sampler's batches read from the slides and packed into one contiguous uint8 buffer (B, T, T, 3),
// ready to hand to the engine (augmentBatch / the trainer borrow it without copying). SlideTileReader is the one
// reader of tiles from slides (training, feature extraction); TileBatchLoader iterates a sampler's batches with it.
//
// Tiles that OpenSlide reads at the tile size are decoded by the slide addon in one call per batch, on its own
// threads (all cores by default), straight into the batch buffer. Other reads (libvips, resized tiles) run on the
// libuv threadpool, up to `concurrency` at once; UV_THREADPOOL_SIZE (default 4) bounds how many decode at once. At
// most `prefetch` batches are in flight or waiting: a slow consumer stops the reads (backpressure). A tile that
// cannot be read is reported through onTileError and replaced by another tile of the same batch, never fatal.
import sharp from 'sharp';
import { openslideAddon } from '../slides/addon.js';
import { openSlide, type Slide } from '../slides/reader.js';
import type { SamplerState, TileRef, TileSampler } from './sampler.js';

export interface TileBatch {
  /** (B, T, T, 3) RGB, row-major, one allocation. */
  data: Uint8Array;
  shape: [number, number, number, 3];
  tiles: TileRef[];
  epoch: number;
  batch: number;
  /** The sampler state after this batch: save it with a checkpoint to resume right after it. */
  state: SamplerState;
  /** Indices (in the batch) of tiles that could not be read and were replaced. */
  replaced: number[];
}

export interface LoaderOptions {
  /** Batches read ahead of the consumer (default 4). */
  prefetch?: number;
  /** Tile reads in flight (default 16). */
  concurrency?: number;
  /** Slides kept open (least recently used are closed; default: defaultMaxOpenSlides()). */
  maxOpenSlides?: number;
  /** Stop after this many batches (default: one epoch; Infinity for no end). */
  maxBatches?: number;
  onTileError?: (tile: TileRef, error: Error) => void;
  /** Threads the slide addon decodes a batch's OpenSlide tiles on (default: all cores). */
  threads?: number;
  /** false: read every tile through the per-tile path (the threadpool) instead of the addon's batched reads. */
  directReads?: boolean;
  /**
   * Where batch buffers come from (default: new Uint8Array). For CUDA training pass
   * `(n) => backend.allocateTileBuffer(n, { pinned: true })`: batches then land in page-locked memory.
   */
  allocate?: (bytes: number) => Uint8Array;
}

/** A counting semaphore: at most `n` holders. */
class Semaphore {
  private waiting: (() => void)[] = [];
  constructor(private n: number) {}
  async acquire(): Promise<void> {
    if (this.n > 0) {
      this.n--;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.n++;
  }
}

/** What SlideTileReader needs of LoaderOptions. */
export type ReaderOptions = Pick<
  LoaderOptions,
  'concurrency' | 'maxOpenSlides' | 'onTileError' | 'threads' | 'directReads'
>;

/** Slides kept open by default: 1,024 where OpenSlide (>= 4.0) shares one tile cache between slides, else 64. */
export function defaultMaxOpenSlides(): number {
  const version = openslideAddon()?.openslideVersion();
  return version && Number.parseInt(version, 10) >= 4 ? 1024 : 64;
}

/** An open (or opening) slide of the reader's LRU; `pins`: reads that use it now (it is not closed while pinned). */
interface OpenSlideEntry {
  path: string;
  slide: Promise<Slide>;
  pins: number;
}

/**
 * Reads tiles of slides into batch buffers: at most `maxOpenSlides` slides open (least recently used closed), the
 * tiles OpenSlide reads at the wanted size decoded by the slide addon on its own threads in one call per batch, the
 * rest (other readers, resized tiles) on the libuv threadpool. A tile that cannot be read is replaced by another tile
 * of the same batch and reported, never fatal; a batch of which no tile could be read is an error.
 *
 * Open slides: a read pins the slides it uses until it finishes, and only unpinned slides are closed to make room,
 * so the number of open OpenSlide handles (reads in flight included) never exceeds maxOpenSlides; a read that needs
 * more room than unpinned slides can give waits for earlier reads to finish (first come, first served). prefetch()
 * opens the slides of a coming batch ahead (on the libuv threads, overlapping the current batch's decode), into free
 * room or in place of unpinned slides.
 *
 * The default bound (defaultMaxOpenSlides): with OpenSlide >= 4.0 the slides share one 32 MiB tile cache (the slide
 * addon), and an open slide costs about 100-200 KiB of resident memory once read (measured on the synthetic
 * pyramids), so 1,024 open slides cost up to ~200 MiB and training over ~1,000 slides opens each slide once; OpenSlide 3.4
 * keeps a tile cache of up to 32 MiB for each slide, hence 64 there.
 */
export class SlideTileReader {
  private readonly reads: Semaphore;
  private readonly maxOpenSlides: number;
  /** Least recently used first. */
  private readonly slides = new Map<string, OpenSlideEntry>();
  private readonly waiting: { paths: string[]; admit: (entries: OpenSlideEntry[]) => void }[] = [];
  private readonly warned = new Set<string>();
  private opened = 0;
  private peakOpen = 0;

  constructor(private readonly options: ReaderOptions = {}) {
    this.reads = new Semaphore(Math.max(1, options.concurrency ?? 16));
    this.maxOpenSlides = Math.max(1, options.maxOpenSlides ?? defaultMaxOpenSlides());
  }

  /** Slides opened so far and the most open at once (never above maxOpenSlides). */
  get stats(): { opened: number; peakOpen: number; maxOpenSlides: number } {
    return { opened: this.opened, peakOpen: this.peakOpen, maxOpenSlides: this.maxOpenSlides };
  }

  /** Starts opening `file` into the LRU (the caller made room). */
  private open(file: string, pins: number): OpenSlideEntry {
    const entry: OpenSlideEntry = { path: file, slide: openSlide(file, { properties: false }), pins };
    entry.slide.catch(() => {
      if (this.slides.get(file) === entry) this.slides.delete(file); // nothing to close; the next use tries again
      this.admitWaiting();
    });
    this.slides.set(file, entry);
    this.opened++;
    this.peakOpen = Math.max(this.peakOpen, this.slides.size);
    return entry;
  }

  /** Closes the least recently used unpinned slide not in `keep`; false when there is none. */
  private evictOne(keep: Set<string>): boolean {
    for (const [file, e] of this.slides) {
      if (e.pins > 0 || keep.has(file)) continue;
      this.slides.delete(file);
      e.slide.then((x) => x.close()).catch(() => {});
      return true;
    }
    return false;
  }

  /** Whether `paths` fit now: the slides missing from the LRU need free room or unpinned slides to close. */
  private fits(paths: string[]): boolean {
    const keep = new Set(paths);
    const missing = paths.filter((p) => !this.slides.has(p)).length;
    if (missing <= this.maxOpenSlides - this.slides.size) return true;
    let closable = 0;
    for (const [file, e] of this.slides) if (e.pins === 0 && !keep.has(file)) closable++;
    return missing <= this.maxOpenSlides - this.slides.size + closable;
  }

  /** Admits the waiting reads in order while they fit: pins (and opens) their slides. */
  private admitWaiting(): void {
    while (this.waiting.length > 0 && this.fits(this.waiting[0].paths)) {
      const { paths, admit } = this.waiting.shift()!;
      const keep = new Set(paths);
      const entries = paths.map((file) => {
        const e = this.slides.get(file);
        if (e) {
          e.pins++;
          this.slides.delete(file); // most recently used goes last
          this.slides.set(file, e);
          return e;
        }
        while (this.slides.size >= this.maxOpenSlides && this.evictOne(keep));
        return this.open(file, 1);
      });
      admit(entries);
    }
  }

  /** The slides `paths` (distinct, at most maxOpenSlides), open and pinned until release(). */
  private acquire(paths: string[]): Promise<OpenSlideEntry[]> {
    return new Promise((admit) => {
      this.waiting.push({ paths, admit });
      this.admitWaiting();
    });
  }

  private release(entries: OpenSlideEntry[]): void {
    for (const e of entries) e.pins--;
    this.admitWaiting();
  }

  /**
   * Opens the slides of `tiles` ahead of their read (best effort, nothing waits): into free room, else in place of
   * the least recently used unpinned slides outside `tiles`; skipped while reads wait for room.
   */
  prefetch(tiles: TileRef[]): void {
    if (this.waiting.length > 0) return;
    const paths = [...new Set(tiles.map((t) => t.path))];
    const keep = new Set(paths);
    for (const file of paths) {
      if (this.slides.has(file)) continue;
      if (this.slides.size >= this.maxOpenSlides && !this.evictOne(keep)) return;
      this.open(file, 0);
    }
  }

  /** One tile as (T,T,3) RGB, resized with lanczos3 when its read size is not T. */
  private async readTile(tile: TileRef, size: number): Promise<Uint8Array> {
    await this.reads.acquire();
    const entries = await this.acquire([tile.path]);
    try {
      const slide = await entries[0].slide;
      const px = await slide.readRegion(tile.x, tile.y, tile.level, tile.readSizePx, tile.readSizePx);
      if (tile.readSizePx === size) return px.data;
      const resized = await sharp(Buffer.from(px.data.buffer, px.data.byteOffset, px.data.byteLength), {
        raw: { width: px.width, height: px.height, channels: 3 },
      })
        .resize(size, size, { kernel: 'lanczos3', fit: 'fill' })
        .raw()
        .toBuffer();
      return new Uint8Array(resized.buffer, resized.byteOffset, resized.byteLength);
    } finally {
      this.release(entries);
      this.reads.release();
    }
  }

  /**
   * Fast path: the tiles OpenSlide reads at the tile size go to the slide addon in one call (per maxOpenSlides
   * distinct slides) that decodes them on its own threads, straight into `data` when every tile of the batch goes
   * there. Returns the indices it did not handle (other readers, resized reads).
   */
  private async readDirect(
    tiles: TileRef[],
    size: number,
    data: Uint8Array,
    failed: Map<number, Error>,
  ): Promise<number[]> {
    const addon = openslideAddon();
    if (!addon || this.options.directReads === false) return tiles.map((_, i) => i);
    const rest: number[] = [];
    // Groups of at most maxOpenSlides distinct slides, in batch order (each group's slides stay open during its read).
    const groups: number[][] = [];
    let group: number[] = [];
    let groupSlides = new Set<string>();
    tiles.forEach((tile, i) => {
      if (tile.readSizePx !== size) return rest.push(i);
      if (!groupSlides.has(tile.path) && groupSlides.size === this.maxOpenSlides) {
        groups.push(group);
        group = [];
        groupSlides = new Set();
      }
      groupSlides.add(tile.path);
      group.push(i);
    });
    if (group.length > 0) groups.push(group);
    const tileBytes = size * size * 3;
    for (const indices of groups) {
      const paths = [...new Set(indices.map((i) => tiles[i].path))];
      const entries = await this.acquire(paths);
      try {
        const opened = await Promise.all(entries.map((e) => e.slide.catch(() => null)));
        const handles = new Map(paths.map((p, k) => [p, opened[k]?.openslideHandle]));
        const direct = indices.filter((i) => handles.get(tiles[i].path) !== undefined);
        rest.push(...indices.filter((i) => handles.get(tiles[i].path) === undefined));
        if (direct.length === 0) continue;
        const whole = direct.length === tiles.length; // in order: straight into the batch buffer
        const out = whole ? data : new Uint8Array(direct.length * tileBytes);
        let errors: (string | null)[];
        try {
          errors = await addon.readTilesInto(
            direct.map((i) => handles.get(tiles[i].path)!),
            direct.map((i) => tiles[i].x),
            direct.map((i) => tiles[i].y),
            direct.map((i) => tiles[i].level),
            size,
            out,
            this.options.threads,
          );
        } catch {
          rest.push(...direct); // a slide closed under us (close()): the per-tile path reopens it
          continue;
        }
        direct.forEach((i, k) => {
          if (errors[k] !== null) failed.set(i, new Error(errors[k]!));
          else if (!whole) data.set(out.subarray(k * tileBytes, (k + 1) * tileBytes), i * tileBytes);
        });
      } finally {
        this.release(entries);
      }
    }
    return rest.sort((a, b) => a - b);
  }

  /**
   * Reads `tiles` as (size,size,3) RGB into `data` (tiles.length * size^2 * 3 bytes), in order. Returns the indices of
   * the tiles that could not be read, each replaced by a readable tile of the batch. `strict` (feature extraction,
   * where each row must be its own tile): the first tile that cannot be read is an error instead.
   */
  async readInto(
    tiles: TileRef[],
    size: number,
    data: Uint8Array,
    options: { strict?: boolean } = {},
  ): Promise<number[]> {
    const tileBytes = size * size * 3;
    if (data.length !== tiles.length * tileBytes)
      throw new RangeError(`tile batch buffer of ${data.length} bytes, the batch needs ${tiles.length * tileBytes}`);
    const problems = new Map<number, Error>();
    const rest = await this.readDirect(tiles, size, data, problems);
    await Promise.all(
      rest.map(async (i) => {
        try {
          data.set(await this.readTile(tiles[i], size), i * tileBytes);
        } catch (e) {
          problems.set(i, e as Error);
        }
      }),
    );
    const failed = [...problems.keys()].sort((a, b) => a - b);
    if (options.strict && failed.length) {
      const t = tiles[failed[0]];
      throw new Error(
        `tile (${t.x}, ${t.y}) level ${t.level} of ${t.path} could not be read: ${problems.get(failed[0])!.message.split('\n')[0]}`,
      );
    }
    for (const i of failed) this.tileError(tiles[i], problems.get(i)!);
    if (failed.length === tiles.length)
      throw new Error(`no tile of the batch could be read; the first was ${tiles[0].path}`);
    const good = tiles.map((_, i) => i).filter((i) => !failed.includes(i));
    failed.forEach((i, k) =>
      data.copyWithin(i * tileBytes, good[k % good.length] * tileBytes, (good[k % good.length] + 1) * tileBytes),
    );
    return failed;
  }

  /** The default onTileError: one warning per slide on stderr. */
  private tileError(tile: TileRef, e: Error): void {
    if (this.options.onTileError) return this.options.onTileError(tile, e);
    if (this.warned.has(tile.path)) return;
    this.warned.add(tile.path);
    process.stderr.write(
      `g2l-native: warning: a tile of ${tile.slide} could not be read (${e.message}); replaced by another tile of its batch\n`,
    );
  }

  /** Closes the slides this reader opened. */
  async close(): Promise<void> {
    const open = [...this.slides.values()];
    this.slides.clear();
    await Promise.all(open.map((e) => e.slide.then((s) => s.close()).catch(() => {})));
  }
}

export class TileBatchLoader implements AsyncIterable<TileBatch> {
  private readonly prefetch: number;
  private readonly reader: SlideTileReader;
  private readonly options: LoaderOptions;

  constructor(
    readonly sampler: TileSampler,
    options: LoaderOptions = {},
  ) {
    this.options = options;
    this.prefetch = Math.max(1, options.prefetch ?? 4);
    this.reader = new SlideTileReader(options);
  }

  /** Reads batch (epoch, batch) of the sampler into one buffer. */
  async readBatch(epoch: number, batch: number): Promise<Omit<TileBatch, 'state'>> {
    const tiles = this.sampler.batchAt(epoch, batch);
    const t = this.sampler.tileSizePx;
    const tileBytes = t * t * 3;
    const data = this.options.allocate
      ? this.options.allocate(tiles.length * tileBytes)
      : new Uint8Array(tiles.length * tileBytes);
    if (data.length !== tiles.length * tileBytes)
      throw new Error(`allocate(${tiles.length * tileBytes}) returned ${data.length} bytes`);
    let replaced: number[];
    try {
      replaced = await this.reader.readInto(tiles, t, data);
    } catch (e) {
      throw new Error(`batch ${batch} (epoch ${epoch}): ${(e as Error).message}`);
    }
    return { data, shape: [tiles.length, t, t, 3], tiles, epoch, batch, replaced };
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TileBatch> {
    const perEpoch = this.sampler.batchesPerEpoch();
    const start = this.sampler.state();
    const limit = this.options.maxBatches ?? perEpoch - start.batch;
    let produced = 0;
    let cursor = { epoch: start.epoch, batch: start.batch };
    const queue: Promise<Omit<TileBatch, 'state'>>[] = [];
    const fill = () => {
      while (queue.length < this.prefetch && produced < limit) {
        const p = this.readBatch(cursor.epoch, cursor.batch);
        p.catch(() => {}); // surfaced when the consumer reaches it
        queue.push(p);
        produced++;
        cursor =
          cursor.batch + 1 >= perEpoch
            ? { epoch: cursor.epoch + 1, batch: 0 }
            : { epoch: cursor.epoch, batch: cursor.batch + 1 };
      }
    };
    try {
      fill();
      while (queue.length > 0) {
        const b = await queue.shift()!;
        const after =
          b.batch + 1 >= perEpoch ? { epoch: b.epoch + 1, batch: 0 } : { epoch: b.epoch, batch: b.batch + 1 };
        const state = { seed: this.sampler.seed, ...after };
        this.sampler.restore(state);
        fill();
        yield { ...b, state };
      }
    } finally {
      await this.close();
    }
  }

  /** Closes the slides this loader opened. */
  async close(): Promise<void> {
    await this.reader.close();
  }
}
