#!/usr/bin/env node
// Embedding throughput (img/s) of `Encoder.embed` at real sizes, random weights (no download): the H-optimus-0
// (timm ViT-g/14, 4 registers, SwiGLU, 1.13 B parameters) and Hibou-L (DINOv2 ViT-L/14, 4 registers, SwiGLU,
// 0.30 B) architectures, uint8 224 px tiles in, embeddings out (preprocessing included). With --reference, the same
// architectures in PyTorch (timm / transformers from the project's .venv) in the same run, the same way.
//
//   CPU (small batch, a couple of minutes on 2 cores):
//     npx tsc -p tsconfig.json && node benchmarks/embed.mjs
//   GPU host (batch 256, bf16, against timm / transformers):
//     node benchmarks/embed.mjs --device cuda --dtype bf16 --batch 256 --warmup 3 --iters 10 --reference
//
// Options: --models h-optimus-0,hibou-l  --device cpu|cuda[:i]  --dtype fp32|fp16|bf16  --batch N  --warmup N
//          --iters N  --reference  --python <path>  --out benchmarks/results/embed.json
// Needs the compiled library (dist/) and the native engine (G2L_ENGINE_PATH or build-engine/).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.join(HERE, '..');
/** @type {typeof import('../dist/models/encoder.js')} */
const { Encoder } = await import(path.join(ROOT, 'dist', 'models', 'encoder.js'));
/** @type {typeof import('../dist/backends/index.js')} */
const { chooseBackend } = await import(path.join(ROOT, 'dist', 'backends', 'index.js'));
/** @type {typeof import('../dist/io/atomic.js')} */
const { writeFileAtomic } = await import(path.join(ROOT, 'dist', 'io', 'atomic.js'));

/**
 * The JSON line of the PyTorch measurement (REFERENCE below), or why it failed.
 * @typedef {{ library: string, torch: string, seconds: number, imgPerS: number, threads: number, error?: undefined }} ReferenceRun
 * @typedef {{ error: string, imgPerS?: undefined, library?: undefined }} ReferenceFailure
 */
/**
 * @typedef {object} EmbedRow
 * @property {string} model
 * @property {string} family
 * @property {number} parameters
 * @property {number} dims
 * @property {number} engineImgPerS
 * @property {number} engineSeconds
 * @property {number} createSeconds
 * @property {ReferenceRun | ReferenceFailure} [reference]
 * @property {number} [ratio]
 */

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'h-optimus-0,hibou-l' },
    device: { type: 'string', default: 'cpu' },
    dtype: { type: 'string' },
    batch: { type: 'string' },
    warmup: { type: 'string' },
    iters: { type: 'string' },
    reference: { type: 'boolean', default: false },
    python: { type: 'string', default: path.join(ROOT, '.venv', 'bin', 'python') },
    out: { type: 'string', default: path.join(HERE, 'results', 'embed.json') },
  },
});
const gpu = values.device !== 'cpu';
const batch = Number(values.batch ?? (gpu ? 256 : 2));
const warmup = Number(values.warmup ?? (gpu ? 3 : 1));
const iters = Number(values.iters ?? (gpu ? 10 : 2));
// The flag as given (typed as what it should be): Encoder checks it (normalizeDtype) and refuses an unknown one.
const dtype = /** @type {import('../dist/backends/types.js').ModelDtype} */ (values.dtype ?? (gpu ? 'bf16' : 'fp32'));
const models = values.models
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);

/**
 * Random but image-like input: the same bytes for the engine and the reference.
 * @param {number} n
 */
function tiles(n) {
  const data = new Uint8Array(n * 224 * 224 * 3);
  let s = 12345;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    data[i] = s >>> 24;
  }
  return { data, shape: [n, 224, 224, 3] };
}

/** @param {string} preset */
async function engineRun(preset) {
  const t0 = performance.now();
  const backend = chooseBackend({ backend: 'native' }).backend;
  const enc = await Encoder.create({ preset }, { backend, device: values.device, dtype, batchSize: batch, seed: 0 });
  const createS = (performance.now() - t0) / 1000;
  const x = tiles(batch);
  try {
    for (let i = 0; i < warmup; i++) await enc.embed(x);
    const t1 = performance.now();
    for (let i = 0; i < iters; i++) await enc.embed(x);
    const s = (performance.now() - t1) / 1000;
    return { info: enc.info, createS, seconds: s, imgPerS: (batch * iters) / s };
  } finally {
    await enc.dispose();
  }
}

