// Which tiles train when: a shuffled order over every tile of a tile manifest folder (`g2l-native tile`), or over N
// synthetic tiles, the same for a seed and epoch on every machine, cut into batches and sharded by rank without
// overlap. Batch s of a run is a pure function of (seed, s, rank shard): positionOf(s) -> (epoch, batch) ->
// batchAt(). The sampler also holds a cursor (epoch, batch) that state()/restore() save and resume; the pixels are read
// by SlideTileReader / TileBatchLoader (batches.ts). This is the one sampler of the project: distillation
// (lib/distill/tiles.ts), feature extraction and the demo read tile manifests through it.
//
// Usage:
//   const sampler = await TileSampler.open('tiles-out', { seed: 0, batchSize: 32, rank, worldSize });
//   const loader = new TileBatchLoader(sampler, { prefetch: 4, concurrency: 16 });
//   for await (const batch of loader) { batch.data /* Uint8Array (B,256,256,3) */; sampler.state(); }
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { readCsv } from '../io/csv.js';
import { SplitMix32, shuffleInPlace } from '../util/random.js';

export { SplitMix32 };

/** One tile of the manifest, as read from <dir>/tiles/<slide>.csv. */
export interface TileRef {
  slide: string;
  /** The slide file (slides.csv `path`). */
  path: string;
  /** Level-0 position of the top-left corner. */
  x: number;
  y: number;
  level: number;
  /** Square read at `level`, in level pixels; resized to tileSizePx when it differs. */
  readSizePx: number;
}

/** A slide of the manifest with at least one tile, and where its tiles are in `TileSampler.tiles`. */
export interface ManifestSlide {
  name: string;
  path: string;
  /** The slide's own level-0 resolution (slides.csv), when known. */
  mpp: number | null;
  width: number | null;
  height: number | null;
  /** Indices of its tiles in `tiles`, in manifest order. */
  tiles: Uint32Array;
}

export interface SamplerOptions {
  seed?: number;
  batchSize: number;
  /** This process's rank and the number of ranks: each rank gets a disjoint share of every epoch. */
  rank?: number;
  worldSize?: number;
  /** 'tiles' (default): uniform over tiles; 'slides': each draw picks a slide uniformly, then one of its tiles. */
  balance?: 'tiles' | 'slides';
}

export interface SamplerState {
  seed: number;
  epoch: number;
  /** Batches of this epoch already consumed by this rank. */
  batch: number;
}

export class TileSampler {
  readonly seed: number;
  readonly batchSize: number;
  readonly rank: number;
  readonly worldSize: number;
  readonly balance: 'tiles' | 'slides';
  private epoch = 0;
  private batch = 0;
  private cached: { epoch: number; order: Uint32Array } | null = null;

