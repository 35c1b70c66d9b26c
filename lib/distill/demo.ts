// The demo a newcomer runs first (`npm run demo`): the whole G2L pipeline at toy size on the CPU, in a few minutes.
//
//   synthetic slides (pyramidal SVS/TIFF, tissue-like texture on glass) -> tile manifests (3 training slides, 1 held out)
//   -> a small random teacher of H-optimus-0's family (timm layout) and a smaller random student of Hibou's (HF layout)
//   -> linear CKA between student and teacher features of held-out tiles -> distillation -> CKA again
//   -> the protocol's evaluation (lib/protocol/run.ts) on two small tasks whose labels the slides' own tissue decides
//      (8 more synthetic slides, half with dense nuclei and half with sparse): a patch task (tiles of those slides,
//      train/test by slide) and a slide task (the slides, 4 folds), for the teacher, the student before and after
//   -> <out>/report.json { steps, stoppedBy, loss: { first, last }, cka: { before, after }, tasks }, report.md, loss.png,
//      <out>/protocol/ (the protocol's report, features and task tiles)
//
// <out> is also the run folder (config.json, log.jsonl, checkpoints/, student/), so `g2l-native distill --resume
// --out <out>` and every other command work on it as on a real run.
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { getBackend } from '../backends/index.js';
import { readModelWeights, writeSafetensors } from '../backends/js/safetensors.js';
import type { Uint8Tensor } from '../backends/index.js';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { linearCka } from '../eval/cka.js';
import { lineChartSvg, svgToPng } from '../eval/plot.js';
import { makeSyntheticSlides } from '../slides/synthetic.js';
import { runTiling } from '../slides/tile-run.js';
import type { Distiller } from './distiller.js';
import { readLog, runDistill } from './run.js';
import { openTileSource } from './tiles.js';
import sharp from 'sharp';
import { SlideTileReader } from '../data/batches.js';
import { TileSampler } from '../data/sampler.js';
import {
  evaluateStage,
  featuresStage,
  protocolMarkdown,
  type ProtocolFile,
  type ProtocolTable,
} from '../protocol/run.js';
import { distFromEnv } from '../parallel/env.js';
import { launchDemoWorkers, PREPARED_ENV } from '../parallel/demo.js';
import { followLauncher } from '../parallel/launcher.js';

export interface DemoOptions {
  out: string;
  steps?: number;
  batchSize?: number;
  nproc?: number;
  seed?: number;
  progress?: boolean;
  log?: (message: string) => void;
}

export interface DemoReport {
  /** The protocol's table on the demo's two tasks (absent on ranks other than 0). */
  tasks?: ProtocolTable;
  steps: number;
  /** completed, or early-stopping with the rule's reason in stopReason. */
  stoppedBy: string;
  stopReason?: string;
  loss: { first: number; last: number };
  cka: { before: number; after: number };
}

const MARKER = '.g2l-demo';
/** What a demo writes into <out>; a rerun replaces exactly these. */
const DEMO_ENTRIES = [
  MARKER,
  'slides',
  'tiles',
  'heldout-tiles',
  'models',
  'checkpoints',
  'student',
  'config.json',
  'log.jsonl',
  'report.json',
  'report.md',
  'loss.png',
  'task',
  'protocol',
];
/** The task slides' nucleus densities: slide i is dense (odd i) or sparse (even i). */
const TASK_DENSITY = (i: number) => (i % 2 ? 0.75 : 0.15);
const TASK_SLIDES = 8;
const HELD_OUT_TILES = 64;
const STUDENT_WEIGHT_SCALE = 8;

