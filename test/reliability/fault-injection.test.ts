// Fault injection over every file type the CLI reads: truncations at several offsets, random byte flips, empty
// files, directories where files are expected, wrong dtypes and shapes. Each case runs the real CLI (in one child
// process per batch of cases, test/helpers/fault-harness.ts) and must end either with a clear message (exit 1 or 2,
// no "internal error") or with a correct result. Counted as failures:
//   crash          the process died (a signal, or exit above 128 that the test did not cause)
//   internal       an exception reached the CLI as an internal error instead of a message
//   silent wrong   exit 0 with a result that differs from the undamaged input's where the damage was detectable:
//                  any damage to a checkpoint (the manifest covers it: the resume must fall back and end bitwise
//                  equal), and truncations, empty files and directories of self-describing formats (.npy,
//                  safetensors, JSON, slides). A flipped byte inside a model's or array's values is a different input,
//                  not a detectable fault, and its result may differ.
import t from 'tap';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, VENV_PYTHON, runCli, runProcess } from '../helpers/cli.js';
import { runHarness, type HarnessCase, type HarnessResult } from '../helpers/fault-harness.js';
import { writeManifest } from '../../lib/io/manifest.js';
import { encodeNpy, parseNpy } from '../../lib/io/npy.js';
import { makeSyntheticSlides } from '../../lib/slides/synthetic.js';
import { mulberry32 } from '../../lib/util/random.js';

const FIXTURES = path.join(ROOT, 'test/fixtures/models');
const TEACHER = path.join(FIXTURES, 'timm_giant_reg4_swiglu');
const STUDENT = path.join(FIXTURES, 'hf_dinov2_reg_swiglu');
// One libtorch thread everywhere: a resumed run is compared bitwise with the reference.
const ENV = { OMP_NUM_THREADS: '1' };

type Damage = 'truncate' | 'flip' | 'empty' | 'directory' | 'missing' | 'dtype' | 'shape';

interface Mutation {
  name: string;
  damage: Damage;
  /** Byte offsets changed (flips), or the new length (truncations). */
  at: number[];
  apply: (file: string) => void;
}

/** Truncations at several offsets, byte flips at random offsets (seeded), empty, a directory, missing. */
function mutations(size: number, seed: number, options: { flips?: number; missing?: boolean } = {}): Mutation[] {
  const out: Mutation[] = [];
  const cuts = [
    ...new Set([1, 8, Math.floor(size / 4), Math.floor(size / 2), size - 1].filter((n) => n > 0 && n < size)),
  ];
  for (const n of cuts)
    out.push({ name: `truncate@${n}`, damage: 'truncate', at: [n], apply: (f) => truncateSync(f, n) });
  const rand = mulberry32(seed);
  for (let k = 0; k < (options.flips ?? 4); k++) {
    const count = k === 0 ? 16 : 1; // one case of many flips, the rest single bits
    const at = Array.from({ length: count }, () => Math.floor(rand() * size));
    const bits = at.map(() => 1 << Math.floor(rand() * 8));
    out.push({
      name: `flip${count}@${at.slice(0, 3).join(',')}${count > 3 ? ',...' : ''}`,
      damage: 'flip',
      at,
      apply: (f) => {
        const b = readFileSync(f);
        at.forEach((i, j) => (b[i] ^= bits[j]));
        writeFileSync(f, b);
      },
    });
  }
  out.push({ name: 'empty', damage: 'empty', at: [0], apply: (f) => writeFileSync(f, '') });
  out.push({
    name: 'directory',
    damage: 'directory',
    at: [],
    apply: (f) => {
      rmSync(f);
      mkdirSync(f);
    },
  });
  if (options.missing !== false) out.push({ name: 'missing', damage: 'missing', at: [], apply: (f) => rmSync(f) });
  return out;
}

/** `count` single-bit flips at seeded offsets inside a safetensors header (bytes 0 .. headerEnd - 1). */
function headerBitFlips(headerEnd: number, seed: number, count: number): Mutation[] {
  const rand = mulberry32(seed);
  return Array.from({ length: count }, () => {
    const at = Math.floor(rand() * headerEnd),
      bit = 1 << Math.floor(rand() * 8);
    return {
      name: `header flip@${at}`,
      damage: 'flip' as const,
      at: [at],
      apply: (f: string) => {
        const b = readFileSync(f);
        b[at] ^= bit;
        writeFileSync(f, b);
      },
    };
  });
}