  private constructor(
    /** The manifest folder, or "synthetic:N". */
    readonly manifestDir: string,
    readonly tiles: TileRef[],
    /** Tile side in pixels (tiling.json). */
    readonly tileSizePx: number,
    /** For each slide, the indices of its tiles in `tiles`. */
    private readonly slideTiles: Uint32Array[],
    options: SamplerOptions,
    /** The manifest's slides with tiles, in slides.csv order (empty for synthetic tiles). */
    readonly slides: ManifestSlide[] = [],
    /** tiling.json: the resolution tiles were cut at (um/px). */
    readonly mpp: number | null = null,
  ) {
    this.seed = options.seed ?? 0;
    this.batchSize = options.batchSize;
    this.rank = options.rank ?? 0;
    this.worldSize = options.worldSize ?? 1;
    this.balance = options.balance ?? 'tiles';
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1)
      throw new UserError(`batch size ${this.batchSize}: must be a positive integer`);
    if (
      !Number.isInteger(this.worldSize) ||
      this.worldSize < 1 ||
      !Number.isInteger(this.rank) ||
      this.rank < 0 ||
      this.rank >= this.worldSize
    ) {
      throw new UserError(`rank ${this.rank} of world size ${this.worldSize}: need 0 <= rank < worldSize`);
    }
    if (this.batchesPerEpoch() === 0) {
      throw new UserError(
        `${manifestDir} has ${tiles.length} tiles, fewer than one batch of ${this.batchSize} for each of ${this.worldSize} rank(s): ` +
          'tile more slides, or lower the batch size',
      );
    }
  }

  /** N synthetic tiles (lib/distill/tiles.ts draws their pixels from their index): one "slide", no files. */
  static synthetic(count: number, tileSizePx: number, options: SamplerOptions): TileSampler {
    if (!Number.isInteger(count) || count < 1)
      throw new UserError(`synthetic:${count}: the number of tiles must be a positive integer`);
    const name = `synthetic:${count}`;
    const tiles = Array.from({ length: count }, (_, i): TileRef => ({
      slide: name,
      path: name,
      x: i,
      y: 0,
      level: 0,
      readSizePx: tileSizePx,
    }));
    return new TileSampler(name, tiles, tileSizePx, [Uint32Array.from(tiles, (_, i) => i)], options);
  }

  /** The same tiles with another batch size, shard or balance (a fresh cursor). */
  reshaped(options: Partial<SamplerOptions>): TileSampler {
    return new TileSampler(
      this.manifestDir,
      this.tiles,
      this.tileSizePx,
      this.slideTiles,
      {
        seed: this.seed,
        batchSize: this.batchSize,
        rank: this.rank,
        worldSize: this.worldSize,
        balance: this.balance,
        ...options,
      },
      this.slides,
      this.mpp,
    );
  }

  /** Slides with at least one tile. */
  get slideCount(): number {
    return this.slideTiles.length;
  }

  /** Reads a tile manifest folder: the `ok` slides of slides.csv and their tiles/<slide>.csv. */
  static async open(manifestDir: string, options: SamplerOptions): Promise<TileSampler> {
    const slidesCsv = path.join(manifestDir, 'slides.csv');
    const settingsFile = path.join(manifestDir, 'tiling.json');
    if (!existsSync(slidesCsv) || !existsSync(settingsFile)) {
      throw new UserError(
        `${manifestDir} is not a tile manifest folder (no slides.csv and tiling.json): make one with \`g2l-native tile --out ${manifestDir}\``,
      );
    }
    let settings: { tileSizePx: number; mpp?: number };
    try {
      settings = JSON.parse(await fs.readFile(settingsFile, 'utf8'));
    } catch (e) {
      throw new UserError(
        `${settingsFile}: not readable JSON (${(e as Error).message.split('\n')[0]}): rerun \`g2l-native tile\``,
      );
    }
    if (!(Number.isInteger(settings.tileSizePx) && settings.tileSizePx > 0))
      throw new UserError(`${settingsFile}: no positive integer tileSizePx: rerun \`g2l-native tile\``);
    const manifestSlides: ManifestSlide[] = [];
    const num = (v: string | undefined) =>
      v !== undefined && v !== '' && Number.isFinite(Number(v)) ? Number(v) : null;
    const slides = await readCsv(slidesCsv);
    const col = (n: string) => slides.header.indexOf(n);
    const tiles: TileRef[] = [];
    const slideTiles: Uint32Array[] = [];
    for (const row of slides.rows) {
      if (row[col('status')] !== 'ok') continue;
      const slide = row[col('slide')];
      const file = path.join(manifestDir, 'tiles', `${slide}.csv`);
      const t = await readCsv(file);
      const [xi, yi, li, ri] = ['x', 'y', 'level', 'read_size'].map((n) => t.header.indexOf(n));
      if ([xi, yi, li, ri].some((i) => i < 0))
        throw new UserError(`${file}: not a tile manifest (needs x, y, level, read_size)`);
      const first = tiles.length;
      for (const r of t.rows)
        tiles.push({
          slide,
          path: row[col('path')],
          x: Number(r[xi]),
          y: Number(r[yi]),
          level: Number(r[li]),
          readSizePx: Number(r[ri]),
        });
      if (tiles.length > first) {
        const own = Uint32Array.from({ length: tiles.length - first }, (_, i) => first + i);
        slideTiles.push(own);
        manifestSlides.push({
          name: slide,
          path: row[col('path')],
          mpp: num(row[col('mpp')]),
          width: num(row[col('width')]),
          height: num(row[col('height')]),
          tiles: own,
        });
      }
    }
    return new TileSampler(
      manifestDir,
      tiles,
      settings.tileSizePx,
      slideTiles,
      options,
      manifestSlides,
      settings.mpp ?? null,
    );
  }

  /** Batches each rank gets per epoch: full batches only, the same count on every rank. */
  batchesPerEpoch(): number {
    return Math.floor(this.tiles.length / (this.batchSize * this.worldSize));
  }

  /** The epoch's order of all tiles (indices into `tiles`), identical on every rank for a seed and epoch. */
  epochOrder(epoch: number): Uint32Array {
    if (this.cached?.epoch === epoch) return this.cached.order;
    const rng = new SplitMix32(this.seed, epoch);
    let order: Uint32Array;
    if (this.balance === 'tiles') {
      order = Uint32Array.from({ length: this.tiles.length }, (_, i) => i);
      shuffleInPlace(order, rng);
    } else {
      // A slide uniformly, then the next tile of that slide's own shuffled list (reshuffled when used up).
      const lists = this.slideTiles.map((l) => {
        const c = Uint32Array.from(l);
        shuffleInPlace(c, rng);
        return { tiles: c, next: 0 };
      });
      order = new Uint32Array(this.tiles.length);
      for (let i = 0; i < order.length; i++) {
        const l = lists[rng.below(lists.length)];
        if (l.next === l.tiles.length) {
          shuffleInPlace(l.tiles, rng);
          l.next = 0;
        }
        order[i] = l.tiles[l.next++];
      }
    }
    this.cached = { epoch, order };
    return order;
  }

  /** Where this rank's 0-based step `step` reads: every epoch has batchesPerEpoch() full batches. */
  positionOf(step: number): { epoch: number; batch: number } {
    const per = this.batchesPerEpoch();
    return { epoch: Math.floor(step / per), batch: step % per };
  }

  /**
   * The tile indices (into `tiles`) of this rank's batch `batch` of `epoch`: positions rank, rank + W, rank + 2W... of
   * the epoch order (lib/parallel/shard.ts), so ranks never share a tile within an epoch (with 'tiles' balance).
   */
  indicesAt(epoch: number, batch: number): number[] {
    const order = this.epochOrder(epoch);
    const out: number[] = [];
    for (let i = 0; i < this.batchSize; i++) out.push(order[(batch * this.batchSize + i) * this.worldSize + this.rank]);
    return out;
  }

  /** The tiles of this rank's batch `batch` of `epoch` (indicesAt). */
  batchAt(epoch: number, batch: number): TileRef[] {
    return this.indicesAt(epoch, batch).map((i) => this.tiles[i]);
  }

  /** The next batch's position, then advances: the cursor saved by state(). */
  advance(): { epoch: number; batch: number } {
    const at = { epoch: this.epoch, batch: this.batch };
    this.batch++;
    if (this.batch >= this.batchesPerEpoch()) {
      this.epoch++;
      this.batch = 0;
    }
    return at;
  }

  /** Where the next batch comes from (what a checkpoint saves). */
  state(): SamplerState {
    return { seed: this.seed, epoch: this.epoch, batch: this.batch };
  }

  restore(state: SamplerState): void {
    if (state.seed !== this.seed)
      throw new UserError(
        `sampler state is for seed ${state.seed}, this sampler has seed ${this.seed}: resume with the same seed`,
      );
    if (!(
      Number.isInteger(state.epoch) &&
      state.epoch >= 0 &&
      Number.isInteger(state.batch) &&
      state.batch >= 0 &&
      state.batch < this.batchesPerEpoch()
    )) {
      throw new UserError(
        `sampler state epoch ${state.epoch} batch ${state.batch} does not fit ${this.batchesPerEpoch()} batches per epoch`,
      );
    }
    this.epoch = state.epoch;
    this.batch = state.batch;
  }
}
