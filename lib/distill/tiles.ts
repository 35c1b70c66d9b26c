// Where a distillation run's tiles come from: batch s is a pure function of (seed, s), so a resumed run reads exactly
// the batches the uninterrupted run would have read, and the position to save is the step alone.
//
// - a tile manifest folder written by `g2l-native tile` (slides.csv + tiles/<slide>.csv): every epoch visits every
//   tile once in an order shuffled from (seed, epoch); tiles are read from their slides and resized to tileSizePx
//   when the manifest read them at another size. Slides that fail to open are skipped and reported once.
// - "synthetic" or "synthetic:N": N generated tissue-like tiles (pink stroma, purple nuclei, some glass), for tests
//   and for trying the pipeline without slides.
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { UserError } from '../errors.js';
import { parseCsv } from '../io/csv.js';
import type { Uint8Tensor } from '../backends/index.js';
import { shardPosition, type Shard } from '../parallel/shard.js';
import { mulberry32 } from '../util/random.js';

export interface TileSource {
  /** Tiles in one epoch. */
  readonly size: number;
  readonly description: string;
  /**
   * uint8 (B, tileSizePx, tileSizePx, 3) for 0-based step `step`; with a shard (data parallelism), this rank's B
   * rows of the step's global batch of B * worldSize (lib/parallel/shard.ts). `out` (B * tileSizePx^2 * 3 bytes):
   * fill this buffer instead of a new one (e.g. Distiller.allocateTileBuffer's page-locked memory).
   */
  batch(step: number, batchSize: number, shard?: Shard | null, out?: Uint8Array): Promise<Uint8Tensor>;
  /** Slides that could not be read, with the reason (reported, never fatal). */
  readonly skipped: { slide: string; error: string }[];
  close(): Promise<void>;
}


const mix = (a: number, b: number): number => (Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x27d4eb2f, 0xc2b2ae35)) >>> 0;

/** The tile index at global position `pos` (epoch = pos / size): a Fisher-Yates permutation per epoch. */
class EpochOrder {
  private cache = new Map<number, Uint32Array>();
  constructor(
    private readonly size: number,
    private readonly seed: number,
  ) {}

  at(pos: number): number {
    const epoch = Math.floor(pos / this.size);
    let perm = this.cache.get(epoch);
    if (!perm) {
      perm = new Uint32Array(this.size);
      for (let i = 0; i < this.size; i++) perm[i] = i;
      const rand = mulberry32(mix(this.seed, epoch));
      for (let i = this.size - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        const t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
      }
      if (this.cache.size > 2) this.cache.delete(Math.min(...this.cache.keys()));
      this.cache.set(epoch, perm);
    }
    return perm[pos - epoch * this.size];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Synthetic tiles
// ---------------------------------------------------------------------------------------------------------------

/** One tissue-like RGB tile (size,size,3) drawn from `seed`: stroma, nuclei, and sometimes an edge of glass. */
export function syntheticTile(seed: number, size: number, out: Uint8Array = new Uint8Array(size * size * 3), offset = 0): Uint8Array {
  const rand = mulberry32(seed);
  // Stain of this tile: eosin-pink stroma and haematoxylin-purple nuclei with per-tile variation.
  const base = [225 + rand() * 20, 150 + rand() * 40, 190 + rand() * 30];
  const nucleus = [90 + rand() * 50, 40 + rand() * 40, 130 + rand() * 40];
  const glass = rand() < 0.3 ? { nx: rand() - 0.5, ny: rand() - 0.5, c: rand() * 0.6 - 0.3 } : null;
  const fiber = rand() * Math.PI;
  const fiberFreq = 0.05 + rand() * 0.15;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const o = offset + (y * size + x) * 3;
      const wave = 0.85 + 0.15 * Math.sin((x * Math.cos(fiber) + y * Math.sin(fiber)) * fiberFreq);
      const noise = (rand() - 0.5) * 18;
      let r = base[0] * wave + noise;
      let g = base[1] * wave + noise;
      let b = base[2] * wave + noise;
      if (glass && (x / size - 0.5) * glass.nx + (y / size - 0.5) * glass.ny > glass.c * 0.5) {
        r = 243 + noise * 0.3;
        g = 243 + noise * 0.3;
        b = 245 + noise * 0.3;
      }
      out[o] = r < 0 ? 0 : r > 255 ? 255 : r;
      out[o + 1] = g < 0 ? 0 : g > 255 ? 255 : g;
      out[o + 2] = b < 0 ? 0 : b > 255 ? 255 : b;
    }
  }
  const nuclei = 10 + Math.floor(rand() * 50);
  for (let k = 0; k < nuclei; k++) {
    const cx = rand() * size;
    const cy = rand() * size;
    const rx = 2 + rand() * 6;
    const ry = rx * (0.6 + rand() * 0.6);
    const shade = 0.8 + rand() * 0.4;
    for (let y = Math.max(0, Math.floor(cy - ry)); y < Math.min(size, Math.ceil(cy + ry)); y++) {
      for (let x = Math.max(0, Math.floor(cx - rx)); x < Math.min(size, Math.ceil(cx + rx)); x++) {
        if (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 > 1) continue;
        const o = offset + (y * size + x) * 3;
        for (let c = 0; c < 3; c++) out[o + c] = Math.min(255, nucleus[c] * shade);
      }
    }
  }
  return out;
}

