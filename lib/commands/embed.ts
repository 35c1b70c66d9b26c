// `g2l-native embed`: images in, embeddings out, with one model.
//   .npy in  (uint8 (N,H,W,3) RGB, or float32 (N,3,H,W) normalised)  ->  float32 (N,D) .npy out
//   image folder (ImageFolder root/<class>/*) or dataset CSV in       ->  feature-set folder (features.npy + meta.csv,
//                                                                         skipped.csv listing unreadable images)
//   --slides <tile manifest folder>                                  ->  one <slide>.h5 per slide (TRIDENT's layout)
//                                                                         + slides.csv (lib/data/extract.ts)
import type { CommandModule } from 'yargs';
import path from 'node:path';
import { promises as fs } from 'node:fs';
import cliProgress from 'cli-progress';
import { UserError } from '../errors.js';
import type { BackendName, EmbedInput, ModelDtype, ModelPool } from '../backends/types.js';
import { readNpy, writeNpy } from '../io/npy.js';
import { embedDataset, readImageDataset } from '../data/image-dataset.js';
import { Encoder } from '../models/encoder.js';
import { PRESETS } from '../models/source.js';
import { extractSlides, type ExtractSummary } from '../data/extract.js';
import { TileSampler } from '../data/sampler.js';
import { deviceForRank, distFromEnv } from '../parallel/env.js';
import { launchIfRequested, nprocOption } from '../parallel/cli.js';
import { exitCleanlyOnSignals } from '../util/signals.js';

export interface EmbedArgs {
  model: string;
  input?: string;
  slides?: string;
  format?: 'h5' | 'npy';
  nproc?: number;
  out: string;
  device?: string;
  dtype?: ModelDtype;
  batchSize: number;
  backend?: BackendName;
  force?: boolean;
  /** Overrides the model's pooling (its config's or preset's). */
  pool?: ModelPool;
}

export interface EmbedSummary {
  out: string;
  embedded: number;
  dims: number;
  skipped: { path: string; reason: string }[];
  seconds: number;
}

function progressBar(label: string): ((done: number, total: number) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  let bar: cliProgress.SingleBar | undefined;
  return (done, total) => {
    if (!bar) {
      bar = new cliProgress.SingleBar(
        { format: `${label} [{bar}] {value}/{total} images {eta_formatted}`, stream: process.stderr, hideCursor: true },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0);
    }
    bar.update(done);
    if (done >= total) bar.stop();
  };
}

/** Reads an embed .npy input: uint8 (N,H,W,3) or float32 (N,3,H,W), anything else refused with the fix. */
export async function readEmbedNpy(file: string): Promise<EmbedInput> {
  const arr = await readNpy(file);
  const shape = `(${arr.shape.join(', ')})`;
  if (arr.dtype === 'uint8') {
    if (arr.shape.length !== 4 || arr.shape[3] !== 3) {
      throw new UserError(
        `${file}: uint8 array of shape ${shape}; embed takes uint8 images as (N, H, W, 3) RGB: transpose or add a batch axis`,
      );
    }
    return { data: arr.data as Uint8Array, shape: arr.shape };
  }
  if (arr.dtype === 'float32') {
    if (arr.shape.length !== 4 || arr.shape[1] !== 3) {
      throw new UserError(
        `${file}: float32 array of shape ${shape}; embed takes float32 images as (N, 3, H, W), normalised: transpose to channels-first`,
      );
    }
    return { data: arr.data as Float32Array, shape: arr.shape };
  }
  throw new UserError(
    `${file}: dtype ${arr.dtype} ${shape}; embed takes uint8 (N, H, W, 3) RGB or float32 (N, 3, H, W) normalised images: ` +
      `convert with arr.astype(np.uint8) or arr.astype(np.float32)`,
  );
}