// The toy models: the real families and layouts at a size a laptop trains in minutes.
const TEACHER_CONFIG = {
  architecture: 'vit_giant_patch14_reg4_dinov2',
  num_classes: 0,
  global_pool: 'token',
  model_args: { img_size: 224, embed_dim: 96, depth: 3, num_heads: 4, init_values: 1.0 },
  pretrained_cfg: {
    input_size: [3, 224, 224],
    mean: [0.707223, 0.578729, 0.703617],
    std: [0.211883, 0.230117, 0.177517],
    num_classes: 0,
  },
};
// Written as text: transformers validates float fields strictly, and JSON.stringify would write 1.0 as 1.
const STUDENT_CONFIG_JSON = `{
  "architectures": ["Dinov2WithRegistersModel"],
  "model_type": "dinov2_with_registers",
  "hidden_size": 48,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_register_tokens": 4,
  "mlp_ratio": 4,
  "use_swiglu_ffn": true,
  "hidden_act": "gelu",
  "image_size": 224,
  "patch_size": 14,
  "num_channels": 3,
  "layer_norm_eps": 1e-06,
  "layerscale_value": 1.0,
  "qkv_bias": true,
  "drop_path_rate": 0.0,
  "hidden_dropout_prob": 0.0,
  "attention_probs_dropout_prob": 0.0,
  "initializer_range": 0.02,
  "apply_layernorm": true
}
`;
const STUDENT_CONFIG = JSON.parse(STUDENT_CONFIG_JSON) as { hidden_size: number; num_hidden_layers: number };
const STUDENT_PREPROCESSOR = {
  do_normalize: true,
  image_mean: [0.7068, 0.5755, 0.722],
  image_std: [0.195, 0.2316, 0.1816],
  crop_size: { height: 224, width: 224 },
  size: { shortest_edge: 224 },
};

async function prepareOut(out: string): Promise<void> {
  if (existsSync(out)) {
    const entries = await fs.readdir(out);
    if (entries.length > 0 && !entries.includes(MARKER)) {
      throw new UserError(
        `${out} exists and is not a demo folder: pass --out <new folder> (the demo only replaces its own output)`,
      );
    }
    for (const e of DEMO_ENTRIES) await fs.rm(path.join(out, e), { recursive: true, force: true });
  }
  await fs.mkdir(out, { recursive: true });
  await fs.writeFile(
    path.join(out, MARKER),
    "written by g2l-native demo; a rerun replaces this folder's demo output\n",
  );
}

/** Writes a model folder with random weights of the given config (the engine builds and exports it). */
async function randomModel(dir: string, files: Record<string, object | string>, seed: number): Promise<void> {
  const spec = `${dir}.config`;
  await fs.mkdir(spec, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    await fs.writeFile(
      path.join(spec, name),
      typeof content === 'string' ? content : `${JSON.stringify(content, null, 2)}\n`,
    );
  }
  const handle = await getBackend({ backend: 'native' }).createModel(
    { folder: spec },
    { seed, device: 'cpu', dtype: 'fp32' },
  );
  try {
    await handle.exportTo(dir);
  } finally {
    await handle.dispose();
    await fs.rm(spec, { recursive: true, force: true });
  }
}

/**
 * Scales a model's weight matrices in place. A random ViT at timm's init (std 0.02) is nearly linear in its input, so
 * any two such networks agree on tiles (linear CKA about 0.999) and the demo would have nothing to show; a student
 * drawn at a larger scale starts from a genuinely different representation, as a pretrained Hibou does.
 */
async function scaleWeightMatrices(folder: string, factor: number): Promise<void> {
  const weights = readModelWeights(folder);
  for (const [name, t] of weights) {
    if (t.shape.length !== 2 || /norm|token|position/.test(name)) continue;
    for (let i = 0; i < t.data.length; i++) t.data[i] *= factor;
  }
  await writeSafetensors(path.join(folder, 'model.safetensors'), weights);
}

async function ckaOf(distiller: Distiller, tiles: Uint8Tensor): Promise<number> {
  const s = await distiller.features(tiles, 'student');
  const t = await distiller.features(tiles, 'teacher');
  return linearCka(s.data, s.shape[1], t.data, t.shape[1], s.shape[0]).linear;
}

async function lossCurvePng(steps: number[], losses: number[]): Promise<Uint8Array> {
  const svg = lineChartSvg([{ name: 'log-sum loss', x: steps, y: losses }], {
    title: 'Distillation loss (demo)',
    xLabel: 'step',
    yLabel: 'loss',
  });
  return svgToPng(svg);
}

