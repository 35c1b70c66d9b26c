// One interface, two implementations: the Encoder on the js backend gives the reference libraries' embeddings and
// the native engine's (within 1e-4 relative) for the same folders, and exports a folder both backends read back.
import t from 'tap';
import path from 'node:path';
import { JsBackend, NativeBackend } from '../../lib/backends/index.js';
import { Encoder } from '../../lib/models/encoder.js';
import { engine, floatImages, folder, manifest, relativeError, u8Images } from './helpers.js';

const js = new JsBackend();
const { addon, skip } = engine();

for (const name of Object.keys(manifest.models)) {
  t.test(`${name}: js and native agree`, { skip }, async (t) => {
    const native = new NativeBackend(addon);
    const a = await Encoder.load(folder(name), { backend: js, device: 'cpu' });
    const b = await Encoder.load(folder(name), { backend: native, device: 'cpu' });
    t.same(a.info, b.info, 'same description, dtype and device');
    for (const input of [u8Images('images_224'), u8Images('images_168'), floatImages(u8Images('images_280'))]) {
      const [x, y] = await Promise.all([a.embed(input), b.embed(input)]);
      t.same(x.shape, y.shape);
      const err = relativeError(x.data, y.data);
      t.ok(err <= 1e-4, `(${input.shape}) js vs native: ${err.toExponential(2)} <= 1e-4`);
    }
    await a.dispose();
    await b.dispose();
  });
}

t.test('describeModel matches the engine for every preset and fixture', { skip }, async (t) => {
  const native = new NativeBackend(addon);
  for (const preset of ['h-optimus-0', 'hibou-l', 'hibou-b', 'uni2-h']) {
    t.same(await js.describeModel({ preset }), await native.describeModel({ preset }), preset);
  }
  for (const name of Object.keys(manifest.models)) {
    t.same(
      await js.describeModel({ folder: folder(name) }),
      await native.describeModel({ folder: folder(name) }),
      name,
    );
  }
});

t.test('a js export reads back on both backends with the same embeddings', async (t) => {
  const src = await Encoder.load(folder('hf_dinov2_reg_swiglu'), { backend: js });
  const out = path.join(t.testdir(), 'exported');
  await src.exportTo(out);
  const input = u8Images('images_224');
  const expected = manifest.models.hf_dinov2_reg_swiglu.expected.u8_224.flat();
  const back = await Encoder.load(out, { backend: js });
  t.ok(relativeError((await back.embed(input)).data, expected) <= 1e-4, 'js reads its export');
  if (!skip) {
    const nat = await Encoder.load(out, { backend: new NativeBackend(addon) });
    t.ok(relativeError((await nat.embed(input)).data, expected) <= 1e-4, 'the engine reads the js export');
  }
});

t.test('random models of the same architecture on js', async (t) => {
  const enc = await Encoder.create({ folder: folder('timm_uni2h_like') }, { backend: js, seed: 1 });
  const again = await Encoder.create({ folder: folder('timm_uni2h_like') }, { backend: js, seed: 1 });
  const z = await enc.embed(u8Images('images_224'));
  t.same(z.shape, [2, 32]);
  t.same(Array.from(z.data), Array.from((await again.embed(u8Images('images_224'))).data), 'deterministic in the seed');
  t.ok(z.data.every(Number.isFinite));
});

t.test('js embedding runs off the event loop (a worker thread per model)', async (t) => {
  const enc = await Encoder.load(folder('timm_large_gelu'), { backend: js });
  const input = floatImages(u8Images('images_280'));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const started = performance.now();
  const out = await enc.embed(input);
  const ms = performance.now() - started;
  clearInterval(timer);
  t.ok(
    relativeError(out.data, manifest.models.timm_large_gelu.expected.f32_280.flat()) <= 1e-4,
    'same embeddings from the worker',
  );
  t.ok(ticks >= 3, `the event loop kept turning during a ${ms.toFixed(0)} ms embed (${ticks} timer ticks)`);
  await enc.dispose();
  await t.rejects(enc.embed(input), /disposed/);
});
