// `g2l-native eval`: kNN, linear probing and the robustness index on one or more feature sets, models side by
// side, written as report.json / report.md / report.html with PNG figures. With --models and --dataset it embeds
// the dataset with each model first (cached under <out>/features/<name>/) and evaluates those features.
import type { CommandModule } from 'yargs';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { readFeatureSet, selectRows, type FeatureSet } from '../data/feature-set.js';
import { readImageDataset, embedDataset } from '../data/image-dataset.js';
import { Encoder } from '../models/encoder.js';
import type { ModelDtype } from '../backends/types.js';
import { evaluateSet, PROTOCOLS, type EvalOptions, type Protocol } from '../eval/evaluate.js';
import { cka } from '../eval/cka.js';
import { writeReport, type CkaPair, type NamedSet } from '../eval/report.js';
import type { KnnVote } from '../eval/knn.js';
import { evaluateSlides, readSlideBags, readSlideLabels } from '../eval/slide.js';
import { getBackend } from '../backends/index.js';
import { exitCleanlyOnSignals } from '../util/signals.js';

export interface EvalArgs {
  /** patch (default): feature sets of tiles or images; slide: per-slide features with --labels. */
  level?: 'patch' | 'slide';
  labels?: string;
  folds?: number;
  aggregator?: string;
  abmilEpochs?: number;
  features?: string[];
  models?: string[];
  dataset?: string;
  protocol: string;
  k: string[];
  C: string[];
  knnVote: KnnVote;
  robustnessK: string[];
  bootstrap: number;
  maxIter: number;
  threads?: number;
  seed: number;
  cka: boolean;
  rbfMaxRows: number;
  out: string;
  device?: string;
  dtype?: string;
  batchSize: number;
  verbose?: boolean;
  /** The CLI's global --backend, for --models. */
  backend?: 'native' | 'js';
  force?: boolean;
}

/** "10,20" or ["10", "20"] -> [10, 20]; every value checked by `ok`. */
export function parseNumberList(
  values: string[] | string,
  flag: string,
  ok: (v: number) => boolean,
  what: string,
): number[] {
  const parts = (Array.isArray(values) ? values : [values])
    .flatMap((v) => String(v).split(','))
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (parts.length === 0) throw new UserError(`${flag} needs at least one value`);
  const out = parts.map((s) => {
    const v = Number(s);
    if (!Number.isFinite(v) || !ok(v)) throw new UserError(`${flag} ${s}: expected ${what}`);
    return v;
  });
  return [...new Set(out)];
}

/** "name:folder" (name made of letters, digits, . _ -) or a bare folder named after its basename. */
export function parseNamed(spec: string, flag: string): { name: string; dir: string } {
  const m = /^([A-Za-z0-9_.-]+):(.+)$/.exec(spec);
  // A one-letter prefix of a --features value is more likely a Windows drive letter than a name.
  if (m && (flag === '--models' || !/^[A-Za-z]$/.test(m[1]))) return { name: m[1], dir: m[2] };
  if (flag === '--models')
    throw new UserError(`--models ${spec}: expected name:<model folder>, e.g. --models g2l:./g2l-student`);
  return { name: path.basename(path.resolve(spec)), dir: spec };
}

/** Rows of a and b that share ids, both in a's order. */
function sharedRows(a: FeatureSet, b: FeatureSet): [FeatureSet, FeatureSet] {
  const index = new Map(b.ids.map((id, i) => [id, i]));
  const ra: number[] = [],
    rb: number[] = [];
  a.ids.forEach((id, i) => {
    const j = index.get(id);
    if (j !== undefined) {
      ra.push(i);
      rb.push(j);
    }
  });
  return [selectRows(a, ra), selectRows(b, rb)];
}