export async function runDemo(options: DemoOptions): Promise<DemoReport> {
  const out = path.resolve(options.out);
  const say = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const seed = options.seed ?? 0;
  const steps = options.steps ?? 300;
  const batchSize = options.batchSize ?? 16;
  // Data parallelism (lib/parallel/demo.ts): with --nproc N this process prepares the slides, tiles and models, then
  // N workers (this demo again, told so by PREPARED_ENV) distil them; rank 0 writes the report, returned here.
  const nproc = options.nproc ?? 1;
  const dist = distFromEnv();
  const prepared = process.env[PREPARED_ENV] === out;
  if (!Number.isInteger(nproc) || nproc < 1)
    throw new UserError(`demo: --nproc must be a positive integer, got ${options.nproc}`);
  if (nproc > 1 && dist)
    throw new UserError('demo: --nproc was given to a process that already has a rank (RANK/WORLD_SIZE are set)');
  if (prepared) followLauncher();
  else await prepareDemoInputs(out, seed, say);
  if (nproc > 1) return launchDemoWorkers({ out, steps, batchSize, seed, nproc });
  const teacher = path.join(out, 'models', 'teacher');
  const student = path.join(out, 'models', 'student');
  const primary = !dist || dist.rank === 0;

  const heldOutSource = await openTileSource(path.join(out, 'heldout-tiles'), { seed, tileSizePx: 256 });
  const heldOutTiles = await heldOutSource.batch(0, Math.min(HELD_OUT_TILES, heldOutSource.size));
  await heldOutSource.close();

  let before = NaN;
  let after = NaN;
  if (primary)
    say(
      `g2l-native demo: distilling for ${steps} steps of ${batchSize} tiles on the CPU${dist ? ` in each of ${dist.worldSize} processes` : ''}`,
    );
  const result = await runDistill({
    out,
    input: {
      teacher,
      student,
      slides: path.join(out, 'tiles'),
      steps,
      batchSize,
      seed,
      device: 'cpu',
      checkpointEvery: Math.max(50, Math.ceil(steps / 4)),
      // A random toy student learns faster than a pretrained Hibou: a larger peak learning rate, a short warm-up.
      optimizer: { lr: 1e-3, warmupSteps: Math.min(20, Math.floor(steps / 10)) },
    },
    progress: options.progress && primary,
    log: say,
    dist,
    onReady: async (d) => {
      if (primary) before = await ckaOf(d, heldOutTiles);
    },
    onDone: async (d) => {
      if (primary) after = await ckaOf(d, heldOutTiles);
    },
  });
  if (!primary)
    return {
      steps: result.stepsDone,
      stoppedBy: result.stoppedBy,
      loss: { first: NaN, last: NaN },
      cka: { before, after },
    };
  // The protocol's evaluation on the two tasks: the teacher, the student before (its initial weights) and after.
  say('g2l-native demo: evaluating teacher, student before and after on a patch task and a slide task');
  const stages = {};
  const models: [string, string][] = [
    ['teacher', teacher],
    ['student', student],
    ['g2l', path.join(out, 'student')],
  ];
  const datasets = demoDatasets(out);
  const protocolOut = path.join(out, 'protocol');
  const featureDirs = await featuresStage({
    out: protocolOut,
    models,
    datasets,
    tiling: { mpp: 0.5, tile: 256, tissueThreshold: 0.25 },
    device: 'cpu',
    batchSize: 16,
    stages,
    say: () => {},
    stamp: { g2l: { steps: result.stepsDone, seed } },
  });
  const tasks = await evaluateStage({
    out: protocolOut,
    models: models.map(([m]) => m),
    datasets,
    featureDirs,
    eval: { k: [5], C: [1], folds: 4, aggregators: ['mean'], seed },
    device: 'cpu',
  });
  return writeDemoReport(out, result, before, after, tasks);
}

