// Feature sets: a folder with features.npy (float32 [N, D]) and meta.csv (id, and where known label, split, site,
// slide, patient), one meta row per feature row, in the same order. This is what `embed` writes and what `eval`
// and `cka` read. Validation names the folder and the first offending row, so a bad set fails before any work.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { writeDirAtomic } from '../io/atomic.js';
import { readCsv, formatCsv } from '../io/csv.js';
import { readNpy, encodeNpy } from '../io/npy.js';

export const META_COLUMNS = ['id', 'label', 'split', 'site', 'slide', 'patient'] as const;
export type MetaColumn = (typeof META_COLUMNS)[number];
export type Split = 'train' | 'val' | 'test';

export interface FeatureSet {
  /** Folder the set was read from (or will be written to). */
  dir: string;
  /** Rows and feature dimension. */
  n: number;
  d: number;
  /** [N, D] row-major. */
  features: Float32Array;
  ids: string[];
  /** Known meta columns; '' marks an unknown value in a row. Columns absent from meta.csv are absent here. */
  meta: Partial<Record<Exclude<MetaColumn, 'id'>, string[]>>;
}

const SPLIT_ALIASES: Record<string, Split> = {
  train: 'train',
  training: 'train',
  val: 'val',
  valid: 'val',
  validation: 'val',
  test: 'test',
  testing: 'test',
};

/** Reads and validates a feature-set folder: shapes, row counts, unique ids, finite values. */
export async function readFeatureSet(dir: string): Promise<FeatureSet> {
  const npyPath = path.join(dir, 'features.npy');
  const csvPath = path.join(dir, 'meta.csv');
  const st = await fs.stat(dir).catch(() => undefined);
  if (!st?.isDirectory())
    throw new UserError(
      `${dir}: not a feature-set folder (it should hold features.npy and meta.csv); run g2l-native embed first`,
    );
  for (const f of [npyPath, csvPath]) {
    if (!(await fs.stat(f).catch(() => undefined))) {
      throw new UserError(
        `${f}: missing; a feature set holds features.npy and meta.csv (g2l-native embed writes both)`,
      );
    }
  }
  const arr = await readNpy(npyPath);
  if (arr.shape.length !== 2)
    throw new UserError(`${npyPath}: features must be 2-D [N, D], got shape [${arr.shape.join(', ')}]`);
  let features: Float32Array;
  if (arr.data instanceof Float32Array) features = arr.data;
  else if (arr.data instanceof Float64Array) features = Float32Array.from(arr.data);
  else
    throw new UserError(
      `${npyPath}: features must be float32 (or float64), got ${arr.dtype}; save with a.astype(numpy.float32)`,
    );
  const [n, d] = arr.shape;
  const table = await readCsv(csvPath);
  const idCol = table.header.indexOf('id');
  if (idCol < 0)
    throw new UserError(`${csvPath}: no 'id' column (header: ${table.header.join(',')}); add one identifier per row`);
  if (table.rows.length !== n) {
    throw new UserError(
      `${dir}: mismatched rows: features.npy has ${n} rows, meta.csv has ${table.rows.length}; they must describe the same samples in the same order`,
    );
  }
  const ids = table.rows.map((r) => r[idCol]);
  const seen = new Map<string, number>();
  ids.forEach((id, i) => {
    if (id === '') throw new UserError(`${csvPath}: row ${i + 2} has an empty id; every sample needs one`);
    const prev = seen.get(id);
    if (prev !== undefined)
      throw new UserError(`${csvPath}: id '${id}' appears twice (rows ${prev + 2} and ${i + 2}); ids must be unique`);
    seen.set(id, i);
  });
  const meta: FeatureSet['meta'] = {};
  for (const col of META_COLUMNS) {
    if (col === 'id') continue;
    const c = table.header.indexOf(col);
    if (c >= 0) meta[col] = table.rows.map((r) => r[c].trim());
  }
  if (meta.split) {
    meta.split = meta.split.map((s, i) => {
      if (s === '') return s;
      const v = SPLIT_ALIASES[s.toLowerCase()];
      if (!v) throw new UserError(`${csvPath}: row ${i + 2} has split '${s}'; use train, val or test`);
      return v;
    });
  }
  const fs_ = { dir, n, d, features, ids, meta };
  checkFinite(fs_);
  return fs_;
}

/** Refuses NaN or infinite features, naming the first bad sample. */
export function checkFinite(set: FeatureSet): void {
  const { features, d } = set;
  for (let i = 0; i < features.length; i++) {
    if (!Number.isFinite(features[i])) {
      const row = Math.floor(i / d);
      throw new UserError(
        `${set.dir}: NaN features: sample '${set.ids[row]}' (row ${row}, column ${i % d}) is ${features[i]}; re-embed it or drop it from the set`,
      );
    }
  }
}

/**
 * Writes a feature-set folder atomically. Meta columns absent from `set.meta` are left out of meta.csv;
 * `extraFiles` (name -> text) are written into the same folder.
 */