interface Case {
  /** File type and mutation, for the report. */
  label: string;
  type: string;
  file: string;
  damage: Damage;
  /** Offsets that a flip changed. */
  at: number[];
  run: HarnessCase;
  /** The case's result compared with the undamaged input's: true when equal. */
  same: () => boolean;
  /** Where the values of the file begin (its header ends): flips past it change values, not structure. */
  valuesFrom?: number;
  /** Damage that must not pass unnoticed: exit 0 must then give the undamaged result. */
  strict: boolean;
  /** A pattern the message must match when the case fails (the file or its folder named). */
  names: RegExp;
  /** Exit codes that are a correct outcome besides 0, 1 and 2 (none so far). */
  expect?: (r: HarnessResult) => string | null;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const bytesEqual = (a: string, b: string) =>
  existsSync(a) && existsSync(b) && statSync(a).isFile() && readFileSync(a).equals(readFileSync(b));

t.test('fault injection: damaged inputs end in a message or a correct result, never a crash', async (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'g2l-faults-'));
  const cases: Case[] = [];
  let n = 0;
  const fresh = (name: string) => path.join(root, 'cases', `${String(n++).padStart(4, '0')}-${name}`);

  // ---- a paused run (checkpoints step-2, step-4) and the reference resume to step 6 ----------------------------
  const base = path.join(root, 'base');
  const first = await runCli(
    [
      'distill',
      '--teacher',
      TEACHER,
      '--student',
      STUDENT,
      '--slides',
      'synthetic:32',
      '--out',
      base,
      '--steps',
      '8',
      '--batch-size',
      '2',
      '--seed',
      '7',
      '--checkpoint-every',
      '2',
      '--until',
      '4',
      '--no-progress',
    ],
    { env: ENV },
  );
  t.equal(first.code, 0, `base run: ${first.stderr}`);
  const reference = path.join(root, 'reference');
  cpSync(base, reference, { recursive: true });
  const ref = await runCli(['distill', '--resume', reference, '--until', '6', '--no-progress'], { env: ENV });
  t.equal(ref.code, 0, `reference resume: ${ref.stderr}`);
  const refState = path.join(reference, 'checkpoints', 'step-6', 'state.safetensors');
  const resumeCase = (
    label: string,
    type: string,
    rel: string,
    m: Mutation,
    strict: boolean,
    names: RegExp,
    expect?: Case['expect'],
  ) => {
    const run = fresh(`resume-${type}`);
    cpSync(base, run, { recursive: true });
    m.apply(path.join(run, rel));
    cases.push({
      label,
      type,
      file: rel,
      damage: m.damage,
      at: m.at,
      strict,
      names,
      expect,
      run: { kind: 'cli', args: ['distill', '--resume', run, '--until', '6', '--no-progress'] },
      same: () => bytesEqual(path.join(run, 'checkpoints', 'step-6', 'state.safetensors'), refState),
    });
  };
  // Every damage to the newest checkpoint: reported, and the resume falls back to step-2 and ends bitwise equal.
  const fallback: Case['expect'] = (r) =>
    r.code === 0 && !/checkpoint checkpoints\/step-4 is damaged/.test(r.stderr)
      ? 'the damaged step-4 was not reported'
      : null;
  for (const file of ['state.safetensors', 'distiller.json', 'manifest.json']) {
    const rel = path.join('checkpoints', 'step-4', file);
    const bytes = readFileSync(path.join(base, rel));
    for (const m of mutations(bytes.length, 11 + file.length, { flips: 8 })) {
      // Cutting a JSON file's final newline changes no content: the checkpoint is then intact. Without its manifest a
      // checkpoint is one of an older g2l-native: used with a warning (its files are intact here).
      const benign = m.damage === 'truncate' && m.at[0] === bytes.length - 1 && bytes[bytes.length - 1] === 0x0a;
      const legacy = file === 'manifest.json' && m.damage === 'missing';
      resumeCase(`checkpoint ${file} ${m.name}`, `checkpoint/${file}`, rel, m, true, /step-4/, (r) =>
        r.code !== 0
          ? `exit ${r.code}: the intact step-2 was not used`
          : legacy
            ? /step-4 has no manifest\.json \(written by an older g2l-native\)/.test(r.stderr)
              ? null
              : 'no warning about the missing manifest'
            : benign
              ? null
              : fallback(r),
      );
    }
  }
  // Both checkpoints damaged: exit 2 with one message.
  {
    const run = fresh('resume-none-intact');
    cpSync(base, run, { recursive: true });
    truncateSync(path.join(run, 'checkpoints', 'step-4', 'state.safetensors'), 1000);
    writeFileSync(path.join(run, 'checkpoints', 'step-2', 'distiller.json'), '{"format": "g2l');
    cases.push({
      label: 'both checkpoints damaged',
      type: 'checkpoint/none-intact',
      file: 'checkpoints',
      damage: 'truncate',
      at: [],
      strict: true,
      names: /no intact checkpoint.*step-4: state\.safetensors has 1000 bytes.*step-2: distiller\.json/,
      run: { kind: 'cli', args: ['distill', '--resume', run, '--until', '6', '--no-progress'] },
      same: () => false,
      expect: (r) =>
        r.code === 2 && r.stderr.trim().split('\n').length === 1 ? null : `exit ${r.code}, expected 2 with one line`,
    });
  }
  // A checkpoint write cut short by a kill (its temporary folder): ignored and removed.
  {
    const run = fresh('resume-stale-temp');
    cpSync(base, run, { recursive: true });
    const stale = path.join(run, 'checkpoints', '.step-6.123.abc.tmp');
    mkdirSync(stale);
    writeFileSync(
      path.join(stale, 'state.safetensors'),
      readFileSync(path.join(base, 'checkpoints', 'step-4', 'state.safetensors')).subarray(0, 5000),
    );
    cases.push({
      label: 'stale temporary checkpoint folder',
      type: 'checkpoint/temp',
      file: 'checkpoints',
      damage: 'truncate',
      at: [],
      strict: true,
      names: /$^/,
      run: { kind: 'cli', args: ['distill', '--resume', run, '--until', '6', '--no-progress'] },
      same: () =>
        bytesEqual(path.join(run, 'checkpoints', 'step-6', 'state.safetensors'), refState) && !existsSync(stale),
      expect: (r) => (r.code === 0 ? null : `exit ${r.code}`),
    });
  }
  // The run's config.json and log.jsonl: a damaged config.json is replaced by the checkpoint's copy, or refused.
  for (const m of mutations(statSync(path.join(base, 'config.json')).size, 5)) {
    resumeCase(`run config.json ${m.name}`, 'run/config.json', 'config.json', m, true, /config\.json/);
  }
  for (const m of mutations(statSync(path.join(base, 'log.jsonl')).size, 6)) {
    resumeCase(`run log.jsonl ${m.name}`, 'run/log.jsonl', 'log.jsonl', m, true, /log\.jsonl/);
  }

