// The augmentation against torchvision: fixed tiles and parameters (tools/make_augment_fixtures.py, torchvision 0.26
// on float32 in [0,1]), both outputs mapped back to [0,1], max abs error <= 1e-3 on every backend.
import t from 'tap';
import { NORMALIZATIONS, type TeacherDtype } from '../../lib/backends/types.js';
import { backends, denormalise, loadFixture, maxAbsDiff } from './helpers.js';

const TOL = 1e-3;
const teacherNorm = NORMALIZATIONS.hOptimus0;
const studentNorm = NORMALIZATIONS.hibou;

for (const backend of backends()) {
  for (const name of ['small', 'full']) {
    for (const teacherDtype of ['float16', 'float32', 'bfloat16'] as TeacherDtype[]) {
      t.test(`${backend.name}: ${name} fixture matches torchvision (teacher ${teacherDtype})`, async (t) => {
        const fx = loadFixture(name);
        const out = await backend.augmentBatch(fx.tiles, fx.params, fx.config, teacherNorm, studentNorm, {
          teacherDtype,
        });
        const [b] = fx.tiles.shape;
        const c = fx.config.crop;
        t.same(out.student.shape, [b, 3, c, c]);
        t.same(out.teacher.shape, [b, 3, c, c]);
        t.equal(out.teacher.dtype, teacherDtype);
        t.ok(
          teacherDtype === 'float32'
            ? out.teacher.data instanceof Float32Array
            : out.teacher.data instanceof Uint16Array,
        );
        const student = maxAbsDiff(denormalise(out.student, studentNorm), fx.expected);
        t.ok(
          student.max <= TOL,
          `student max abs error ${student.max.toExponential(2)} (sample ${Math.floor(student.at / (3 * c * c))})`,
        );
        // bfloat16 keeps 8 bits of mantissa: its rounding alone is up to 2^-8 of |y| <= 4, times std ~ 0.2.
        const teacherTol = teacherDtype === 'bfloat16' ? 4 * 2 ** -9 * 0.24 + TOL : TOL;
        const teacher = maxAbsDiff(denormalise(out.teacher, teacherNorm), fx.expected);
        t.ok(
          teacher.max <= teacherTol,
          `teacher max abs error ${teacher.max.toExponential(2)} (sample ${Math.floor(teacher.at / (3 * c * c))})`,
        );
      });
    }
  }
}

t.test('CUDA: the fused kernel matches torchvision and the CPU path (on a GPU host)', async (t) => {
  const [native] = backends();
  const info = await native.info();
  if (!info.cudaAvailable) {
    t.skip(`no CUDA device here (engine built with CUDA: ${info.cudaBuilt}); this runs on a GPU host`, () => {});
    return;
  }
  for (const name of ['small', 'full']) {
    const fx = loadFixture(name);
    const c = fx.config.crop;
    for (const teacherDtype of ['float16', 'float32'] as TeacherDtype[]) {
      const gpu = await native.augmentBatch(fx.tiles, fx.params, fx.config, teacherNorm, studentNorm, {
        teacherDtype,
        device: 'cuda',
      });
      const student = maxAbsDiff(denormalise(gpu.student, studentNorm), fx.expected);
      const teacher = maxAbsDiff(denormalise(gpu.teacher, teacherNorm), fx.expected);
      t.ok(
        student.max <= TOL,
        `${name} cuda student max abs error ${student.max.toExponential(2)} (sample ${Math.floor(student.at / (3 * c * c))})`,
      );
      t.ok(teacher.max <= TOL, `${name} cuda teacher (${teacherDtype}) max abs error ${teacher.max.toExponential(2)}`);
    }
    const seeded = await native.augmentBatch(fx.tiles, { seed: 9 }, fx.config, teacherNorm, studentNorm, {
      device: 'cuda',
    });
    const cpu = await native.augmentBatch(fx.tiles, { seed: 9 }, fx.config, teacherNorm, studentNorm, {
      device: 'cpu',
    });
    t.ok(
      maxAbsDiff(seeded.student.data, cpu.student.data).max < 1e-3 / 0.17,
      `${name}: a seed gives the same views on CUDA and CPU`,
    );
  }
});

t.test('the native and js backends agree on every sample', async (t) => {
  const [native, js] = backends();
  const fx = loadFixture('small');
  const a = await native.augmentBatch(fx.tiles, fx.params, fx.config, teacherNorm, studentNorm, {
    teacherDtype: 'float32',
  });
  const b = await js.augmentBatch(fx.tiles, fx.params, fx.config, teacherNorm, studentNorm, {
    teacherDtype: 'float32',
  });
  t.ok(maxAbsDiff(a.student.data, b.student.data).max < 1e-4, 'student inputs agree');
  t.ok(maxAbsDiff(a.teacher.data, b.teacher.data).max < 1e-4, 'teacher inputs agree');
});

t.test('disabled augmentation is the centre crop, normalised', async (t) => {
  for (const backend of backends()) {
    const fx = loadFixture('small');
    const [b, h, w] = fx.tiles.shape;
    const config = { enabled: false, crop: fx.config.crop };
    const params = await backend.sampleAugmentParams(b, h, w, config, 3);
    const out = await backend.augmentBatch(fx.tiles, params, config, teacherNorm, studentNorm, {
      teacherDtype: 'float32',
    });
    const c = fx.config.crop;
    const top = Math.round((h - c) / 2),
      left = Math.round((w - c) / 2);
    let maxErr = 0;
    for (let s = 0; s < b; s++)
      for (let ch = 0; ch < 3; ch++)
        for (let y = 0; y < c; y++)
          for (let x = 0; x < c; x++) {
            const v = fx.tiles.data[((s * h + top + y) * w + left + x) * 3 + ch] / 255;
            const got = out.student.data[((s * 3 + ch) * c + y) * c + x] * studentNorm.std[ch] + studentNorm.mean[ch];
            maxErr = Math.max(maxErr, Math.abs(got - v));
          }
    t.ok(maxErr < 1e-6, `${backend.name}: centre crop error ${maxErr}`);
  }
});

t.test('bad inputs fail with a message naming the problem', async (t) => {
  for (const backend of backends()) {
    const tiles = { data: new Uint8Array(2 * 8 * 8 * 3), shape: [2, 8, 8, 3] };
    await t.rejects(
      backend.augmentBatch(tiles, { seed: 1 }, { crop: 16 }, teacherNorm, studentNorm),
      /crop 16 does not fit/,
    );
    const params = await backend.sampleAugmentParams(2, 8, 8, { crop: 4, blurKernel: 3 }, 1);
    params.data[0] = 5; // crop x 5 + 4 > 8
    await t.rejects(
      backend.augmentBatch(tiles, params, { crop: 4, blurKernel: 3 }, teacherNorm, studentNorm),
      /crop offset/,
    );
    await t.rejects(
      backend.augmentBatch(
        tiles,
        { data: new Float32Array(15), shape: [1, 15] },
        { crop: 4, blurKernel: 3 },
        teacherNorm,
        studentNorm,
      ),
      /params must be/,
    );
  }
});
