#!/usr/bin/env node
// Whole-slide feature extraction on the CPU: `g2l-native embed --slides` against a TRIDENT-style PyTorch loop
// (benchmarks/trident_loop.py: OpenSlide read_region -> torchvision resize + normalise -> the same timm model with the
// same weights, batched), on the same slides and tiles, the same batch and threads. Runs alternate (ours, PyTorch,
// ours, ...) so that a neighbour's load lands on both; the ratio is the median of the per-pair ratios.
//
//   node benchmarks/extract.mjs [--slides 20] [--pairs 3] [--batch 32] [--threads N] [--arch vit_small_patch14_reg4_dinov2]
//       [--out benchmarks/results/extract.json]
//
// Model: a random model of the named timm architecture at 224 px (the engine writes it, timm loads it). Slides: the
// project's synthetic-slide writer (2048 x 1536, SVS at 0.25 and TIFF at 0.5 um/px), tiled at 0.5 um/px.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { arg } from './cli-args.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.join(HERE, '..');
const DIST = path.join(ROOT, 'dist');
const opts = {
  slides: Number(arg('slides', 20)),
  pairs: Number(arg('pairs', 3)),
  batch: Number(arg('batch', 32)),
  threads: Number(arg('threads', os.availableParallelism())),
  arch: arg('arch', 'vit_small_patch14_reg4_dinov2'),
  out: arg('out', path.join(HERE, 'results', 'extract.json')),
};
/** @type {Record<string, { embed_dim: number, depth: number, num_heads: number }>} */
const ARCH = {
  vit_small_patch14_reg4_dinov2: { embed_dim: 384, depth: 12, num_heads: 6 },
  vit_base_patch14_reg4_dinov2: { embed_dim: 768, depth: 12, num_heads: 12 },
  vit_large_patch14_reg4_dinov2: { embed_dim: 1024, depth: 24, num_heads: 16 },
};

/** @type {typeof import('../dist/slides/synthetic.js')} */
const { makeSyntheticSlides } = await import(path.join(DIST, 'slides', 'synthetic.js'));
/** @type {typeof import('../dist/slides/tile-run.js')} */
const { runTiling } = await import(path.join(DIST, 'slides', 'tile-run.js'));
/** @type {typeof import('../dist/backends/index.js')} */
const { getBackend } = await import(path.join(DIST, 'backends', 'index.js'));

const work = mkdtempSync(path.join(os.tmpdir(), 'g2l-extract-bench-'));
try {
  await makeSyntheticSlides(path.join(work, 'slides'), { count: opts.slides, width: 2048, height: 1536, seed: 5 });
  const tiling = await runTiling({
    slides: path.join(work, 'slides'),
    out: path.join(work, 'tiles'),
    tissueThreshold: 0.25,
  });
  const tiles = tiling.rows.reduce((a, r) => a + r.tiles, 0);
  // The model: timm hub layout, random weights written by the engine.
  const spec = path.join(work, 'model.config');
  mkdirSync(spec);
  const config = {
    architecture: opts.arch,
    num_classes: 0,
    global_pool: 'token',
    model_args: { img_size: 224, init_values: 1.0, ...ARCH[opts.arch] },
    pretrained_cfg: {
      input_size: [3, 224, 224],
      mean: [0.485, 0.456, 0.406],
      std: [0.229, 0.224, 0.225],
      num_classes: 0,
    },
  };
  writeFileSync(path.join(spec, 'config.json'), JSON.stringify(config));
  const handle = await getBackend({ backend: 'native' }).createModel(
    { folder: spec },
    { seed: 1, device: 'cpu', dtype: 'fp32' },
  );
  const model = path.join(work, 'model');
  await handle.exportTo(model);
  await handle.dispose();

  const env = { ...process.env, OMP_NUM_THREADS: String(opts.threads) };
  const ours = () => {
    const out = path.join(work, `features-${Math.random().toString(36).slice(2)}`);
    const r = spawnSync(
      process.execPath,
      [
        path.join(ROOT, 'bin', 'g2l-native'),
        'embed',
        '--slides',
        path.join(work, 'tiles'),
        '--model',
        model,
        '--out',
        out,
        '--batch-size',
        String(opts.batch),
        '--device',
        'cpu',
      ],
      { env, encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`embed --slides failed: ${r.stderr}`);
    const m = /\((\d+) tiles, \d+-d\) to .* in ([\d.]+) s/.exec(r.stdout);
    rmSync(out, { recursive: true, force: true });
    if (!m) throw new Error(`embed --slides printed no '(N tiles, D-d) to ... in S s' line: ${r.stdout}`);
    return Number(m[1]) / Number(m[2]);
  };
  const torch = () => {
    const r = spawnSync(
      path.join(ROOT, '.venv', 'bin', 'python'),
      [path.join(HERE, 'trident_loop.py'), path.join(work, 'tiles'), model, String(opts.batch), String(opts.threads)],
      { env, encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`trident_loop.py failed: ${r.stderr}`);
    /** @type {{ tilesPerSecond: number }} trident_loop.py's JSON line */
    const line = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
    return line.tilesPerSecond;
  };
  ours(); // warm: page cache, compiled kernels
  const pairs = [];
  for (let p = 0; p < opts.pairs; p++) {
    const a = ours();
    const b = torch();
    pairs.push({ native: a, pytorch: b, ratio: a / b });
  }
  /** @param {number[]} xs */
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const result = {
    date: new Date().toISOString(),
    cpus: os.availableParallelism(),
    loadAverage: os.loadavg(),
    ...opts,
    tiles,
    pairs,
    nativeTilesPerSecond: median(pairs.map((p) => p.native)),
    pytorchTilesPerSecond: median(pairs.map((p) => p.pytorch)),
    ratio: median(pairs.map((p) => p.ratio)),
  };
  console.log(
    `${opts.slides} slides, ${tiles} tiles, ${opts.arch} at 224, batch ${opts.batch}, ${opts.threads} threads`,
  );
  for (const p of pairs)
    console.log(
      `  native ${p.native.toFixed(1)} tiles/s, PyTorch ${p.pytorch.toFixed(1)} tiles/s: ${p.ratio.toFixed(2)}x`,
    );
  console.log(`median ratio ${result.ratio.toFixed(2)}x (load average ${os.loadavg()[0].toFixed(2)})`);
  mkdirSync(path.dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, `${JSON.stringify(result, null, 2)}\n`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
