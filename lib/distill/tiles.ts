// Where a distillation run's tiles come from: batch s is a pure function of (seed, s, rank shard), so a resumed run
// reads exactly the batches the uninterrupted run would have read, and the position to save is the step alone.
// Every tile order comes from the one sampler (lib/data/sampler.ts: a shuffle per epoch from (seed, epoch), full
// batches only, ranks disjoint) and every pixel of a slide from the one reader (lib/data/batches.ts: an LRU of open
// slides, batched decodes on the slide addon's threads):
//
// - a tile manifest folder written by `g2l-native tile` (slides.csv + tiles/<slide>.csv): uniform over tiles by
//   default (the paper), slide-balanced as an option; tiles are resized to tileSizePx when the manifest read them at
//   another size. A tile that cannot be read is replaced by another tile of its batch and its slide reported once.
// - "synthetic" or "synthetic:N": N generated tissue-like tiles (pink stroma, purple nuclei, some glass), for tests
//   and for trying the pipeline without slides.
import type { Uint8Tensor } from '../backends/index.js';
import { SlideTileReader } from '../data/batches.js';
import { TileSampler } from '../data/sampler.js';
import { UserError } from '../errors.js';
import type { Shard } from '../parallel/shard.js';
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
  /** Steps in one epoch at this batch size and world size (full global batches only). */
  stepsPerEpoch(batchSize: number, worldSize?: number): number;
  /** Slides that could not be read, with the reason (reported, never fatal). */
  readonly skipped: { slide: string; error: string }[];
  /** Slides opened so far and the most open at once (tile manifests; zeros for synthetic tiles). */
  stats(): { opened: number; peakOpen: number; maxOpenSlides: number };
  close(): Promise<void>;
}

export interface TileSourceOptions {
  seed: number;
  tileSizePx: number;
  /** 'tiles' (default, the paper): uniform over tiles; 'slides': each draw picks a slide uniformly first. */
  balance?: 'tiles' | 'slides';
  /** Slides kept open at once (default: lib/data/batches.ts defaultMaxOpenSlides()). */
  maxOpenSlides?: number;
}

/** A 32-bit hash of (a, b): the seed of synthetic tile b's pixels under run seed a. */
const mix = (a: number, b: number): number =>
  (Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x27d4eb2f, 0xc2b2ae35)) >>> 0;

/** One tissue-like RGB tile (size,size,3) drawn from `seed`: stroma, nuclei, and sometimes an edge of glass. */
export function syntheticTile(
  seed: number,
  size: number,
  out: Uint8Array = new Uint8Array(size * size * 3),
  offset = 0,
): Uint8Array {
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

class SampledTiles implements TileSource {
  readonly skipped: { slide: string; error: string }[] = [];
  private readonly reader: SlideTileReader | null;
  private readonly samplers = new Map<string, TileSampler>();

  constructor(
    private readonly base: TileSampler,
    private readonly options: TileSourceOptions,
    synthetic: boolean,
  ) {
    this.reader = synthetic
      ? null
      : new SlideTileReader({
          maxOpenSlides: options.maxOpenSlides,
          onTileError: (tile, e) => {
            if (!this.skipped.some((x) => x.slide === tile.slide))
              this.skipped.push({ slide: tile.slide, error: e.message.split('\n')[0] });
          },
        });
  }

  get size(): number {
    return this.base.tiles.length;
  }

  get description(): string {
    return this.reader
      ? `${this.size} tiles of ${this.base.slideCount} slides (${this.base.manifestDir})`
      : `${this.size} synthetic tiles`;
  }

  /** The sampler for this batch size and shard (the same tiles and seed). */
  private sampler(batchSize: number, shard?: Shard | null): TileSampler {
    const rank = shard?.rank ?? 0;
    const worldSize = shard?.worldSize ?? 1;
    const key = `${batchSize}/${rank}/${worldSize}`;
    let s = this.samplers.get(key);
    if (!s) {
      s = this.base.reshaped({ batchSize, rank, worldSize });
      this.samplers.set(key, s);
    }
    return s;
  }

  stepsPerEpoch(batchSize: number, worldSize = 1): number {
    return this.sampler(batchSize, { rank: 0, worldSize }).batchesPerEpoch();
  }

  async batch(step: number, batchSize: number, shard?: Shard | null, out?: Uint8Array): Promise<Uint8Tensor> {
    const s = this.options.tileSizePx;
    const n = s * s * 3;
    const data = batchBuffer(batchSize * n, out);
    const sampler = this.sampler(batchSize, shard);
    const { epoch, batch } = sampler.positionOf(step);
    if (!this.reader) {
      const indices = sampler.indicesAt(epoch, batch);
      for (let i = 0; i < batchSize; i++) syntheticTile(mix(this.options.seed, indices[i]), s, data, i * n);
    } else {
      try {
        const read = this.reader.readInto(sampler.batchAt(epoch, batch), s, data);
        // The next step's slides open (libuv threads) while this step's tiles decode (the addon's threads).
        const next = sampler.positionOf(step + 1);
        this.reader.prefetch(sampler.batchAt(next.epoch, next.batch));
        await read;
      } catch (e) {
        throw new UserError(
          `${this.base.manifestDir}: step ${step + 1}: ${(e as Error).message}: ${this.skipped.map((x) => `${x.slide}: ${x.error}`).join('; ')}`,
        );
      }
    }
    return { data, shape: [batchSize, s, s, 3] };
  }

  stats(): { opened: number; peakOpen: number; maxOpenSlides: number } {
    return this.reader?.stats ?? { opened: 0, peakOpen: 0, maxOpenSlides: 0 };
  }

  async close(): Promise<void> {
    await this.reader?.close();
  }
}

/** Opens `spec`: a manifest folder, or "synthetic[:N]" (default 4096 tiles). */
export async function openTileSource(spec: string, options: TileSourceOptions): Promise<TileSource> {
  const m = /^synthetic(?::(\d+))?$/.exec(spec);
  // batchSize 1 here: the source reshapes the sampler to each call's batch size and shard.
  const samplerOptions = { seed: options.seed, batchSize: 1, balance: options.balance };
  if (m)
    return new SampledTiles(
      TileSampler.synthetic(m[1] ? Number(m[1]) : 4096, options.tileSizePx, samplerOptions),
      options,
      true,
    );
  return new SampledTiles(await TileSampler.open(spec, samplerOptions), options, false);
}
