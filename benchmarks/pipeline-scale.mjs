#!/usr/bin/env node
// The training tile pipeline at the paper's scale: 1,000 slides -> packed uint8 batches through exactly what
// `distill` uses (lib/distill/tiles.ts: the tile sampler, the LRU of open slides, batched decodes on the slide
// addon's threads, the next batch read while the current one is consumed), against the decode limit measured in the
// same run: one thread's OpenSlide read + decode rate of tiles of the same manifest (each read once, through freshly
// opened slides), times the threads.
//
//   node benchmarks/pipeline-scale.mjs [--slides 1000] [--distinct 20] [--steps 60] [--batch 32] [--threads N]
//       [--max-open N (default: the reader's, lib/data/batches.ts defaultMaxOpenSlides)] [--out results/pipeline-scale.json]
//
// The slides: `--distinct` synthetic slides from the project's writer (lib/slides/synthetic.ts: 2048 x 1536, SVS at
// 0.25 and pyramidal TIFF at 0.5 um/px, tissue-like texture), each hard-linked under `--slides / --distinct` names:
// OpenSlide opens every name as its own slide, and the files stay in the page cache (a warm-cache measurement: the
// decode, not the disk). Reports tiles/s, the ratio to the limit (goal >= 0.7 on 2 cores), the most slides open at
// once (never above --max-open) and resident memory over the run (peak, first and last tenth).
import { linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { arg } from './cli-args.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.join(HERE, '..', 'dist');
const opts = {
  slides: Number(arg('slides', 1000)),
  distinct: Number(arg('distinct', 20)),
  steps: Number(arg('steps', 60)),
  batch: Number(arg('batch', 32)),
  threads: Number(arg('threads', os.availableParallelism())),
  maxOpen: arg('max-open', undefined) === undefined ? undefined : Number(arg('max-open', 0)),
  out: arg('out', path.join(HERE, 'results', 'pipeline-scale.json')),
};

/** @typedef {import('../dist/backends/types.js').Uint8Tensor} Uint8Tensor */

/** @type {typeof import('../dist/slides/synthetic.js')} */
const { makeSyntheticSlides } = await import(path.join(DIST, 'slides', 'synthetic.js'));
/** @type {typeof import('../dist/slides/tile-run.js')} */
const { runTiling } = await import(path.join(DIST, 'slides', 'tile-run.js'));
/** @type {typeof import('../dist/distill/tiles.js')} */
const { openTileSource } = await import(path.join(DIST, 'distill', 'tiles.js'));
/** @type {typeof import('../dist/data/sampler.js')} */
const { TileSampler } = await import(path.join(DIST, 'data', 'sampler.js'));
/** @type {typeof import('../dist/slides/reader.js')} */
const { openSlide } = await import(path.join(DIST, 'slides', 'reader.js'));
/** @type {typeof import('../dist/slides/addon.js')} */
const { openslideAddon } = await import(path.join(DIST, 'slides', 'addon.js'));

const work = mkdtempSync(path.join(os.tmpdir(), 'g2l-pipeline-scale-'));
try {
  // ---- slides and their manifest ----------------------------------------------------------------------------------
  let t0 = performance.now();
  const set = await makeSyntheticSlides(path.join(work, 'distinct'), {
    count: opts.distinct,
    width: 2048,
    height: 1536,
    seed: 3,
  });
  const makeSeconds = (performance.now() - t0) / 1000;
  mkdirSync(path.join(work, 'slides'));
  for (let i = 0; i < opts.slides; i++) {
    const s = set.slides[i % set.slides.length];
    linkSync(s.file, path.join(work, 'slides', `slide-${String(i).padStart(4, '0')}${path.extname(s.file)}`));
  }
  t0 = performance.now();
  const tiling = await runTiling({
    slides: path.join(work, 'slides'),
    out: path.join(work, 'tiles'),
    workers: opts.threads,
    tissueThreshold: 0.25,
  });
  const tileSeconds = (performance.now() - t0) / 1000;
  const manifest = path.join(work, 'tiles');
  const tiles = tiling.rows.reduce((a, r) => a + r.tiles, 0);
  console.log(
    `${opts.slides} slides (${opts.distinct} written in ${makeSeconds.toFixed(1)} s, linked), ${tiles} tiles; tile command ${tileSeconds.toFixed(1)} s`,
  );

  // ---- the decode limit: one thread, the same kind of tiles, slides already open ------------------------------------
  const addon = openslideAddon();
  if (!addon) throw new Error('OpenSlide is not available: the benchmark measures its decodes');
  // Three disjoint sets of 256 tiles, each read once through freshly opened slides (no OpenSlide tile-cache hits).
  const sampler = await TileSampler.open(manifest, { seed: 9, batchSize: 256 });
  /** @param {number} set */
  const one = async (set) => {
    const probe = sampler.batchAt(0, set);
    /** @type {Map<string, import('../dist/slides/reader.js').Slide>} */
    const open = new Map();
    for (const t of probe) if (!open.has(t.path)) open.set(t.path, await openSlide(t.path));
    /** @param {string} file */
    const handleOf = (file) => {
      const h = open.get(file)?.openslideHandle;
      if (!h) throw new Error(`${file} was not opened through OpenSlide`);
      return h;
    };
    const out = new Uint8Array(probe.length * 256 * 256 * 3);
    const start = performance.now();
    await addon.readTilesInto(
      probe.map((t) => handleOf(t.path)),
      probe.map((t) => t.x),
      probe.map((t) => t.y),
      probe.map((t) => t.level),
      256,
      out,
      1,
    );
    const rate = probe.length / ((performance.now() - start) / 1000);
    for (const s of open.values()) await s.close();
    return rate;
  };
  if (sampler.batchesPerEpoch() < 3) throw new Error('too few tiles for three disjoint sets of 256');
  const singles = [await one(0), await one(1), await one(2)].sort((a, b) => a - b);
  const perThread = singles[1];
  const limit = perThread * opts.threads;

  // ---- the pipeline distill uses ------------------------------------------------------------------------------------
  const source = await openTileSource(manifest, { seed: 1, tileSizePx: 256, maxOpenSlides: opts.maxOpen });
  /** @type {number[]} */
  const rss = [];
  /** @type {Promise<Uint8Tensor> | null} the batch being read */
  let next = source.batch(0, opts.batch);
  let timedFrom = 0;
  for (let step = 0; step < opts.steps; step++) {
    if (!next) throw new Error(`no batch in flight at step ${step}`);
    /** @type {Uint8Tensor} */
    const b = await next;
    if (b.shape[0] !== opts.batch) throw new Error('short batch');
    next = step + 1 < opts.steps ? source.batch(step + 1, opts.batch) : null;
    if (step === 1) timedFrom = performance.now(); // after the first batch (opening the first slides)
    rss.push(process.memoryUsage().rss);
  }
  const seconds = (performance.now() - timedFrom) / 1000;
  const rate = ((opts.steps - 1) * opts.batch) / seconds;
  const stats = source.stats();
  await source.close();
  opts.maxOpen = stats.maxOpenSlides;
  const load = os.loadavg();
  const tenth = Math.max(1, Math.floor(rss.length / 10));
  /** @param {number[]} a */
  const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
  const result = {
    date: new Date().toISOString(),
    cpus: os.availableParallelism(),
    loadAverage: load,
    ...opts,
    tiles,
    tileCommandSeconds: tileSeconds,
    decodePerThreadTilesPerSecond: perThread,
    decodeLimitTilesPerSecond: limit,
    pipelineTilesPerSecond: rate,
    ratioToLimit: rate / limit,
    slidesOpened: stats.opened,
    peakOpenSlides: stats.peakOpen,
    rssPeakMiB: Math.max(...rss) / 2 ** 20,
    rssFirstTenthMiB: mean(rss.slice(0, tenth)) / 2 ** 20,
    rssLastTenthMiB: mean(rss.slice(-tenth)) / 2 ** 20,
  };
  console.log(
    `decode limit ${limit.toFixed(0)} tiles/s (${perThread.toFixed(0)} a thread x ${opts.threads}); pipeline ${rate.toFixed(0)} tiles/s = ` +
      `${(100 * result.ratioToLimit).toFixed(0)}% of it; ${stats.opened} slides opened, at most ${stats.peakOpen} at once (bound ${opts.maxOpen}); ` +
      `RSS peak ${result.rssPeakMiB.toFixed(0)} MiB (first tenth ${result.rssFirstTenthMiB.toFixed(0)}, last ${result.rssLastTenthMiB.toFixed(0)}); ` +
      `load average ${load.map((l) => l.toFixed(2)).join(' ')} on ${os.availableParallelism()} CPUs (other processes share them: quote a run at load < 0.5)`,
  );
  mkdirSync(path.dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${opts.out}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
