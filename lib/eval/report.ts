// The evaluation report: report.json (the machine-readable contract), report.md and report.html (the models side
// by side, as in the paper's tables, best value per column in bold) and PNG figures (robustness index against k,
// ROC curves of the linear probe, CKA bars). Every file is written atomically.
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import type { SetReport, RocCurves, EvalOptions } from './evaluate.js';
import { kKey, cKey } from './evaluate.js';
import { lineChartSvg, rocPanelsSvg, groupedBarsSvg, svgToPng } from './plot.js';
import { KNN_TEMPERATURE } from './knn.js';

export interface NamedSet {
  name: string;
  dir: string;
  report: SetReport;
  roc?: RocCurves;
}
export interface CkaPair {
  a: string;
  b: string;
  n: number;
  linear: number;
  rbf: number;
  linear_debiased: number;
  rbf_rows: number;
}

export interface ReportInput {
  sets: NamedSet[];
  cka: CkaPair[];
  options: EvalOptions;
  /** ISO time stamp written into the report. */
  created: string;
}

/** report.json's object: the set's report alone, or one per set under its name. */
export function reportJson(sets: NamedSet[]): unknown {
  if (sets.length === 1) return sets[0].report;
  return Object.fromEntries(sets.map((s) => [s.name, s.report]));
}

const f4 = (v: number | null | undefined) => (v === null || v === undefined || Number.isNaN(v) ? 'n/a' : v.toFixed(4));

interface Table {
  title: string;
  note?: string;
  /** Bold the best value per column (for scores; CKA is a similarity, not a score). */
  rank?: boolean;
  header: string[];
  rows: {
    name: string;
    cells: (number | null | undefined)[];
    ci?: ([number, number] | undefined)[];
    sd?: (number | undefined)[];
  }[];
}

function tables(input: ReportInput): Table[] {
  const { sets, options } = input;
  const out: Table[] = [];
  const has = (p: 'knn' | 'linear' | 'robustness') => sets.some((s) => s.report[p] !== undefined);
  if (has('knn')) {
    const header = options.ks.flatMap((k) => [`k=${k} acc`, `k=${k} bacc`]);
    out.push({
      title: 'kNN (test split)',
      rank: true,
      note: `${options.vote === 'weighted' ? `weighted vote, exp(similarity / ${KNN_TEMPERATURE})` : 'majority vote'}, cosine on L2-normalised features, neighbours from the train split`,
      header,
      rows: sets.map((s) => ({
        name: s.name,
        cells: options.ks.flatMap((k) => [s.report.knn?.[kKey(k)]?.acc, s.report.knn?.[kKey(k)]?.bacc]),
        ci: options.ks.flatMap((k) => [s.report.knn?.[kKey(k)]?.ci?.acc, s.report.knn?.[kKey(k)]?.ci?.bacc]),
      })),
    });
  }
  for (const [agg, what, note] of [
    [
      'mean',
      'mean pooling + linear probe',
      "each slide's tile features averaged; the probe at the C chosen on val, else the first --C",
    ],
    [
      'abmil',
      'gated-attention MIL (ABMIL)',
      'trained on the train slides, early stopping on the validation slides (val split, or the next fold)',
    ],
  ] as const) {
    const first = sets.find((s) => s.report.slide?.[agg]);
    if (!first) continue;
    const folds = first.report.slide![agg]!.info.n_folds;
    out.push({
      title: `Slide level: ${what} (${folds > 1 ? `mean over ${folds} patient-level folds` : 'test split'})`,
      rank: true,
      note: `${note}; ± is the standard deviation across folds`,
      header: ['AUC', 'bacc', 'acc', 'F1'],
      rows: sets.map((s) => {
        const e = s.report.slide?.[agg];
        return {
          name: s.name,
          cells: [e?.auc, e?.bacc, e?.acc, e?.f1],
          sd: e?.std ? [e.std.auc, e.std.bacc, e.std.acc, e.std.f1] : undefined,
        };
      }),
    });
  }
  if (has('linear')) {
    out.push({
      title: 'Linear probe (test split)',
      rank: true,
      note: 'multinomial logistic regression, Σ cross-entropy + 1/(2C)‖W‖², L-BFGS to max |gradient| 1e-8; AUC macro one-vs-rest (binary: positive class)',
      header: options.Cs.flatMap((C) => [`C=${C} AUC`, `C=${C} acc`, `C=${C} bacc`, `C=${C} F1`]),
      rows: sets.map((s) => ({
        name: s.name,
        cells: options.Cs.flatMap((C) => {
          const e = s.report.linear?.[cKey(C)];
          return [e?.auc, e?.acc, e?.bacc, e?.f1];
        }),
        ci: options.Cs.flatMap((C) => {
          const e = s.report.linear?.[cKey(C)]?.ci;
          return [e?.auc, e?.acc, e?.bacc, e?.f1];
        }),
      })),
    });
  }
  if (has('robustness')) {
    out.push({
      title: 'Robustness index (PathoROB): ratio ΣSO / ΣOS',
      rank: true,
      note: "test split (whole set without a split column); neighbours exclude the query's own slide; neutral at 1, higher is more robust to site",
      header: options.robustnessKs.map((k) => `k=${k}`),
      rows: sets.map((s) => ({
        name: s.name,
        cells: options.robustnessKs.map((k) => s.report.robustness?.[kKey(k)]?.ratio),
      })),
    });
    out.push({
      title: 'Robustness index, bounded: ΣSO / (ΣSO + ΣOS)',
      rank: true,
      header: options.robustnessKs.map((k) => `k=${k}`),
      rows: sets.map((s) => ({
        name: s.name,
        cells: options.robustnessKs.map((k) => s.report.robustness?.[kKey(k)]?.bounded),
      })),
    });
  }
  if (input.cka.length > 0) {
    out.push({
      title: 'CKA between feature sets (rows matched by id)',
      note: 'RBF bandwidth² = median squared pairwise distance (diagonal included); debiased = unbiased HSIC estimator',
      header: ['linear', 'RBF', 'debiased linear', 'samples'],
      rows: input.cka.map((c) => ({ name: `${c.a} vs ${c.b}`, cells: [c.linear, c.rbf, c.linear_debiased, c.n] })),
    });
  }
  return out;
}

