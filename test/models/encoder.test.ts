// The Encoder's queue: concurrent calls share forward passes (same input kind and size, up to batchSize images),
// large calls are cut into batches, results come back to the right caller in order; dispose waits for calls in
// flight. Also export: a loaded model written back in its own layout reloads to the same embeddings, and (when the
// project's Python environment is present) loads unchanged in timm / transformers.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend, EmbedInput, ModelHandle } from '../../lib/backends/types.js';
import { Encoder } from '../../lib/models/encoder.js';
import { caseInput, images, manifest, modelFolder, nativeBackend, relativeError } from './helpers.js';

const native = nativeBackend();
const TIMM = 'timm_giant_reg4_swiglu';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The native backend with every engine embed call recorded as its batch size and input kind. */
function recordingBackend(calls: { n: number; kind: string }[]): Backend {
  const wrap = (h: ModelHandle): ModelHandle => ({
    info: h.info,
    embed: (x: EmbedInput) => {
      calls.push({ n: x.shape[0], kind: x.data instanceof Uint8Array ? `u8:${x.shape[1]}` : `f32:${x.shape[2]}` });
      return h.embed(x);
    },
    exportTo: (f) => h.exportTo(f),
    dispose: () => h.dispose(),
  });
  return Object.assign(Object.create(native) as Backend, {
    loadModel: async (...a: Parameters<Backend['loadModel']>) => wrap(await native.loadModel(...a)),
  });
}

function slice(x: { data: Uint8Array; shape: number[] }, i: number): EmbedInput {
  const per = x.shape[1] * x.shape[2] * 3;
  return { data: x.data.slice(i * per, (i + 1) * per), shape: [1, ...x.shape.slice(1)] };
}

t.test('concurrent calls are batched by kind and size, and each caller gets its own rows', async (t) => {
  const calls: { n: number; kind: string }[] = [];
  const enc = await Encoder.load(modelFolder(TIMM), { backend: recordingBackend(calls), device: 'cpu', batchSize: 8 });
  t.teardown(() => enc.dispose());
  const x224 = images('images_224');
  const x168 = images('images_168');
  const expected = manifest.models[TIMM].expected;
  const results = await Promise.all([
    enc.embed(slice(x224, 0)),
    enc.embed(slice(x168, 0)),
    enc.embed(slice(x224, 1)),
    enc.embed(x224),
    enc.embed(slice(x168, 1)),
  ]);
  t.same(
    calls,
    [
      { n: 4, kind: 'u8:224' },
      { n: 2, kind: 'u8:168' },
    ],
    'one forward pass per input size',
  );
  const check = (y: { data: Float32Array; shape: number[] }, rows: number[][], what: string) => {
    t.same(y.shape, [rows.length, 32], `${what} shape`);
    t.ok(relativeError(y.data, rows.flat()).rel <= 1e-4, what);
  };
  check(results[0], [expected.u8_224[0]], 'first 224 image');
  check(results[1], [expected.u8_168_resized[0]], 'first 168 image');
  check(results[2], [expected.u8_224[1]], 'second 224 image');
  check(results[3], expected.u8_224, 'both 224 images');
  check(results[4], [expected.u8_168_resized[1]], 'second 168 image');
});

t.test('a call larger than the batch size is cut into batches', async (t) => {
  const calls: { n: number; kind: string }[] = [];
  const enc = await Encoder.load(modelFolder(TIMM), { backend: recordingBackend(calls), device: 'cpu', batchSize: 2 });
  t.teardown(() => enc.dispose());
  // 5 images: the 2 fixture images repeated
  const f = caseInput('f32_280') as { data: Float32Array; shape: number[] };
  const per = f.data.length / 2;
  const data = new Float32Array(5 * per);
  for (let i = 0; i < 5; i++) data.set(f.data.subarray((i % 2) * per, ((i % 2) + 1) * per), i * per);
  const y = await enc.embed({ data, shape: [5, ...f.shape.slice(1)] });
  t.same(
    calls.map((c) => c.n),
    [2, 2, 1],
  );
  const exp = manifest.models[TIMM].expected.f32_280;
  t.ok(relativeError(y.data, [0, 1, 2, 3, 4].map((i) => exp[i % 2]).flat()).rel <= 1e-4);
});

