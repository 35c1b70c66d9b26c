// Library use does not fall back silently: without an engine, Encoder.load, Encoder.create, Distiller.create and
// logSumLoss reject with the engine's load error (naming the setup command) unless the caller asked for js or
// allowed the fallback, per call or for the process. The CLI allows it (test/foundation/loader.test.ts).
import t from 'tap';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync } from 'node:fs';
import { folder, manifest, relativeError, u8Images } from '../js-backend/helpers.js';

const missing = path.join(mkdtempSync(path.join(os.tmpdir(), 'g2l-nolib-')), 'nowhere', 'g2l_engine.node');
process.env.G2L_ENGINE_PATH = missing;
t.teardown(() => {
  delete process.env.G2L_ENGINE_PATH;
});

const { Encoder } = await import('../../lib/models/encoder.js');
const { Distiller } = await import('../../lib/distill/distiller.js');
const { logSumLoss } = await import('../../lib/distill/loss.js');
const { EngineLoadError, allowBackendFallback, getBackend } = await import('../../lib/backends/index.js');

const model = folder('hf_dinov2_swiglu');

t.test('Encoder.load without an engine rejects with the engine load error', async (t) => {
  const err = await Encoder.load(model).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof EngineLoadError, 'an EngineLoadError, not a js Encoder');
  t.match((err as Error).message, /native engine could not be loaded/);
  t.match((err as Error).message, missing);
  t.match((err as Error).message, /npm run setup/, 'names the setup command (a checkout: npm run setup)');
  await t.rejects(Encoder.create(model), EngineLoadError, 'Encoder.create too');
  t.throws(() => getBackend(), EngineLoadError, 'getBackend too');
});

t.test('Distiller.create and logSumLoss without an engine reject with the engine load error', async (t) => {
  await t.rejects(Distiller.create({ teacher: model, student: model, totalSteps: 1 }), EngineLoadError);
  const z = { data: new Float32Array(4), shape: [2, 2] };
  await t.rejects(
    (async () =>
      logSumLoss(z, z, {
        W: { data: new Float32Array(4), shape: [2, 2] },
        b: { data: new Float32Array(2), shape: [2] },
      }))(),
    EngineLoadError,
  );
});

t.test("backend: 'js' works without an engine and gives the reference embeddings", async (t) => {
  const enc = await Encoder.load(model, { backend: 'js' });
  t.equal(enc.backend.name, 'js');
  const u8 = u8Images('images_224');
  const y = await enc.embed({ data: u8.data, shape: u8.shape as [number, number, number, number] });
  t.same(y.shape, [2, 32]);
  t.ok(relativeError(y.data, manifest.models.hf_dinov2_swiglu.expected.u8_224.flat()) <= 1e-4, 'reference embeddings');
  await enc.dispose();
});

t.test('fallback: true per call, then allowBackendFallback() for the process: js after one warning', async (t) => {
  const writes: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => {
    writes.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    const a = await Encoder.load(model, { fallback: true });
    t.equal(a.backend.name, 'js');
    await a.dispose();
    await t.rejects(Encoder.load(model), EngineLoadError, 'the next call without fallback still rejects');
    allowBackendFallback();
    const b = await Encoder.load(model);
    t.equal(b.backend.name, 'js', 'allowed for the process');
    await b.dispose();
  } finally {
    process.stderr.write = write;
    allowBackendFallback(false);
  }
  const warnings = writes.filter((w) => w.includes('Continuing with the pure-JS backend'));
  t.equal(warnings.length, 1, 'one warning per process');
  t.match(warnings[0], /npm run setup/);
});
