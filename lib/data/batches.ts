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
  /** Slides kept open (least recently used are closed; default 64). */
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
export type ReaderOptions = Pick<LoaderOptions, 'concurrency' | 'maxOpenSlides' | 'onTileError' | 'threads' | 'directReads'>;

/**
 * Reads tiles of slides into batch buffers: at most `maxOpenSlides` slides open (least recently used closed), the
 * tiles OpenSlide reads at the wanted size decoded by the slide addon on its own threads in one call per batch, the
 * rest (other readers, resized tiles) on the libuv threadpool. A tile that cannot be read is replaced by another tile
 * of the same batch and reported, never fatal; a batch of which no tile could be read is an error.
 */
export class SlideTileReader {
  private readonly reads: Semaphore;
  private readonly maxOpenSlides: number;
  private readonly slides = new Map<string, Promise<Slide>>();
  private readonly warned = new Set<string>();
  private opened = 0;
  private peakOpen = 0;

  constructor(private readonly options: ReaderOptions = {}) {
    this.reads = new Semaphore(Math.max(1, options.concurrency ?? 16));
    this.maxOpenSlides = Math.max(1, options.maxOpenSlides ?? 64);
  }

  /** Slides opened so far and the most open at once (never above maxOpenSlides). */
  get stats(): { opened: number; peakOpen: number; maxOpenSlides: number } {
    return { opened: this.opened, peakOpen: this.peakOpen, maxOpenSlides: this.maxOpenSlides };
  }

  private slide(file: string): Promise<Slide> {
    let s = this.slides.get(file);
    if (s) {
      this.slides.delete(file); // most recently used goes last
      this.slides.set(file, s);
      return s;
    }
    s = openSlide(file);
    s.catch(() => this.slides.delete(file));
    this.slides.set(file, s);
    this.opened++;
    while (this.slides.size > this.maxOpenSlides) {
      const [oldest, p] = this.slides.entries().next().value as [string, Promise<Slide>];
      this.slides.delete(oldest);
      // Reads in flight keep the native handle alive; close only stops new ones.
      p.then((x) => x.close()).catch(() => {});
    }
    this.peakOpen = Math.max(this.peakOpen, this.slides.size);
    return s;
  }

  /** One tile as (T,T,3) RGB, resized with lanczos3 when its read size is not T. */
  private async readTile(tile: TileRef, size: number): Promise<Uint8Array> {
    await this.reads.acquire();
    try {
      const slide = await this.slide(tile.path);
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
      this.reads.release();
    }
  }

  /**
   * Fast path: the tiles OpenSlide reads at the tile size go to the slide addon in one call that decodes them on its
   * own threads straight into `data`. Returns the indices it did not handle (other readers, resized reads).
   */
  private async readDirect(tiles: TileRef[], size: number, data: Uint8Array, failed: Map<number, Error>): Promise<number[]> {
    const addon = openslideAddon();
    if (!addon || this.options.directReads === false) return tiles.map((_, i) => i);
    const slides = await Promise.all(tiles.map((tile) => (tile.readSizePx === size ? this.slide(tile.path).catch(() => null) : null)));
    const direct = tiles.map((_, i) => i).filter((i) => slides[i]?.openslideHandle !== undefined);
    if (direct.length === 0) return tiles.map((_, i) => i);
    const tileBytes = size * size * 3;
    const out = new Uint8Array(direct.length * tileBytes);
    let errors: (string | null)[];
    try {
      errors = await addon.readTilesInto(
        direct.map((i) => slides[i]!.openslideHandle!),
        direct.map((i) => tiles[i].x),
        direct.map((i) => tiles[i].y),
        direct.map((i) => tiles[i].level),
        size,
        out,
        this.options.threads,
      );
    } catch {
      return tiles.map((_, i) => i); // a slide closed under us: the per-tile path reopens it
    }
    direct.forEach((i, k) => {
      if (errors[k] === null) data.set(out.subarray(k * tileBytes, (k + 1) * tileBytes), i * tileBytes);
      else failed.set(i, new Error(errors[k]!));
    });
    const handled = new Set(direct);
    return tiles.map((_, i) => i).filter((i) => !handled.has(i));
  }

  /**
   * Reads `tiles` as (size,size,3) RGB into `data` (tiles.length * size^2 * 3 bytes), in order. Returns the indices of
   * the tiles that could not be read, each replaced by a readable tile of the batch. `strict` (feature extraction,
   * where each row must be its own tile): the first tile that cannot be read is an error instead.
   */
  async readInto(tiles: TileRef[], size: number, data: Uint8Array, options: { strict?: boolean } = {}): Promise<number[]> {
    const tileBytes = size * size * 3;
    if (data.length !== tiles.length * tileBytes) throw new RangeError(`tile batch buffer of ${data.length} bytes, the batch needs ${tiles.length * tileBytes}`);
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
      throw new Error(`tile (${t.x}, ${t.y}) level ${t.level} of ${t.path} could not be read: ${problems.get(failed[0])!.message.split('\n')[0]}`);
    }
    for (const i of failed) this.tileError(tiles[i], problems.get(i)!);
    if (failed.length === tiles.length) throw new Error(`no tile of the batch could be read; the first was ${tiles[0].path}`);
    const good = tiles.map((_, i) => i).filter((i) => !failed.includes(i));
    failed.forEach((i, k) => data.copyWithin(i * tileBytes, good[k % good.length] * tileBytes, (good[k % good.length] + 1) * tileBytes));
    return failed;
  }

  /** The default onTileError: one warning per slide on stderr. */
  private tileError(tile: TileRef, e: Error): void {
    if (this.options.onTileError) return this.options.onTileError(tile, e);
    if (this.warned.has(tile.path)) return;
    this.warned.add(tile.path);
    process.stderr.write(`g2l-native: warning: a tile of ${tile.slide} could not be read (${e.message}); replaced by another tile of its batch\n`);
  }

  /** Closes the slides this reader opened. */
  async close(): Promise<void> {
    const open = [...this.slides.values()];
    this.slides.clear();
    await Promise.all(open.map((p) => p.then((s) => s.close()).catch(() => {})));
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
    const data = this.options.allocate ? this.options.allocate(tiles.length * tileBytes) : new Uint8Array(tiles.length * tileBytes);
    if (data.length !== tiles.length * tileBytes) throw new Error(`allocate(${tiles.length * tileBytes}) returned ${data.length} bytes`);
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
        cursor = cursor.batch + 1 >= perEpoch ? { epoch: cursor.epoch + 1, batch: 0 } : { epoch: cursor.epoch, batch: cursor.batch + 1 };
      }
    };
    try {
      fill();
      while (queue.length > 0) {
        const b = await queue.shift()!;
        const after = b.batch + 1 >= perEpoch ? { epoch: b.epoch + 1, batch: 0 } : { epoch: b.epoch, batch: b.batch + 1 };
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