t.test('dispose waits for calls in flight; later calls reject', async (t) => {
  const enc = await Encoder.load(modelFolder(TIMM), { backend: native, device: 'cpu' });
  const pending = enc.embed(images('images_224'));
  await enc.dispose();
  const y = await pending;
  t.same(y.shape, [2, 32]);
  await t.rejects(enc.embed(images('images_224')), /the encoder has been disposed/);
  await enc.dispose(); // twice is harmless
});

t.test('export writes the folder layout back: config unchanged, weights reload to the same embeddings', async (t) => {
  const base = t.testdir();
  for (const name of ['timm_uni2h_like', 'hf_dinov2_reg_swiglu', 'timm_large_gelu']) {
    const enc = await Encoder.load(modelFolder(name), { backend: native, device: 'cpu' });
    const out = path.join(base, name);
    await enc.exportTo(out);
    t.equal(
      readFileSync(path.join(out, 'config.json'), 'utf8'),
      readFileSync(path.join(modelFolder(name), 'config.json'), 'utf8'),
      `${name}: config.json unchanged`,
    );
    t.same(
      readdirSync(out)
        .filter((f) => !f.startsWith('.'))
        .sort(),
      manifest.models[name].layout === 'hf'
        ? ['config.json', 'model.safetensors', 'preprocessor_config.json']
        : ['config.json', 'model.safetensors'],
    );
    const again = await Encoder.load(out, { backend: native, device: 'cpu' });
    for (const c of ['u8_224', 'f32_168']) {
      const a = await enc.embed(caseInput(c));
      const b = await again.embed(caseInput(c));
      t.same(Array.from(b.data), Array.from(a.data), `${name} ${c}: identical after export`);
    }
    await enc.dispose();
    await again.dispose();
  }

  const python = path.join(ROOT, '.venv', 'bin', 'python');
  if (!existsSync(python)) {
    t.skip('the reference libraries (.venv with timm and transformers) are not installed: npm run setup', () => {});
    return;
  }
  // The exported folders load unchanged in the reference libraries and compute the fixtures' embeddings.
  const script = `
import json, sys, torch, timm, transformers
base, fixtures = sys.argv[1], sys.argv[2]
from timm.layers import SwiGLUPacked
out = {}
for name in ['timm_uni2h_like', 'hf_dinov2_reg_swiglu', 'timm_large_gelu']:
    folder = f'{base}/{name}'
    if name.startswith('timm'):
        kw = dict(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU) if 'uni2h' in name else {}
        m = timm.create_model(f'local-dir:{folder}', pretrained=True, dynamic_img_size=True, **kw).eval()
        f = lambda v: m(v)
    else:
        m = transformers.AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        f = lambda v: m(pixel_values=v).pooler_output
    u8 = torch.frombuffer(bytearray(open(f'{fixtures}/inputs/images_280.u8', 'rb').read()), dtype=torch.uint8).reshape(2, 280, 280, 3)
    v = ((u8.permute(0, 3, 1, 2).float() - 128) / 64).contiguous()
    with torch.no_grad():
        out[name] = f(v).tolist()
print(json.dumps(out))
`;
  const r = spawnSync(python, ['-c', script, base, path.join(ROOT, 'test', 'fixtures', 'models')], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  t.equal(r.status, 0, `python ran: ${r.stderr.slice(-400)}`);
  if (r.status !== 0) return;
  const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number[][]>;
  for (const [name, rows] of Object.entries(got)) {
    const err = relativeError(rows.flat(), manifest.models[name].expected.f32_280.flat());
    t.ok(
      err.rel <= 1e-4,
      `${name}: the reference library reads the export (relative error ${err.rel.toExponential(2)})`,
    );
  }
});