/** The demo's inputs in `out`: synthetic slides, their tile manifests, the random teacher and student. */
async function prepareDemoInputs(out: string, seed: number, say: (m: string) => void): Promise<void> {
  await prepareOut(out);
  say('g2l-native demo: writing 4 synthetic slides');
  const set = await makeSyntheticSlides(path.join(out, 'slides'), {
    count: 4,
    seed: seed + 1,
    width: 3072,
    height: 2304,
  });
  const [heldOut, ...training] = set.slides;
  const csv = (rows: typeof set.slides) => `slide,path\n${rows.map((r) => `${r.name},${r.file}`).join('\n')}\n`;
  await fs.writeFile(path.join(out, 'slides', 'train.csv'), csv(training));
  await fs.writeFile(path.join(out, 'slides', 'heldout.csv'), csv([heldOut]));
  say('g2l-native demo: tiling them at 0.5 um/px (3 for training, 1 held out)');
  for (const [csvName, dir] of [
    ['train.csv', 'tiles'],
    ['heldout.csv', 'heldout-tiles'],
  ]) {
    const r = await runTiling({
      slides: path.join(out, 'slides', csvName),
      out: path.join(out, dir),
      mpp: 0.5,
      tileSizePx: 256,
    });
    if (r.ok === 0)
      throw new UserError(`demo: the synthetic slides could not be tiled (${r.rows.map((x) => x.error).join('; ')})`);
  }

  say('g2l-native demo: creating a random teacher (timm H-optimus-0 family) and a smaller student (HF Hibou family)');
  const teacher = path.join(out, 'models', 'teacher');
  const student = path.join(out, 'models', 'student');
  await prepareDemoTasks(out, seed);
  await randomModel(teacher, { 'config.json': TEACHER_CONFIG }, seed + 11);
  await randomModel(
    student,
    { 'config.json': STUDENT_CONFIG_JSON, 'preprocessor_config.json': STUDENT_PREPROCESSOR },
    seed + 12,
  );
  await scaleWeightMatrices(student, STUDENT_WEIGHT_SCALE);
}

/** The demo's two tasks, as protocol datasets. */
function demoDatasets(out: string): ProtocolFile['datasets'] {
  return [
    { name: 'patch-density', kind: 'patch', data: path.join(out, 'task', 'patches.csv') },
    {
      name: 'slide-density',
      kind: 'slide',
      slides: path.join(out, 'task', 'slides'),
      labels: path.join(out, 'task', 'labels.csv'),
    },
  ];
}

/**
 * 8 synthetic slides whose nucleus density is their label (dense / sparse), tiled; labels.csv for the slide task (4
 * folds, two slides each, one of each class); patches.csv and PNG tiles for the patch task (4 tiles a slide, slides
 * 1-6 train and 7-8 test; two sites, by slide).
 */
async function prepareDemoTasks(out: string, seed: number): Promise<void> {
  const dir = path.join(out, 'task');
  const set = await makeSyntheticSlides(path.join(dir, 'slides'), {
    count: TASK_SLIDES,
    width: 1024,
    height: 1024,
    seed: seed + 31,
    density: TASK_DENSITY,
  });
  const label = (i: number) => (TASK_DENSITY(i) > 0.45 ? 'dense' : 'sparse');
  await fs.writeFile(
    path.join(dir, 'labels.csv'),
    `slide,label,fold\n${set.slides.map((s, i) => `${s.name},${label(i)},${Math.floor(i / 2)}`).join('\n')}\n`,
  );
  const r = await runTiling({
    slides: path.join(dir, 'slides'),
    out: path.join(dir, 'tiles'),
    mpp: 0.5,
    tileSizePx: 256,
    tissueThreshold: 0.25,
  });
  if (r.ok < TASK_SLIDES)
    throw new UserError(
      `demo: the task slides could not all be tiled (${r.rows
        .map((x) => x.error)
        .filter(Boolean)
        .join('; ')})`,
    );
  const sampler = await TileSampler.open(path.join(dir, 'tiles'), { batchSize: 1 });
  const reader = new SlideTileReader();
  const rows = ['path,label,split,site,slide'];
  await fs.mkdir(path.join(dir, 'patches'), { recursive: true });
  try {
    for (const [i, s] of set.slides.entries()) {
      const slide = sampler.slides.find((x) => x.name === s.name)!;
      const refs = Array.from(slide.tiles.subarray(0, 4), (k) => sampler.tiles[k]);
      const data = new Uint8Array(refs.length * 256 * 256 * 3);
      await reader.readInto(refs, 256, data, { strict: true });
      for (let k = 0; k < refs.length; k++) {
        const file = path.join('patches', `${s.name}_${k}.png`);
        await sharp(Buffer.from(data.buffer, k * 256 * 256 * 3, 256 * 256 * 3), {
          raw: { width: 256, height: 256, channels: 3 },
        })
          .png()
          .toFile(path.join(dir, file));
        rows.push(`${file},${label(i)},${i < 6 ? 'train' : 'test'},${i % 4 < 2 ? 'A' : 'B'},${s.name}`);
      }
    }
  } finally {
    await reader.close();
  }
  await fs.writeFile(path.join(dir, 'patches.csv'), `${rows.join('\n')}\n`);
}