/** Index of the best (largest) value per column, when more than one row competes. */
function bestRows(t: Table): (number | undefined)[] {
  return t.header.map((h, c) => {
    if (!t.rank || t.rows.length < 2) return undefined;
    let best: number | undefined;
    t.rows.forEach((r, i) => {
      const v = r.cells[c];
      if (typeof v === 'number' && Number.isFinite(v) && (best === undefined || v > (t.rows[best].cells[c] as number)))
        best = i;
    });
    return best;
  });
}

function cellText(t: Table, r: number, c: number): string {
  const v = t.rows[r].cells[c];
  if (t.header[c] === 'samples') return String(v);
  const ci = t.rows[r].ci?.[c];
  const sd = t.rows[r].sd?.[c];
  return ci ? `${f4(v)} [${f4(ci[0])}, ${f4(ci[1])}]` : sd !== undefined ? `${f4(v)} ± ${f4(sd)}` : f4(v);
}

function selectionLines(sets: NamedSet[]): string[] {
  return sets
    .filter((s) => s.report.selected)
    .map(
      (s) =>
        `${s.name}: best on the val split (balanced accuracy): ${[s.report.selected?.knn && `kNN ${s.report.selected.knn}`, s.report.selected?.linear && `linear ${s.report.selected.linear}`].filter(Boolean).join(', ')}`,
    );
}

function setLines(sets: NamedSet[]): string[][] {
  return sets.map((s) => {
    const i = s.report.info;
    const splits = i.n_train !== undefined ? `${i.n_train}/${i.n_val ?? 0}/${i.n_test}` : '-';
    return [s.name, s.dir, String(i.n), String(i.dim), splits, (i.classes ?? []).join(', ')];
  });
}

export function reportMarkdown(input: ReportInput, figures: { file: string; caption: string }[]): string {
  const md: string[] = ['# g2l-native evaluation', '', `Created ${input.created}.`, ''];
  md.push('| feature set | folder | N | dim | train/val/test | classes |', '| --- | --- | --- | --- | --- | --- |');
  for (const l of setLines(input.sets)) md.push(`| ${l.map((x) => x.replace(/\|/g, '\\|')).join(' | ')} |`);
  md.push('');
  for (const t of tables(input)) {
    md.push(`## ${t.title}`, '');
    if (t.note) md.push(`${t.note}.`, '');
    const best = bestRows(t);
    md.push(`| model | ${t.header.join(' | ')} |`, `| --- |${t.header.map(() => ' --- |').join('')}`);
    t.rows.forEach((r, ri) => {
      md.push(
        `| ${r.name} | ${t.header.map((_, c) => (best[c] === ri ? `**${cellText(t, ri, c)}**` : cellText(t, ri, c))).join(' | ')} |`,
      );
    });
    md.push('');
  }
  const sel = selectionLines(input.sets);
  if (sel.length > 0) md.push('## Selection on the val split', '', ...sel.map((l) => `- ${l}`), '');
  if (figures.length > 0) {
    md.push('## Figures', '');
    for (const f of figures) md.push(`![${f.caption}](${f.file})`, '', `*${f.caption}*`, '');
  }
  return md.join('\n');
}

