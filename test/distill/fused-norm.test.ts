// G2L_FUSED_NORM (native/engine/fused.h): the student's block LayerNorms and LayerScale residuals through the fused
// autograd Functions. On CUDA under autocast they run the kernels of native/engine/cuda/norm.cu (checked against the
// unfused ops on a GPU host by benchmarks/gpu-check.mjs); on the CPU the same Functions run with at:: bodies, which is
// what this test checks: forward values, every gradient (LayerNorm weight and bias, LayerScale gamma, the residual
// stream) and hence the training steps must match the unfused ops. The switch is read once per process, so each
// side runs in its own child process.
import t from 'tap';
import path from 'node:path';
import { ROOT, runProcess } from '../helpers/cli.js';
import { relMax, relNorm, switchSide } from '../helpers/switch-sides.js';

const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'models');
const side = (flag: string) => switchSide({ G2L_FUSED_NORM: flag });

t.test('G2L_FUSED_NORM=1 on the CPU: the fused Functions give the unfused ops\' features, losses and updates', async (t) => {
  const [off, on] = await Promise.all([side('0'), side('1')]);
  t.equal(off.fusedNorm, false, 'info().fusedNorm reports the switch off');
  t.equal(on.fusedNorm, true, 'info().fusedNorm reports the switch on');
  // float32 both ways; the only differences are rounding (x + gamma * y against addcmul's, summation order). The
  // losses and gradient norms of all three steps are the tight checks: a wrong or missing gradient of any input
  // (the LayerNorm weight or bias, gamma, y, the residual stream) changes the gradient norm far beyond 1e-5.
  t.ok(relNorm(on.before, off.before) < 1e-6, `features before training: ${relNorm(on.before, off.before).toExponential(2)}`);
  t.ok(relMax(on.loss, off.loss) < 1e-5, `losses ${on.loss.join(', ')} vs ${off.loss.join(', ')}`);
  t.ok(relMax(on.gradNorm, off.gradNorm) < 1e-5, `gradient norms ${on.gradNorm.join(', ')} vs ${off.gradNorm.join(', ')}`);
  // The parameters after the steps: AdamW's first updates are nearly lr * sign(gradient), so the gradients' rounding
  // differences flip the update of the few parameters whose gradient is at rounding level. Measured on this model:
  // changing only the CPU thread count moves the features after three steps by 0.3% of how far the steps moved them;
  // the fused path by 0.4%. Bound: 2%.
  const moved = relNorm(off.after, off.before), diff = relNorm(on.after, off.after);
  t.ok(moved > 1e-2, `the three steps move the student (${moved.toExponential(2)})`);
  t.ok(diff < 0.02 * moved, `features after three steps differ by ${diff.toExponential(2)}, ${(100 * diff / moved).toFixed(2)}% of the movement`);
});

t.test('the switch is off by default and reads the usual spellings', async (t) => {
  for (const [flag, want] of [['', false], ['off', false], ['true', true], ['on', true]] as const) {
    const r = await runProcess(process.execPath, ['--input-type=module', '-e', `
      import { Distiller } from ${JSON.stringify(path.join(ROOT, 'dist', 'distill', 'distiller.js'))};
      const d = await Distiller.create({ teacher: ${JSON.stringify(path.join(FIXTURES, 'timm_giant_reg4_swiglu'))},
        student: ${JSON.stringify(path.join(FIXTURES, 'hf_dinov2_reg_swiglu'))}, device: 'cpu', backend: 'native',
        totalSteps: 1 });
      console.log(JSON.stringify(d.info().fusedNorm));`], { env: { G2L_FUSED_NORM: flag === '' ? undefined : flag } });
    t.equal(r.code, 0, r.stderr);
    t.equal(JSON.parse(r.stdout.trim().split('\n').pop() ?? 'null'), want, `G2L_FUSED_NORM=${JSON.stringify(flag)}`);
  }
});
