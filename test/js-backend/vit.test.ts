// The js ViT against the embeddings timm and transformers computed for the same folders (every supported family,
// uint8 input resized or not, float input at 224 and at 168/280 px with resampled position embeddings), and its
// backward pass against central finite differences.
import t from 'tap';
import { loadJsModel } from '../../lib/backends/js/model.js';
import { bicubicMatrix } from '../../lib/backends/js/vit.js';
import { floatImages, folder, manifest, relativeError, u8Images } from './helpers.js';

for (const [name, fixture] of Object.entries(manifest.models)) {
  t.test(`${name} (${fixture.layout}, stored ${fixture.storedDtype}) matches its reference library`, async (t) => {
    const model = loadJsModel(folder(name));
    t.equal(model.info().dims, fixture.embedDim);
    t.equal(model.info().parameters, fixture.parameters, 'parameters counted as the reference library does');
    for (const [caseName, [input, kind]] of Object.entries(manifest.cases)) {
      const u8 = u8Images(input);
      const out = kind === 'uint8' ? model.embed(u8) : model.embed(floatImages(u8));
      t.same(out.shape, [u8.shape[0], fixture.embedDim], `${caseName} shape`);
      const err = relativeError(out.data, fixture.expected[caseName].flat());
      t.ok(err <= 1e-4, `${caseName}: max relative error ${err.toExponential(2)} <= 1e-4`);
    }
  });
}

t.test('bicubic resampling weights reproduce PyTorch at known points', async (t) => {
  // Same size: identity in both modes.
  for (const aa of [false, true]) {
    const m = bicubicMatrix(5, 5, aa);
    for (let i = 0; i < 5; i++) for (let j = 0; j < 5; j++) t.ok(Math.abs(m[i * 5 + j] - (i === j ? 1 : 0)) < 1e-12);
  }
  // Every row of an antialiased matrix sums to 1 (PIL-style normalisation); the Keys rows too (clamped taps).
  for (const aa of [false, true]) {
    const m = bicubicMatrix(16, 12, aa);
    for (let i = 0; i < 12; i++) {
      let s = 0;
      for (let j = 0; j < 16; j++) s += m[i * 16 + j];
      t.ok(Math.abs(s - 1) < 1e-12, `row ${i} sums to 1 (antialias ${aa})`);
    }
  }
});

t.test('the backward pass agrees with central finite differences', async (t) => {
  for (const name of ['timm_giant_reg4_swiglu', 'timm_large_gelu', 'hf_dinov2_gelu', 'hf_dinov2_reg_swiglu']) {
    const vit = loadJsModel(folder(name)).vit;
    const D = vit.spec.embedDim,
      B = 2,
      S = 42; // 42 px: a 3x3 grid, so the position resampling is differentiated too
    let seed = 7;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    const x = new Float32Array(B * 3 * S * S).map(rnd);
    const r = new Float32Array(B * D).map(rnd);
    const f = () => {
      const e = vit.forward(x, B, S, S).embeddings;
      let s = 0;
      for (let i = 0; i < r.length; i++) s += r[i] * e[i];
      return s;
    };
    const { cache } = vit.forward(x, B, S, S, true);
    const grads = new Map<string, Float32Array>();
    vit.backward(cache!, r, grads);
    t.same([...grads.keys()].sort(), vit.trainableKeys().sort(), `${name}: a gradient for every trainable tensor`);
    let worst = 0;
    for (const key of vit.trainableKeys()) {
      const w = vit.weights.get(key)!.data,
        g = grads.get(key)!;
      for (let k = 0; k < 2; k++) {
        const i = Math.floor(((rnd() + 1) / 2) * w.length);
        const old = w[i],
          h = 1e-2 * Math.max(1, Math.abs(old));
        w[i] = old + h;
        const fp = f();
        w[i] = old - h;
        const fm = f();
        w[i] = old;
        const fd = (fp - fm) / (2 * h);
        worst = Math.max(worst, Math.abs(fd - g[i]) / Math.max(1e-2, Math.abs(fd)));
      }
    }
    // float32 forward, h = 1e-2: truncation and rounding leave about 1e-2 at worst; a wrong term is O(1).
    t.ok(worst < 3e-2, `${name}: worst relative difference ${worst.toExponential(2)} < 3e-2`);
  }
});
