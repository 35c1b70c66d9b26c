// The paper's whole protocol in one command (`g2l-native protocol <file.yaml>`): slides + teacher + student +
// evaluation datasets in, the paper's table out. Stages, each cached in the output folder and reused when its inputs
// have not changed, so that an interrupted or extended protocol resumes where it stopped:
//
//   tile      the training slides -> <out>/tiles                           (the tile command; it resumes by slide)
//   distill   teacher -> student on those tiles -> <out>/distill           (a run folder; resumes from its checkpoints)
//   features  every model (teacher, student before and after distillation, any extra models) on every dataset:
//             patch datasets (ImageFolder or CSV) -> <out>/features/<dataset>/<model>/ (feature sets);
//             slide datasets -> <out>/datasets/<dataset>/tiles, then <out>/features/<dataset>/<model>/<slide>.h5
//   evaluate  kNN, linear probe (and the robustness index where sites are given) on patch datasets; mean pooling (and
//             ABMIL if asked) on slide datasets; CKA of the student before and after against the teacher
//   report    <out>/report.json, report.md, report.html: one row per model, one column per dataset, best in bold
//
// The file (YAML or JSON; paths relative to it):
//   slides: <folder or CSV of training slides>       tiling: { mpp: 0.5, tile: 256 }   (optional)
//   teacher: <model folder>   student: <model folder>   models: { <name>: <model folder>, ... }   (optional extras)
//   distill: { <any run-config key of `distill`> }   (steps is required)
//   datasets: [ { name, kind: patch, data: <ImageFolder | CSV> } | { name, kind: slide, slides: <folder | CSV>, labels: <CSV> } ]
//   eval: { k: [20], C: [1], folds: 5, aggregators: [mean], seed: 0 }   device: cpu | cuda   batchSize: 32
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { z } from 'zod';
import { UserError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { runTiling } from '../slides/tile-run.js';
import { runDistill } from '../distill/run.js';
import type { RunConfigInput } from '../distill/config.js';
import { Encoder } from '../models/encoder.js';
import { embedDataset, readImageDataset } from '../data/image-dataset.js';
import { extractSlides } from '../data/extract.js';
import { matchById, readFeatureSet } from '../data/feature-set.js';
import { evaluateSet, type EvalOptions, type SetReport } from '../eval/evaluate.js';
import { evaluateSlides, readSlideBags, readSlideLabels } from '../eval/slide.js';
import { cka } from '../eval/cka.js';
import { getBackend } from '../backends/index.js';
import { groupedBarsSvg, svgToPng } from '../eval/plot.js';

const datasetSchema = z.discriminatedUnion('kind', [
  z.object({ name: z.string().regex(/^[A-Za-z0-9_.-]+$/), kind: z.literal('patch'), data: z.string() }).strict(),
  z
    .object({
      name: z.string().regex(/^[A-Za-z0-9_.-]+$/),
      kind: z.literal('slide'),
      slides: z.string(),
      labels: z.string(),
    })
    .strict(),
]);

export const protocolSchema = z
  .object({
    slides: z.string(),
    tiling: z
      .object({
        mpp: z.number().positive().default(0.5),
        tile: z.number().int().positive().default(256),
        tissueThreshold: z.number().min(0).max(1).default(0.5),
      })
      .strict()
      .default({ mpp: 0.5, tile: 256, tissueThreshold: 0.5 }),
    teacher: z.string(),
    student: z.string(),
    models: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/), z.string()).default({}),
    distill: z.record(z.string(), z.unknown()).and(z.object({ steps: z.number().int().positive() })),
    datasets: z.array(datasetSchema).min(1),
    eval: z
      .object({
        k: z.array(z.number().int().positive()).default([20]),
        C: z.array(z.number().positive()).default([1]),
        folds: z.number().int().min(2).default(5),
        aggregators: z.array(z.enum(['mean', 'abmil'])).default(['mean']),
        seed: z.number().int().min(0).default(0),
      })
      .strict()
      .default({ k: [20], C: [1], folds: 5, aggregators: ['mean'], seed: 0 }),
    device: z.string().default('cpu'),
    batchSize: z.number().int().positive().default(32),
  })
  .strict();

export type ProtocolFile = z.infer<typeof protocolSchema>;

