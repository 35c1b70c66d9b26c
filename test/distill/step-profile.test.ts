// G2L_PROFILE (native/engine/train/step_profile.h): one step under the libtorch profiler, its trace and a per-kernel (here
// per-op: the CPU) table written beside each other; benchmarks/gpu.mjs reads the table. The variables are read by
// the engine in the CLI's process, so the CLI runs in a child process.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
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
  '3',
  '--batch-size',
  '2',
  '--progress',
  'false',
  '--device',
  'cpu',
  '--backend',
  'native',
];

t.test("G2L_PROFILE: the chosen step's trace and per-op table", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-step-profile-'));
  const prefix = path.join(dir, 'profiles', 'step');
  const r = await runCli(args(path.join(dir, 'run')), {
    env: childEnv({ G2L_PROFILE: prefix, G2L_PROFILE_STEP: '1' }),
  });
  t.equal(r.code, 0, r.stderr);
  const trace = JSON.parse(readFileSync(`${prefix}.trace.json`, 'utf8'));
  t.ok(
    Array.isArray(trace.traceEvents) && trace.traceEvents.length > 100,
    `a chrome trace (${trace.traceEvents?.length} events)`,
  );
  const [header, ...lines] = readFileSync(`${prefix}.kernels.tsv`, 'utf8').trim().split('\n');
  t.equal(header, 'device\tname\tcalls\ttotal_ms\tmean_us\tshare');
  const rows = lines
    .map((l) => l.split('\t'))
    .map(([device, name, calls, total, mean, share]) => ({
      device,
      name,
      calls: Number(calls),
      total: Number(total),
      mean: Number(mean),
      share: Number(share),
    }));
  t.ok(rows.length > 10 && rows.every((x) => x.device === 'cpu'), `${rows.length} rows, all on the CPU`);
  t.ok(
    rows.every((x) => Number.isInteger(x.calls) && x.calls > 0 && x.total >= 0 && x.share >= 0 && x.share <= 1),
    'counts, times and shares in range',
  );
  t.ok(
    rows.every((x, i) => i === 0 || rows[i - 1].total >= x.total),
    'sorted by total time',
  );
  const shares = rows.reduce((a, x) => a + x.share, 0);
  t.ok(Math.abs(shares - 1) < 1e-3 * rows.length, `shares add up to 1 (${shares})`);
  for (const op of ['aten::addmm', 'aten::scaled_dot_product_attention', 'aten::layer_norm']) {
    t.ok(
      rows.some((x) => x.name === op),
      `the step's ${op} is in the table`,
    );
  }
  // The profiled step is one of the three: the run's own results are unaffected.
  t.ok(existsSync(path.join(dir, 'run', 'student', 'model.safetensors')), 'the run completed');
});

t.test('G2L_PROFILE: nothing when the step is not reached; a bad step number is refused', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-step-profile-'));
  const prefix = path.join(dir, 'p');
  const r = await runCli(args(path.join(dir, 'a')), { env: childEnv({ G2L_PROFILE: prefix, G2L_PROFILE_STEP: '7' }) });
  t.equal(r.code, 0, r.stderr);
  t.notOk(existsSync(`${prefix}.kernels.tsv`) || existsSync(`${prefix}.trace.json`), 'no files for step 7 of 3');
  const bad = await runCli(args(path.join(dir, 'b')), {
    env: childEnv({ G2L_PROFILE: prefix, G2L_PROFILE_STEP: 'two' }),
  });
  t.not(bad.code, 0, 'a failing exit code');
  t.match(bad.stderr, /G2L_PROFILE_STEP must be a step number >= 0, got 'two'/);
});
