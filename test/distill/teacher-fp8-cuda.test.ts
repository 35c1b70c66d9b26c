// The FP8 teacher's CUDA path (--teacher-fp8; a GPU of compute capability 8.9+, on a GPU host: this file is in
// tools/gpu-host/pack.mjs's CUDA_TESTS). Without one every case here is skipped with the reason; the same code on the
// CPU (quantisation numerics, the emulated products, acceptance and refusal, configuration) is
// test/distill/teacher-fp8.test.ts.
//   - the fused quantisation kernel (native/engine/kernels/cuda/quant.cu) = the at:: version, bit for bit (codes and
//     scales), on rows of the teachers' widths (1536, 4096, 6144, 8192), odd and tiny widths (the scalar path), rows
//     spanning decades and an all-zero row
//   - _scaled_mm (row-wise scales, bf16 out) = the emulation (quantise -> dequantise -> float32 matmul -> bf16) to
//     accumulation order and bf16 rounding, both near the float32 product (FP8's own error); with fastAccum too
//   - the Distiller with teacherFp8 on the fixture teachers: accepted (cosine >= 0.999 with the bf16 teacher) or
//     refused with the acceptance message; accepted, its features against the bf16 teacher's on another batch
//   - teacherFp8 on the CPU device of a CUDA engine: refused
// The teacher's speed at real size with FP8 is measured by `npm run bench:gpu` (benchmarks/gpu.mjs, variants fp8 and
// fp8norm: fp8_min_cosine and throughput).
import t from 'tap';
import path from 'node:path';
import { NativeBackend, loadEngineAddon } from '../../lib/backends/index.js';
import { Distiller, type DistillerConfig } from '../../lib/distill/distiller.js';
import { syntheticTile } from '../../lib/distill/tiles.js';
import { ROOT } from '../helpers/cli.js';
import { loadEngineTesting } from '../helpers/engine-testing.js';
import { cosines, matrix } from '../helpers/fp8.js';

const FIXTURES = path.join(ROOT, 'test/fixtures/models');
const addon = loadEngineTesting();

const info = await new NativeBackend(loadEngineAddon()).info();
const cc = Number(info.devices[0]?.computeCapability ?? '0');
const NO_CUDA = info.cudaAvailable ? false : "no CUDA device here: the FP8 teacher's CUDA path runs on a GPU host";
const NO_FP8 =
  NO_CUDA ||
  (cc >= 8.9 ? false : `needs a CUDA GPU of compute capability 8.9+ (this one: ${cc}): runs on the GPU host`);

