// The checkpoint format: state.safetensors (F32 and I64 tensors, the data's CRC-32 in its metadata) written alike by
// both backends, read by Python with safetensors alone (tools/read_checkpoint_state.py: safetensors.torch.load_file,
// no torch.load, no pickle) with the values the backend holds, and refused with one message naming the file by both
// backends' readers when its header is inconsistent (overlap, gap, trailing bytes, a foreign tensor, no checksum) or
// its data does not match its checksum. Damage at random is test/reliability/fault-injection.test.ts.
import t from 'tap';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Distiller } from '../../lib/distill/distiller.js';
import { readStoredTensors } from '../../lib/backends/js/safetensors.js';
import { ROOT, VENV_PYTHON, runProcess } from '../helpers/cli.js';
import { engine, folder, tiles } from '../js-backend/helpers.js';

const TEACHER = folder('timm_giant_reg4_swiglu');
const STUDENT = folder('hf_dinov2_reg_swiglu');
const SEED = 11;
const { skip: noEngine } = engine();
const noPython = existsSync(VENV_PYTHON)
  ? false
  : `no ${VENV_PYTHON}: run npm run setup (or tools/setup.mjs) to create it`;
const tmp = t.testdir();

/** Two steps on `backend`, then save() and export(): the checkpoint folder, the student folder and the distiller. */
async function checkpointOf(backend: 'native' | 'js') {
  const d = await Distiller.create({ teacher: TEACHER, student: STUDENT, totalSteps: 4, seed: SEED, backend });
  for (const s of [1, 2]) await d.step(tiles(2, 240, s));
  const dir = path.join(tmp, backend),
    student = path.join(tmp, `${backend}-student`);
  await d.save(dir);
  await d.export(student);
  return { d, dir, student, file: path.join(dir, 'state.safetensors') };
}

/** The header's JSON text and the rest of the file. */
function split(file: string): { header: Record<string, unknown>; text: string; data: Buffer } {
  const b = readFileSync(file);
  const n = Number(b.readBigUInt64LE(0));
  const text = b.subarray(8, 8 + n).toString('utf8');
  return { header: JSON.parse(text), text, data: b.subarray(8 + n) };
}

/** Writes `file` with `header` (padded to 8 bytes as the writers do) and `data`. */
function join(file: string, header: Record<string, unknown>, data: Buffer): void {
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - ((8 + Buffer.byteLength(text)) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  writeFileSync(file, Buffer.concat([len, Buffer.from(text), data]));
}

const backends = [
  ['native', noEngine],
  ['js', false],
] as const;

for (const [backend, skip] of backends) {
  t.test(
    `${backend}: state.safetensors reads in Python with safetensors alone, with the values the backend holds`,
    { skip: skip || noPython },
    async (t) => {
      const { d, file, student } = await checkpointOf(backend);
      const { tensors, metadata } = readStoredTensors(file, 'the test reads it');
      t.same(Object.keys(metadata).sort(), ['data_crc32', 'format'], 'metadata: format and the data checksum');
      const p = await runProcess(VENV_PYTHON, [path.join(ROOT, 'tools', 'read_checkpoint_state.py'), file, student], {
        timeoutMs: 300_000,
      });
      t.equal(p.code, 0, p.stderr || p.stdout);
      const py = JSON.parse(p.stdout.trim().split('\n').at(-1) ?? '{}');
      t.equal(py.crc32, metadata.data_crc32, 'the CRC-32 in the metadata is zlib.crc32 of the data section');
      t.same(py.studentDiffersFromExport, [], "every student/<key> equals the exported student's <key> (torch.equal)");
      t.same(
        py.exportNotInCheckpoint,
        ['embeddings.mask_token'],
        'only the untrained mask token is exported and not checkpointed',
      );
      t.equal(py.step, 2, 'step');
      t.equal(py.step, d.info().step, 'the step the backend holds');
      t.equal(py.seed, SEED, 'seed');
      t.same(Object.keys(py.tensors).sort(), [...tensors.keys()].sort(), 'the keys the backend reads back');
      t.ok(
        [...tensors.keys()].some((k) => k.startsWith('optimizer/exp_avg_sq/')) &&
          tensors.has('projector.weight') &&
          tensors.has('optimizer/updates'),
        'student, projector and AdamW moments, with the update count',
      );
      const differ: string[] = [];
      for (const [k, v] of tensors) {
        const bytes = Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength);
        const want = { dtype: v.dtype, shape: v.shape, sha256: createHash('sha256').update(bytes).digest('hex') };
        if (JSON.stringify(py.tensors[k]) !== JSON.stringify(want)) differ.push(k);
      }
      t.same(
        differ,
        [],
        "each tensor: the same dtype (float32 / int64), shape and bytes in Python as in the backend's reader",
      );
    },
  );
}