/** Reads and validates a protocol file; relative paths become relative to it. */
export function readProtocol(file: string): ProtocolFile {
  let raw: unknown;
  try {
    const text = readFileSync(file, 'utf8');
    raw = /\.json$/i.test(file) ? JSON.parse(text) : yaml.load(text);
  } catch (e) {
    throw new UserError(`${file}: cannot read the protocol (${(e as Error).message.split('\n')[0]})`);
  }
  const parsed = protocolSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    throw new UserError(
      `${file}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ')}`,
    );
  }
  const p = parsed.data;
  const abs = (v: string) => path.resolve(path.dirname(file), v);
  return {
    ...p,
    slides: abs(p.slides),
    teacher: abs(p.teacher),
    student: abs(p.student),
    models: Object.fromEntries(Object.entries(p.models).map(([k, v]) => [k, abs(v)])),
    datasets: p.datasets.map((d) =>
      d.kind === 'patch' ? { ...d, data: abs(d.data) } : { ...d, slides: abs(d.slides), labels: abs(d.labels) },
    ),
  };
}

export interface ProtocolOptions {
  out: string;
  protocol: ProtocolFile;
  log?: (line: string) => void;
  /** Stop after this stage (tests of resuming). */
  stopAfter?: 'tile' | 'distill' | 'features';
}

export interface ProtocolResult {
  out: string;
  /** Stage name -> 'ran' | 'cached'. */
  stages: Record<string, 'ran' | 'cached'>;
  table: ProtocolTable;
}

/** The paper's table: one row per model, one column per dataset (and CKA / robustness beside it). */
export interface ProtocolTable {
  columns: { dataset: string; metric: string }[];
  rows: { model: string; cells: (number | null)[] }[];
  cka: { dataset: string; before: number; after: number }[];
  /** The robustness index (PathoROB ratio at k = 10, or the largest k the test split allows) of each model on the
   *  patch datasets whose CSV gives sites and slides. */
  robustness: { dataset: string; model: string; k: number; ratio: number | null }[];
}

/** A stage's record: what it was made from. Equal inputs -> the stage is done. */
async function stageDone(file: string, inputs: unknown): Promise<boolean> {
  const text = await fs.readFile(file, 'utf8').catch(() => null);
  return text !== null && text.trim() === JSON.stringify(inputs);
}

async function markDone(file: string, inputs: unknown): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, `${JSON.stringify(inputs)}\n`);
}

export async function runProtocol(options: ProtocolOptions): Promise<ProtocolResult> {
  const p = options.protocol;
  const out = path.resolve(options.out);
  const say = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const stages: ProtocolResult['stages'] = {};
  await fs.mkdir(out, { recursive: true });
  await writeFileAtomic(path.join(out, 'protocol.json'), `${JSON.stringify(p, null, 2)}\n`);

  // ---- tile ---------------------------------------------------------------------------------------------------------
  const tiles = path.join(out, 'tiles');
  const tileInputs = { slides: p.slides, ...p.tiling };
  if (await stageDone(path.join(tiles, 'stage.json'), tileInputs)) stages.tile = 'cached';
  else {
    say(`protocol: tiling ${p.slides}`);
    const r = await runTiling({
      slides: p.slides,
      out: tiles,
      mpp: p.tiling.mpp,
      tileSizePx: p.tiling.tile,
      tissueThreshold: p.tiling.tissueThreshold,
    });
    if (r.ok === 0)
      throw new UserError(`protocol: no training slide could be tiled (see ${path.join(tiles, 'slides.csv')})`);
    await markDone(path.join(tiles, 'stage.json'), tileInputs);
    stages.tile = 'ran';
  }
  const empty: ProtocolTable = { columns: [], rows: [], cka: [], robustness: [] };
  if (options.stopAfter === 'tile') return { out, stages, table: empty };

  // ---- distill ------------------------------------------------------------------------------------------------------
  const run = path.join(out, 'distill');
  const distillInput: RunConfigInput = {
    ...(p.distill as RunConfigInput),
    teacher: p.teacher,
    student: p.student,
    slides: tiles,
    device: p.device,
  };
  const distillInputs = { ...distillInput, tiles: tileInputs };
  const student = path.join(run, 'student');
  if ((await stageDone(path.join(run, 'stage.json'), distillInputs)) && existsSync(student)) stages.distill = 'cached';
  else {
    const resume = existsSync(path.join(run, 'config.json')) && existsSync(path.join(run, 'checkpoints'));
    say(
      `protocol: distilling ${path.basename(p.teacher)} into ${path.basename(p.student)}${resume ? ' (resuming)' : ''}`,
    );
    await runDistill({ out: run, input: distillInput, resume, log: say });
    await markDone(path.join(run, 'stage.json'), distillInputs);
    stages.distill = 'ran';
  }
  if (options.stopAfter === 'distill') return { out, stages, table: empty };

  // ---- features, evaluation, report --------------------------------------------------------------------------------
  const models: [string, string][] = [
    ['teacher', p.teacher],
    ['student', p.student],
    ['g2l', student],
    ...Object.entries(p.models),
  ];
  const featureDirs = await featuresStage({
    out,
    models,
    datasets: p.datasets,
    tiling: p.tiling,
    device: p.device,
    batchSize: p.batchSize,
    stages,
    say,
    stamp: { g2l: distillInputs },
  });
  if (options.stopAfter === 'features') return { out, stages, table: empty };
  const table = await evaluateStage({
    out,
    models: models.map(([m]) => m),
    datasets: p.datasets,
    featureDirs,
    eval: p.eval,
    device: p.device,
  });
  stages.report = 'ran';
  return { out, stages, table };
}