function progressFactory(enabled: boolean) {
  return (label: string) => {
    if (!enabled) return undefined;
    let bar: cliProgress.SingleBar | undefined;
    return (done: number, total: number) => {
      if (!bar) {
        bar = new cliProgress.SingleBar(
          {
            format: `${label.padEnd(18)} [{bar}] {value}/{total} {eta_formatted}`,
            stream: process.stderr,
            hideCursor: true,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, 0);
      }
      bar.update(done);
      if (done >= total) bar.stop();
    };
  };
}

/** Embeds the dataset with each model into <out>/features/<name>/, reusing folders made from the same inputs. */
async function embedModels(
  argv: EvalArgs,
  log: (event: string, d: Record<string, unknown>) => void,
  progress: ReturnType<typeof progressFactory>,
): Promise<{ name: string; dir: string }[]> {
  if (!argv.dataset) throw new UserError('--models needs --dataset <ImageFolder | CSV> to embed');
  const models = argv.models!.map((m) => parseNamed(m, '--models'));
  const dataset = await readImageDataset(argv.dataset);
  const out: { name: string; dir: string }[] = [];
  for (const m of models) {
    const dir = path.join(argv.out, 'features', m.name);
    const source = JSON.stringify({
      dataset: path.resolve(argv.dataset),
      model: path.resolve(m.dir),
      items: dataset.items.length,
      dtype: argv.dtype ?? null,
    });
    const cached = await fs.readFile(path.join(dir, 'source.json'), 'utf8').catch(() => undefined);
    if (cached?.trim() === source) {
      log('embed.cached', { model: m.name, dir });
      out.push({ name: m.name, dir });
      continue;
    }
    const enc = await Encoder.load(m.dir, {
      device: argv.device,
      dtype: argv.dtype as ModelDtype | undefined,
      batchSize: argv.batchSize,
      backend: argv.backend,
      force: argv.force,
    });
    try {
      log('embed.start', { model: m.name, folder: m.dir, images: dataset.items.length });
      const res = await embedDataset(enc, dataset, dir, {
        batchSize: argv.batchSize,
        onProgress: progress(`embed ${m.name}`),
        extraFiles: { 'source.json': `${source}\n` },
      });
      log('embed.done', { model: m.name, embedded: res.embedded, skipped: res.skipped.length, dim: res.dim });
      for (const s of res.skipped)
        process.stderr.write(`g2l-native: skipped unreadable image ${s.path}: ${s.reason}\n`);
    } finally {
      await enc.dispose();
    }
    out.push({ name: m.name, dir });
  }
  return out;
}

export async function runEval(argv: EvalArgs): Promise<{ files: string[]; sets: NamedSet[]; cka: CkaPair[] }> {
  const protocols = argv.protocol
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const p of protocols)
    if (!PROTOCOLS.includes(p as Protocol))
      throw new UserError(`--protocol ${p}: unknown; choose from ${PROTOCOLS.join(',')}`);
  if (protocols.length === 0) throw new UserError(`--protocol needs at least one of ${PROTOCOLS.join(',')}`);
  const positiveInt = (v: number) => Number.isInteger(v) && v >= 1;
  const opts: EvalOptions = {
    protocols: protocols as Protocol[],
    ks: parseNumberList(argv.k, '--k', positiveInt, 'a positive integer'),
    Cs: parseNumberList(argv.C, '--C', (v) => v > 0, 'a positive number'),
    vote: argv.knnVote,
    robustnessKs: parseNumberList(argv.robustnessK, '--robustness-k', positiveInt, 'a positive integer'),
    bootstrap: argv.bootstrap,
    maxIter: argv.maxIter,
    threads: argv.threads,
    seed: argv.seed,
    warn: (line) => process.stderr.write(`g2l-native: warning: ${line}\n`),
  };
  if (argv.threads !== undefined && (!Number.isInteger(argv.threads) || argv.threads < 1))
    throw new UserError(`--threads ${argv.threads}: expected a positive integer`);
  if (!Number.isInteger(argv.maxIter) || argv.maxIter < 1)
    throw new UserError(`--max-iter ${argv.maxIter}: expected a positive integer`);
  if (!Number.isInteger(argv.bootstrap) || argv.bootstrap < 0)
    throw new UserError(`--bootstrap ${argv.bootstrap}: expected a number of rounds (0 for none)`);
  if (!argv.features?.length && !argv.models?.length)
    throw new UserError(
      'name what to evaluate: --features <folder> (repeatable) or --models name:<folder> --dataset <data>',
    );
  if (argv.dataset && !argv.models?.length)
    throw new UserError('--dataset is embedded with --models name:<folder>; give at least one model');
  const logLines: string[] = [];
  const log = (event: string, detail: Record<string, unknown>) => {
    logLines.push(JSON.stringify({ time: new Date().toISOString(), event, ...detail }));
    if (argv.verbose) process.stderr.write(`${event} ${JSON.stringify(detail)}\n`);
  };
  opts.log = log;
  opts.progress = progressFactory(Boolean(process.stderr.isTTY));
  // kNN, the robustness index and the probe on the backend: the engine's libtorch (CPU BLAS, or the GPU of --device), or js.
  const backend = getBackend({ backend: argv.backend, force: argv.force });
  opts.backend = backend;
  opts.device = backend.name === 'native' ? (argv.device ?? 'cpu') : 'cpu';
  await fs.mkdir(argv.out, { recursive: true });
  try {
    const named = (argv.features ?? []).map((f) => parseNamed(f, '--features'));
    if (argv.models?.length) named.push(...(await embedModels(argv, log, opts.progress)));
    const names = new Set<string>();
    for (const n of named) {
      if (names.has(n.name))
        throw new UserError(`two feature sets are named '${n.name}'; name them with name:<folder>`);
      names.add(n.name);
    }
    const sets: NamedSet[] = [];
    const loaded: FeatureSet[] = [];
    if (argv.level === 'slide') {
      if (!argv.labels)
        throw new UserError(
          'eval --level slide needs --labels <csv> (slide, label, and split or fold, patient, site where known)',
        );
      if (argv.models?.length)
        throw new UserError(
          'eval --level slide reads per-slide features (--features): extract them with g2l-native embed --slides',
        );
      const folds = argv.folds ?? 5;
      if (!Number.isInteger(folds) || folds < 2)
        throw new UserError(`--folds ${argv.folds}: expected an integer of at least 2`);
      const aggregators = (argv.aggregator ?? 'mean')
        .split(',')
        .map((a) => a.trim())
        .filter(Boolean);
      for (const a of aggregators)
        if (a !== 'mean' && a !== 'abmil') throw new UserError(`--aggregator ${a}: unknown; choose from mean, abmil`);
      if (argv.abmilEpochs !== undefined && !(Number.isInteger(argv.abmilEpochs) && argv.abmilEpochs >= 1))
        throw new UserError(`--abmil-epochs ${argv.abmilEpochs}: expected a positive integer`);
      const labels = await readSlideLabels(argv.labels);
      for (const n of named) {
        const bags = await readSlideBags(n.dir);
        log('slide.loaded', { name: n.name, dir: n.dir, slides: bags.size });
        const slide = await evaluateSlides(n.name, bags, labels, {
          ...opts,
          folds,
          aggregators: aggregators as ('mean' | 'abmil')[],
          backend,
          device: argv.device ?? 'cpu',
          abmil: argv.abmilEpochs !== undefined ? { epochs: argv.abmilEpochs } : {},
        });
        const i = (slide.mean ?? slide.abmil)!.info;
        sets.push({
          name: n.name,
          dir: n.dir,
          report: { slide, info: { n: i.slides, dim: i.dim, classes: i.classes } },
        });
      }
      const files = await writeReport(argv.out, { sets, cka: [], options: opts, created: new Date().toISOString() });
      log('report.written', { out: argv.out, files });
      return { files, sets, cka: [] };
    }
    for (const n of named) {
      const set = await readFeatureSet(n.dir);
      loaded.push(set);
      log('set.loaded', { name: n.name, dir: n.dir, n: set.n, dim: set.d });
      const { report, roc } = await evaluateSet(set, opts);
      sets.push({ name: n.name, dir: n.dir, report, roc });
    }
    const pairs: CkaPair[] = [];
    if (argv.cka && loaded.length > 1) {
      for (let i = 0; i < loaded.length; i++) {
        for (let j = i + 1; j < loaded.length; j++) {
          const [a, b] = sharedRows(loaded[i], loaded[j]);
          if (a.n < 4) {
            log('cka.skipped', { a: sets[i].name, b: sets[j].name, shared: a.n });
            continue;
          }
          const r = await cka(a.features, a.d, b.features, b.d, a.n, {
            maxRbfRows: argv.rbfMaxRows,
            seed: argv.seed,
            backend,
            device: opts.device,
          });
          pairs.push({ a: sets[i].name, b: sets[j].name, n: a.n, ...r });
          log('cka.result', { ...pairs[pairs.length - 1] });
        }
      }
    }
    const files = await writeReport(argv.out, { sets, cka: pairs, options: opts, created: new Date().toISOString() });
    log('report.written', { out: argv.out, files });
    return { files, sets, cka: pairs };
  } finally {
    await writeFileAtomic(path.join(argv.out, 'eval.log.jsonl'), logLines.length ? `${logLines.join('\n')}\n` : '');
  }
}

