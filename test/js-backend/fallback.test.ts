// When the engine cannot load, commands run on the js backend after one warning, with the same results; --backend js
// asks for it without the warning; a model the js backend would need hours for is refused in one line.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { readNpy, writeNpy } from '../../lib/io/npy.js';
import { runCli } from '../helpers/cli.js';
import { folder, manifest, relativeError, u8Images } from './helpers.js';

const NO_ENGINE = { G2L_ENGINE_PATH: '/nonexistent/g2l_engine.node' };

t.test('embed falls back to js with one warning and gives the reference embeddings', async (t) => {
  const dir = t.testdir();
  const input = path.join(dir, 'x.npy'),
    out = path.join(dir, 'y.npy');
  const u8 = u8Images('images_224');
  await writeNpy(input, { dtype: 'uint8', shape: u8.shape, data: u8.data });
  const r = await runCli(['embed', '--model', folder('hf_dinov2_swiglu'), '--input', input, '--out', out], {
    env: NO_ENGINE,
  });
  t.equal(r.code, 0, r.stderr);
  const warnings = r.stderr.split('\n').filter((l) => l.includes('warning'));
  t.equal(warnings.length, 1, 'one warning');
  t.match(r.stderr, 'Continuing with the pure-JS backend');
  const y = await readNpy(out);
  t.same(y.shape, [2, 32]);
  t.ok(
    relativeError(y.data as Float32Array, manifest.models.hf_dinov2_swiglu.expected.u8_224.flat()) <= 1e-4,
    'reference embeddings',
  );

  const quiet = await runCli(
    ['--backend', 'js', 'embed', '--model', folder('hf_dinov2_swiglu'), '--input', input, '--out', out],
    { env: NO_ENGINE },
  );
  t.equal(quiet.code, 0, quiet.stderr);
  t.notMatch(quiet.stderr, 'warning', '--backend js: no warning');
});

t.test('a model js would need hours for is refused in one line (exit 2)', async (t) => {
  const dir = t.testdir();
  const model = path.join(dir, 'hibou-l');
  mkdirSync(model);
  writeFileSync(
    path.join(model, 'config.json'),
    JSON.stringify({
      model_type: 'dinov2_with_registers',
      hidden_size: 1024,
      num_hidden_layers: 24,
      num_attention_heads: 16,
      use_swiglu_ffn: true,
      num_register_tokens: 4,
      image_size: 224,
      patch_size: 14,
    }),
  );
  const input = path.join(dir, 'x.npy');
  const u8 = u8Images('images_224');
  await writeNpy(input, { dtype: 'uint8', shape: u8.shape, data: u8.data });
  const r = await runCli(
    ['--backend', 'js', 'embed', '--model', model, '--input', input, '--out', path.join(dir, 'y.npy')],
    { env: NO_ENGINE },
  );
  t.equal(r.code, 2);
  t.match(
    r.stderr,
    /^g2l-native: the model .*303\.7 M parameters: the pure-JS backend would need about \d+ s per image/,
  );
  t.match(r.stderr, 'use --backend native, or pass --force');
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
});
