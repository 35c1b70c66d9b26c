// Every fixture family through the Encoder on the native engine, against the embeddings timm and transformers
// computed for the same folders (tools/make_model_fixtures.py): uint8 and float inputs, 224 px, uint8 168 px
// resized to 224, and float 168 / 280 px, which interpolate the position embeddings. fp32 on the CPU.
import t from 'tap';
import { Encoder } from '../../lib/models/encoder.js';
import { caseInput, manifest, modelFolder, nativeBackend, relativeError } from './helpers.js';

const TOLERANCE = 1e-4;
const backend = nativeBackend();

for (const [name, fx] of Object.entries(manifest.models)) {
  t.test(`${name}: ${fx.layout} ${fx.architecture ?? fx.modelType}, stored ${fx.storedDtype}`, async (t) => {
    const enc = await Encoder.load(fx.preset ? { preset: fx.preset, folder: modelFolder(name) } : modelFolder(name), {
      backend,
      device: 'cpu',
      dtype: 'fp32',
    });
    t.teardown(() => enc.dispose());
    t.equal(enc.info.layout, fx.layout);
    t.equal(enc.info.family, fx.architecture ?? fx.modelType);
    t.equal(enc.info.dims, fx.embedDim);
    t.equal(enc.info.inputSize, fx.inputSize);
    t.equal(enc.info.parameters, fx.parameters, 'parameters counted as the reference library counts them');
    t.equal(enc.info.dtype, 'fp32');
    t.equal(enc.info.device, 'cpu');
    for (let c = 0; c < 3; c++) {
      t.ok(
        Math.abs(enc.info.mean[c] - fx.mean[c]) < 1e-6 && Math.abs(enc.info.std[c] - fx.std[c]) < 1e-6,
        `mean/std[${c}]`,
      );
    }
    for (const [caseName, expected] of Object.entries(fx.expected)) {
      const y = await enc.embed(caseInput(caseName));
      t.same(y.shape, [expected.length, fx.embedDim], `${caseName} shape`);
      const err = relativeError(y.data, expected.flat());
      t.ok(err.rel <= TOLERANCE, `${caseName}: max relative error ${err.rel.toExponential(2)} <= ${TOLERANCE}`);
      t.ok(
        err.elementwise <= TOLERANCE,
        `${caseName}: element-wise relative error ${err.elementwise.toExponential(2)} <= ${TOLERANCE}`,
      );
    }
  });
}

t.test('UNI2-h family: the preset is recognised from the incomplete config.json', async (t) => {
  const fx = manifest.models.timm_uni2h_like;
  const enc = await Encoder.load(modelFolder('timm_uni2h_like'), { backend, device: 'cpu' });
  t.teardown(() => enc.dispose());
  t.equal(enc.info.preset, 'uni2-h');
  t.equal(enc.info.mlp, 'swiglu_packed');
  t.equal(enc.info.numRegisters, 8);
  const y = await enc.embed(caseInput('f32_280'));
  t.ok(relativeError(y.data, fx.expected.f32_280.flat()).rel <= TOLERANCE);
});

t.test(
  'presets describe the official architectures (parameter counts from timm / transformers at full size)',
  async (t) => {
    const dims: Record<string, number> = { 'h-optimus-0': 1536, 'uni2-h': 1536, 'hibou-l': 1024, 'hibou-b': 768 };
    for (const [preset, count] of Object.entries(manifest.presetParameters)) {
      const d = await backend.describeModel({ preset });
      t.equal(d.parameters, count, `${preset}: ${count} parameters`);
      t.equal(d.dims, dims[preset], `${preset}: ${dims[preset]}-d`);
      t.equal(d.inputSize, 224, `${preset}: 224 px`);
    }
    const hopt = await backend.describeModel({ preset: 'h-optimus-0' });
    t.same(
      hopt.mean.map((v) => +v.toFixed(6)),
      [0.707223, 0.578729, 0.703617],
    );
    t.same(
      hopt.std.map((v) => +v.toFixed(6)),
      [0.211883, 0.230117, 0.177517],
    );
    t.equal(hopt.numRegisters, 4);
    const hibou = await backend.describeModel({ preset: 'hibou-l' });
    t.same(
      hibou.mean.map((v) => +v.toFixed(4)),
      [0.7068, 0.5755, 0.722],
    );
    t.equal(hibou.layout, 'hf');
    t.equal(hibou.mlp, 'swiglu_hf');
  },
);

t.test(
  'half precision on the CPU (fp16 weights, as the teacher runs on CUDA): within 2e-2 of the fp32 references',
  async (t) => {
    // The Encoder keeps the CPU in fp32; the backend handle runs any dtype, which exercises the conversions of
    // stored F32/F16/BF16 weights to fp16 and the position-embedding resampling in float32 between fp16 tensors.
    for (const [name, fx] of Object.entries(manifest.models)) {
      const h = await backend.loadModel(
        fx.preset ? { preset: fx.preset, folder: modelFolder(name) } : { folder: modelFolder(name) },
        { device: 'cpu', dtype: 'fp16' },
      );
      t.equal(h.info.dtype, 'fp16');
      for (const [caseName, expected] of Object.entries(fx.expected)) {
        const y = await h.embed(caseInput(caseName));
        const err = relativeError(y.data, expected.flat());
        t.ok(err.rel <= 2e-2, `${name} ${caseName}: fp16 relative error ${err.rel.toExponential(2)} <= 2e-2`);
      }
      await h.dispose();
    }
  },
);
