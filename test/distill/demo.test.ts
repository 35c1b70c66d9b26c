// The demo end to end (CPU): report.json with a falling loss and a rising linear CKA, report.md with the loss curve,
// a complete run folder, and an exported student that transformers loads and that computes what the engine computes
// (tools/check_student_export.py, run with the pinned reference libraries).
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getBackend } from '../../lib/backends/index.js';
import { runDemo } from '../../lib/distill/demo.js';
import { openTileSource } from '../../lib/distill/tiles.js';
import { writeNpy } from '../../lib/io/npy.js';
import { ROOT, VENV_PYTHON, runProcess } from '../helpers/cli.js';

t.test('demo: loss falls, CKA rises, the student loads in transformers', async (t) => {
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'g2l-demo-')), 'demo');
  const report = await runDemo({ out, steps: 100, batchSize: 16, seed: 0, log: () => {} });
  const saved = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
  t.same(saved, report, 'report.json holds the report');
  t.same(
    Object.keys(saved).sort(),
    ['cka', 'loss', 'steps', 'stoppedBy', 'tasks', ...(saved.stopReason ? ['stopReason'] : [])].sort(),
  );
  // The protocol's evaluation on the two density tasks: one row per model, one column per task.
  t.same(
    saved.tasks.rows.map((r: { model: string }) => r.model),
    ['teacher', 'student', 'g2l'],
  );
  t.same(
    saved.tasks.columns.map((c: { dataset: string }) => c.dataset),
    ['patch-density', 'slide-density'],
  );
  for (const r of saved.tasks.rows) for (const v of r.cells) t.ok(v >= 0 && v <= 1, `${r.model}: ${v}`);
  t.ok(
    saved.tasks.rows[0].cells[0] > 0.5,
    `the teacher's features tell dense from sparse tissue (patch bacc ${saved.tasks.rows[0].cells[0]})`,
  );
  t.equal(saved.tasks.cka.length, 1, 'CKA before and after on the patch task');
  t.ok(
    existsSync(path.join(out, 'protocol', 'report.md')) && existsSync(path.join(out, 'protocol', 'table.png')),
    'the protocol report beside it',
  );
  t.ok(['completed', 'early-stopping'].includes(saved.stoppedBy), `stopped by ${saved.stoppedBy}`);
  t.equal(
    saved.stoppedBy === 'early-stopping',
    typeof saved.stopReason === 'string',
    'a reason exactly when early stopping ended it',
  );
  t.ok(report.steps > 20 && report.steps <= 100, `${report.steps} steps`);
  t.ok(report.loss.last < report.loss.first, `loss ${report.loss.first} -> ${report.loss.last}`);
  t.ok(report.cka.after > report.cka.before, `linear CKA ${report.cka.before} -> ${report.cka.after}`);
  for (const f of [
    'report.md',
    'loss.png',
    'config.json',
    'log.jsonl',
    'student/config.json',
    'student/model.safetensors',
  ]) {
    t.ok(existsSync(path.join(out, f)), f);
  }
  t.match(readFileSync(path.join(out, 'report.md'), 'utf8'), /!\[loss curve\]\(loss\.png\)/);
  t.ok(readdirCheckpoints(out) > 0, 'checkpoints written');

  // The exported student against transformers: the same embeddings of held-out tiles (centre 224 of 256).
  const held = await openTileSource(path.join(out, 'heldout-tiles'), { seed: 0, tileSizePx: 256 });
  const tiles = await held.batch(0, 6);
  await held.close();
  const n = tiles.shape[0];
  const crop = new Uint8Array(n * 224 * 224 * 3);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < 224; y++)
      crop.set(
        tiles.data.subarray(((i * 256 + y + 16) * 256 + 16) * 3, ((i * 256 + y + 16) * 256 + 240) * 3),
        (i * 224 + y) * 224 * 3,
      );
  const model = await getBackend({ backend: 'native' }).loadModel({ folder: path.join(out, 'student') });
  const z = await model.embed({ data: crop, shape: [n, 224, 224, 3] });
  await model.dispose();
  const dir = path.dirname(out);
  await writeNpy(path.join(dir, 'images.npy'), { dtype: 'uint8', shape: [n, 224, 224, 3], data: crop });
  await writeNpy(path.join(dir, 'features.npy'), { dtype: 'float32', shape: z.shape, data: z.data });
  const r = await runProcess(
    VENV_PYTHON,
    [
      path.join(ROOT, 'tools', 'check_student_export.py'),
      path.join(out, 'student'),
      path.join(dir, 'images.npy'),
      path.join(dir, 'features.npy'),
    ],
    { timeoutMs: 300_000 },
  );
  t.equal(r.code, 0, r.stderr || r.stdout);
  const check = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}');
  t.equal(check.library, 'transformers');
  t.equal(check.model, 'Dinov2WithRegistersModel');
  t.ok(check.maxRelDiff <= 1e-4, `engine vs transformers: ${check.maxRelDiff}`);
});

function readdirCheckpoints(out: string): number {
  const dir = path.join(out, 'checkpoints');
  return existsSync(dir) ? readdirSync(dir).length : 0;
}
