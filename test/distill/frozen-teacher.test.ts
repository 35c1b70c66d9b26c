// The Distiller's frozen teacher (issue 8, part 1): LayerScale folded into proj / fc2 and in-place residual adds
// (native/engine/models/vit.h prepare_frozen) give the features of the unprepared model, run through an Encoder, to float32
// rounding. The fixtures' LayerScale vectors are random per channel (tools/make_model_fixtures.py), far from 1, so a
// fold that missed a layer or scaled the wrong axis would show at O(1).
import t from 'tap';
import path from 'node:path';
import { Distiller, type DistillerConfig } from '../../lib/distill/distiller.js';
import { Encoder } from '../../lib/models/encoder.js';
import { syntheticTile } from '../../lib/distill/tiles.js';
import { ROOT } from '../helpers/cli.js';

const FIXTURES = path.join(ROOT, 'test/fixtures/models');

/** uint8 (b,224,224,3) tiles: the crop size, so the Distiller's centre crop is the identity. */
function tiles224(b: number, seed: number) {
  const full = 256 * 256 * 3;
  const tile = new Uint8Array(full);
  const data = new Uint8Array(b * 224 * 224 * 3);
  for (let i = 0; i < b; i++) {
    syntheticTile(seed * 1000 + i, 256, tile, 0);
    for (let y = 0; y < 224; y++) data.set(tile.subarray(y * 256 * 3, (y * 256 + 224) * 3), (i * 224 + y) * 224 * 3);
  }
  return { data, shape: [b, 224, 224, 3] };
}

/** max |a - e| / max |e|. */
function relError(a: Float32Array, e: Float32Array): number {
  let diff = 0;
  let scale = 0;
  e.forEach((v, i) => {
    diff = Math.max(diff, Math.abs(a[i] - v));
    scale = Math.max(scale, Math.abs(v));
  });
  return diff / scale;
}

for (const [teacher, what] of [
  ['timm_giant_reg4_swiglu', 'timm ls1/ls2.gamma, fused qkv, packed SwiGLU (H-optimus-0 layout)'],
  ['hf_dinov2_reg_gelu', 'HF layer_scale1/2.lambda1, separate q/k/v, GELU'],
  ['timm_uni2h_like', 'timm, no class position embedding, 8 registers (UNI2-h layout)'],
] as const) {
  t.test(`folded teacher = unprepared model: ${teacher} (${what})`, async (t) => {
    const config: DistillerConfig = {
      teacher: path.join(FIXTURES, teacher),
      student: path.join(FIXTURES, 'hf_dinov2_reg_swiglu'),
      totalSteps: 2,
      seed: 1,
      backend: 'native',
    };
    const d = await Distiller.create(config);
    const info = d.info();
    t.equal(info.teacherLayerScales, 4, 'two blocks, two LayerScale vectors each');
    t.equal(info.teacherLayerScalesFolded, 4, 'all folded (float32 teacher)');
    t.equal(info.teacherFp8, false);
    t.equal(info.teacherFp8MinCosine, undefined, 'no FP8 check without FP8');
    const enc = await Encoder.load(path.join(FIXTURES, teacher), { device: 'cpu', dtype: 'fp32', backend: 'native' });
    try {
      const x = tiles224(3, 4);
      const folded = await d.features(x, 'teacher');
      const reference = await enc.embed(x);
      t.same(folded.shape, reference.shape);
      const err = relError(folded.data, reference.data);
      t.ok(err < 1e-5, `relative error ${err.toExponential(2)} < 1e-5`);
      // A step leaves the teacher as it was: frozen, folded once.
      await d.step(tiles224(2, 5));
      const again = await d.features(x, 'teacher');
      t.ok(
        again.data.every((v, i) => v === folded.data[i]),
        'teacher features unchanged after a step',
      );
    } finally {
      await enc.dispose();
    }
  });
}
