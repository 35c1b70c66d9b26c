// `g2l-native tile --slides <dir|csv> --out <dir> [--mpp 0.5 | --mag 20] [--tile 256] [--tissue-threshold 0.5]
//  [--default-mpp X] [--workers N] [--coords-from <TRIDENT patches folder>]`: tissue tiles of every slide into a
//  manifest folder (lib/slides/tile-run.ts); with --coords-from, TRIDENT's patch coordinates instead of ours.
// Exit 0 when at least one slide is tiled (failed ones are counted in a warning), 2 when none is.
import type { CommandModule } from 'yargs';
import cliProgress from 'cli-progress';
import path from 'node:path';
import { ExitCode, UserError } from '../errors.js';
import { runTiling } from '../slides/tile-run.js';
import { exitCleanlyOnSignals } from '../util/signals.js';

interface TileArgs {
  slides: string;
  out: string;
  mpp?: number;
  mag?: number;
  'coords-from'?: string;
  tile: number;
  'tissue-threshold': number;
  'default-mpp'?: number;
  workers: number;
}

export const tileCommand: CommandModule<object, TileArgs> = {
  command: 'tile',
  describe: 'Tile the tissue of whole-slide images at a target magnification into tile manifests',
  builder: (y) =>
    y
      .option('slides', {
        type: 'string',
        demandOption: true,
        describe: 'Folder of slides, or a CSV with path (and optional slide, mpp) columns',
      })
      .option('out', {
        type: 'string',
        demandOption: true,
        describe: 'Output folder: slides.csv, tiles/<slide>.csv, thumbs/<slide>.png',
      })
      .option('mpp', { type: 'number', describe: 'Target microns per pixel (default 0.5, "20x")' })
      .option('mag', {
        type: 'number',
        describe:
          'Target magnification, TRIDENT-style, instead of --mpp: 20 = 0.5 um/px, 40 = 0.25 um/px (mpp = 10 / mag)',
      })
      .option('coords-from', {
        type: 'string',
        describe:
          "A folder of TRIDENT <slide>_patches.h5 files (or TRIDENT's job folder with patches/): tile at those coordinates instead of segmenting",
      })
      .option('tile', { type: 'number', default: 256, describe: 'Tile side in pixels at the target mpp' })
      .option('tissue-threshold', {
        type: 'number',
        default: 0.5,
        describe: 'Keep a tile when its tissue fraction is at least this',
      })
      .option('default-mpp', {
        type: 'number',
        describe: 'Microns per pixel of slides whose file (and CSV row) gives none',
      })
      .option('workers', { type: 'number', default: 2, describe: 'Slides tiled at once' }) as never,
  handler: async (argv) => {
    const release = exitCleanlyOnSignals('tile', 'the same command continues with the slides not done yet');
    try {
      await tile(argv);
    } finally {
      release();
    }
  },
};

/** The command itself: tiles every slide, reports, and throws when none could be tiled. */
async function tile(argv: TileArgs): Promise<void> {
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar(
        { format: 'tiling {bar} {value}/{total} slides | {slide}', stream: process.stderr },
        cliProgress.Presets.shades_classic,
      )
    : null;
  let started = false;
  if (argv.mpp !== undefined && argv.mag !== undefined)
    throw new UserError('tile: give --mpp or --mag, not both (mpp = 10 / mag)');
  if (argv.mag !== undefined && !(argv.mag > 0))
    throw new UserError(`--mag ${argv.mag}: must be a positive magnification (20 = 0.5 um/px)`);
  const result = await runTiling({
    slides: argv.slides,
    out: argv.out,
    mpp: argv.mag !== undefined ? 10 / argv.mag : (argv.mpp ?? 0.5),
    coordsFrom: argv['coords-from'],
    tileSizePx: argv.tile,
    tissueThreshold: argv['tissue-threshold'],
    defaultMpp: argv['default-mpp'],
    workers: argv.workers,
    onSlide: (row, done, total) => {
      if (bar && !started) {
        bar.start(total, 0, { slide: '' });
        started = true;
      }
      bar?.update(done, { slide: row.slide });
      if (!bar && row.status === 'failed') process.stderr.write(`g2l-native: ${row.slide}: failed: ${row.error}\n`);
    },
  });
  bar?.stop();
  const slidesCsv = path.join(argv.out, 'slides.csv');
  const tiles = result.rows.reduce((a, r) => a + r.tiles, 0);
  process.stdout.write(
    `tiled ${result.ok} of ${result.rows.length} slides (${result.skipped} already done), ${tiles} tiles: ${slidesCsv}\n`,
  );
  if (result.ok === 0) {
    throw new UserError(
      `no slide could be tiled (${result.failed} failed): the errors are in ${slidesCsv}`,
      ExitCode.usage,
    );
  }
  if (result.failed > 0) {
    process.stderr.write(`g2l-native: warning: ${result.failed} slide(s) failed; their errors are in ${slidesCsv}\n`);
  }
}