  // A run whose checkpoints an earlier g2l-native wrote (state.pt, a torch pickle, listed by the manifest): --resume
  // refuses it with exit 2 and one line saying so (the format changed; the bytes here are only a stand-in).
  {
    const run = fresh('resume-legacy');
    cpSync(base, run, { recursive: true });
    for (const step of [2, 4]) {
      const dir = path.join(run, 'checkpoints', `step-${step}`);
      renameSync(path.join(dir, 'state.safetensors'), path.join(dir, 'state.pt'));
      await writeManifest(dir);
    }
    cases.push({
      label: 'checkpoints of an earlier g2l-native (state.pt)',
      type: 'checkpoint/legacy',
      file: 'state.pt',
      damage: 'missing',
      at: [],
      strict: true,
      names:
        /step-4 was written by an earlier g2l-native \(checkpoint format state\.pt\).*start it again in a new --out folder/,
      run: { kind: 'cli', args: ['distill', '--resume', run, '--until', '6', '--no-progress'] },
      same: () => false,
      expect: (r) =>
        r.code === 2 && r.stderr.trim().split('\n').length === 1 ? null : `exit ${r.code}, expected 2 with one line`,
    });
  }

  // ---- state.safetensors read without a manifest (Distiller.load of a bare folder), by the engine and the js reader
  // Nothing but the file itself protects it here: its header is validated strictly (offsets, dtypes, shapes, the
  // tensors tiling the data, the key set and metadata the backends write) and its data against the CRC-32 in its
  // metadata, so every case must end in a message (strict, and no result to compare: exit 0 is a silent wrong load).
  // Besides the seeded flips over the whole file (mostly in the data), single-bit flips inside the header. A folder
  // with an older g2l-native's state.pt instead is refused with a message naming it.
  const bare = path.join(root, 'bare');
  cpSync(path.join(base, 'checkpoints', 'step-4'), bare, { recursive: true });
  rmSync(path.join(bare, 'manifest.json'));
  const stateBytes = readFileSync(path.join(bare, 'state.safetensors'));
  const headerEnd = 8 + Number(stateBytes.readBigUInt64LE(0));
  for (const backend of ['native', 'js'] as const) {
    const headerFlips = headerBitFlips(headerEnd, backend === 'native' ? 23 : 24, 6);
    for (const m of [...mutations(stateBytes.length, backend === 'native' ? 21 : 22, { flips: 3 }), ...headerFlips]) {
      const dir = fresh(`load-${backend}`);
      cpSync(bare, dir, { recursive: true });
      m.apply(path.join(dir, 'state.safetensors'));
      cases.push({
        label: `state.safetensors without manifest (${backend}) ${m.name}`,
        type: `state.safetensors/${backend}`,
        file: 'state.safetensors',
        damage: m.damage,
        at: m.at,
        strict: true,
        names: /state\.safetensors/,
        same: () => false,
        run: { kind: 'load', folder: dir, backend, teacher: TEACHER, student: STUDENT },
      });
    }
    const legacy = fresh(`load-${backend}-legacy`);
    cpSync(bare, legacy, { recursive: true });
    renameSync(path.join(legacy, 'state.safetensors'), path.join(legacy, 'state.pt'));
    cases.push({
      label: `state.pt of an earlier g2l-native (${backend})`,
      type: `state.safetensors/${backend}`,
      file: 'state.pt',
      damage: 'missing',
      at: [],
      strict: true,
      names: /holds state\.pt: a checkpoint written by an earlier g2l-native/,
      same: () => false,
      run: { kind: 'load', folder: legacy, backend, teacher: TEACHER, student: STUDENT },
    });
  }

