// The CUDA paths, on machines with a CUDA device and a CUDA engine (skipped elsewhere): every fixture family in
// fp32, fp16 and bf16 against the timm / transformers float32 references. fp16/bf16 are held to 2e-2 relative
// (the bound for half precision); fp32 to 1e-3, since cuDNN may run the patch convolution in TF32.
import t from 'tap';
import { Encoder } from '../../lib/models/encoder.js';
import type { ModelDtype } from '../../lib/backends/types.js';
import { caseInput, manifest, modelFolder, nativeBackend, relativeError } from './helpers.js';

const backend = nativeBackend();
const info = await backend.info();
if (!info.cudaAvailable) {
  t.pass(`no CUDA device here (engine built with CUDA: ${info.cudaBuilt}): the CUDA paths are checked on a GPU host`);
} else {
  const bounds: Record<ModelDtype, number> = { fp32: 1e-3, fp16: 2e-2, bf16: 2e-2 };
  for (const [name, fx] of Object.entries(manifest.models)) {
    t.test(`${name} on cuda`, async (t) => {
      for (const dtype of ['fp32', 'fp16', 'bf16'] as ModelDtype[]) {
        const enc = await Encoder.load(modelFolder(name), { backend, device: 'cuda', dtype });
        t.equal(enc.info.dtype, dtype);
        t.match(enc.info.device, /^cuda/);
        for (const [caseName, expected] of Object.entries(fx.expected)) {
          const y = await enc.embed(caseInput(caseName));
          const err = relativeError(y.data, expected.flat());
          t.ok(
            err.rel <= bounds[dtype],
            `${dtype} ${caseName}: relative error ${err.rel.toExponential(2)} <= ${bounds[dtype]}`,
          );
        }
        await enc.dispose();
      }
    });
  }
  t.test('the default on CUDA is fp16 (the teacher runs in half precision)', async (t) => {
    const enc = await Encoder.load(modelFolder('hf_dinov2_reg_swiglu'), { backend });
    t.equal(enc.info.device.startsWith('cuda'), true);
    t.equal(enc.info.dtype, 'fp16');
    await enc.dispose();
  });
}
