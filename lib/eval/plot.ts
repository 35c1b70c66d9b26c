// Small SVG charts for the evaluation report (line charts with markers, grouped bars), rendered to PNG by sharp
// (librsvg), so figures need no browser. Only what the report draws: no general plotting library.
import sharp from 'sharp';

const PALETTE = [
  '#1f77b4',
  '#d62728',
  '#2ca02c',
  '#ff7f0e',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf',
];
export const colour = (i: number) => PALETTE[i % PALETTE.length];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmt = (v: number) =>
  Number.isInteger(v) ? String(v) : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);

export interface Series {
  name: string;
  x: number[];
  y: number[];
  dashed?: boolean;
  markers?: boolean;
}

interface Frame {
  x0: number;
  y0: number;
  w: number;
  h: number;
}

/** Rounded tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function axes(
  f: Frame,
  xr: [number, number],
  yr: [number, number],
  xLabel: string,
  yLabel: string,
  title: string,
  xTicks?: number[],
): string[] {
  const sx = (v: number) => f.x0 + ((v - xr[0]) / (xr[1] - xr[0] || 1)) * f.w;
  const sy = (v: number) => f.y0 + f.h - ((v - yr[0]) / (yr[1] - yr[0] || 1)) * f.h;
  const o: string[] = [];
  o.push(`<rect x="${f.x0}" y="${f.y0}" width="${f.w}" height="${f.h}" fill="white" stroke="#333"/>`);
  for (const t of ticks(yr[0], yr[1])) {
    o.push(`<line x1="${f.x0}" x2="${f.x0 + f.w}" y1="${sy(t)}" y2="${sy(t)}" stroke="#ddd"/>`);
    o.push(`<text x="${f.x0 - 6}" y="${sy(t) + 4}" text-anchor="end" font-size="11">${fmt(t)}</text>`);
  }
  for (const t of xTicks ?? ticks(xr[0], xr[1])) {
    o.push(`<line x1="${sx(t)}" x2="${sx(t)}" y1="${f.y0 + f.h}" y2="${f.y0 + f.h + 4}" stroke="#333"/>`);
    o.push(`<text x="${sx(t)}" y="${f.y0 + f.h + 17}" text-anchor="middle" font-size="11">${fmt(t)}</text>`);
  }
  o.push(
    `<text x="${f.x0 + f.w / 2}" y="${f.y0 + f.h + 34}" text-anchor="middle" font-size="12">${esc(xLabel)}</text>`,
  );
  o.push(
    `<text transform="translate(${f.x0 - 42},${f.y0 + f.h / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(yLabel)}</text>`,
  );
  o.push(
    `<text x="${f.x0 + f.w / 2}" y="${f.y0 - 10}" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>`,
  );
  return o;
}

function legend(x: number, y: number, items: { name: string; colour: string; dashed?: boolean }[]): string[] {
  return items.flatMap((it, i) => [
    `<line x1="${x}" x2="${x + 18}" y1="${y + i * 16}" y2="${y + i * 16}" stroke="${it.colour}" stroke-width="2"${it.dashed ? ' stroke-dasharray="4 3"' : ''}/>`,
    `<text x="${x + 24}" y="${y + i * 16 + 4}" font-size="11">${esc(it.name)}</text>`,
  ]);
}

function panel(
  f: Frame,
  series: Series[],
  opts: {
    title: string;
    xLabel: string;
    yLabel: string;
    xRange?: [number, number];
    yRange?: [number, number];
    xTicks?: number[];
    reference?: { y: number; label: string };
    diagonal?: boolean;
  },
): string[] {
  const xs = series.flatMap((s) => s.x),
    ys = series.flatMap((s) => s.y).filter(Number.isFinite);
  const xr = opts.xRange ?? [Math.min(...xs), Math.max(...xs)];
  let yr = opts.yRange;
  if (!yr) {
    const all = opts.reference ? [...ys, opts.reference.y] : ys;
    const lo = Math.min(...all),
      hi = Math.max(...all);
    const padY = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
    yr = [lo - padY, hi + padY];
  }
  const sx = (v: number) => f.x0 + ((v - xr[0]) / (xr[1] - xr[0] || 1)) * f.w;
  const sy = (v: number) => f.y0 + f.h - ((v - yr![0]) / (yr![1] - yr![0] || 1)) * f.h;
  const o = axes(f, xr, yr, opts.xLabel, opts.yLabel, opts.title, opts.xTicks);
  if (opts.diagonal)
    o.push(
      `<line x1="${sx(xr[0])}" y1="${sy(yr[0])}" x2="${sx(xr[1])}" y2="${sy(yr[1])}" stroke="#999" stroke-dasharray="4 3"/>`,
    );
  if (opts.reference) {
    const y = sy(opts.reference.y);
    o.push(`<line x1="${f.x0}" x2="${f.x0 + f.w}" y1="${y}" y2="${y}" stroke="#999" stroke-dasharray="4 3"/>`);
    o.push(
      `<text x="${f.x0 + f.w - 4}" y="${y - 4}" text-anchor="end" font-size="10" fill="#666">${esc(opts.reference.label)}</text>`,
    );
  }
  series.forEach((s, i) => {
    const pts = s.x.map((x, j) => [x, s.y[j]]).filter(([, y]) => Number.isFinite(y));
    if (pts.length === 0) return;
    const d = pts.map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
    o.push(
      `<path d="${d}" fill="none" stroke="${colour(i)}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`,
    );
    if (s.markers)
      for (const [x, y] of pts)
        o.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3.5" fill="${colour(i)}"/>`);
  });
  return o;
}

function svg(width: number, height: number, body: string[]): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, sans-serif">` +
    `<rect width="100%" height="100%" fill="white"/>${body.join('')}</svg>`
  );
}

/** Line chart, e.g. robustness index against k with one line per model. */
export function lineChartSvg(
  series: Series[],
  opts: { title: string; xLabel: string; yLabel: string; xTicks?: number[]; reference?: { y: number; label: string } },
): string {
  const f = { x0: 70, y0: 40, w: 440, h: 300 };
  const body = panel(f, series, opts);
  body.push(
    ...legend(
      f.x0 + f.w + 20,
      f.y0 + 10,
      series.map((s, i) => ({ name: s.name, colour: colour(i), dashed: s.dashed })),
    ),
  );
  return svg(f.x0 + f.w + 200, f.y0 + f.h + 50, body);
}

