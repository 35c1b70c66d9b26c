import t from 'tap';
import { parseCsv, formatCsv, parseCsvRows } from '../../lib/io/csv.js';

t.test('RFC 4180 fields: quotes, commas, doubled quotes, line breaks, CRLF', async (t) => {
  const text = 'id,label,path\r\n1,"a,b","say ""hi"""\r\n2,"two\nlines",plain\r\n\r\n3,,"" \n';
  const table = parseCsv(text.replace(/"" \n$/, '""\n'));
  t.same(table.header, ['id', 'label', 'path']);
  t.same(table.rows, [
    ['1', 'a,b', 'say "hi"'],
    ['2', 'two\nlines', 'plain'],
    ['3', '', ''],
  ]);
  t.same(parseCsv(formatCsv(table)), table, 'round trip');
  t.same(parseCsvRows('a,b'), [['a', 'b']], 'no final newline');
  t.same(parseCsvRows('\ufeffa\n'), [['a']], 'BOM dropped');
});

t.test('bad CSV: one clear line each', async (t) => {
  t.throws(() => parseCsv('a,b\n1,2,3\n', 'meta.csv'), /meta\.csv: row 2 has 3 fields, the header has 2/);
  t.throws(() => parseCsv('a\n"open\n', 'x.csv'), /x\.csv: unterminated quoted field/);
  t.throws(() => parseCsv('a\n"q"x\n', 'x.csv'), /x\.csv: line 2: text after a closing quote/);
  t.throws(() => parseCsv('', 'x.csv'), /x\.csv: empty file/);
});