  // ---- model folders (embed) ----------------------------------------------------------------------------------------
  const images = path.join(root, 'images.npy');
  const raw = readFileSync(path.join(FIXTURES, 'inputs', 'images_224.u8'));
  writeFileSync(images, encodeNpy({ dtype: 'uint8', shape: [2, 224, 224, 3], data: new Uint8Array(raw) }));
  const refEmbed = (model: string) => path.join(root, `embed-ref-${path.basename(model)}.npy`);
  for (const model of [TEACHER, STUDENT]) {
    const r = await runCli(['embed', '--model', model, '--input', images, '--out', refEmbed(model)], { env: ENV });
    t.equal(r.code, 0, `reference embedding of ${path.basename(model)}: ${r.stderr}`);
  }
  const modelFiles: [string, string][] = [
    [TEACHER, 'model.safetensors'],
    [TEACHER, 'config.json'],
    [STUDENT, 'model-00001-of-00003.safetensors'],
    [STUDENT, 'model.safetensors.index.json'],
    [STUDENT, 'config.json'],
    [STUDENT, 'preprocessor_config.json'],
  ];
  for (const [model, file] of modelFiles) {
    const size = statSync(path.join(model, file)).size;
    const headerEnd = file.endsWith('.safetensors')
      ? 8 + Number(readFileSync(path.join(model, file)).readBigUInt64LE(0))
      : Infinity;
    for (const m of mutations(size, file.length * 7)) {
      for (const backend of file === 'model.safetensors' ? (['native', 'js'] as const) : (['native'] as const)) {
        if (backend === 'js' && m.damage === 'flip') continue;
        const dir = fresh(`model-${backend}`);
        cpSync(model, dir, { recursive: true });
        m.apply(path.join(dir, file));
        const out = path.join(dir, 'out.npy');
        cases.push({
          label: `${path.basename(model)}/${file} ${m.name}${backend === 'js' ? ' (js)' : ''}`,
          type: `model/${file.replace(/-0+1-of-0+3/, '-shard')}`,
          file,
          damage: m.damage,
          at: m.at,
          valuesFrom: headerEnd,
          // preprocessor_config.json is optional (missing: the family's defaults, as transformers' own loader does).
          strict:
            (m.damage !== 'flip' || m.at.some((i) => i < headerEnd && file.endsWith('.safetensors'))) &&
            !(m.damage === 'missing' && file === 'preprocessor_config.json'),
          names: new RegExp(`${escape(file)}|${escape(dir)}`),
          run: {
            kind: 'cli',
            args: [
              'embed',
              '--model',
              dir,
              '--input',
              images,
              '--out',
              out,
              ...(backend === 'js' ? ['--backend', 'js'] : []),
            ],
          },
          same: () => bytesEqual(out, refEmbed(model)),
        });
      }
    }
  }