/** ROC curves: one panel per model, one curve per class (one-vs-rest). */
export function rocPanelsSvg(panels: { title: string; curves: Series[] }[]): string {
  const w = 300,
    h = 260,
    gap = 190;
  const body: string[] = [];
  panels.forEach((p, i) => {
    const f = { x0: 60 + i * (w + gap), y0: 40, w, h };
    body.push(
      ...panel(f, p.curves, {
        title: p.title,
        xLabel: 'false positive rate',
        yLabel: 'true positive rate',
        xRange: [0, 1],
        yRange: [0, 1],
        diagonal: true,
      }),
    );
    body.push(
      ...legend(
        f.x0 + w + 14,
        f.y0 + 10,
        p.curves.map((s, j) => ({ name: s.name, colour: colour(j) })),
      ),
    );
  });
  return svg(60 + panels.length * (w + gap), h + 90, body);
}

/** Grouped vertical bars in [0, 1], e.g. CKA per pair of models (groups) and measure (bars). */
export function groupedBarsSvg(
  groups: string[],
  bars: string[],
  values: number[][],
  opts: { title: string; yLabel: string },
): string {
  const f = { x0: 70, y0: 40, w: Math.max(300, groups.length * (bars.length * 26 + 30)), h: 280 };
  const body = axes(f, [0, 1], [0, 1], '', opts.yLabel, opts.title, []);
  const gw = f.w / groups.length;
  const bw = Math.min(26, (gw - 20) / bars.length);
  groups.forEach((g, gi) => {
    const gx = f.x0 + gi * gw + (gw - bw * bars.length) / 2;
    bars.forEach((_, bi) => {
      const v = values[gi][bi];
      if (!Number.isFinite(v)) return;
      const hgt = Math.max(0, Math.min(1, v)) * f.h;
      body.push(
        `<rect x="${(gx + bi * bw).toFixed(1)}" y="${(f.y0 + f.h - hgt).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${hgt.toFixed(1)}" fill="${colour(bi)}"/>`,
      );
      body.push(
        `<text x="${(gx + bi * bw + bw / 2 - 1).toFixed(1)}" y="${(f.y0 + f.h - hgt - 3).toFixed(1)}" text-anchor="middle" font-size="9">${v.toFixed(2)}</text>`,
      );
    });
    body.push(
      `<text x="${(f.x0 + gi * gw + gw / 2).toFixed(1)}" y="${f.y0 + f.h + 17}" text-anchor="middle" font-size="11">${esc(g)}</text>`,
    );
  });
  body.push(
    ...legend(
      f.x0 + f.w + 20,
      f.y0 + 10,
      bars.map((b, i) => ({ name: b, colour: colour(i) })),
    ),
  );
  return svg(f.x0 + f.w + 190, f.y0 + f.h + 50, body);
}

/** Renders SVG text to PNG bytes with sharp. */
export async function svgToPng(svgText: string): Promise<Uint8Array> {
  return sharp(Buffer.from(svgText), { density: 144 }).png().toBuffer();
}
