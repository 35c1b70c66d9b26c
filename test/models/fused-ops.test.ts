// The fused LayerNorm / LayerScale / residual + LayerNorm operations (native/engine/kernels/fused.h, kernels.fusedNorm) against
// the unfused ops they replace, op by op (the engine's fusedNormCheck test entry: random inputs, forward and every
// gradient). On the CPU the autograd Functions run with at:: bodies; the CUDA kernels (native/engine/kernels/cuda/norm.cu)
// run on a GPU host only: those cases are skipped here with a message, at the widths of the real models (768, 1024,
// 1536, 2048), a tiny one (32) and row counts that leave partial blocks.
import t, { type Test } from 'tap';
import { NativeBackend, loadEngineAddon } from '../../lib/backends/index.js';
import { loadEngineTesting } from '../helpers/engine-testing.js';

const addon = loadEngineTesting();

// Bounds, relative (norm of the difference over norm of the reference). Results rounded to 16 bits may differ by one
// unit in the last place where the two float32 computations straddle a rounding boundary (bfloat16: 2^-8 relative);
// float32 results differ by accumulation order only.
const BOUNDS: Record<string, number> = {
  'layer_norm.y': 2e-3,
  'layer_norm.dx': 1e-4,
  'layer_norm.dw': 1e-4,
  'layer_norm.db': 1e-4,
  'layer_scale.out': 1e-6,
  'layer_scale.dx': 1e-6,
  'layer_scale.dy': 2e-3,
  'layer_scale.dgamma': 1e-4,
  x: 2e-3,
  h: 2e-3,
  fp8_x: 2e-3,
  fp8_codes_differing: 1e-2,
  fp8_scales: 1e-2,
};
const bound = (name: string) => BOUNDS[name] ?? BOUNDS[name.split('.').pop()!];

async function check(t: Test, device: string, rows: number, d: number, dtype: string, expected: string[]) {
  const r = await addon.fusedNormCheck({ device, rows, d, dtype, seed: rows + d });
  t.same(Object.keys(r).sort(), [...expected].sort(), `${device} ${rows}x${d} ${dtype}: the checks that apply`);
  for (const [name, value] of Object.entries(r)) {
    t.ok(
      Number.isFinite(value) && value <= bound(name),
      `${device} ${rows}x${d} ${dtype}: ${name} ${value.toExponential(2)} <= ${bound(name)}`,
    );
  }
}

const FUNCTIONS = [
  'layer_norm.y',
  'layer_norm.dx',
  'layer_norm.dw',
  'layer_norm.db',
  'layer_scale.out',
  'layer_scale.dx',
  'layer_scale.dy',
  'layer_scale.dgamma',
];

t.test("CPU: the autograd Functions give the unfused ops' values and gradients", async (t) => {
  for (const [rows, d, dtype] of [
    [1037, 32, 'bfloat16'],
    [261, 1024, 'bfloat16'],
    [100, 768, 'float16'],
  ] as const) {
    await check(t, 'cpu', rows, d, dtype, FUNCTIONS);
  }
});

t.test('bad arguments are refused', async (t) => {
  await t.rejects(addon.fusedNormCheck({ device: 'cpu', rows: 3, d: 6 }), /d a multiple of 4/);
  await t.rejects(addon.fusedNormCheck({ device: 'cpu', dtype: 'float32' }), /dtype must be "bfloat16" or "float16"/);
});

t.test('CUDA: the norm.cu kernels against the unfused ops', async (t) => {
  const info = await new NativeBackend(loadEngineAddon()).info();
  if (!info.cudaAvailable) {
    t.skip('no CUDA device here: the norm.cu kernels are checked on a GPU host (tools/gpu-host/host.sh)', () => {});
    return;
  }
  const residual = (fp8: boolean) =>
    ['residual', 'residual_ls'].flatMap((p) => [
      `${p}.x`,
      `${p}.h`,
      ...(fp8 ? [`${p}.fp8_codes_differing`, `${p}.fp8_scales`, `${p}.fp8_x`] : []),
    ]);
  for (const d of [32, 768, 1024, 1536, 2048]) {
    for (const rows of [1, 1037, 33408]) {
      await check(t, 'cuda', rows, d, 'bfloat16', [...FUNCTIONS, ...residual(true)]);
    }
    await check(t, 'cuda', 1037, d, 'float16', [...FUNCTIONS, ...residual(false)]);
  }
});