/** `out` when given (it must hold exactly `bytes`), else a new buffer. */
function batchBuffer(bytes: number, out?: Uint8Array): Uint8Array {
  if (!out) return new Uint8Array(bytes);
  if (out.length !== bytes) throw new RangeError(`tile batch buffer of ${out.length} bytes, the batch needs ${bytes}`);
  return out;
}

class SyntheticTiles implements TileSource {
  readonly skipped: { slide: string; error: string }[] = [];
  private readonly order: EpochOrder;
  constructor(
    readonly size: number,
    private readonly seed: number,
    private readonly tileSizePx: number,
  ) {
    this.order = new EpochOrder(size, seed);
  }
  get description(): string {
    return `${this.size} synthetic tiles`;
  }
  async batch(step: number, batchSize: number, shard?: Shard | null, out?: Uint8Array): Promise<Uint8Tensor> {
    const n = this.tileSizePx * this.tileSizePx * 3;
    const data = batchBuffer(batchSize * n, out);
    for (let i = 0; i < batchSize; i++) syntheticTile(mix(this.seed, this.order.at(shardPosition(step, batchSize, i, shard))), this.tileSizePx, data, i * n);
    return { data, shape: [batchSize, this.tileSizePx, this.tileSizePx, 3] };
  }
  async close(): Promise<void> {}
}

// ---------------------------------------------------------------------------------------------------------------
// Tile manifests of `g2l-native tile`
// ---------------------------------------------------------------------------------------------------------------

interface ManifestTile {
  slide: number;
  x: number;
  y: number;
  level: number;
  readSize: number;
}

class ManifestTiles implements TileSource {
  readonly skipped: { slide: string; error: string }[] = [];
  private readonly order: EpochOrder;
  private readonly open = new Map<number, Promise<import('../slides/reader.js').Slide | null>>();
  constructor(
    private readonly dir: string,
    private readonly slides: { name: string; path: string }[],
    private readonly tiles: ManifestTile[],
    seed: number,
    private readonly tileSizePx: number,
  ) {
    this.order = new EpochOrder(tiles.length, seed);
  }
  get size(): number {
    return this.tiles.length;
  }
  get description(): string {
    return `${this.tiles.length} tiles of ${this.slides.length} slides (${this.dir})`;
  }