export interface FeaturesStageOptions {
  out: string;
  /** [name, model folder]: the rows of the table. */
  models: [string, string][];
  datasets: ProtocolFile['datasets'];
  tiling: ProtocolFile['tiling'];
  device: string;
  batchSize: number;
  stages: ProtocolResult['stages'];
  say: (m: string) => void;
  /** Extra inputs a model's features depend on beyond its folder (a distilled student: the distillation's). */
  stamp?: Record<string, unknown>;
}

/**
 * Features of every model on every dataset, each (dataset, model) cached under <out>/features/<dataset>/<model> with
 * the inputs it was made from; slide datasets are tiled first (<out>/datasets/<dataset>/tiles). Returns the folders.
 */
export async function featuresStage(o: FeaturesStageOptions): Promise<Map<string, string>> {
  const { out, say, stages } = o;
  const featureDirs = new Map<string, string>(); // `${dataset}/${model}` -> folder
  for (const d of o.datasets) {
    if (d.kind === 'slide') {
      const dtiles = path.join(out, 'datasets', d.name, 'tiles');
      const inputs = { slides: d.slides, ...o.tiling };
      if (!(await stageDone(path.join(dtiles, 'stage.json'), inputs))) {
        say(`protocol: tiling the slides of ${d.name}`);
        await runTiling({
          slides: d.slides,
          out: dtiles,
          mpp: o.tiling.mpp,
          tileSizePx: o.tiling.tile,
          tissueThreshold: o.tiling.tissueThreshold,
        });
        await markDone(path.join(dtiles, 'stage.json'), inputs);
      }
    }
    let images: Awaited<ReturnType<typeof readImageDataset>> | undefined; // read once per dataset, when needed
    for (const [name, folder] of o.models) {
      const dir = path.join(out, 'features', d.name, name);
      featureDirs.set(`${d.name}/${name}`, dir);
      const inputs = {
        dataset: d,
        model: folder,
        batchSize: o.batchSize,
        ...(o.stamp?.[name] ? { made: o.stamp[name] } : {}),
      };
      const key = `features ${d.name}/${name}`;
      if (await stageDone(path.join(out, 'features', d.name, `${name}.stage.json`), inputs)) {
        stages[key] = 'cached';
        continue;
      }
      say(`protocol: features of ${d.name} with ${name}`);
      const enc = await Encoder.load(folder, { device: o.device, batchSize: o.batchSize });
      try {
        if (d.kind === 'patch') {
          images ??= await readImageDataset(d.data);
          await embedDataset(enc, images, dir, { batchSize: o.batchSize });
        } else {
          const r = await extractSlides({
            manifest: path.join(out, 'datasets', d.name, 'tiles'),
            out: dir,
            encoder: enc,
            modelName: folder,
          });
          if (r.failed.length)
            say(
              `protocol: ${r.failed.length} slide(s) of ${d.name} failed (see ${path.join(dir, 'slides.csv')}); they are left out`,
            );
        }
      } finally {
        await enc.dispose();
      }
      await markDone(path.join(out, 'features', d.name, `${name}.stage.json`), inputs);
      stages[key] = 'ran';
    }
  }
  return featureDirs;
}

export interface EvaluateStageOptions {
  out: string;
  /** Row names; 'teacher', 'student' and 'g2l' among them give the CKA before/after. */
  models: string[];
  datasets: ProtocolFile['datasets'];
  featureDirs: Map<string, string>;
  eval: ProtocolFile['eval'];
  device: string;
}

