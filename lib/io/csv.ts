// RFC 4180 CSV: a header row, comma-separated fields, double-quoted fields that may hold commas, quotes ("")
// and line breaks; CRLF or LF line ends. Small enough to own rather than depend on.
import { promises as fs } from 'node:fs';
import { UserError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';

export interface CsvTable {
  header: string[];
  rows: string[][];
}

/** Parses CSV text into rows of fields. `where` names the source in errors. */
export function parseCsvRows(text: string, where = 'CSV'): string[][] {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let line = 1;
  let i = 0;
  const n = text.length;
  let fieldStarted = false;
  while (i < n) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i++;
        if (i < n && text[i] !== ',' && text[i] !== '\n' && text[i] !== '\r') {
          throw new UserError(
            `${where}: line ${line}: text after a closing quote; quote the whole field and double inner quotes ("")`,
          );
        }
        continue;
      }
      if (c === '\n') line++;
      field += c;
      i++;
      continue;
    }
    if (c === '"' && !fieldStarted) {
      quoted = true;
      fieldStarted = true;
      i++;
      continue;
    }
    if (c === ',') {
      row.push(field);
      field = '';
      fieldStarted = false;
      i++;
      continue;
    }
    if (c === '\r' || c === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      fieldStarted = false;
      if (c === '\r' && text[i + 1] === '\n') i++;
      i++;
      line++;
      continue;
    }
    field += c;
    fieldStarted = true;
    i++;
  }
  if (quoted) throw new UserError(`${where}: unterminated quoted field at the end of the file`);
  if (fieldStarted || field.length > 0 || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  // Blank lines carry no record.
  return rows.filter((r) => !(r.length === 1 && r[0] === ''));
}

/** Parses CSV text with a header row; every row must have as many fields as the header. */
export function parseCsv(text: string, where = 'CSV'): CsvTable {
  const all = parseCsvRows(text, where);
  if (all.length === 0) throw new UserError(`${where}: empty file; it needs a header row`);
  const header = all[0].map((h) => h.trim());
  const rows = all.slice(1);
  rows.forEach((r, i) => {
    if (r.length !== header.length) {
      throw new UserError(
        `${where}: row ${i + 2} has ${r.length} fields, the header has ${header.length}; fix that row`,
      );
    }
  });
  return { header, rows };
}

export async function readCsv(file: string): Promise<CsvTable> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new UserError(
      `${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); check the path`,
    );
  }
  return parseCsv(text, file);
}

function quote(field: string): string {
  return /[",\r\n]/.test(field) || /^\s|\s$/.test(field) ? `"${field.replace(/"/g, '""')}"` : field;
}

/** Formats a table as CSV (LF line ends, fields quoted only when needed). */
export function formatCsv(table: CsvTable): string {
  return [table.header, ...table.rows].map((r) => r.map(quote).join(',')).join('\n') + '\n';
}

export async function writeCsv(file: string, table: CsvTable): Promise<void> {
  await writeFileAtomic(file, formatCsv(table));
}
