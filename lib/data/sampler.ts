// Which tiles train when: a shuffled order over every tile of a tile manifest folder (`g2l-native tile`), the same
// for a seed and epoch on every machine, cut into batches and sharded by rank without overlap. The sampler holds a
// cursor (epoch, batch) that state()/restore() save and resume; the pixels are read by TileBatchLoader (batches.ts).
//
// Usage:
//   const sampler = await TileSampler.open('tiles-out', { seed: 0, batchSize: 32, rank, worldSize });
//   const loader = new TileBatchLoader(sampler, { prefetch: 4, concurrency: 16 });
//   for await (const batch of loader) { batch.data /* Uint8Array (B,256,256,3) */; sampler.state(); }
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { readCsv } from '../io/csv.js';

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

/** splitmix32 over (seed, epoch): a small, well-mixed generator that is the same in every process. */
export class SplitMix32 {
  private s: number;
  constructor(seed: number, stream = 0) {
    this.s = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul((stream + 1) >>> 0, 0x85ebca6b)) >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x9e3779b9) >>> 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return (z ^ (z >>> 15)) >>> 0;
  }
  /** Uniform integer in [0, n), from 53 random bits. */
  below(n: number): number {
    const u = (this.next() * 2 ** 21 + (this.next() >>> 11)) / 2 ** 53;
    return Math.floor(u * n);
  }
}

function shuffleInPlace(a: Uint32Array, rng: SplitMix32): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
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
    readonly manifestDir: string,
    readonly tiles: TileRef[],
    /** Tile side in pixels (tiling.json). */
    readonly tileSizePx: number,
    /** For each slide, the indices of its tiles in `tiles`. */
    private readonly slideTiles: Uint32Array[],
    options: SamplerOptions,
  ) {
    this.seed = options.seed ?? 0;
    this.batchSize = options.batchSize;
    this.rank = options.rank ?? 0;
    this.worldSize = options.worldSize ?? 1;
    this.balance = options.balance ?? 'tiles';
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) throw new UserError(`batch size ${this.batchSize}: must be a positive integer`);
    if (!Number.isInteger(this.worldSize) || this.worldSize < 1 || !Number.isInteger(this.rank) || this.rank < 0 || this.rank >= this.worldSize) {
      throw new UserError(`rank ${this.rank} of world size ${this.worldSize}: need 0 <= rank < worldSize`);
    }
    if (this.batchesPerEpoch() === 0) {
      throw new UserError(
        `${manifestDir} has ${tiles.length} tiles, fewer than one batch of ${this.batchSize} for each of ${this.worldSize} rank(s): ` +
          'tile more slides, or lower the batch size',
      );
    }
  }

  /** Reads a tile manifest folder: the `ok` slides of slides.csv and their tiles/<slide>.csv. */
  static async open(manifestDir: string, options: SamplerOptions): Promise<TileSampler> {
    const slidesCsv = path.join(manifestDir, 'slides.csv');
    const settingsFile = path.join(manifestDir, 'tiling.json');
    if (!existsSync(slidesCsv) || !existsSync(settingsFile)) {
      throw new UserError(`${manifestDir} is not a tile manifest folder (no slides.csv and tiling.json): make one with \`g2l-native tile --out ${manifestDir}\``);
    }
    const settings = JSON.parse(await fs.readFile(settingsFile, 'utf8')) as { tileSizePx: number };
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
      if ([xi, yi, li, ri].some((i) => i < 0)) throw new UserError(`${file}: not a tile manifest (needs x, y, level, read_size)`);
      const first = tiles.length;
      for (const r of t.rows) tiles.push({ slide, path: row[col('path')], x: Number(r[xi]), y: Number(r[yi]), level: Number(r[li]), readSizePx: Number(r[ri]) });
      if (tiles.length > first) slideTiles.push(Uint32Array.from({ length: tiles.length - first }, (_, i) => first + i));
    }
    return new TileSampler(manifestDir, tiles, settings.tileSizePx, slideTiles, options);
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

  /**
   * The tiles of this rank's batch `batch` of `epoch`: positions rank, rank + W, rank + 2W... of the epoch order,
   * so ranks never share a tile within an epoch (with 'tiles' balance).
   */
  batchAt(epoch: number, batch: number): TileRef[] {
    const order = this.epochOrder(epoch);
    const out: TileRef[] = [];
    for (let i = 0; i < this.batchSize; i++) out.push(this.tiles[order[(batch * this.batchSize + i) * this.worldSize + this.rank]]);
    return out;
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
    if (state.seed !== this.seed) throw new UserError(`sampler state is for seed ${state.seed}, this sampler has seed ${this.seed}: resume with the same seed`);
    if (!(Number.isInteger(state.epoch) && state.epoch >= 0 && Number.isInteger(state.batch) && state.batch >= 0 && state.batch < this.batchesPerEpoch())) {
      throw new UserError(`sampler state epoch ${state.epoch} batch ${state.batch} does not fit ${this.batchesPerEpoch()} batches per epoch`);
    }
    this.epoch = state.epoch;
    this.batch = state.batch;
  }
}