  // ---- .npy: embed's input and a feature set's features -----------------------------------------------------------
  const npyCases = (
    file: string,
    seed: number,
    make: (dir: string) => { target: string; args: string[]; result: string },
    refResult: string,
    valuesFrom: number,
    extra: Mutation[],
  ) => {
    for (const m of [...mutations(statSync(file).size, seed), ...extra]) {
      const dir = fresh('npy');
      const { target, args, result } = make(dir);
      m.apply(target);
      cases.push({
        label: `${path.basename(file)} ${m.name}`,
        type: `npy/${path.basename(file)}`,
        file: path.basename(file),
        damage: m.damage,
        at: m.at,
        valuesFrom,
        strict: m.damage !== 'flip' || m.at.some((i) => i < valuesFrom),
        names: new RegExp(escape(path.basename(target)) + '|' + escape(dir)),
        run: { kind: 'cli', args },
        same: () => bytesEqual(result, refResult),
      });
    }
  };
  const npyHeader = (file: string) => readFileSync(file).length - parseNpy(readFileSync(file)).data.byteLength;
  const rewrite = (name: string, damage: Damage, make: (arr: ReturnType<typeof parseNpy>) => Uint8Array): Mutation => ({
    name,
    damage,
    at: [],
    apply: (f) => writeFileSync(f, make(parseNpy(readFileSync(f)))),
  });
  npyCases(
    images,
    31,
    (dir) => {
      mkdirSync(dir, { recursive: true });
      const target = path.join(dir, 'images.npy');
      cpSync(images, target);
      const out = path.join(dir, 'out.npy');
      return { target, args: ['embed', '--model', TEACHER, '--input', target, '--out', out], result: out };
    },
    refEmbed(TEACHER),
    npyHeader(images),
    [
      rewrite('float64 values', 'dtype', (a) =>
        encodeNpy({ dtype: 'float64', shape: a.shape, data: Float64Array.from(a.data as Uint8Array) }),
      ),
      rewrite('int32 values', 'dtype', (a) =>
        encodeNpy({ dtype: 'int32', shape: a.shape, data: Int32Array.from(a.data as Uint8Array) }),
      ),
      rewrite('shape (2,224,224,4)', 'shape', () =>
        encodeNpy({ dtype: 'uint8', shape: [2, 224, 224, 4], data: new Uint8Array(2 * 224 * 224 * 4) }),
      ),
      rewrite('shape (224,224,3)', 'shape', (a) =>
        encodeNpy({ dtype: 'uint8', shape: [224, 224, 3], data: (a.data as Uint8Array).subarray(0, 224 * 224 * 3) }),
      ),
      rewrite('shape (2,0,224,3)', 'shape', () =>
        encodeNpy({ dtype: 'uint8', shape: [2, 0, 224, 3], data: new Uint8Array(0) }),
      ),
      rewrite('float32 (2,3,8,8)', 'shape', () =>
        encodeNpy({ dtype: 'float32', shape: [2, 3, 8, 8], data: new Float32Array(2 * 3 * 64) }),
      ),
    ],
  );
  // A feature set (features.npy + meta.csv) evaluated with kNN.
  const set = path.join(root, 'set');
  mkdirSync(set);
  const rows = 24,
    dims = 6;
  const feats = new Float32Array(rows * dims).map((_, i) => Math.sin(i * 0.7) + (Math.floor(i / dims) % 2));
  writeFileSync(path.join(set, 'features.npy'), encodeNpy({ dtype: 'float32', shape: [rows, dims], data: feats }));
  writeFileSync(
    path.join(set, 'meta.csv'),
    `id,label,split\n${Array.from({ length: rows }, (_, i) => `s${i},${i % 2 ? 'tumor' : 'normal'},${i < 16 ? 'train' : 'test'}`).join('\n')}\n`,
  );
  const evalArgs = (setDir: string, out: string) => [
    'eval',
    '--features',
    `set:${setDir}`,
    '--protocol',
    'knn,linear',
    '--k',
    '3',
    '--no-cka',
    '--out',
    out,
  ];
  const refEval = path.join(root, 'eval-ref');
  const evalRef = await runCli(evalArgs(set, refEval), { env: ENV });
  t.equal(evalRef.code, 0, `reference eval: ${evalRef.stderr}`);
  const metrics = (out: string) => {
    try {
      const r = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
      return JSON.stringify(r.sets ?? r.set ?? r);
    } catch {
      return null;
    }
  };
  const evalCases = (file: string, seed: number, valuesFrom: number, extra: Mutation[]) => {
    for (const m of [...mutations(statSync(path.join(set, file)).size, seed), ...extra]) {
      const dir = fresh('eval');
      cpSync(set, dir, { recursive: true });
      m.apply(path.join(dir, file));
      const out = `${dir}-out`;
      cases.push({
        label: `feature set ${file} ${m.name}`,
        type: `featureset/${file}`,
        file,
        damage: m.damage,
        at: m.at,
        valuesFrom,
        strict: m.damage !== 'flip' || m.at.some((i) => i < valuesFrom),
        names: new RegExp(`${escape(file)}|${escape(dir)}`),
        run: { kind: 'cli', args: evalArgs(dir, out) },
        same: () => {
          const a = metrics(out),
            b = metrics(refEval);
          return (
            a !== null && a.replace(new RegExp(escape(dir), 'g'), '') === b!.replace(new RegExp(escape(set), 'g'), '')
          );
        },
      });
    }
  };
  evalCases('features.npy', 41, npyHeader(path.join(set, 'features.npy')), [
    rewrite('int32 values', 'dtype', (a) =>
      encodeNpy({ dtype: 'int32', shape: a.shape, data: Int32Array.from(a.data as Float32Array) }),
    ),
    rewrite('1-D', 'shape', (a) =>
      encodeNpy({ dtype: 'float32', shape: [a.data.length], data: a.data as Float32Array }),
    ),
    rewrite('fewer rows', 'shape', (a) =>
      encodeNpy({ dtype: 'float32', shape: [rows - 1, dims], data: (a.data as Float32Array).subarray(dims) }),
    ),
    rewrite('NaN values', 'dtype', (a) =>
      encodeNpy({
        dtype: 'float32',
        shape: a.shape,
        data: (a.data as Float32Array).map((v, i) => (i === 7 ? NaN : v)),
      }),
    ),
  ]);
  // CSV values are data: a flipped or cut value may still be a valid table; the cases must end in a message or exit 0.
  evalCases('meta.csv', 43, 0, []);
  // Slide-level evaluation: per-slide .h5 features of embed --slides and the labels CSV.
  const bagsFx = path.join(ROOT, 'test/fixtures/slide-eval');
  const slideArgs = (bags: string, labels: string, out: string) => [
    'eval',
    '--level',
    'slide',
    '--features',
    `g2l:${bags}`,
    '--labels',
    labels,
    '--C',
    '1',
    '--k',
    '5',
    '--out',
    out,
  ];
  const slideRef = path.join(root, 'slide-ref');
  const sr = await runCli(slideArgs(path.join(bagsFx, 'bags'), path.join(bagsFx, 'labels.csv'), slideRef), {
    env: ENV,
  });
  t.equal(sr.code, 0, `reference slide-level eval: ${sr.stderr}`);
  const slideMetrics = (out: string) => {
    try {
      return JSON.stringify(JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8')).slide);
    } catch {
      return null;
    }
  };
  for (const file of ['bags/P00-S0.h5', 'labels.csv']) {
    for (const m of mutations(statSync(path.join(bagsFx, file)).size, 47 + file.length, { flips: 4 })) {
      const dir = fresh('slide-eval');
      cpSync(bagsFx, dir, { recursive: true });
      m.apply(path.join(dir, file));
      const out = `${dir}-out`;
      cases.push({
        label: `slide-level ${file} ${m.name}`,
        type: file.endsWith('.h5') ? 'h5/slide-features' : 'slide/labels.csv',
        file,
        damage: m.damage,
        at: m.at,
        // A cut labels.csv is a valid one with fewer slides: the message may be about what is left (one class).
        strict: m.damage !== 'flip' && file.endsWith('.h5'),
        names: new RegExp(`${escape(path.basename(file))}|${escape(dir)}${file.endsWith('.csv') ? '|class' : ''}`),
        run: { kind: 'cli', args: slideArgs(path.join(dir, 'bags'), path.join(dir, 'labels.csv'), out) },
        same: () => slideMetrics(out) !== null && slideMetrics(out) === slideMetrics(slideRef),
      });
    }
  }

  // ---- slides (tile), tile manifests (distill --slides), dataset CSV and images (embed) ----------------------------
  const slides = path.join(root, 'slides');
  await makeSyntheticSlides(slides, { count: 2, width: 1024, height: 768, seed: 3 });
  const tiled = path.join(root, 'tiled');
  const tileRef = await runCli(['tile', '--slides', slides, '--out', tiled, '--tile', '128'], { env: ENV });
  t.equal(tileRef.code, 0, `reference tiling: ${tileRef.stderr}`);
  const tilesOf = (out: string) => {
    try {
      return readdirSync(path.join(out, 'tiles'))
        .sort()
        .map((f) => readFileSync(path.join(out, 'tiles', f), 'utf8'))
        .join('|');
    } catch {
      return null;
    }
  };
  for (const file of readdirSync(slides).sort()) {
    for (const m of mutations(statSync(path.join(slides, file)).size, 51 + file.length, { flips: 3 })) {
      const dir = fresh('tile');
      cpSync(slides, dir, { recursive: true });
      m.apply(path.join(dir, file));
      const out = `${dir}-out`;
      cases.push({
        label: `slide ${file} ${m.name}`,
        type: `slide/${path.extname(file).slice(1)}`,
        file,
        damage: m.damage,
        at: m.at,
        // A damaged slide is a failed row; the other slide's tiles must be those of the undamaged run.
        strict: false,
        names: new RegExp(`${escape(file)}|${escape(dir)}`),
        run: { kind: 'cli', args: ['tile', '--slides', dir, '--out', out, '--tile', '128'] },
        same: () => tilesOf(out) === tilesOf(tiled),
      });
    }
  }
  // TRIDENT patch coordinates (.h5, written by h5py from our manifest) for tile --coords-from. A slide whose file is
  // damaged is a failed row; a slide marked ok must have the undamaged file's tiles unless a value changed.
  const job = path.join(root, 'trident');
  const py = await runProcess(VENV_PYTHON, [path.join(ROOT, 'tools/make_trident_patches.py'), tiled, job]);
  if (py.code !== 0)
    t.comment(`no .h5 cases: tools/make_trident_patches.py failed (${py.stderr.trim().split('\n').at(-1)})`);
  const slideRows = (out: string) => {
    try {
      return readFileSync(path.join(out, 'slides.csv'), 'utf8')
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => l.split(','));
    } catch {
      return null;
    }
  };
  const refCoords = path.join(root, 'coords-ref');
  if (py.code === 0) {
    const r = await runCli(['tile', '--slides', slides, '--out', refCoords, '--tile', '128', '--coords-from', job], {
      env: ENV,
    });
    t.equal(r.code, 0, `reference --coords-from: ${r.stderr}`);
    for (const file of readdirSync(path.join(job, 'patches')).sort()) {
      for (const m of mutations(statSync(path.join(job, 'patches', file)).size, 91 + file.length, { flips: 4 })) {
        const dir = fresh('h5');
        cpSync(job, dir, { recursive: true });
        m.apply(path.join(dir, 'patches', file));
        const out = `${dir}-out`;
        cases.push({
          label: `TRIDENT ${file} ${m.name}`,
          type: 'h5/patches',
          file,
          damage: m.damage,
          at: m.at,
          strict: m.damage !== 'flip',
          names: new RegExp(`${escape(file)}|${escape(dir)}`),
          run: { kind: 'cli', args: ['tile', '--slides', slides, '--out', out, '--tile', '128', '--coords-from', dir] },
          same: () => {
            const rows = slideRows(out);
            if (!rows) return false;
            return rows.every(
              (row) =>
                row[2] === 'failed' ||
                (existsSync(path.join(out, 'tiles', `${row[0]}.csv`)) &&
                  readFileSync(path.join(out, 'tiles', `${row[0]}.csv`), 'utf8') ===
                    readFileSync(path.join(refCoords, 'tiles', `${row[0]}.csv`), 'utf8')),
            );
          },
        });
      }
    }
  }