async function writeDemoReport(
  out: string,
  result: Awaited<ReturnType<typeof runDistill>>,
  before: number,
  after: number,
  tasks: ProtocolTable,
): Promise<DemoReport> {
  const log = await readLog(out);
  const trainingSlides =
    (await fs.readFile(path.join(out, 'slides', 'train.csv'), 'utf8')).trim().split('\n').length - 1;
  const report: DemoReport = {
    steps: result.stepsDone,
    stoppedBy: result.stoppedBy,
    ...(result.stopReason ? { stopReason: result.stopReason } : {}),
    loss: { first: log[0].loss, last: log[log.length - 1].loss },
    cka: { before, after },
    tasks,
  };
  await writeFileAtomic(path.join(out, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  await writeFileAtomic(
    path.join(out, 'loss.png'),
    await lossCurvePng(
      log.map((l) => l.step),
      log.map((l) => l.loss),
    ),
  );
  const md = [
    '# g2l-native demo',
    '',
    `A random ${TEACHER_CONFIG.architecture} teacher (timm layout, dim ${TEACHER_CONFIG.model_args.embed_dim}, depth ${TEACHER_CONFIG.model_args.depth}) ` +
      `distilled into a random Dinov2WithRegisters student (Hugging Face layout, dim ${STUDENT_CONFIG.hidden_size}, ` +
      `${STUDENT_CONFIG.num_hidden_layers} layers, weight matrices drawn at ${STUDENT_WEIGHT_SCALE}x timm's scale so that it starts ` +
      `from a representation unlike the teacher's) on ${trainingSlides} synthetic slides, with G2L's loss, augmentation and schedules.`,
    '',
    '| | value |',
    '| --- | --- |',
    `| steps | ${report.steps}${result.stopReason ? ` (early stopping: ${result.stopReason})` : ''} |`,
    `| loss, first step | ${report.loss.first.toFixed(4)} |`,
    `| loss, last step | ${report.loss.last.toFixed(4)} |`,
    `| linear CKA student vs teacher, held-out tiles, before | ${before.toFixed(4)} |`,
    `| linear CKA student vs teacher, held-out tiles, after | ${after.toFixed(4)} |`,
    '',
    '![loss curve](loss.png)',
    '',
    '## Two small tasks, as the protocol evaluates them',
    '',
    `Eight more synthetic slides, half with dense nuclei and half with sparse: the label is in the tissue. Patch task: the ` +
      "probe's balanced accuracy on held-out slides' tiles; slide task: AUC of mean pooling + the probe over 4 folds. " +
      'The full evaluation is in `protocol/report.md`.',
    '',
    ...protocolMarkdown(tasks)
      .split('\n')
      .slice(4)
      .map((l) =>
        l
          .replace('![the table as bars](table.png)', '![the table as bars](protocol/table.png)')
          .replace(/^## /, '### '),
      ),
    `The distilled student is in \`student/\` (loads with transformers' AutoModel); the run's log, configuration and ` +
      'checkpoints are next to it.',
    '',
  ].join('\n');
  await writeFileAtomic(path.join(out, 'report.md'), md);
  return report;
}
