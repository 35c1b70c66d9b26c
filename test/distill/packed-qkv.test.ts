// kernels.packQkv (native/engine/include/g2l/kernels.h, default on): a student with separate q/k/v weights (the transformers layout of
// the fixture student, as Hibou-L) trains with one product of the concatenated weights. The same dot products, so on
// the CPU in float32 the two sides differ by summation order only: forward values, losses, gradient norms and the
// updates of every q/k/v weight and bias (through the concatenation's backward) must match the three products'.
// (On CUDA the same code path runs under bf16 autocast; benchmarks/gpu.mjs measures it as the `unpacked` variant.)
import t from 'tap';
import { relMax, relNorm, switchSide } from '../helpers/switch-sides.js';

t.test(
  "kernels.packQkv: the packed q/k/v product gives the three products' features, losses and updates",
  async (t) => {
    const off = await switchSide({ packQkv: false });
    const on = await switchSide({ packQkv: true });
    const unset = await switchSide(undefined);
    t.equal(off.packedQkv, false, 'info().packedQkv reports the choice off');
    t.equal(on.packedQkv, true, 'info().packedQkv reports the choice on');
    t.equal(unset.packedQkv, true, 'on by default');
    t.same(unset.loss, on.loss, 'the default is the packed path');
    // Inference (features) never packs: identical before any step.
    t.same(on.before, off.before, 'features before training identical (inference keeps the three products)');
    t.ok(relMax(on.loss, off.loss) < 1e-5, `losses ${on.loss.join(', ')} vs ${off.loss.join(', ')}`);
    // A q/k/v weight or bias gradient lost or misplaced by the concatenation's backward changes the gradient norm far
    // beyond 1e-5 (the fixture's attention weights carry a large share of it).
    t.ok(
      relMax(on.gradNorm, off.gradNorm) < 1e-5,
      `gradient norms ${on.gradNorm.join(', ')} vs ${off.gradNorm.join(', ')}`,
    );
    // The parameters after three AdamW steps (bound as in fused-norm.test.ts: first updates are nearly
    // lr * sign(gradient), so rounding-level gradients flip a few of them).
    const moved = relNorm(off.after, off.before),
      diff = relNorm(on.after, off.after);
    t.ok(moved > 1e-2, `the three steps move the student (${moved.toExponential(2)})`);
    t.ok(
      diff < 0.02 * moved,
      `features after three steps differ by ${diff.toExponential(2)}, ${((100 * diff) / moved).toFixed(2)}% of the movement`,
    );
  },
);