function summary(sets: NamedSet[]): string {
  const lines: string[] = [];
  for (const s of sets) {
    const parts: string[] = [];
    for (const [k, e] of Object.entries(s.report.knn ?? {})) parts.push(`kNN ${k} bacc ${e.bacc.toFixed(4)}`);
    for (const [c, e] of Object.entries(s.report.linear ?? {}))
      parts.push(`linear ${c} AUC ${e.auc.toFixed(4)} bacc ${e.bacc.toFixed(4)}`);
    for (const [k, e] of Object.entries(s.report.robustness ?? {}))
      parts.push(`robustness ${k} ${e.ratio === null ? 'n/a' : e.ratio.toFixed(3)}`);
    for (const [agg, what] of [
      ['mean', 'mean-pool probe'],
      ['abmil', 'ABMIL'],
    ] as const) {
      const m = s.report.slide?.[agg];
      if (m)
        parts.push(
          `slide ${what} AUC ${m.auc.toFixed(4)}${m.std ? ` ± ${m.std.auc.toFixed(4)}` : ''} bacc ${m.bacc.toFixed(4)} (${m.info.scheme === 'folds' ? `${m.info.n_folds} folds` : 'test split'})`,
        );
    }
    lines.push(`${s.name}: ${parts.join('; ')}`);
  }
  return lines.join('\n');
}