/** Norm of the difference over the norm of b. */
function relNorm(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

function tiles(b: number, seed: number) {
  const n = 256 * 256 * 3;
  const data = new Uint8Array(b * n);
  for (let i = 0; i < b; i++) syntheticTile(seed * 1000 + i, 256, data, i * n);
  return { data, shape: [b, 256, 256, 3] };
}

t.test('CUDA: _scaled_mm and the fused quantisation kernel on 300 rows of 1536', { skip: NO_FP8 }, async (t) => {
  const x = matrix(300, 1536, 11);
  const kernel = await addon.fp8QuantizeRows(x, { device: 'cuda', mode: 'cuda' });
  const aten = await addon.fp8QuantizeRows(x, { device: 'cuda', mode: 'aten' });
  t.ok(
    kernel.scales.data.every((v, i) => v === aten.scales.data[i]),
    'kernel scales = at:: scales',
  );
  t.ok(
    kernel.dequantized.data.every((v, i) => v === aten.dequantized.data[i]),
    'kernel codes = at:: codes',
  );
  const w = matrix(512, 1536, 12, () => 0.02);
  const b = matrix(1, 512, 13, () => 0.1);
  b.shape = [512];
  const fast = await addon.fp8Linear(x, w, b, { device: 'cuda' });
  const emulated = await addon.fp8Linear(x, w, b, { device: 'cuda', emulate: true });
  const cos = cosines(fast.data, emulated.data, 512);
  t.ok(Math.min(...cos) > 0.9999, `_scaled_mm vs emulation: min row cosine ${Math.min(...cos)}`);
});

t.test('CUDA: the fused quantisation kernel = the at:: version, bit for bit', { skip: NO_FP8 }, async (t) => {
  for (const [rows, cols, seed] of [
    [2048, 1536, 1],
    [512, 4096, 2],
    [256, 6144, 3],
    [512, 8192, 4],
    [37, 40, 5],
    [9, 1537, 6],
    [3, 8, 7],
  ]) {
    const x = matrix(rows, cols, seed);
    if (rows > 8) x.data.fill(0, 3 * cols, 4 * cols); // an all-zero row
    const k = await addon.fp8QuantizeRows(x, { device: 'cuda', mode: 'cuda' });
    const a = await addon.fp8QuantizeRows(x, { device: 'cuda', mode: 'aten' });
    t.same(k.codes.shape, [rows, cols], `(${rows},${cols}): codes of the input's shape`);
    t.same(k.scales.shape, [rows], `(${rows},${cols}): one scale a row`);
    let codeDiff = 0;
    let scaleDiff = 0;
    for (let i = 0; i < k.codes.data.length; i++) if (k.codes.data[i] !== a.codes.data[i]) codeDiff += 1;
    for (let i = 0; i < k.scales.data.length; i++) if (k.scales.data[i] !== a.scales.data[i]) scaleDiff += 1;
    t.ok(
      codeDiff === 0 && scaleDiff === 0,
      `quantisation kernel = at:: on (${rows},${cols}): ${codeDiff} codes, ${scaleDiff} scales differ`,
    );
  }
});

t.test(
  'CUDA: _scaled_mm = the emulation to accumulation order and bf16 rounding; both near the float32 product',
  { skip: NO_FP8 },
  async (t) => {
    for (const [m, k, nOut] of [
      [1024, 1536, 4608],
      [1024, 1536, 1536],
      [1040, 1536, 8192],
      [1040, 4096, 1536],
      [100, 64, 48],
    ]) {
      const x = matrix(m, k, 11, (r) => 1 + (r % 5));
      const w = matrix(nOut, k, 12, () => 0.02);
      const b = matrix(1, nOut, 13, () => 0.1);
      b.shape = [nOut];
      const fast = await addon.fp8Linear(x, w, b, { device: 'cuda' });
      const emu = await addon.fp8Linear(x, w, b, { device: 'cuda', emulate: true });
      t.same(fast.shape, [m, nOut], `(${m},${k})x(${k},${nOut}): the product's shape`);
      const cos = Math.min(...cosines(fast.data, emu.data, nOut));
      const rel = relNorm(fast.data, emu.data);
      t.ok(
        cos > 0.9999 && rel < 1e-2,
        `_scaled_mm vs emulation (${m},${k})x(${k},${nOut}): min row cosine ${cos.toFixed(6)}, rel. norm ${rel.toExponential(2)}`,
      );
      // The float32 reference on the first rows (the whole product in JavaScript would be slow).
      const rowsChecked = Math.min(m, 16);
      const ref = new Float32Array(rowsChecked * nOut);
      for (let r = 0; r < rowsChecked; r++) {
        for (let c = 0; c < nOut; c++) {
          let s = b.data[c];
          for (let i = 0; i < k; i++) s += x.data[r * k + i] * w.data[c * k + i];
          ref[r * nOut + c] = s;
        }
      }
      const relRef = relNorm(fast.data.subarray(0, rowsChecked * nOut), ref);
      t.ok(
        relRef < 0.05,
        `_scaled_mm vs float32 product (${m},${k})x(${k},${nOut}): rel. norm ${relRef.toExponential(2)} (FP8 rounding)`,
      );
    }
  },
);

t.test(
  'CUDA: fastAccum (kernels.fp8FastAccum): _scaled_mm within a looser bound of the emulation',
  { skip: NO_FP8 },
  async (t) => {
    // Hopper's fast accumulation keeps fewer bits in the running sums.
    const x = matrix(1024, 1536, 11, (r) => 1 + (r % 5));
    const w = matrix(1536, 1536, 12, () => 0.02);
    const b = matrix(1, 1536, 13, () => 0.1);
    b.shape = [1536];
    const fast = await addon.fp8Linear(x, w, b, { device: 'cuda', fastAccum: true });
    const emu = await addon.fp8Linear(x, w, b, { device: 'cuda', emulate: true });
    const cos = Math.min(...cosines(fast.data, emu.data, 1536));
    t.ok(
      cos > 0.999,
      `fastAccum: _scaled_mm vs emulation min row cosine ${cos.toFixed(6)}, rel. norm ${relNorm(fast.data, emu.data).toExponential(2)}`,
    );
  },
);

t.test(
  'CUDA: the Distiller with teacherFp8 on the fixture teachers: accepted within cosine 0.999 of bf16, or refused saying so',
  { skip: NO_FP8 },
  async (t) => {
    for (const teacher of ['timm_giant_reg4_swiglu', 'timm_uni2h_like', 'hf_dinov2_gelu']) {
      const cfg: DistillerConfig = {
        teacher: path.join(FIXTURES, teacher),
        student: path.join(FIXTURES, 'hf_dinov2_reg_swiglu'),
        totalSteps: 4,
        device: 'cuda',
        seed: 0,
        backend: 'native',
      };
      const fp8 = await Distiller.create({ ...cfg, teacherFp8: true });
      const bf16 = await Distiller.create({ ...cfg, teacherDtype: 'bfloat16' });
      const before = fp8.info();
      t.equal(before.teacherFp8Emulated, false, `${teacher}: the FP8 products run on the GPU, not emulated`);
      t.ok(
        before.teacherFp8Layers! > 0,
        `${teacher}: ${before.teacherFp8Layers} of ${before.teacherLinearLayers} Linear layers in FP8`,
      );
      let accepted = true;
      try {
        const r = await fp8.step(tiles(8, 0));
        t.ok(Number.isFinite(r.loss), `${teacher}: FP8 step loss ${r.loss}`);
      } catch (e) {
        accepted = false;
        // 32-wide random fixtures may fall below 0.999 (the CPU emulation gives ~0.997 for hf_dinov2_gelu with every
        // kind in FP8): then the refusal must be the acceptance check's.
        t.match(
          (e as Error).message,
          /teacherFp8: the FP8 teacher's features of the first batch fall to cosine/,
          `${teacher}: refused by the acceptance check: ${(e as Error).message.slice(0, 160)}`,
        );
      }
      const cos = fp8.info().teacherFp8MinCosine;
      t.type(cos, 'number', `${teacher}: acceptance min cosine ${cos}`);
      if (accepted) {
        const probe = tiles(8, 9);
        const a = (await fp8.features(probe, 'teacher')).data;
        const b = (await bf16.features(probe, 'teacher')).data;
        const c = Math.min(...cosines(a, b, a.length / 8));
        t.ok(c >= 0.999, `${teacher}: FP8 vs bf16 teacher features on another batch: min cosine ${c.toFixed(6)}`);
      }
    }
  },
);

t.test('CUDA engine: teacherFp8 on its CPU device: refused, with what to do', { skip: NO_CUDA }, async (t) => {
  // No emulation (a test hook, DistillerConfig.testing): the CPU has no FP8 products.
  await t.rejects(
    Distiller.create({
      teacher: path.join(FIXTURES, 'timm_giant_reg4_swiglu'),
      student: path.join(FIXTURES, 'hf_dinov2_reg_swiglu'),
      totalSteps: 2,
      device: 'cpu',
      backend: 'native',
      teacherFp8: true,
    }),
    /teacherFp8: device 'cpu' is not a CUDA GPU: --teacher-fp8 needs a CUDA GPU with FP8 tensor cores \(compute capability 8\.9\+\); drop the flag/,
  );
});
