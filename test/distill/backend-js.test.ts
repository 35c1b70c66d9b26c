// `distill --backend js` runs the whole run on the pure-JS backend and logs the same losses as the native engine
// for the same seed; without the engine, distill falls back to js with one warning.
import t from 'tap';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, runCli } from '../helpers/cli.js';

const TEACHER = path.join(ROOT, 'test/fixtures/models/timm_giant_reg4_swiglu');
const STUDENT = path.join(ROOT, 'test/fixtures/models/hf_dinov2_reg_swiglu');
const args = (out: string) => [
  'distill',
  '--teacher',
  TEACHER,
  '--student',
  STUDENT,
  '--slides',
  'synthetic:16',
  '--out',
  out,
  '--steps',
  '3',
  '--batch-size',
  '2',
  '--seed',
  '5',
  '--lr',
  '0.001',
  '--progress',
  'false',
];
const losses = (run: string) =>
  readFileSync(path.join(run, 'log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l).loss as number);

t.test('native and js runs of the same seed log the same losses (1e-4 relative)', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-distill-js-'));
  const native = await runCli([...args(path.join(dir, 'native')), '--backend', 'native']);
  t.equal(native.code, 0, native.stderr);
  const js = await runCli([...args(path.join(dir, 'js')), '--backend', 'js']);
  t.equal(js.code, 0, js.stderr);
  t.notMatch(js.stderr, /warning/, 'an explicit --backend js gives no fallback warning');
  const a = losses(path.join(dir, 'native'));
  const b = losses(path.join(dir, 'js'));
  t.equal(a.length, 3);
  t.equal(b.length, 3);
  for (let i = 0; i < 3; i++)
    t.ok(Math.abs(a[i] - b[i]) <= 1e-4 * Math.abs(a[i]), `step ${i + 1}: native ${a[i]} js ${b[i]}`);
});

t.test('without the engine, distill warns once and runs on js', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-distill-js-'));
  const r = await runCli(args(path.join(dir, 'run')), { env: { G2L_ENGINE_PATH: path.join(dir, 'missing.node') } });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr.match(/Continuing with the pure-JS backend/g)?.length, 1, 'one warning');
  t.equal(losses(path.join(dir, 'run')).length, 3);
});
