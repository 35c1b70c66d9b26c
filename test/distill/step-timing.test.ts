// G2L_STEP_TIMING=1 (native/engine/train/step_timer.h): one line of phase times per step on stderr, read by
// benchmarks/gpu.mjs. The switch is read once per process, so the CLI runs in a child process.
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { childEnv, ROOT, runCli } from '../helpers/cli.js';

const args = (out: string) => [
  'distill',
  '--teacher',
  path.join(ROOT, 'test/fixtures/models/timm_giant_reg4_swiglu'),
  '--student',
  path.join(ROOT, 'test/fixtures/models/hf_dinov2_reg_swiglu'),
  '--slides',
  'synthetic:16',
  '--out',
  out,
  '--steps',
  '2',
  '--batch-size',
  '2',
  '--progress',
  'false',
  '--device',
  'cpu',
  '--backend',
  'native',
];
const PHASES = ['upload', 'augment', 'teacher', 'student_forward', 'loss_backward', 'optimizer', 'read_loss'];

t.test('G2L_STEP_TIMING=1: one line per step, the phases in order, adding up to the total', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-step-timing-'));
  const r = await runCli(args(path.join(dir, 'on')), { env: childEnv({ G2L_STEP_TIMING: '1' }) });
  t.equal(r.code, 0, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('g2l-step-timing '));
  t.equal(lines.length, 2, 'one line per step');
  lines.forEach((line, step) => {
    const fields = line
      .split(' ')
      .slice(1)
      .map((kv) => kv.split('='));
    t.same(
      fields.map(([k]) => k),
      ['step', 'device', ...PHASES, 'total'],
      `step ${step}: fields in order`,
    );
    const row = Object.fromEntries(fields);
    t.equal(row.step, String(step));
    t.equal(row.device, 'cpu');
    const phases = PHASES.map((k) => Number(row[k]));
    t.ok(
      phases.every((ms) => Number.isFinite(ms) && ms >= 0),
      `step ${step}: phase times ${phases.join(' ')}`,
    );
    const sum = phases.reduce((a, b) => a + b, 0);
    t.ok(
      Math.abs(sum - Number(row.total)) <= 0.001 * PHASES.length,
      `step ${step}: phases add up to the total (${sum} vs ${row.total})`,
    );
  });
  const off = await runCli(args(path.join(dir, 'off')));
  t.equal(off.code, 0, off.stderr);
  t.notMatch(off.stderr, /g2l-step-timing/, 'off by default');
});