/** Whole-slide extraction: this process's share of the manifest's slides (all of them without a world). */
export async function runSlideEmbed(argv: EmbedArgs): Promise<ExtractSummary> {
  const dist = distFromEnv();
  // With ranks, --device cuda means cuda:<local rank> (one GPU per process).
  const device = argv.device !== undefined ? deviceForRank(argv.device, dist) : undefined;
  // The manifest first: a bad folder fails before the model loads.
  await TileSampler.open(argv.slides!, { batchSize: 1 });
  const enc = await Encoder.load(argv.model, {
    device,
    dtype: argv.dtype,
    batchSize: argv.batchSize,
    backend: argv.backend,
    force: argv.force,
    pool: argv.pool,
  });
  try {
    return await extractSlides({
      manifest: argv.slides!,
      out: argv.out,
      encoder: enc,
      modelName: argv.model,
      format: argv.format ?? 'h5',
      batchSize: argv.batchSize,
      rank: dist?.rank,
      worldSize: dist?.worldSize,
      onSlide: (r) =>
        process.stderr.write(r.status === 'failed' ? `g2l-native: slide ${r.slide} failed: ${r.error}\n` : ''),
    });
  } finally {
    await enc.dispose();
  }
}

export async function runEmbed(argv: EmbedArgs): Promise<EmbedSummary> {
  const started = Date.now();
  if (!argv.input)
    throw new UserError('embed: give --input <.npy | image folder | csv>, or --slides <tile manifest folder>');
  const stat = await fs.stat(argv.input).catch(() => undefined);
  if (!stat)
    throw new UserError(`--input ${argv.input}: not found; give a .npy file, an image folder or a dataset CSV`);
  const npyIn = stat.isFile() && argv.input.toLowerCase().endsWith('.npy');
  const npyOut = argv.out.toLowerCase().endsWith('.npy');
  if (npyIn && !npyOut) throw new UserError(`--out ${argv.out}: a .npy input writes a .npy output; name it <file>.npy`);
  if (!npyIn && npyOut) {
    throw new UserError(
      `--out ${argv.out}: an image folder or CSV writes a feature-set folder (features.npy + meta.csv); give a folder`,
    );
  }
  // Read the input before loading the model, so a bad input fails in milliseconds rather than after the load.
  const images = npyIn ? await readEmbedNpy(argv.input) : undefined;
  const dataset = npyIn ? undefined : await readImageDataset(argv.input);

  const enc = await Encoder.load(argv.model, {
    device: argv.device,
    dtype: argv.dtype,
    batchSize: argv.batchSize,
    backend: argv.backend,
    force: argv.force,
    pool: argv.pool,
  });
  try {
    if (images) {
      const n = images.shape[0];
      const progress = progressBar('embed');
      const dims = enc.info.dims;
      const features = new Float32Array(n * dims);
      const perImage = n > 0 ? images.data.length / n : 0;
      // Chunks of a few batches: the progress bar moves, and memory stays one chunk of outputs at a time.
      const chunk = enc.batchSize * 4;
      for (let start = 0; start < n; start += chunk) {
        const count = Math.min(chunk, n - start);
        const data = images.data.subarray(start * perImage, (start + count) * perImage) as EmbedInput['data'];
        // The encoder's refusals of these images (too small, empty) name the file they came from.
        const y = await enc
          .embed({ data, shape: [count, ...images.shape.slice(1)] } as EmbedInput)
          .catch((e: unknown) => {
            throw e instanceof UserError
              ? new UserError(`${argv.input}: ${e.message.replace(/^embed: /, '')}`, e.exitCode)
              : e;
          });
        features.set(y.data, start * dims);
        progress?.(start + count, n);
      }
      await writeNpy(argv.out, { dtype: 'float32', shape: [n, dims], data: features });
      return { out: argv.out, embedded: n, dims, skipped: [], seconds: (Date.now() - started) / 1000 };
    }
    const res = await embedDataset(enc, dataset!, argv.out, {
      batchSize: argv.batchSize,
      onProgress: progressBar('embed'),
    });
    return {
      out: argv.out,
      embedded: res.embedded,
      dims: res.dim,
      skipped: res.skipped.map((s) => ({ path: s.path, reason: s.reason })),
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    await enc.dispose();
  }
}

export const embedCommand: CommandModule<{ backend?: BackendName }, EmbedArgs> = {
  command: 'embed',
  describe:
    'Embed images with a model: .npy (uint8 N,H,W,3 or float32 N,3,H,W) to .npy (N,D), or an image folder / CSV to a feature set',
  builder: (y) =>
    y
      .option('model', {
        type: 'string',
        demandOption: true,
        describe: `Model folder (timm or transformers hub layout), preset:<name>:<folder> (presets: ${PRESETS.join(', ')})`,
      })
      .option('input', { type: 'string', describe: '.npy images, an ImageFolder (root/<class>/*) or a dataset CSV' })
      .option('slides', {
        type: 'string',
        describe:
          'A tile manifest folder (g2l-native tile): features of every tile of every slide, one <slide>.h5 each',
      })
      .option('format', {
        choices: ['h5', 'npy'] as const,
        default: 'h5' as const,
        describe: 'With --slides: TRIDENT-style <slide>.h5, or a feature-set folder per slide',
      })
      .option('out', { type: 'string', demandOption: true, describe: '.npy for a .npy input; a folder otherwise' })
      .option('nproc', {
        ...nprocOption,
        describe: 'With --slides: worker processes (one per GPU), each extracting its share of the slides',
      })
      .option('device', { type: 'string', describe: 'cpu, cuda or cuda:<i> (default: cuda when available, else cpu)' })
      .option('dtype', {
        choices: ['fp32', 'fp16', 'bf16'] as const,
        describe: 'Weights precision (default: fp32 on cpu, fp16 on cuda)',
      })
      .option('batch-size', { type: 'number', default: 32, describe: 'Images per forward pass' })
      .option('pool', {
        choices: ['cls', 'mean', 'cls+mean'] as const,
        describe:
          "Embedding pooling, overriding the model's (its config's or preset's): the class token, the mean of the patch tokens (class and register tokens excluded), or both concatenated (2*D)",
      })
      .option('force', {
        type: 'boolean',
        default: false,
        describe: 'On the js backend, run models large enough to take hours',
      }) as never,
  handler: async (argv) => {
    const release = exitCleanlyOnSignals(
      'embed',
      'the same command continues (--slides: with the slides not done yet; otherwise from the start)',
    );
    try {
      await embed(argv);
    } finally {
      release();
    }
  },
};

/** The command itself, by its input: slides (per-slide feature files) or images (one feature file or set). */
async function embed(argv: EmbedArgs): Promise<void> {
  if (argv.slides !== undefined) {
    if (argv.input !== undefined) throw new UserError('embed: give --input or --slides, not both');
    const launched = await launchIfRequested(argv.nproc, undefined, '');
    if (launched !== null) {
      process.exitCode = launched;
      if (launched === 0)
        process.stdout.write(
          `extracted the slides of ${argv.slides} with ${argv.nproc} workers: ${path.join(argv.out, 'slides.csv')}\n`,
        );
      return;
    }
    const s = await runSlideEmbed(argv);
    const failed = s.failed.length ? `; ${s.failed.length} failed (see ${path.join(s.out, 'slides.csv')})` : '';
    process.stdout.write(
      `extracted ${s.extracted} slides (${s.tiles} tiles, ${s.dims}-d) to ${s.out} in ${s.seconds.toFixed(1)} s` +
        `${s.skipped ? `; ${s.skipped} already done` : ''}${failed}\n`,
    );
    if (s.failed.length) process.exitCode = 1;
    return;
  }
  if (argv.nproc !== undefined && argv.nproc !== 1) throw new UserError('embed: --nproc applies to --slides only');
  const s = await runEmbed(argv);
  for (const k of s.skipped) process.stderr.write(`g2l-native: skipped unreadable image ${k.path}: ${k.reason}\n`);
  const rate = s.seconds > 0 ? ` (${(s.embedded / s.seconds).toFixed(1)} img/s including load)` : '';
  const skipped = s.skipped.length
    ? `; skipped ${s.skipped.length} unreadable (listed in ${path.join(s.out, 'skipped.csv')})`
    : '';
  process.stdout.write(
    `embedded ${s.embedded} images (${s.dims}-d) to ${s.out} in ${s.seconds.toFixed(1)} s${rate}${skipped}\n`,
  );
}
