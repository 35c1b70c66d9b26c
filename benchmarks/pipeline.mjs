#!/usr/bin/env node
// Data pipeline throughput: slides -> packed uint8 batches (tiles/s) and tile augmentation (augmentations/s), by
// worker count. Each worker count runs in its own child process, because libuv's threadpool size
// (UV_THREADPOOL_SIZE) and libtorch's CPU threads (OMP_NUM_THREADS) are fixed when a process starts.
//
//   node benchmarks/pipeline.mjs [--workers 1,2,4] [--slides 4] [--batches 20] [--batch 32] [--device cpu|cuda]
//
// Needs the compiled library (dist/, `npm run setup`); the native engine from G2L_ENGINE_PATH or build-engine/.
// The G2L target for the GPU host is >= 1,500 tiles/s from slides to batches so the GPU never waits.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { arg } from './cli-args.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.join(HERE, '..', 'dist');

/**
 * The options every child gets; what each mode prints (its one JSON line).
 * @typedef {{ slides: number, batches: number, batch: number, device: string }} PipelineOptions
 * @typedef {{ slides: number, tiles: number, tileCommandSeconds: number }} PrepareResult
 * @typedef {{ tilesPerSecond: number }} BatchesResult
 * @typedef {Record<string, number>} AugmentResult `<backend>[-<device>]AugmentationsPerSecond`
 */

/**
 * @param {string} mode prepare, batches or augment
 * @param {string} workDir
 * @param {number} workers
 * @param {PipelineOptions} opts
 * @returns {Promise<PrepareResult | BatchesResult | AugmentResult>}
 */
async function child(mode, workDir, workers, opts) {
  /** @type {typeof import('../dist/slides/synthetic.js')} */
  const { makeSyntheticSlides } = await import(path.join(DIST, 'slides', 'synthetic.js'));
  /** @type {typeof import('../dist/slides/tile-run.js')} */
  const { runTiling } = await import(path.join(DIST, 'slides', 'tile-run.js'));
  /** @type {typeof import('../dist/data/sampler.js')} */
  const { TileSampler } = await import(path.join(DIST, 'data', 'sampler.js'));
  /** @type {typeof import('../dist/data/batches.js')} */
  const { TileBatchLoader } = await import(path.join(DIST, 'data', 'batches.js'));
  if (mode === 'prepare') {
    await makeSyntheticSlides(path.join(workDir, 'slides'), { count: opts.slides, width: 8192, height: 6144, seed: 5 });
    const t0 = performance.now();
    const r = await runTiling({
      slides: path.join(workDir, 'slides'),
      out: path.join(workDir, 'tiles'),
      workers,
      tissueThreshold: 0.25,
    });
    const s = (performance.now() - t0) / 1000;
    return { slides: r.ok, tiles: r.rows.reduce((a, x) => a + x.tiles, 0), tileCommandSeconds: s };
  }
  if (mode === 'batches') {
    const sampler = await TileSampler.open(path.join(workDir, 'tiles'), { seed: 1, batchSize: opts.batch });
    const loader = new TileBatchLoader(sampler, {
      prefetch: 4,
      concurrency: Math.max(4, workers * 2),
      threads: workers,
      maxBatches: opts.batches + 2,
    });
    let n = 0,
      t0 = 0,
      tiles = 0;
    for await (const b of loader) {
      if (++n === 2)
        t0 = performance.now(); // the first batches include opening the slides
      else if (n > 2) tiles += b.shape[0];
    }
    return { tilesPerSecond: tiles / ((performance.now() - t0) / 1000) };
  }
  if (mode === 'augment') {
    /** @type {typeof import('../dist/backends/index.js')} */
    const { loadEngineAddon, NativeBackend, JsBackend } = await import(path.join(DIST, 'backends', 'index.js'));
    /** @type {typeof import('../dist/backends/types.js')} */
    const { NORMALIZATIONS } = await import(path.join(DIST, 'backends', 'types.js'));
    const B = opts.batch;
    const tiles = { data: new Uint8Array(B * 256 * 256 * 3), shape: [B, 256, 256, 3] };
    for (let i = 0; i < tiles.data.length; i++) tiles.data[i] = (i * 2654435761) >>> 24;
    /** @type {AugmentResult} */
    const out = {};
    /** @type {[string, import('../dist/backends/types.js').AugmentBackend][]} */
    const backends = [['native', new NativeBackend(loadEngineAddon())]];
    if (workers === 1) backends.push(['js', new JsBackend()]);
    for (const [name, backend] of backends) {
      const device = name === 'native' ? opts.device : 'cpu';
      /** @param {number} seed */
      const run = (seed) =>
        backend.augmentBatch(tiles, { seed }, {}, NORMALIZATIONS.hOptimus0, NORMALIZATIONS.hibou, {
          teacherDtype: 'float16',
          device,
        });
      await run(0);
      const reps = name === 'js' ? 2 : opts.device === 'cuda' ? 50 : 5;
      const t0 = performance.now();
      for (let r = 1; r <= reps; r++) await run(r);
      out[`${name}${name === 'native' ? `-${device}` : ''}AugmentationsPerSecond`] =
        (reps * B) / ((performance.now() - t0) / 1000);
    }
    return out;
  }
  throw new Error(`unknown mode ${mode}`);
}

