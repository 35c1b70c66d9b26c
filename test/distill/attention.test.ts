// kernels.sdpa (native/engine/include/g2l/kernels.h, attention.h): which backend libtorch's scaled-dot-product
// attention tries first on CUDA, and info()'s record of the backend each model's attention ran on. Each Distiller's
// models carry their own preference (attend() sets libtorch's process-wide order to it before each CUDA attention),
// so the settings run one after the other in this process. On the CPU libtorch makes its own choice whatever the
// preference, so there the numbers must not move at all; on CUDA (a GPU host: this file is in
// tools/gpu-host/pack.mjs's CUDA_TESTS, and test/distill/fused-paths.test.ts compares the backends at the real models' widths)
// the preferred backend must be what ran, within bf16 rounding of the other.
import t from 'tap';
import path from 'node:path';
import { ROOT } from '../helpers/cli.js';
import { loadEngineAddon } from '../../lib/backends/index.js';
import { NativeBackend } from '../../lib/backends/native.js';
import { Distiller } from '../../lib/distill/distiller.js';
import { toEngineConfig } from '../../lib/distill/native-types.js';
import type { KernelOptions } from '../../lib/distill/config.js';
import { syntheticTile } from '../../lib/distill/tiles.js';

const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'models');
const MODELS = {
  teacher: path.join(FIXTURES, 'timm_giant_reg4_swiglu'),
  student: path.join(FIXTURES, 'hf_dinov2_reg_swiglu'),
};

const batch = (n: number, seed: number) => {
  const data = new Uint8Array(n * 256 * 256 * 3);
  for (let i = 0; i < n; i++) syntheticTile(seed * 1000 + i, 256, data, i * 256 * 256 * 3);
  return { data, shape: [n, 256, 256, 3] };
};

interface Side {
  sdpa: string;
  before: (string | null)[];
  ran: (string | null)[];
  teacher: number[];
  loss: number[];
  gradNorm: number[];
}

async function side(device: string, sdpa: KernelOptions['sdpa'] | undefined): Promise<Side> {
  const d = await Distiller.create({
    ...MODELS,
    device,
    backend: 'native',
    seed: 0,
    totalSteps: 10,
    lr: 1e-3,
    warmupSteps: 0,
    ...(sdpa ? { kernels: { sdpa } } : {}),
  });
  const first = d.info();
  const teacher = Array.from((await d.features(batch(4, 99), 'teacher')).data);
  const steps = [];
  for (let s = 0; s < 2; s++) steps.push(await d.step(batch(4, s)));
  const info = d.info();
  return {
    sdpa: info.sdpa!,
    before: [first.teacherAttention ?? null, first.studentAttention ?? null],
    ran: [info.teacherAttention ?? null, info.studentAttention ?? null],
    teacher,
    loss: steps.map((r) => r.loss),
    gradNorm: steps.map((r) => r.gradNorm),
  };
}

const relNorm = (a: number[], b: number[]) => {
  let num = 0,
    den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
};

t.test(
  'CPU: info() reports the preference and the backend that ran; the preference does not move CPU numbers',
  async (t) => {
    const auto = await side('cpu', undefined);
    const cudnn = await side('cpu', 'cudnn');
    const math = await side('cpu', 'math');
    t.equal(auto.sdpa, 'auto', "unset: libtorch's own order");
    t.equal(cudnn.sdpa, 'cudnn');
    t.equal(math.sdpa, 'math');
    t.same(auto.before, [null, null], 'no backend recorded before the first forward');
    // libtorch's CPU choice: its flash kernel for these float32 inputs (math where that kernel does not apply).
    for (const s of [auto, cudnn, math]) {
      t.ok(
        s.ran.every((b) => b === 'flash_attention' || b === 'math'),
        `sdpa ${s.sdpa}: teacher and student ran ${s.ran.join(', ')}`,
      );
    }
    t.same(cudnn.ran, auto.ran, 'the same CPU backend whatever the preference');
    t.same(cudnn.teacher, auto.teacher, 'teacher features identical');
    t.same(cudnn.loss, auto.loss, 'losses identical');
    t.same(math.gradNorm, auto.gradNorm, 'gradient norms identical');
  },
);

t.test(
  'an unknown sdpa is refused with the choices, before any work: by lib/ on both backends, and by the engine',
  async (t) => {
    for (const backend of ['native', 'js'] as const) {
      await t.rejects(
        Distiller.create({ ...MODELS, backend, totalSteps: 1, kernels: { sdpa: 'fa3' as KernelOptions['sdpa'] } }),
        /Distiller: kernels: sdpa: Invalid option: expected one of "auto"\|"cudnn"\|"flash"\|"efficient"\|"math"/,
        backend,
      );
    }
    const addon = loadEngineAddon();
    await t.rejects(
      addon.Distiller.create(toEngineConfig({ ...MODELS, kernels: { sdpa: 'fa3' } } as never)),
      /kernels.sdpa 'fa3' is not an attention backend: use auto .*cudnn, flash, efficient or math/,
    );
  },
);

t.test('CUDA: sdpa flash and cudnn run those backends, within bf16 rounding of each other', async (t) => {
  const info = await new NativeBackend(loadEngineAddon()).info();
  if (!info.cudaAvailable) {
    t.skip(
      'no CUDA device here: the SDPA backends are compared on a GPU host (tools/gpu-host/pack.mjs; at the real widths test/distill/fused-paths.test.ts)',
      () => {},
    );
    return;
  }
  const auto = await side('cuda', undefined);
  const flash = await side('cuda', 'flash');
  const cudnn = await side('cuda', 'cudnn');
  // libtorch's own order (attention.h): cuDNN first on sm90 / sm100 with a recent cuDNN, else flash.
  t.ok(
    auto.ran.every((b) => b === 'cudnn_attention' || b === 'flash_attention'),
    `libtorch's default here: ${auto.ran.join(', ')}`,
  );
  t.same(flash.ran, ['flash_attention', 'flash_attention'], `sdpa flash: ${flash.ran.join(', ')}`);
  t.same(cudnn.ran, ['cudnn_attention', 'cudnn_attention'], `sdpa cudnn: ${cudnn.ran.join(', ')}`);
  // Same bounds as test/distill/fused-paths.test.ts: bf16 autocast rounds at ~4e-3 relative per operation.
  t.ok(
    relNorm(cudnn.teacher, flash.teacher) < 2e-2,
    `teacher features ${relNorm(cudnn.teacher, flash.teacher).toExponential(2)}`,
  );
  t.ok(relNorm(cudnn.loss, flash.loss) < 1e-2, `losses ${cudnn.loss.join(', ')} vs ${flash.loss.join(', ')}`);
  t.ok(
    relNorm(cudnn.gradNorm, flash.gradNorm) < 5e-2,
    `gradient norms ${cudnn.gradNorm.join(', ')} vs ${flash.gradNorm.join(', ')}`,
  );
});
