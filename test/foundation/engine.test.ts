// The native engine loads and runs libtorch ops from JS; results are checked against a float64 JS reference.
import t from 'tap';
import { NativeBackend, loadEngineAddon } from '../../lib/backends/index.js';

const HOPTIMUS_MEAN = [0.707223, 0.578729, 0.703617];
const HOPTIMUS_STD = [0.211883, 0.230117, 0.177517];

t.test('runtimeInfo reports the libtorch it runs on', async (t) => {
  const backend = new NativeBackend(loadEngineAddon());
  const info = await backend.info();
  t.equal(info.backend, 'native');
  t.match(info.libtorchVersion, /^\d+\.\d+\.\d+/);
  t.type(info.cudaAvailable, 'boolean');
  t.ok(info.cpuThreads >= 1, 'libtorch has at least one CPU thread');
  if (!info.cudaBuilt) t.same(info.cudaArchitectures, [], 'a CPU engine lists no CUDA architectures');
});

t.test('normalizeImages matches (x/255 - mean)/std computed in float64', async (t) => {
  const backend = new NativeBackend(loadEngineAddon());
  const [n, h, w] = [3, 5, 7];
  const pixels = new Uint8Array(n * h * w * 3);
  let s = 12345;
  for (let i = 0; i < pixels.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    pixels[i] = s >>> 24;
  }
  pixels[0] = 0;
  pixels[1] = 255;
  const out = await backend.normalizeImages({ data: pixels, shape: [n, h, w, 3] }, HOPTIMUS_MEAN, HOPTIMUS_STD);
  t.same(out.shape, [n, 3, h, w]);
  t.ok(out.data instanceof Float32Array);
  let maxErr = 0;
  for (let b = 0; b < n; b++)
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          const v = pixels[((b * h + y) * w + x) * 3 + c];
          const want = (v / 255 - HOPTIMUS_MEAN[c]) / HOPTIMUS_STD[c];
          const got = out.data[((b * 3 + c) * h + y) * w + x];
          maxErr = Math.max(maxErr, Math.abs(got - want));
        }
  t.ok(maxErr < 1e-5, `max abs error ${maxErr} < 1e-5`);
});

t.test('engine errors come back as rejected promises with a clear message', async (t) => {
  const backend = new NativeBackend(loadEngineAddon());
  await t.rejects(
    backend.normalizeImages({ data: new Uint8Array(8), shape: [1, 2, 2, 2] }, HOPTIMUS_MEAN, HOPTIMUS_STD),
    /expected uint8 images of shape \(N,H,W,3\)/,
  );
  await t.rejects(
    backend.normalizeImages({ data: new Uint8Array(5), shape: [1, 2, 2, 3] }, HOPTIMUS_MEAN, HOPTIMUS_STD),
    /data has 5 elements but shape needs 12/,
  );
  const info = await backend.info();
  if (!info.cudaAvailable) {
    await t.rejects(
      backend.normalizeImages({ data: new Uint8Array(12), shape: [1, 2, 2, 3] }, HOPTIMUS_MEAN, HOPTIMUS_STD, 'cuda'),
      /device 'cuda'.*use --device cpu/,
    );
  }
  await t.rejects(
    backend.normalizeImages({ data: new Uint8Array(12), shape: [1, 2, 2, 3] }, HOPTIMUS_MEAN, HOPTIMUS_STD, 'tpu'),
    /unknown device 'tpu'/,
  );
});

t.test('engine work runs off the JS thread', async (t) => {
  const backend = new NativeBackend(loadEngineAddon());
  const n = 64;
  const pixels = new Uint8Array(n * 224 * 224 * 3).fill(128);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const out = await backend.normalizeImages({ data: pixels, shape: [n, 224, 224, 3] }, HOPTIMUS_MEAN, HOPTIMUS_STD);
  clearInterval(timer);
  t.equal(out.data.length, n * 3 * 224 * 224);
  t.ok(ticks > 0, `the event loop ran ${ticks} timer callbacks while the engine worked`);
});