  private slide(i: number) {
    let p = this.open.get(i);
    if (!p) {
      p = import('../slides/reader.js')
        .then((m) => m.openSlide(this.slides[i].path))
        .catch((e: Error) => {
          this.skipped.push({ slide: this.slides[i].name, error: e.message.split('\n')[0] });
          return null;
        });
      this.open.set(i, p);
    }
    return p;
  }

  async batch(step: number, batchSize: number, shard?: Shard | null, out?: Uint8Array): Promise<Uint8Tensor> {
    const s = this.tileSizePx;
    const n = s * s * 3;
    const data = batchBuffer(batchSize * n, out);
    await Promise.all(
      Array.from({ length: batchSize }, async (_, i) => {
        // A tile whose slide cannot be read is replaced by the next readable one in the epoch's order.
        const first = this.order.at(shardPosition(step, batchSize, i, shard));
        for (let k = 0; k < this.tiles.length; k++) {
          const t = this.tiles[(first + k) % this.tiles.length];
          const slide = await this.slide(t.slide);
          if (!slide) continue;
          const px = await slide.readRegion(t.x, t.y, t.level, t.readSize, t.readSize);
          const rgb =
            t.readSize === s
              ? px.data
              : await sharp(Buffer.from(px.data.buffer, px.data.byteOffset, px.data.byteLength), { raw: { width: px.width, height: px.height, channels: 3 } })
                  .resize(s, s, { kernel: 'lanczos3' })
                  .raw()
                  .toBuffer();
          data.set(rgb.subarray(0, n), i * n);
          return;
        }
        throw new UserError(`no slide of ${this.dir} could be read: ${this.skipped.map((x) => `${x.slide}: ${x.error}`).join('; ')}`);
      }),
    );
    return { data, shape: [batchSize, s, s, 3] };
  }

  async close(): Promise<void> {
    for (const p of this.open.values()) {
      const slide = await p;
      await slide?.close();
    }
  }
}

async function readManifest(dir: string, seed: number, tileSizePx: number): Promise<ManifestTiles> {
  const slidesCsv = path.join(dir, 'slides.csv');
  if (!existsSync(slidesCsv)) {
    throw new UserError(`${dir} is not a tile manifest (no slides.csv): run \`g2l-native tile --slides <slide folder> --out ${dir}\` first, or pass --slides synthetic`);
  }
  const table = parseCsv(await fs.readFile(slidesCsv, 'utf8'), slidesCsv);
  const col = (name: string) => table.header.indexOf(name);
  const slides: { name: string; path: string }[] = [];
  const tiles: ManifestTile[] = [];
  for (const row of table.rows) {
    if (row[col('status')] !== 'ok') continue;
    const name = row[col('slide')];
    const file = path.join(dir, 'tiles', `${name}.csv`);
    if (!existsSync(file)) continue;
    const t = parseCsv(await fs.readFile(file, 'utf8'), file);
    const [xi, yi, li, ri] = ['x', 'y', 'level', 'read_size'].map((h) => t.header.indexOf(h));
    const index = slides.length;
    slides.push({ name, path: row[col('path')] });
    for (const r of t.rows) tiles.push({ slide: index, x: Number(r[xi]), y: Number(r[yi]), level: Number(r[li]), readSize: Number(r[ri]) });
  }
  if (tiles.length === 0) throw new UserError(`${dir}: the manifest lists no tiles of readable slides: check slides.csv and the tile command's report`);
  return new ManifestTiles(dir, slides, tiles, seed, tileSizePx);
}

/** Opens `spec`: a manifest folder, or "synthetic[:N]" (default 4096 tiles). */
export async function openTileSource(spec: string, options: { seed: number; tileSizePx: number }): Promise<TileSource> {
  const m = /^synthetic(?::(\d+))?$/.exec(spec);
  if (m) return new SyntheticTiles(m[1] ? Number(m[1]) : 4096, options.seed, options.tileSizePx);
  return readManifest(spec, options.seed, options.tileSizePx);
}