  // A tile output folder: its slides.csv, tiling.json and tiles/<slide>.csv, read by a rerun of tile and by distill.
  const tileFiles = ['slides.csv', 'tiling.json', ...readdirSync(path.join(tiled, 'tiles')).map((f) => `tiles/${f}`)];
  for (const file of tileFiles) {
    for (const m of mutations(statSync(path.join(tiled, file)).size, 61 + file.length, { flips: 2 })) {
      const dir = fresh('tiled');
      cpSync(tiled, dir, { recursive: true });
      m.apply(path.join(dir, file));
      const command =
        file === 'tiling.json'
          ? ['tile', '--slides', slides, '--out', dir, '--tile', '128']
          : [
              'distill',
              '--teacher',
              TEACHER,
              '--student',
              STUDENT,
              '--slides',
              dir,
              '--out',
              `${dir}-run`,
              '--steps',
              '1',
              '--batch-size',
              '2',
              '--no-progress',
            ];
      cases.push({
        label: `tile output ${file} ${m.name} (${command[0]})`,
        type: `tiles/${file.startsWith('tiles/') ? '<slide>.csv' : file}`,
        file,
        damage: m.damage,
        at: m.at,
        strict: false,
        names: new RegExp(`${escape(path.basename(file))}|${escape(dir)}`),
        run: { kind: 'cli', args: command },
        same: () => true,
      });
    }
  }
  // --config files (YAML and JSON) for distill.
  const configs: [string, string][] = [
    ['run.yaml', 'optimizer:\n  lr: 0.001\n  warmupSteps: 1\nloss:\n  alpha: 4\nbatchSize: 2\ncheckpointEvery: 5\n'],
    ['run.json', '{"optimizer": {"lr": 0.001}, "batchSize": 2, "augment": {"enabled": true}}\n'],
  ];
  for (const [name, text] of configs) {
    for (const m of mutations(text.length, 71 + name.length, { flips: 4 })) {
      const dir = fresh('config');
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, name), text);
      m.apply(path.join(dir, name));
      cases.push({
        // A cut YAML or JSON file can be a valid one with other values (batchSize gone: 32): the message is then
        // about those values, not the file.
        label: `--config ${name} ${m.name}`,
        type: `config/${path.extname(name).slice(1)}`,
        file: name,
        damage: m.damage,
        at: m.at,
        strict: false,
        names: new RegExp(`${escape(name)}|batch|tiles`),
        run: {
          kind: 'cli',
          args: [
            'distill',
            '--config',
            path.join(dir, name),
            '--teacher',
            TEACHER,
            '--student',
            STUDENT,
            '--slides',
            'synthetic:8',
            '--out',
            path.join(dir, 'run'),
            '--steps',
            '1',
            '--no-progress',
          ],
        },
        same: () => true,
      });
    }
  }
  // An image dataset: a CSV of image paths, and the images themselves (a damaged image is skipped and listed).
  const data = path.join(root, 'data');
  mkdirSync(data);
  const sharp = (await import('sharp')).default;
  for (let i = 0; i < 4; i++) {
    const px = Buffer.alloc(40 * 40 * 3).map((_, j) => (j * (i + 3)) % 251);
    await sharp(px, { raw: { width: 40, height: 40, channels: 3 } }).toFile(
      path.join(data, `img${i}.${i % 2 ? 'jpg' : 'png'}`),
    );
  }
  writeFileSync(
    path.join(data, 'data.csv'),
    `path,label,split\n${[0, 1, 2, 3].map((i) => `img${i}.${i % 2 ? 'jpg' : 'png'},${i % 2 ? 'a' : 'b'},${i < 2 ? 'train' : 'test'}`).join('\n')}\n`,
  );
  for (const file of ['data.csv', 'img0.png', 'img1.jpg']) {
    for (const m of mutations(statSync(path.join(data, file)).size, 81 + file.length, { flips: 3 })) {
      const dir = fresh('dataset');
      cpSync(data, dir, { recursive: true });
      m.apply(path.join(dir, file));
      cases.push({
        label: `dataset ${file} ${m.name}`,
        type: file === 'data.csv' ? 'dataset/csv' : `image/${path.extname(file).slice(1)}`,
        file,
        damage: m.damage,
        at: m.at,
        strict: false,
        names: new RegExp(`${escape(file)}|${escape(dir)}`),
        run: {
          kind: 'cli',
          args: ['embed', '--model', STUDENT, '--input', path.join(dir, 'data.csv'), '--out', `${dir}-features`],
        },
        same: () => true,
      });
    }
  }

  // ---- run them all ---------------------------------------------------------------------------------------------
  // G2L_FAULT_FILTER=<regexp>: only the cases whose label matches (while working on one reader).
  const filter = process.env.G2L_FAULT_FILTER ? new RegExp(process.env.G2L_FAULT_FILTER) : null;
  if (filter) cases.splice(0, cases.length, ...cases.filter((c) => filter.test(c.label)));
  const started = Date.now();
  const results = await runHarness(
    cases.map((c) => c.run),
    { env: ENV },
  );
  const seconds = (Date.now() - started) / 1000;
  const tally = {
    cases: cases.length,
    crashes: 0,
    internal: 0,
    silentWrong: 0,
    unnamed: 0,
    wrongOutcome: 0,
    reported: 0,
    sameResult: 0,
    valuesChanged: 0,
  };
  const byType = new Map<string, number>();
  cases.forEach((c, i) => {
    const r = results[i];
    byType.set(c.type, (byType.get(c.type) ?? 0) + 1);
    const what = `${c.label}: ${r.died ? `died (${r.died})` : `exit ${r.code}`}: ${r.stderr.trim().split('\n').slice(-2).join(' / ')}`;
    if (r.died || r.code === null || r.code > 128) {
      tally.crashes++;
      t.fail(`crash: ${what}`);
      return;
    }
    if (/internal error/.test(r.stderr) || (r.code !== 0 && r.code !== 1 && r.code !== 2)) {
      tally.internal++;
      t.fail(`not a clear message: ${what}`);
      return;
    }
    const wrong = c.expect?.(r);
    if (wrong) {
      tally.wrongOutcome++;
      t.fail(`${c.label}: ${wrong}: ${r.stderr.trim()}`);
      return;
    }
    if (r.code !== 0) {
      tally.reported++;
      if (!c.names.test(r.stderr)) {
        tally.unnamed++;
        t.fail(`the message does not name the file: ${what}`);
      }
      return;
    }
    if (c.same()) tally.sameResult++;
    else if (c.strict) {
      tally.silentWrong++;
      t.fail(`silent wrong result: ${what}`);
    } else tally.valuesChanged++;
  });
  t.comment(
    `fault injection: ${JSON.stringify(tally)} in ${seconds.toFixed(0)} s; cases by file type: ${JSON.stringify(Object.fromEntries(byType))}`,
  );
  t.equal(tally.crashes, 0, 'no crash');
  t.equal(tally.internal, 0, 'no internal error');
  t.equal(tally.silentWrong, 0, 'no silent wrong result');
  if (!filter) t.ok(tally.cases >= 200, `${tally.cases} cases tried`);
  if (process.env.G2L_FAULT_REPORT)
    writeFileSync(
      process.env.G2L_FAULT_REPORT,
      `${JSON.stringify({ ...tally, seconds, byType: Object.fromEntries(byType) }, null, 2)}\n`,
    );
  if (!t.passing()) t.comment(`inputs kept in ${root}`);
  else rmSync(root, { recursive: true, force: true });
});