/** Evaluation of every model's features on every dataset, and the report: <out>/report.json, .md, .html, table.png. */
export async function evaluateStage(o: EvaluateStageOptions): Promise<ProtocolTable> {
  const { out, featureDirs } = o;
  const models = o.models.map((m): [string] => [m]);
  const e = o.eval;
  // kNN and the probe on the default backend (the engine's libtorch; js where the process allows the fallback).
  const backend = getBackend();
  const evalOpts: EvalOptions = {
    protocols: ['knn', 'linear'],
    ks: e.k,
    Cs: e.C,
    vote: 'weighted',
    robustnessKs: [3, 5, 10, 20],
    maxIter: 1000,
    bootstrap: 0,
    seed: e.seed,
    backend,
    device: backend.name === 'native' ? o.device : 'cpu',
  };
  const columns: ProtocolTable['columns'] = [];
  const cells = new Map<string, (number | null)[]>(models.map(([m]) => [m, []]));
  const reports: Record<string, Record<string, SetReport>> = {};
  const ckaRows: ProtocolTable['cka'] = [];
  const robustRows: ProtocolTable['robustness'] = [];
  for (const d of o.datasets) {
    reports[d.name] = {};
    if (d.kind === 'patch') {
      columns.push({ dataset: d.name, metric: `linear C=${e.C[0]} bacc` });
      const sets = new Map<string, Awaited<ReturnType<typeof readFeatureSet>>>();
      for (const [m] of models) {
        const set = await readFeatureSet(featureDirs.get(`${d.name}/${m}`)!);
        sets.set(m, set);
        // The robustness index where the CSV gives sites and slides, at the k values the test split allows.
        // (Neighbours come from other slides: k is at most the test rows outside the largest slide's.)
        const perSlide = new Map<string, number>();
        set.meta.split?.forEach(
          (v, i) =>
            v === 'test' && perSlide.set(set.meta.slide?.[i] ?? '', (perSlide.get(set.meta.slide?.[i] ?? '') ?? 0) + 1),
        );
        const testRows = [...perSlide.values()].reduce((a, b) => a + b, 0);
        const robustnessKs = evalOpts.robustnessKs.filter((k) => k <= testRows - Math.max(0, ...perSlide.values()));
        const withSites =
          set.meta.site && set.meta.slide && set.meta.split && robustnessKs.length ? ['robustness' as const] : [];
        const { report } = await evaluateSet(set, {
          ...evalOpts,
          robustnessKs,
          protocols: ['knn', 'linear', ...withSites],
        });
        reports[d.name][m] = report;
        cells.get(m)!.push(report.linear?.[`C${e.C[0]}`]?.bacc ?? null);
        const kRob = robustnessKs.includes(10) ? 10 : robustnessKs.at(-1);
        if (report.robustness && kRob !== undefined)
          robustRows.push({ dataset: d.name, model: m, k: kRob, ratio: report.robustness[`k${kRob}`]?.ratio ?? null });
      }
      // CKA of the student before and after distillation against the teacher, on the same samples.
      const pair = async (m: string) => {
        const [a, b] = matchById(sets.get(m)!, sets.get('teacher')!);
        return (await cka(a.features, a.d, b.features, b.d, a.n, { backend, device: evalOpts.device })).linear;
      };
      ckaRows.push({ dataset: d.name, before: await pair('student'), after: await pair('g2l') });
    } else {
      columns.push({ dataset: d.name, metric: 'slide AUC (mean pooling)' });
      const labels = await readSlideLabels(d.labels);
      for (const [m] of models) {
        const bags = await readSlideBags(featureDirs.get(`${d.name}/${m}`)!);
        // Slides whose extraction failed are left out (the features stage said so).
        const keep = labels.slides.map((s, i) => (bags.has(s) ? i : -1)).filter((i) => i >= 0);
        const pick = <T>(v: T[] | undefined) => (v ? keep.map((i) => v[i]) : undefined);
        const known = {
          file: labels.file,
          slides: pick(labels.slides)!,
          labels: pick(labels.labels)!,
          patients: pick(labels.patients)!,
          splits: pick(labels.splits),
          folds: pick(labels.folds),
          sites: pick(labels.sites),
        };
        const slide = await evaluateSlides(m, bags, known, {
          ...evalOpts,
          folds: e.folds,
          aggregators: e.aggregators,
          backend,
          device: o.device,
        });
        reports[d.name][m] = { slide, info: { n: keep.length, dim: bags.values().next().value?.d ?? 0 } };
        cells.get(m)!.push(slide.mean?.auc ?? slide.abmil?.auc ?? null);
      }
    }
  }
  const table: ProtocolTable = {
    columns,
    rows: models.map(([m]) => ({ model: m, cells: cells.get(m)! })),
    cka: ckaRows,
    robustness: robustRows,
  };
  await writeFileAtomic(path.join(out, 'report.json'), `${JSON.stringify({ table, reports }, null, 2)}\n`);
  // The table as a figure: one group of bars per dataset, one bar per model.
  const svg = groupedBarsSvg(
    columns.map((c) => c.dataset),
    models.map(([m]) => m),
    columns.map((_, c) => models.map(([m]) => cells.get(m)![c] ?? 0)),
    { title: 'G2L protocol: models by dataset', yLabel: 'score (see report.md)' },
  );
  await writeFileAtomic(path.join(out, 'table.png'), await svgToPng(svg));
  await writeFileAtomic(path.join(out, 'report.md'), protocolMarkdown(table));
  await writeFileAtomic(path.join(out, 'report.html'), protocolHtml(table));
  return table;
}