async function main() {
  if (process.env.G2L_PIPELINE_CHILD) {
    /** @type {{ mode: string, workDir: string, workers: number, opts: PipelineOptions }} what run() below passes */
    const { mode, workDir, workers, opts } = JSON.parse(process.env.G2L_PIPELINE_CHILD);
    process.stdout.write(`${JSON.stringify(await child(mode, workDir, workers, opts))}\n`);
    return;
  }
  const workerCounts = arg(
    'workers',
    [1, 2, 4, os.availableParallelism()]
      .filter((v, i, a) => a.indexOf(v) === i && v <= os.availableParallelism())
      .join(','),
  )
    .split(',')
    .map(Number);
  const opts = {
    slides: Number(arg('slides', 4)),
    batches: Number(arg('batches', 20)),
    batch: Number(arg('batch', 32)),
    device: arg('device', 'cpu'),
  };
  const workDir = mkdtempSync(path.join(os.tmpdir(), 'g2l-pipeline-'));
  /**
   * One child's JSON line.
   * @param {string} mode
   * @param {number} workers
   */
  const run = (mode, workers) => {
    const env = {
      ...process.env,
      UV_THREADPOOL_SIZE: String(workers),
      OMP_NUM_THREADS: String(workers),
      VIPS_CONCURRENCY: '1',
      // libtorch's OpenMP threads spin while waiting; on a CPU shared with other work that spin starves the
      // threads doing the work (seen: 8 augmentations/s instead of 60 with 2 threads on 2 busy cores).
      OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE',
      G2L_PIPELINE_CHILD: JSON.stringify({ mode, workDir, workers, opts }),
    };
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], {
      env,
      encoding: 'utf8',
      maxBuffer: 1 << 24,
    });
    if (r.status !== 0) throw new Error(`${mode} with ${workers} workers failed:\n${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
  };
  try {
    /** @type {PrepareResult} */
    const prep = run('prepare', Math.min(4, os.availableParallelism()));
    console.log(
      `${prep.slides} synthetic slides (8192x6144, SVS at 0.25 and TIFF at 0.5 um/px), ${prep.tiles} tissue tiles at 0.5 um/px; tile command ${prep.tileCommandSeconds.toFixed(1)} s`,
    );
    /** @type {({ workers: number } & BatchesResult & AugmentResult)[]} */
    const rows = [];
    for (const w of workerCounts) {
      /** @type {BatchesResult} */
      const b = run('batches', w);
      /** @type {AugmentResult} */
      const a = run('augment', w);
      rows.push({ workers: w, ...b, ...a });
    }
    console.log(
      `\nbatch ${opts.batch}, 256x256 tiles, augmentation to 224 (teacher fp16 + student fp32), device ${opts.device}`,
    );
    console.log('| workers | slides -> batches tiles/s | native augment /s | js augment /s |');
    console.log('| --- | --- | --- | --- |');
    for (const r of rows) {
      const nat = r[`native-${opts.device}AugmentationsPerSecond`];
      console.log(
        `| ${r.workers} | ${r.tilesPerSecond.toFixed(0)} | ${nat.toFixed(0)} | ${r.jsAugmentationsPerSecond ? r.jsAugmentationsPerSecond.toFixed(0) : '-'} |`,
      );
    }
    console.log(`\n${JSON.stringify({ cpus: os.availableParallelism(), ...prep, rows })}`);
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${e.stack ?? e}\n`);
  process.exitCode = 1;
});