export const evalCommand: CommandModule<object, EvalArgs> = {
  command: 'eval',
  describe: 'kNN, linear probe and robustness index on feature sets (or models embedding a dataset); writes a report',
  builder: (y) =>
    y
      .option('level', {
        choices: ['patch', 'slide'] as const,
        default: 'patch' as const,
        describe: 'patch: feature sets of tiles/images; slide: per-slide features (embed --slides) with --labels',
      })
      .option('labels', {
        type: 'string',
        describe: '--level slide: CSV with slide, label and where known split or fold, patient, site',
      })
      .option('folds', {
        type: 'number',
        describe: '--level slide without split/fold columns: patient-level folds (default 5)',
      })
      .option('aggregator', {
        type: 'string',
        describe:
          '--level slide: mean (mean pooling + probe/kNN, default), abmil (gated attention MIL), or both: mean,abmil',
      })
      .option('abmil-epochs', {
        type: 'number',
        describe:
          '--level slide: ABMIL training epochs (default 20; early stopping with patience 5 on the validation slides)',
      })
      .option('features', {
        type: 'string',
        array: true,
        describe: 'Feature-set folder, [name:]<folder>; repeat for models side by side',
      })
      .option('models', {
        type: 'string',
        array: true,
        describe: 'name:<model folder> to embed --dataset with (features cached under <out>/features/<name>)',
      })
      .option('dataset', {
        type: 'string',
        describe: 'ImageFolder (root/<class>/<image>) or CSV (path,label,split,site,slide) for --models',
      })
      .option('protocol', {
        type: 'string',
        default: 'knn,linear,robustness',
        describe: 'Comma-separated: knn, linear, robustness',
      })
      .option('k', { type: 'string', array: true, default: ['20'], describe: 'kNN k values, e.g. 10,20' })
      .option('C', {
        type: 'string',
        array: true,
        default: ['1'],
        describe: 'Linear-probe C values (inverse L2 strength), e.g. 0.01,1',
      })
      .option('knn-vote', {
        choices: ['weighted', 'majority'] as const,
        default: 'weighted' as const,
        describe: 'DINOv2 weighted vote (exp(sim/0.07)) or majority',
      })
      .option('robustness-k', {
        type: 'string',
        array: true,
        default: ['3,5,10,20'],
        describe: 'Robustness-index k values',
      })
      .option('bootstrap', {
        type: 'number',
        default: 0,
        describe: 'Bootstrap rounds for 95% intervals on test metrics (e.g. 1000; 0: none)',
      })
      .option('threads', {
        type: 'number',
        describe: 'Threads for the kNN and robustness searches (default: all CPUs for large searches)',
      })
      .option('max-iter', {
        type: 'number',
        default: 1000,
        describe: 'L-BFGS iteration cap of the linear probe (it stops at max |gradient| 1e-8)',
      })
      .option('seed', { type: 'number', default: 0, describe: 'Seed for bootstrap resamples and the RBF CKA subset' })
      .option('cka', {
        type: 'boolean',
        default: true,
        describe: 'CKA between every pair of feature sets (--no-cka to skip)',
      })
      .option('rbf-max-rows', {
        type: 'number',
        default: 5000,
        describe: 'RBF CKA uses a seeded random subset above this many rows',
      })
      .option('out', {
        type: 'string',
        demandOption: true,
        describe: 'Output folder for report.json, report.md, report.html, figures/',
      })
      .option('device', {
        type: 'string',
        describe:
          'Device for --models, and for kNN and the probe on the native engine: cpu, cuda, cuda:<i> (default: cuda when available for --models, cpu for evaluation)',
      })
      .option('dtype', {
        type: 'string',
        describe: 'Model dtype for --models: fp32, fp16, bf16 (default: fp16 on CUDA, fp32 on CPU)',
      })
      .option('batch-size', { type: 'number', default: 32, describe: 'Images per batch for --models' })
      .option('force', {
        type: 'boolean',
        default: false,
        describe: 'On the js backend, run models large enough to take hours (--models)',
      }) as never,
  handler: async (argv) => {
    const release = exitCleanlyOnSignals('eval', 'the same command reuses the embeddings of the models already done');
    let result: Awaited<ReturnType<typeof runEval>>;
    try {
      result = await runEval(argv);
    } finally {
      release();
    }
    const { files, sets } = result;
    process.stdout.write(`${summary(sets)}\nwrote ${files.map((f) => path.join(argv.out, f)).join(', ')}\n`);
  },
};