export async function writeFeatureSet(
  dir: string,
  set: Omit<FeatureSet, 'dir'>,
  extraFiles: Record<string, string> = {},
): Promise<void> {
  if (set.features.length !== set.n * set.d)
    throw new Error(`writeFeatureSet: ${set.features.length} values for [${set.n}, ${set.d}]`);
  if (set.ids.length !== set.n) throw new Error(`writeFeatureSet: ${set.ids.length} ids for ${set.n} rows`);
  const cols = META_COLUMNS.filter((c) => c === 'id' || set.meta[c] !== undefined);
  const rows = set.ids.map((id, i) => cols.map((c) => (c === 'id' ? id : set.meta[c]![i])));
  await writeDirAtomic(dir, async (tmp) => {
    await fs.writeFile(
      path.join(tmp, 'features.npy'),
      encodeNpy({ dtype: 'float32', shape: [set.n, set.d], data: set.features }),
    );
    await fs.writeFile(path.join(tmp, 'meta.csv'), formatCsv({ header: [...cols], rows }));
    for (const [name, text] of Object.entries(extraFiles)) await fs.writeFile(path.join(tmp, name), text);
  });
}

/** Selects rows (in the given order) into a new set sharing nothing with the old one. */
export function selectRows(set: FeatureSet, rows: ArrayLike<number>): FeatureSet {
  const n = rows.length;
  const features = new Float32Array(n * set.d);
  for (let i = 0; i < n; i++) features.set(set.features.subarray(rows[i] * set.d, (rows[i] + 1) * set.d), i * set.d);
  const meta: FeatureSet['meta'] = {};
  for (const [k, v] of Object.entries(set.meta) as [keyof FeatureSet['meta'], string[]][]) {
    meta[k] = Array.from({ length: n }, (_, i) => v[rows[i]]);
  }
  return { dir: set.dir, n, d: set.d, features, ids: Array.from({ length: n }, (_, i) => set.ids[rows[i]]), meta };
}

/**
 * Matches the rows of two sets by id: returns both reordered to A's order over the ids they share. Every id of
 * one must be in the other, or it is an error naming how many are missing and one example.
 */
export function matchById(a: FeatureSet, b: FeatureSet): [FeatureSet, FeatureSet] {
  const index = new Map(b.ids.map((id, i) => [id, i]));
  const missingInB = a.ids.filter((id) => !index.has(id));
  const aIds = new Set(a.ids);
  const missingInA = b.ids.filter((id) => !aIds.has(id));
  if (missingInB.length > 0 || missingInA.length > 0) {
    const [from, to, missing] = missingInB.length > 0 ? [a.dir, b.dir, missingInB] : [b.dir, a.dir, missingInA];
    throw new UserError(
      `mismatched rows: ${missing.length} id(s) of ${from} are not in ${to} (e.g. '${missing[0]}'); embed the same samples into both sets`,
    );
  }
  const order = a.ids.map((id) => index.get(id)!);
  return [a, selectRows(b, order)];
}

/** Row indices of a split; the whole set when there is no split column. */
export function splitRows(set: FeatureSet, split: Split | 'all'): number[] {
  const s = set.meta.split;
  if (split === 'all' || !s) return Array.from({ length: set.n }, (_, i) => i);
  const out: number[] = [];
  s.forEach((v, i) => {
    if (v === split) out.push(i);
  });
  return out;
}

export interface Labels {
  /** Class names, sorted as strings (by code point); class index = position here. */
  classes: string[];
  /** Class index per selected row. */
  y: Int32Array;
}

/** Compares strings by Unicode code point, as NumPy and Python sort them. */
export function compareCodePoints(a: string, b: string): number {
  const ca = [...a],
    cb = [...b];
  const n = Math.min(ca.length, cb.length);
  for (let i = 0; i < n; i++) {
    const d = ca[i].codePointAt(0)! - cb[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return ca.length - cb.length;
}

/** Class list over the labelled rows of a set (all splits), sorted as strings. */
export function classList(set: FeatureSet): string[] {
  const labels = set.meta.label;
  if (!labels)
    throw new UserError(`${set.dir}: meta.csv has no 'label' column; kNN, linear probing and robustness need labels`);
  return [...new Set(labels.filter((l) => l !== ''))].sort(compareCodePoints);
}

/** Labels of the given rows as class indices; every row must be labelled. `what` names the rows in errors. */
export function labelsOf(set: FeatureSet, rows: number[], classes: string[], what: string): Int32Array {
  const labels = set.meta.label;
  if (!labels)
    throw new UserError(`${set.dir}: meta.csv has no 'label' column; kNN, linear probing and robustness need labels`);
  const index = new Map(classes.map((c, i) => [c, i]));
  const y = new Int32Array(rows.length);
  const missing = rows.filter((r) => labels[r] === '');
  if (missing.length > 0) {
    throw new UserError(
      `${set.dir}: missing labels for the ${what}: ${missing.length} row(s) have no label (e.g. '${set.ids[missing[0]]}'); label them or move them out of that split`,
    );
  }
  rows.forEach((r, i) => {
    y[i] = index.get(labels[r])!;
  });
  return y;
}

/** Refuses a training split with fewer than two classes. */
export function requireTwoClasses(set: FeatureSet, y: Int32Array, classes: string[], what: string): void {
  const present = new Set(y);
  if (present.size < 2) {
    const only = present.size === 1 ? `only class '${classes[[...present][0]]}'` : 'no samples';
    throw new UserError(
      `${set.dir}: a single class: the ${what} has ${only}; classification needs at least two classes`,
    );
  }
}