// The same measurement in PyTorch: uint8 host tiles -> device, normalise, model -> class token after the norm.
const REFERENCE = String.raw`
import json, sys, time, torch
preset, device, dtype, batch, warmup, iters = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
dt = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}[dtype]
torch.manual_seed(0)
if preset == 'h-optimus-0':
    import timm
    model = timm.create_model('vit_giant_patch14_reg4_dinov2', pretrained=False, num_classes=0, img_size=224, init_values=1e-5)
    mean, std = (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517)
    fwd = lambda x: model(x)
    lib = 'timm ' + timm.__version__
else:
    import transformers
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel
    cfg = Dinov2WithRegistersConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, use_swiglu_ffn=True,
                                    num_register_tokens=4, image_size=224, patch_size=14, attn_implementation='sdpa')
    model = Dinov2WithRegistersModel(cfg)
    mean, std = (0.7068, 0.5755, 0.722), (0.195, 0.2316, 0.1816)
    fwd = lambda x: model(pixel_values=x).pooler_output
    lib = 'transformers ' + transformers.__version__
model = model.to(device=device, dtype=dt).eval()
m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
s = torch.tensor(std, device=device).view(1, 3, 1, 1)
g = torch.Generator().manual_seed(12345)
tiles = torch.randint(0, 256, (batch, 224, 224, 3), dtype=torch.uint8, generator=g)
if device != 'cpu':
    tiles = tiles.pin_memory()
def step():
    x = tiles.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    x = ((x / 255 - m) / s).to(dt)
    return fwd(x).float().cpu()
with torch.inference_mode():
    for _ in range(warmup):
        step()
    if device != 'cpu': torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    if device != 'cpu': torch.cuda.synchronize()
    sec = time.perf_counter() - t
print(json.dumps({'library': lib, 'torch': torch.__version__, 'seconds': sec, 'imgPerS': batch * iters / sec, 'threads': torch.get_num_threads()}))
`;

/**
 * @param {string} preset
 * @returns {ReferenceRun | ReferenceFailure}
 */
function referenceRun(preset) {
  if (!existsSync(values.python)) return { error: `no Python at ${values.python} (npm run setup installs the .venv)` };
  const r = spawnSync(
    values.python,
    ['-c', REFERENCE, preset, values.device, dtype, String(batch), String(warmup), String(iters)],
    {
      encoding: 'utf8',
      maxBuffer: 1 << 24,
    },
  );
  if (r.status !== 0) return { error: (r.stderr || '').trim().split('\n').slice(-3).join(' ') };
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
}

const backendInfo = await chooseBackend({ backend: 'native' }).backend.info();
/** @type {EmbedRow[]} */
const rows = [];
for (const preset of models) {
  process.stderr.write(`${preset}: engine...\n`);
  const e = await engineRun(preset);
  /** @type {EmbedRow} */
  const row = {
    model: preset,
    family: e.info.family,
    parameters: e.info.parameters,
    dims: e.info.dims,
    engineImgPerS: e.imgPerS,
    engineSeconds: e.seconds,
    createSeconds: e.createS,
  };
  if (values.reference) {
    process.stderr.write(`${preset}: reference...\n`);
    const r = referenceRun(preset);
    row.reference = r;
    if (r.imgPerS) row.ratio = e.imgPerS / r.imgPerS;
  }
  rows.push(row);
}

const result = {
  benchmark: 'embed',
  date: new Date().toISOString(),
  device: values.device,
  deviceName: gpu
    ? (backendInfo.devices[0]?.name ?? values.device)
    : `${os.cpus()[0]?.model ?? 'cpu'} (${backendInfo.cpuThreads} threads)`,
  libtorch: backendInfo.libtorchVersion,
  // Shared machines make CPU numbers noisy: the load says how much.
  loadAverage: os.loadavg().map((v) => +v.toFixed(2)),
  dtype,
  batch,
  warmup,
  iters,
  input: 'uint8 (N,224,224,3) host tiles -> embeddings on the host, preprocessing included',
  rows,
};
await writeFileAtomic(values.out, `${JSON.stringify(result, null, 2)}\n`);

/**
 * @param {number | undefined} v
 * @param {number} [d]
 */
const fmt = (v, d = 2) => (v === undefined ? '-' : v.toFixed(d));
const lines = [
  `embed throughput, ${result.deviceName}, ${dtype}, batch ${batch}, ${iters} iterations after ${warmup} warm-up`,
  '| model | parameters | dim | engine img/s | reference img/s | engine / reference |',
  '| --- | --- | --- | --- | --- | --- |',
  ...rows.map(
    (r) =>
      `| ${r.model} (${r.family}) | ${(r.parameters / 1e9).toFixed(3)} B | ${r.dims} | ${fmt(r.engineImgPerS)} | ` +
      `${r.reference ? (r.reference.imgPerS ? `${fmt(r.reference.imgPerS)} (${r.reference.library})` : `failed: ${r.reference.error}`) : '-'} | ${fmt(r.ratio)} |`,
  ),
  `written to ${path.relative(process.cwd(), values.out)}`,
];
process.stdout.write(`${lines.join('\n')}\n`);