const fmt = (v: number | null) => (v === null || Number.isNaN(v) ? 'n/a' : v.toFixed(4));

/** The column's best value (ties all marked). */
function best(table: ProtocolTable, c: number): number | null {
  const vals = table.rows.map((r) => r.cells[c]).filter((v): v is number => v !== null && !Number.isNaN(v));
  return vals.length ? Math.max(...vals) : null;
}

export function protocolMarkdown(table: ProtocolTable): string {
  const head = `| model | ${table.columns.map((c) => `${c.dataset} (${c.metric})`).join(' | ')} |`;
  const rule = `| --- | ${table.columns.map(() => '---').join(' | ')} |`;
  const rows = table.rows.map(
    (r) =>
      `| ${r.model} | ${r.cells.map((v, c) => (v !== null && v === best(table, c) ? `**${fmt(v)}**` : fmt(v))).join(' | ')} |`,
  );
  const cka = table.cka.length
    ? [
        '',
        '## Linear CKA against the teacher',
        '',
        '| dataset | student before | student after (g2l) |',
        '| --- | --- | --- |',
        ...table.cka.map((c) => `| ${c.dataset} | ${fmt(c.before)} | ${fmt(c.after)} |`),
      ]
    : [];
  const robust = table.robustness.length
    ? [
        '',
        '## Robustness index (PathoROB ratio; higher is more robust to site)',
        '',
        '| dataset | model | k | ratio |',
        '| --- | --- | --- | --- |',
        ...table.robustness.map((r) => `| ${r.dataset} | ${r.model} | ${r.k} | ${fmt(r.ratio)} |`),
      ]
    : [];
  return [
    '# G2L protocol',
    '',
    'teacher, student before distillation, g2l (the student after), and any extra models; best per column in bold.',
    '',
    head,
    rule,
    ...rows,
    '',
    '![the table as bars](table.png)',
    ...cka,
    ...robust,
    '',
  ].join('\n');
}

export function protocolHtml(table: ProtocolTable): string {
  const esc = (s: string) => s.replace(/[&<>]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[c]!);
  const th = table.columns.map((c) => `<th>${esc(`${c.dataset} (${c.metric})`)}</th>`).join('');
  const rows = table.rows
    .map(
      (r) =>
        `<tr><td>${esc(r.model)}</td>${r.cells.map((v, c) => `<td>${v !== null && v === best(table, c) ? `<b>${fmt(v)}</b>` : fmt(v)}</td>`).join('')}</tr>`,
    )
    .join('\n');
  const cka = table.cka
    .map((c) => `<tr><td>${esc(c.dataset)}</td><td>${fmt(c.before)}</td><td>${fmt(c.after)}</td></tr>`)
    .join('\n');
  return `<!doctype html><meta charset="utf-8"><title>G2L protocol</title>
<h1>G2L protocol</h1><table border="1"><tr><th>model</th>${th}</tr>
${rows}</table>
<h2>Linear CKA against the teacher</h2><table border="1"><tr><th>dataset</th><th>student before</th><th>student after (g2l)</th></tr>
${cka}</table>
`;
}