t.test(
  'both backends write the same header (keys, dtypes, shapes, offsets), apart from the checksum',
  { skip: noEngine },
  async (t) => {
    const [n, j] = [await checkpointOf('native'), await checkpointOf('js')];
    const strip = (file: string) => split(file).text.replace(/"data_crc32":"[0-9a-f]{8}"/, '');
    t.equal(strip(n.file), strip(j.file));
  },
);

t.test(
  'a state.safetensors whose header disagrees with itself or its data: one message naming the file, both backends',
  async (t) => {
    const ready = await checkpointOf('js');
    const { header, data } = split(ready.file);
    const keys = Object.keys(header)
      .filter((k) => k !== '__metadata__')
      .sort(
        (a, b) =>
          (header[a] as { data_offsets: number[] }).data_offsets[0] -
          (header[b] as { data_offsets: number[] }).data_offsets[0],
      );
    const entry = (k: string) => header[k] as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const cases: [string, (h: Record<string, unknown>, d: Buffer) => [Record<string, unknown>, Buffer], RegExp][] = [
      [
        'a tensor overlapping the one before it',
        (h, d) => {
          const c = structuredClone(h);
          const [a, b] = [entry(keys[1]), c[keys[2]] as { data_offsets: [number, number] }];
          const len = b.data_offsets[1] - b.data_offsets[0];
          b.data_offsets = [a.data_offsets[1] - 4, a.data_offsets[1] - 4 + len];
          return [c, d];
        },
        /begins at data byte \d+, inside the tensor before it/,
      ],
      [
        'bytes after the last tensor',
        (h, d) => [h, Buffer.concat([d, Buffer.alloc(8)])],
        /8 bytes follow the last tensor/,
      ],
      [
        'a changed value',
        (h, d) => {
          const c = Buffer.from(d);
          c[c.length >> 1] ^= 0x10;
          return [h, c];
        },
        /does not match the CRC-32 in its header/,
      ],
      [
        'no checksum',
        (h, d) => {
          const c = structuredClone(h);
          delete (c.__metadata__ as Record<string, string>).data_crc32;
          return [c, d];
        },
        /does not have the __metadata__ g2l-native writes/,
      ],
      [
        'a tensor the run does not have',
        (h, d) => {
          const c = structuredClone(h);
          c['student/extra'] = { dtype: 'F32', shape: [0], data_offsets: [d.length, d.length] };
          return [c, d];
        },
        /holds 'student\/extra', which this run does not have/,
      ],
      [
        'a float tensor stored as I64',
        (h, d) => {
          const c = structuredClone(h);
          const e = c[
            keys.find((k) => entry(k).dtype === 'F32' && entry(k).shape.length === 1 && entry(k).shape[0] % 2 === 0)!
          ] as { dtype: string; shape: number[] };
          e.dtype = 'I64';
          e.shape = [e.shape[0] / 2];
          return [c, d];
        },
        /has '[^']+' as I64|as int64/,
      ],
    ];
    for (const [backend, skip] of backends) {
      if (skip) {
        t.comment(`${backend} reader skipped: ${skip}`);
        continue;
      }
      const d = await Distiller.create({ teacher: TEACHER, student: STUDENT, totalSteps: 4, seed: SEED, backend });
      for (const [name, make, message] of cases) {
        const dir = path.join(tmp, `bad-${backend}-${name.replace(/\W+/g, '-')}`);
        await ready.d.save(dir);
        rmSync(path.join(dir, 'manifest.json')); // the readers alone (Distiller.load of a folder without a manifest)
        const file = path.join(dir, 'state.safetensors');
        const [h, body] = make(header, data);
        join(file, h, body);
        const error = await d.load(dir).then(
          () => null,
          (e: Error) => e,
        );
        t.ok(error && error.name === 'UserError', `${backend}, ${name}: refused with a UserError`);
        t.match(error?.message ?? '', file, `${backend}, ${name}: names the file`);
        t.match(error?.message ?? '', message, `${backend}, ${name}: says what is wrong`);
        t.notMatch(error?.message ?? '', /\n/, `${backend}, ${name}: one line`);
      }
    }
  },
);
