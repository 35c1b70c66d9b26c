// Bad input, each with one clear message: a folder without config.json and no preset, weights of another
// architecture (missing, unexpected and mis-shaped keys in one error), a truncated safetensors file (byte offsets
// named), a preset of the other layout, .npy inputs of the wrong dtype or shape, an unreadable image in a folder
// (skipped and listed, the rest embedded), fp16 asked for on the CPU.
import t from 'tap';
import { cpSync, mkdirSync, readFileSync, statSync, truncateSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { UserError } from '../../lib/errors.js';
import { Encoder } from '../../lib/models/encoder.js';
import { runEmbed } from '../../lib/commands/embed.js';
import { readNpy, writeNpy } from '../../lib/io/npy.js';
import { caseInput, images, manifest, modelFolder, nativeBackend, relativeError } from './helpers.js';

const backend = nativeBackend();
const TIMM = 'timm_giant_reg4_swiglu';

/** A writable copy of a fixture folder in the test's own folder (testdir() resets it: one copy per test). */
function copyFixture(t: { testdir(): string }, name: string): string {
  const dir = path.join(t.testdir(), name);
  cpSync(modelFolder(name), dir, { recursive: true });
  return dir;
}

t.test('a folder without config.json and no preset names the fix', async (t) => {
  const dir = copyFixture(t, TIMM);
  rmSync(path.join(dir, 'config.json'));
  const err = await Encoder.load(dir, { backend, device: 'cpu' }).catch((e) => e);
  t.type(err, UserError);
  t.match(err.message, `${dir} has no config.json and no preset was given`);
  t.match(err.message, `preset:<name>:${dir}`);
  t.match(
    err.message,
    '(presets: h-optimus-0, uni2-h, hibou-l, hibou-b, uni_v1, virchow2, hoptimus1, gigapath, h0-mini, phikon_v2, hoptimus0, uni_v2, hibou_l, hibou_b)',
  );
});

t.test('a folder with a preset and no config.json loads with the preset architecture (shapes checked)', async (t) => {
  // The tiny weights are not H-optimus-0's size: the preset is applied, and the strict check says so.
  const dir = copyFixture(t, TIMM);
  rmSync(path.join(dir, 'config.json'));
  const err = await Encoder.load({ preset: 'h-optimus-0', folder: dir }, { backend, device: 'cpu' }).catch((e) => e);
  t.type(err, UserError);
  t.match(err.message, 'mis-shaped (');
  t.match(err.message, 'cls_token (file [1,1,32], model [1,1,1536])');
  t.match(err.message, "preset 'h-optimus-0'");
});

t.test('weights of another architecture: missing, unexpected and mis-shaped keys in one error', async (t) => {
  const dir = copyFixture(t, TIMM);
  const cfgFile = path.join(dir, 'config.json');
  const cfg = JSON.parse(readFileSync(cfgFile, 'utf8'));
  // depth 3 (blocks.2.* missing), no registers (reg_token unexpected), mlp_ratio 4 (fc1/fc2 mis-shaped)
  Object.assign(cfg.model_args, { depth: 3, reg_tokens: 0, mlp_ratio: 4 });
  writeFileSync(cfgFile, JSON.stringify(cfg));
  const err = await Encoder.load(dir, { backend, device: 'cpu' }).catch((e) => e);
  t.type(err, UserError);
  const m = err.message as string;
  t.match(m, `the weights in ${path.join(dir, 'model.safetensors')} do not match timm vit_giant_patch14_reg4_dinov2`);
  t.match(m, /\d+ missing \(blocks\.2\.norm1\.weight, blocks\.2\.norm1\.bias, /);
  t.match(m, '1 unexpected (reg_token)');
  t.match(m, 'mis-shaped (');
  t.match(m, 'blocks.0.mlp.fc1.weight (file [170,32], model [128,32])');
  t.match(m, 'blocks.0.mlp.fc2.weight (file [32,85], model [32,64])');
  t.notMatch(m, '\n', 'one line');
});

t.test('transformers weights under a timm config: every key named as missing or unexpected', async (t) => {
  const dir = copyFixture(t, TIMM);
  cpSync(path.join(modelFolder('hf_dinov2_swiglu'), 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const err = await Encoder.load(dir, { backend, device: 'cpu' }).catch((e) => e);
  t.type(err, UserError);
  t.match(err.message, /missing \(cls_token, reg_token, pos_embed, /);
  t.match(err.message, /unexpected \(embeddings\.cls_token/);
  t.match(err.message, /and \d+ more/);
});

t.test('a truncated safetensors file names the byte where it ends and the byte it should reach', async (t) => {
  const dir = copyFixture(t, TIMM);
  const file = path.join(dir, 'model.safetensors');
  const size = statSync(file).size;
  truncateSync(file, 150000);
  const err = await Encoder.load(dir, { backend, device: 'cpu' }).catch((e) => e);
  t.type(err, UserError);
  t.match(
    err.message,
    `${file} is truncated: the file ends at byte 150000 but its header says the data runs to byte ${size}`,
  );
  t.match(err.message, /tensor '[^']+' needs bytes \d+ to \d+/);
  t.match(err.message, 'download it again');

  truncateSync(file, 100);
  const err2 = await Encoder.load(dir, { backend, device: 'cpu' }).catch((e) => e);
  t.match(err2.message, `${file} is truncated: it ends at byte 100 but its header runs to byte`);
});

t.test('a sharded index that names a missing shard says which', async (t) => {
  const dir = copyFixture(t, 'hf_dinov2_reg_swiglu');
  rmSync(path.join(dir, 'model-00002-of-00003.safetensors'));
  const err = await Encoder.load(dir, { backend, device: 'cpu' }).catch((e) => e);
  t.match(err.message, 'lists shard model-00002-of-00003.safetensors, which is not in');
});

t.test('a preset of the other layout is refused', async (t) => {
  const err = await Encoder.load({ preset: 'hibou-l', folder: modelFolder(TIMM) }, { backend, device: 'cpu' }).catch(
    (e) => e,
  );
  t.type(err, UserError);
  t.match(err.message, "is a timm config but preset 'hibou-l' describes a hf folder");
});

t.test('fp16 on the CPU, unknown dtypes and devices are refused before loading', async (t) => {
  await t.rejects(
    Encoder.load(modelFolder(TIMM), { backend, device: 'cpu', dtype: 'fp16' }),
    /dtype fp16 runs on CUDA devices only/,
  );
  await t.rejects(
    Encoder.load(modelFolder(TIMM), { backend, device: 'cpu', dtype: 'fp8' as never }),
    /unknown dtype 'fp8'/,
  );
  await t.rejects(Encoder.load(modelFolder(TIMM), { backend, device: 'tpu' }), /unknown device 'tpu'/);
  await t.rejects(Encoder.load('preset:nope:/x', { backend }), /unknown preset 'nope'/);
});

t.test('embed inputs of the wrong type or shape are refused with the expected layout', async (t) => {
  const enc = await Encoder.load(modelFolder(TIMM), { backend, device: 'cpu' });
  t.teardown(() => enc.dispose());
  await t.rejects(
    enc.embed({ data: new Uint8Array(2 * 3 * 4 * 4), shape: [2, 3, 4, 4] }),
    /uint8 images must be \(N,H,W,3\) RGB/,
  );
  await t.rejects(
    enc.embed({ data: new Float32Array(2 * 4 * 4 * 3), shape: [2, 4, 4, 3] }),
    /float32 images must be \(N,3,H,W\)/,
  );
  await t.rejects(
    enc.embed({ data: new Float32Array(3 * 8 * 8), shape: [1, 3, 8, 8] }),
    /smaller than one 14 px patch/,
  );
  await t.rejects(
    enc.embed({ data: new Float32Array(10), shape: [1, 3, 14, 14] }),
    /data has 10 elements but shape \[1,3,14,14\] needs 588/,
  );
  await t.rejects(enc.embed({ data: new Float64Array(588), shape: [1, 3, 14, 14] } as never), /got Float64Array/);
  const empty = await enc.embed({ data: new Uint8Array(0), shape: [0, 224, 224, 3] });
  t.same(empty.shape, [0, 32]);
});

t.test('embed command: .npy of the wrong dtype or shape fails before the model loads', async (t) => {
  const dir = t.testdir();
  const f64 = path.join(dir, 'f64.npy');
  await writeNpy(f64, { dtype: 'float64', shape: [1, 3, 14, 14], data: new Float64Array(588) });
  const e1 = await runEmbed({
    model: '/does/not/matter',
    input: f64,
    out: path.join(dir, 'y.npy'),
    batchSize: 4,
    backend: 'native',
  }).catch((e) => e);
  t.type(e1, UserError);
  t.match(
    e1.message,
    `${f64}: dtype float64 (1, 3, 14, 14); embed takes uint8 (N, H, W, 3) RGB or float32 (N, 3, H, W)`,
  );
  t.match(e1.message, 'astype(np.float32)');

  const chw = path.join(dir, 'chw.npy');
  await writeNpy(chw, { dtype: 'uint8', shape: [2, 3, 16, 16], data: new Uint8Array(2 * 3 * 256) });
  const e2 = await runEmbed({
    model: '/does/not/matter',
    input: chw,
    out: path.join(dir, 'y.npy'),
    batchSize: 4,
    backend: 'native',
  }).catch((e) => e);
  t.match(e2.message, `${chw}: uint8 array of shape (2, 3, 16, 16); embed takes uint8 images as (N, H, W, 3) RGB`);

  const hwc = path.join(dir, 'hwc.npy');
  await writeNpy(hwc, { dtype: 'float32', shape: [2, 16, 16, 3], data: new Float32Array(2 * 3 * 256) });
  const e3 = await runEmbed({
    model: '/does/not/matter',
    input: hwc,
    out: path.join(dir, 'y.npy'),
    batchSize: 4,
    backend: 'native',
  }).catch((e) => e);
  t.match(e3.message, 'float32 array of shape (2, 16, 16, 3); embed takes float32 images as (N, 3, H, W)');

  const e4 = await runEmbed({
    model: modelFolder(TIMM),
    input: hwc,
    out: path.join(dir, 'features'),
    batchSize: 4,
  }).catch((e) => e);
  t.match(e4.message, 'a .npy input writes a .npy output');
});

t.test('embed command: .npy in, .npy out, equal to the reference', async (t) => {
  const dir = t.testdir();
  const x = images('images_224');
  const input = path.join(dir, 'x.npy');
  await writeNpy(input, { dtype: 'uint8', shape: x.shape, data: x.data });
  const out = path.join(dir, 'y.npy');
  // batch size 1: the command's chunks and the encoder's batches both split the input
  const s = await runEmbed({ model: modelFolder(TIMM), input, out, batchSize: 1, device: 'cpu', backend: 'native' });
  t.equal(s.embedded, 2);
  const y = await readNpy(out);
  t.equal(y.dtype, 'float32');
  t.same(y.shape, [2, 32]);
  t.ok(relativeError(y.data as Float32Array, manifest.models[TIMM].expected.u8_224.flat()).rel <= 1e-4);

  const fin = path.join(dir, 'xf.npy');
  const xf = caseInput('f32_280');
  await writeNpy(fin, { dtype: 'float32', shape: xf.shape, data: xf.data as Float32Array });
  await runEmbed({
    model: `preset:uni2-h:${modelFolder('timm_uni2h_like')}`,
    input: fin,
    out,
    batchSize: 8,
    device: 'cpu',
    backend: 'native',
  });
  const yf = await readNpy(out);
  t.ok(relativeError(yf.data as Float32Array, manifest.models.timm_uni2h_like.expected.f32_280.flat()).rel <= 1e-4);
});

t.test('embed command: an unreadable image in a folder is skipped and listed, the rest embedded', async (t) => {
  const base = t.testdir(); // testdir() resets the folder: call it once
  const root = path.join(base, 'data');
  const x = images('images_224');
  for (const [i, cls] of ['tumour', 'stroma'].entries()) {
    mkdirSync(path.join(root, cls), { recursive: true });
    const px = Buffer.from(x.data.subarray(i * 224 * 224 * 3, (i + 1) * 224 * 224 * 3));
    await sharp(px, { raw: { width: 224, height: 224, channels: 3 } })
      .png()
      .toFile(path.join(root, cls, `img${i}.png`));
  }
  const broken = path.join(root, 'stroma', 'broken.png');
  writeFileSync(broken, Buffer.from('not a png at all'));
  const out = path.join(base, 'features');
  const s = await runEmbed({
    model: modelFolder(TIMM),
    input: root,
    out,
    batchSize: 4,
    device: 'cpu',
    backend: 'native',
  });
  t.equal(s.embedded, 2);
  t.equal(s.dims, 32);
  t.equal(s.skipped.length, 1);
  t.equal(s.skipped[0].path, broken);
  t.ok(existsSync(path.join(out, 'skipped.csv')));
  t.match(readFileSync(path.join(out, 'skipped.csv'), 'utf8'), 'broken.png');
  const f = await readNpy(path.join(out, 'features.npy'));
  t.same(f.shape, [2, 32]);
  const meta = readFileSync(path.join(out, 'meta.csv'), 'utf8');
  t.match(meta, 'stroma');
  t.match(meta, 'tumour');
  // PNG round trip is lossless and the images are already 224 px: the features are the reference's.
  const expected = manifest.models[TIMM].expected.u8_224;
  const rows = meta.trim().split('\n').slice(1);
  rows.forEach((row, r) => {
    const src = row.includes('img0') ? 0 : 1;
    const err = relativeError((f.data as Float32Array).subarray(r * 32, (r + 1) * 32), expected[src]);
    t.ok(err.rel <= 1e-4, `${row.split(',')[0]}: ${err.rel.toExponential(2)}`);
  });
});
