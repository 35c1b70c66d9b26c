// TileSampler and TileBatchLoader over a real tile manifest (synthetic slides tiled by runTiling): deterministic
// shuffles, disjoint rank shards, exact resume, packed batches equal to direct reads, backpressure, balancing.
import t from 'tap';
import { rmSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { TileSampler } from '../../lib/data/sampler.js';
import { SlideTileReader, TileBatchLoader } from '../../lib/data/batches.js';
import { openSlide } from '../../lib/slides/reader.js';
import { randomTissueRegions, writeSyntheticTiff } from '../../lib/slides/synthetic.js';
import { runTiling } from '../../lib/slides/tile-run.js';

const dir = t.testdir();
const slidesDir = path.join(dir, 'slides');
const manifest = path.join(dir, 'tiles');
const resizedManifest = path.join(dir, 'tiles-0.6');

t.before(async () => {
  // Two slides of different sizes, so balancing has something to balance.
  await writeSyntheticTiff(path.join(slidesDir, 'big.tiff'), {
    width: 3072,
    height: 2560,
    mpp: 0.5,
    regions: randomTissueRegions(3072, 2560, 21),
    seed: 1,
  });
  await writeSyntheticTiff(path.join(slidesDir, 'small.tiff'), {
    width: 1536,
    height: 1280,
    mpp: 0.5,
    regions: randomTissueRegions(1536, 1280, 22),
    seed: 2,
  });
  const r = await runTiling({ slides: slidesDir, out: manifest, tissueThreshold: 0.25 });
  if (r.ok !== 2) throw new Error(`tiling failed: ${JSON.stringify(r.rows)}`);
  await runTiling({ slides: slidesDir, out: resizedManifest, mpp: 0.6, tissueThreshold: 0.25 });
});

const key = (x: { path: string; x: number; y: number }) => `${path.basename(x.path)}:${x.x},${x.y}`;

t.test('an epoch is a permutation, the same for a seed and epoch, another for the next', async (t) => {
  const a = await TileSampler.open(manifest, { seed: 7, batchSize: 4 });
  const b = await TileSampler.open(manifest, { seed: 7, batchSize: 4 });
  const c = await TileSampler.open(manifest, { seed: 8, batchSize: 4 });
  t.ok(a.tiles.length > 30, `${a.tiles.length} tiles`);
  const e0 = Array.from(a.epochOrder(0));
  t.same(e0, Array.from(b.epochOrder(0)), 'same seed and epoch, same order');
  t.same(
    [...e0].sort((x, y) => x - y),
    a.tiles.map((_, i) => i),
    'every tile once',
  );
  t.notSame(e0, Array.from(a.epochOrder(1)), 'the next epoch reshuffles');
  t.notSame(e0, Array.from(c.epochOrder(0)), 'another seed, another order');
});

t.test('ranks get disjoint, equal shares of every epoch', async (t) => {
  const world = 3;
  const samplers = await Promise.all(
    [0, 1, 2].map((rank) => TileSampler.open(manifest, { seed: 1, batchSize: 4, rank, worldSize: world })),
  );
  const per = samplers[0].batchesPerEpoch();
  t.equal(per, Math.floor(samplers[0].tiles.length / (4 * world)));
  for (const epoch of [0, 1]) {
    const seen = new Set<string>();
    let total = 0;
    for (const s of samplers)
      for (let b = 0; b < per; b++)
        for (const tile of s.batchAt(epoch, b)) {
          seen.add(key(tile));
          total++;
        }
    t.equal(total, per * 4 * world);
    t.equal(seen.size, total, `epoch ${epoch}: no tile on two ranks or twice on one`);
  }
});

t.test('batches are packed (B,T,T,3) buffers equal to direct reads; resume continues exactly', async (t) => {
  const sampler = await TileSampler.open(manifest, { seed: 3, batchSize: 4 });
  const loader = new TileBatchLoader(sampler, { prefetch: 2, concurrency: 4, maxBatches: 5 });
  const batches = [];
  for await (const b of loader) batches.push(b);
  t.equal(batches.length, 5);
  const first = batches[0];
  t.same(first.shape, [4, 256, 256, 3]);
  t.ok(first.data instanceof Uint8Array && first.data.length === 4 * 256 * 256 * 3);
  const slide = await openSlide(first.tiles[2].path);
  const direct = await slide.readRegion(first.tiles[2].x, first.tiles[2].y, first.tiles[2].level, 256, 256);
  t.same(
    Buffer.from(first.data.subarray(2 * 256 * 256 * 3, 3 * 256 * 256 * 3)).equals(Buffer.from(direct.data)),
    true,
    'tile 2 of the batch is its slide region',
  );
  await slide.close();
  t.same(
    batches.map((b) => [b.epoch, b.batch]),
    [
      [0, 0],
      [0, 1],
      [0, 2],
      [0, 3],
      [0, 4],
    ],
  );
  t.same(sampler.state(), { seed: 3, epoch: 0, batch: 5 }, 'the sampler state follows what was consumed');

  // Resume after batch 2 in a fresh sampler: batches 3 and 4 are the same tiles and pixels.
  const resumed = await TileSampler.open(manifest, { seed: 3, batchSize: 4 });
  resumed.restore(batches[2].state);
  const more = [];
  for await (const b of new TileBatchLoader(resumed, { maxBatches: 2 })) more.push(b);
  t.same(
    more.map((b) => b.tiles.map(key)),
    batches.slice(3).map((b) => b.tiles.map(key)),
  );
  t.ok(Buffer.from(more[1].data).equals(Buffer.from(batches[4].data)), 'same pixels');
  t.throws(() => resumed.restore({ seed: 4, epoch: 0, batch: 0 }), /seed/);
});

t.test("batched OpenSlide reads (the addon's own threads) equal the per-tile path", async (t) => {
  const a = await TileSampler.open(manifest, { seed: 6, batchSize: 8 });
  const b = await TileSampler.open(manifest, { seed: 6, batchSize: 8 });
  const fast = [],
    slow = [];
  for await (const x of new TileBatchLoader(a, { maxBatches: 2, threads: 3 })) fast.push(x);
  for await (const x of new TileBatchLoader(b, { maxBatches: 2, directReads: false })) slow.push(x);
  for (let i = 0; i < 2; i++) t.ok(Buffer.from(fast[i].data).equals(Buffer.from(slow[i].data)), `batch ${i} identical`);
});

t.test('batch buffers come from `allocate` when given (pinned memory on CUDA machines)', async (t) => {
  const sampler = await TileSampler.open(manifest, { seed: 6, batchSize: 4 });
  const given: Uint8Array[] = [];
  const allocate = (n: number) => {
    const b = new Uint8Array(n);
    given.push(b);
    return b;
  };
  const got = [];
  for await (const b of new TileBatchLoader(sampler, { maxBatches: 2, allocate })) got.push(b.data);
  t.equal(given.length, 2);
  t.ok(got[0] === given[0] && got[1] === given[1], 'the batches are the allocated buffers themselves');
});

t.test('the loader runs over epoch ends', async (t) => {
  const sampler = await TileSampler.open(manifest, { seed: 5, batchSize: 8 });
  const per = sampler.batchesPerEpoch();
  sampler.restore({ seed: 5, epoch: 0, batch: per - 1 });
  const got = [];
  for await (const b of new TileBatchLoader(sampler, { maxBatches: 2 })) got.push([b.epoch, b.batch]);
  t.same(got, [
    [0, per - 1],
    [1, 0],
  ]);
  t.same(sampler.state(), { seed: 5, epoch: 1, batch: 1 });
});

t.test('tiles read at another size are resized to the tile size', async (t) => {
  const sampler = await TileSampler.open(resizedManifest, { seed: 0, batchSize: 2 });
  t.equal(
    sampler.tiles[0].readSizePx,
    Math.round((256 * 0.6) / 0.5),
    '0.6 um/px from a 0.5 um/px slide: read 307, resize to 256',
  );
  const it = new TileBatchLoader(sampler, { maxBatches: 1 })[Symbol.asyncIterator]();
  const b = (await it.next()).value;
  t.same(b.shape, [2, 256, 256, 3]);
  const tile = b.tiles[0];
  const slide = await openSlide(tile.path);
  const region = await slide.readRegion(tile.x, tile.y, tile.level, tile.readSizePx, tile.readSizePx);
  const want = await sharp(Buffer.from(region.data), {
    raw: { width: tile.readSizePx, height: tile.readSizePx, channels: 3 },
  })
    .resize(256, 256, { kernel: 'lanczos3', fit: 'fill' })
    .raw()
    .toBuffer();
  t.ok(want.equals(Buffer.from(b.data.subarray(0, 256 * 256 * 3))), 'lanczos3 resize of the read');
  await slide.close();
  await it.return?.();
});

t.test('backpressure: no more than `prefetch` batches are read ahead of the consumer', async (t) => {
  const sampler = await TileSampler.open(manifest, { seed: 2, batchSize: 2 });
  let requested = 0;
  const batchAt = sampler.batchAt.bind(sampler);
  sampler.batchAt = (e, b) => {
    requested++;
    return batchAt(e, b);
  };
  const it = new TileBatchLoader(sampler, { prefetch: 3, maxBatches: 10 })[Symbol.asyncIterator]();
  await it.next();
  await new Promise((r) => setTimeout(r, 300));
  t.ok(requested <= 4, `${requested} batches requested after one was consumed (prefetch 3)`);
  await it.return?.();
});

t.test('balance slides: each slide drawn about equally often despite unequal tile counts', async (t) => {
  const s = await TileSampler.open(manifest, { seed: 11, batchSize: 4, balance: 'slides' });
  const counts = new Map<string, number>();
  for (const tile of s.tiles) counts.set(tile.slide, (counts.get(tile.slide) ?? 0) + 1);
  t.ok(counts.get('big')! > 2 * counts.get('small')!, `tiles per slide: ${JSON.stringify([...counts])}`);
  const drawn = new Map<string, number>();
  for (let e = 0; e < 200; e++)
    for (const i of s.epochOrder(e)) drawn.set(s.tiles[i].slide, (drawn.get(s.tiles[i].slide) ?? 0) + 1);
  const total = [...drawn.values()].reduce((a, b) => a + b, 0);
  const share = drawn.get('small')! / total;
  t.ok(Math.abs(share - 0.5) < 0.03, `small slide share ${share.toFixed(3)} ~ 0.5`);
});

t.test('an unreadable slide: its tiles are replaced and reported, the batch still comes', async (t) => {
  const sampler = await TileSampler.open(manifest, { seed: 4, batchSize: 8 });
  const gone = sampler.tiles.find((x) => x.slide === 'small')!.path;
  for (const tile of sampler.tiles) if (tile.slide === 'small') tile.path = `${gone}.missing`;
  const errors: string[] = [];
  const it = new TileBatchLoader(sampler, {
    maxBatches: 3,
    onTileError: (tile, e) => errors.push(`${tile.slide}: ${e.message}`),
  })[Symbol.asyncIterator]();
  let replaced = 0;
  for (let i = 0; i < 3; i++) replaced += (await it.next()).value.replaced.length;
  t.ok(replaced > 0 && errors.length === replaced, `${replaced} tiles replaced, each reported`);
  t.match(errors[0], /small: slide not found/);
});

t.test('a folder that is not a manifest is a user error', async (t) => {
  await t.rejects(TileSampler.open(slidesDir, { batchSize: 4 }), /not a tile manifest folder.*g2l-native tile/);
  await t.rejects(TileSampler.open(manifest, { batchSize: 100000 }), /fewer than one batch/);
});

t.test(
  'concurrent batches through a reader bounded to 1 open slide: the same pixels as per-tile reads (reads wait for room, no deadlock)',
  async (t) => {
    const sampler = await TileSampler.open(manifest, { seed: 11, batchSize: 6 });
    t.ok(new Set(sampler.batchAt(0, 0).map((x) => x.slide)).size === 2, 'the first batch spans both slides');
    // Four batches in flight at once, each needing both slides: reads wait for room instead of closing a slide in use.
    const bounded = new TileBatchLoader(sampler.reshaped({}), { maxOpenSlides: 1, prefetch: 4, maxBatches: 6 });
    const reference = new TileBatchLoader(sampler.reshaped({}), { directReads: false, maxBatches: 6 });
    const got: Buffer[] = [];
    for await (const b of bounded) got.push(Buffer.from(b.data));
    let i = 0;
    for await (const b of reference)
      t.ok(got[i++].equals(Buffer.from(b.data)), `batch ${i - 1}: same pixels as the per-tile path`);
    t.equal(i, 6);
  },
);

t.test(
  'prefetch opens the slides of a coming batch ahead, within the bound; reading them then opens nothing',
  async (t) => {
    const sampler = await TileSampler.open(manifest, { seed: 12, batchSize: 6 });
    const tiles = sampler.batchAt(0, 0);
    const reader = new SlideTileReader({ maxOpenSlides: 2 });
    reader.prefetch(tiles);
    t.equal(reader.stats.opened, 2, 'both slides opening');
    const data = new Uint8Array(tiles.length * 256 * 256 * 3);
    await reader.readInto(tiles, 256, data);
    t.equal(reader.stats.opened, 2, 'the read used the prefetched slides');
    const small = new SlideTileReader({ maxOpenSlides: 1 });
    small.prefetch(tiles);
    t.equal(small.stats.peakOpen, 1, 'prefetch never goes over the bound');
    const again = new Uint8Array(data.length);
    await small.readInto(tiles, 256, again);
    t.ok(Buffer.from(again).equals(Buffer.from(data)), 'same pixels through a reader bounded to 1 slide');
    t.ok(small.stats.peakOpen <= 1, `at most 1 open (${small.stats.peakOpen})`);
    await reader.close();
    await small.close();
  },
);

t.test('a slide opened without properties reads the same pixels and has the levels', async (t) => {
  const file = path.join(slidesDir, 'big.tiff');
  const full = await openSlide(file);
  const lean = await openSlide(file, { properties: false });
  t.same(lean.info.levelDimensions, full.info.levelDimensions);
  t.same(
    lean.info.properties,
    full.info.reader === 'openslide' ? {} : full.info.properties,
    'no properties fetched (OpenSlide)',
  );
  const a = await full.readRegion(512, 512, 0, 64, 64);
  const b = await lean.readRegion(512, 512, 0, 64, 64);
  t.ok(Buffer.from(a.data).equals(Buffer.from(b.data)), 'same region');
  await full.close();
  await lean.close();
});

t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test(
  'training batches from a manifest: batch s is a pure function of (seed, s, shard), ranks split the global batch',
  async (t) => {
    const { openTileSource } = await import('../../lib/distill/tiles.js');
    const a = await openTileSource(manifest, { seed: 4, tileSizePx: 256, maxOpenSlides: 1 });
    const b = await openTileSource(manifest, { seed: 4, tileSizePx: 256 });
    const per = a.stepsPerEpoch(4);
    for (const step of [0, 3, per + 1]) {
      const x = await a.batch(step, 4);
      const y = await b.batch(step, 4);
      t.ok(
        Buffer.from(x.data).equals(Buffer.from(y.data)),
        `step ${step}: the same pixels from a fresh source (another LRU size)`,
      );
    }
    t.notOk(
      Buffer.from((await a.batch(0, 4)).data).equals(Buffer.from((await a.batch(per, 4)).data)),
      'the next epoch is reshuffled',
    );
    // Two ranks of batch 2: their rows interleave into the single process's batch of 4.
    const whole = await b.batch(1, 4);
    const r0 = await b.batch(1, 2, { rank: 0, worldSize: 2 });
    const r1 = await b.batch(1, 2, { rank: 1, worldSize: 2 });
    const n = 256 * 256 * 3;
    const rows = [r0.data.subarray(0, n), r1.data.subarray(0, n), r0.data.subarray(n), r1.data.subarray(n)];
    rows.forEach((row, i) =>
      t.ok(
        Buffer.from(row).equals(Buffer.from(whole.data.subarray(i * n, (i + 1) * n))),
        `global row ${i} from rank ${i % 2}`,
      ),
    );
    t.ok(
      a.stats().peakOpen <= 1,
      `at most 1 slide open with maxOpenSlides 1 (${a.stats().peakOpen}; ${a.stats().opened} opened)`,
    );
    await a.close();
    await b.close();
  },
);