const h = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function reportHtml(input: ReportInput, figures: { file: string; caption: string }[]): string {
  const parts: string[] = [];
  parts.push(
    '<!doctype html><html><head><meta charset="utf-8"><title>g2l-native evaluation</title><style>',
    'body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em}',
    'th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}',
    'th{background:#f3f3f3}.note{color:#555;font-size:0.9em}figure{margin:1em 0}img{max-width:100%}</style></head><body>',
    `<h1>g2l-native evaluation</h1><p class="note">Created ${h(input.created)}.</p>`,
  );
  parts.push(
    '<table><tr><th>feature set</th><th>folder</th><th>N</th><th>dim</th><th>train/val/test</th><th>classes</th></tr>',
  );
  for (const l of setLines(input.sets)) parts.push(`<tr>${l.map((x) => `<td>${h(x)}</td>`).join('')}</tr>`);
  parts.push('</table>');
  for (const t of tables(input)) {
    parts.push(`<h2>${h(t.title)}</h2>`);
    if (t.note) parts.push(`<p class="note">${h(t.note)}.</p>`);
    const best = bestRows(t);
    parts.push(`<table><tr><th>model</th>${t.header.map((x) => `<th>${h(x)}</th>`).join('')}</tr>`);
    t.rows.forEach((r, ri) => {
      parts.push(
        `<tr><td>${h(r.name)}</td>${t.header
          .map((_, c) => {
            const txt = h(cellText(t, ri, c));
            return `<td>${best[c] === ri ? `<b>${txt}</b>` : txt}</td>`;
          })
          .join('')}</tr>`,
      );
    });
    parts.push('</table>');
  }
  const sel = selectionLines(input.sets);
  if (sel.length > 0)
    parts.push('<h2>Selection on the val split</h2><ul>', ...sel.map((l) => `<li>${h(l)}</li>`), '</ul>');
  for (const f of figures)
    parts.push(
      `<figure><img src="${h(f.file)}" alt="${h(f.caption)}"><figcaption>${h(f.caption)}</figcaption></figure>`,
    );
  parts.push('</body></html>');
  return parts.join('\n');
}

/** Renders the figures that the results support; returns their paths relative to outDir. */
async function writeFigures(outDir: string, input: ReportInput): Promise<{ file: string; caption: string }[]> {
  const figs: { file: string; caption: string }[] = [];
  const { sets, options } = input;
  const withRob = sets.filter((s) => s.report.robustness);
  if (withRob.length > 0) {
    const svg = lineChartSvg(
      withRob.map((s) => ({
        name: s.name,
        x: options.robustnessKs,
        y: options.robustnessKs.map((k) => s.report.robustness![kKey(k)].ratio ?? NaN),
        markers: true,
      })),
      {
        title: 'Robustness index vs k',
        xLabel: 'k (neighbours)',
        yLabel: 'ΣSO / ΣOS',
        xTicks: options.robustnessKs,
        reference: { y: 1, label: 'neutral' },
      },
    );
    figs.push({ file: 'figures/robustness.png', caption: 'Robustness index (ratio ΣSO/ΣOS) against k, per model' });
    await writeFileAtomic(path.join(outDir, figs[figs.length - 1].file), await svgToPng(svg));
  }
  const withRoc = sets.filter((s) => s.roc);
  if (withRoc.length > 0) {
    const svg = rocPanelsSvg(
      withRoc.map((s) => ({
        title: `${s.name} (C=${s.roc!.C}, AUC ${s.roc!.auc.toFixed(3)})`,
        curves: s.roc!.curves.map((c, i) => ({ name: s.roc!.classes[i], x: c.fpr, y: c.tpr })),
      })),
    );
    figs.push({
      file: 'figures/roc.png',
      caption: 'ROC curves of the linear probe on the test split (one-vs-rest per class)',
    });
    await writeFileAtomic(path.join(outDir, figs[figs.length - 1].file), await svgToPng(svg));
  }
  if (input.cka.length > 0) {
    const svg = groupedBarsSvg(
      input.cka.map((c) => `${c.a} vs ${c.b}`),
      ['linear', 'RBF', 'debiased linear'],
      input.cka.map((c) => [c.linear, c.rbf, c.linear_debiased]),
      { title: 'CKA between feature sets', yLabel: 'CKA' },
    );
    figs.push({ file: 'figures/cka.png', caption: 'CKA between feature sets (linear, RBF, debiased linear)' });
    await writeFileAtomic(path.join(outDir, figs[figs.length - 1].file), await svgToPng(svg));
  }
  return figs;
}

/** Writes report.json, report.md, report.html, figures/*.png and (with several sets) cka.json into outDir. */
export async function writeReport(outDir: string, input: ReportInput): Promise<string[]> {
  const figs = await writeFigures(outDir, input);
  await writeFileAtomic(path.join(outDir, 'report.json'), JSON.stringify(reportJson(input.sets), null, 2) + '\n');
  if (input.cka.length > 0)
    await writeFileAtomic(path.join(outDir, 'cka.json'), JSON.stringify(input.cka, null, 2) + '\n');
  await writeFileAtomic(path.join(outDir, 'report.md'), reportMarkdown(input, figs));
  await writeFileAtomic(path.join(outDir, 'report.html'), reportHtml(input, figs));
  return [
    'report.json',
    'report.md',
    'report.html',
    ...(input.cka.length > 0 ? ['cka.json'] : []),
    ...figs.map((f) => f.file),
  ];
}
