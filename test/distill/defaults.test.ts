// The method's defaults live in lib/defaults.ts alone: the run configuration, the Distiller and both backends take
// theirs from it, the native engine receives every value resolved, and the engine's own C++ defaults (for C++
// callers: g2l/distill.h, g2l/augment.h) are held equal to it here.
import t from 'tap';
import { loadEngineTesting } from '../helpers/engine-testing.js';
import { DEFAULT_AUGMENT_CONFIG } from '../../lib/backends/types.js';
import {
  AUGMENT_DEFAULTS,
  EARLY_STOPPING_DEFAULTS,
  KERNEL_DEFAULTS,
  LOSS_DEFAULTS,
  OPTIMIZER_DEFAULTS,
  RUN_SHAPE_DEFAULTS,
  TEACHER_FP8_LAYERS_DEFAULT,
} from '../../lib/defaults.js';
import { RUN_DEFAULTS } from '../../lib/distill/config.js';
import { DISTILL_DEFAULTS, toBackendConfig } from '../../lib/distill/distiller.js';

t.test("the engine's C++ defaults equal lib/defaults.ts", async (t) => {
  const engine = loadEngineTesting().methodDefaults();
  t.same(engine.optimizer, OPTIMIZER_DEFAULTS, 'AdamW and schedules (g2l::OptimizerConfig)');
  t.same(engine.loss, LOSS_DEFAULTS, 'log-sum loss and BatchNorm (g2l::LossOptions)');
  t.same(engine.augment, AUGMENT_DEFAULTS, 'augmentation (g2l::AugmentConfig)');
  t.same(engine.kernels, KERNEL_DEFAULTS, 'implementation choices (g2l::KernelOptions)');
  t.same(
    engine.teacherFp8Layers,
    TEACHER_FP8_LAYERS_DEFAULT,
    'FP8 teacher layers (DistillerConfig::teacher_fp8_layers)',
  );
});

t.test('the engine receives every value resolved', async (t) => {
  const c = toBackendConfig({ teacher: 'a', student: 'b', totalSteps: 10 });
  t.same(c.loss, LOSS_DEFAULTS);
  t.same(c.augment, AUGMENT_DEFAULTS);
  const { totalSteps, ...optimizer } = c.optimizer as Record<string, number>;
  t.equal(totalSteps, 10);
  t.same(optimizer, OPTIMIZER_DEFAULTS);
  t.same(c.kernels, KERNEL_DEFAULTS, 'every kernel choice resolved');
  t.same(c.teacherFp8Layers, TEACHER_FP8_LAYERS_DEFAULT);
  t.equal(c.teacherFp8Emulate, undefined, 'the FP8 emulation (a test hook) only when asked for');
  const over = toBackendConfig({
    teacher: 'a',
    student: 'b',
    totalSteps: 10,
    lr: 3e-4,
    augment: { pBlur: 0, crop: undefined },
  });
  t.equal((over.optimizer as Record<string, number>).lr, 3e-4, 'a given value wins');
  t.same(over.augment, { ...AUGMENT_DEFAULTS, pBlur: 0 }, 'an undefined key keeps the default');
  const k = toBackendConfig({
    teacher: 'a',
    student: 'b',
    totalSteps: 10,
    kernels: { fusedNorm: true, sdpa: undefined },
  });
  t.same(
    k.kernels,
    { ...KERNEL_DEFAULTS, fusedNorm: true },
    'a given kernel choice wins, an undefined one keeps the default',
  );
});

t.test('the run configuration and the Distiller take theirs from lib/defaults.ts', async (t) => {
  t.same(DEFAULT_AUGMENT_CONFIG, AUGMENT_DEFAULTS);
  t.same(RUN_DEFAULTS.loss, LOSS_DEFAULTS);
  t.same(RUN_DEFAULTS.earlyStopping, EARLY_STOPPING_DEFAULTS);
  t.match(OPTIMIZER_DEFAULTS, RUN_DEFAULTS.optimizer);
  t.equal(RUN_DEFAULTS.batchSize, RUN_SHAPE_DEFAULTS.batchSize);
  t.equal(RUN_DEFAULTS.checkpointEvery, RUN_SHAPE_DEFAULTS.checkpointEvery);
  t.match(DISTILL_DEFAULTS, { ...OPTIMIZER_DEFAULTS, ...LOSS_DEFAULTS });
  t.same(RUN_DEFAULTS.kernels, KERNEL_DEFAULTS);
  t.same(RUN_DEFAULTS.teacherFp8Layers, TEACHER_FP8_LAYERS_DEFAULT);
  t.same(DISTILL_DEFAULTS.kernels, KERNEL_DEFAULTS);
});
