// The js backend refuses, in one line, models it would need hours for (over JS_MAX_PARAMETERS), before reading any
// weights, and runs them with force.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../../lib/errors.js';
import {
  checkJsModelSize,
  createJsModel,
  describeJsModel,
  JS_MAX_PARAMETERS,
  loadJsModel,
} from '../../lib/backends/js/model.js';
import { JsDistiller } from '../../lib/backends/js/distill.js';
import { chooseBackend, createBackendDistiller } from '../../lib/backends/index.js';
import { resolveVitSpec } from '../../lib/models/spec.js';
import { folder, manifest } from './helpers.js';

t.test("parameter counts of the real architectures are the reference libraries'", async (t) => {
  for (const [preset, n] of Object.entries(manifest.presetParameters))
    t.equal(describeJsModel('', preset).parameters, n, preset);
});

t.test(
  'Hibou-L, UNI2-h and H-optimus-0 are refused on js without --force; Hibou-B and the fixtures are not',
  async (t) => {
    for (const preset of ['hibou-l', 'uni2-h', 'h-optimus-0']) {
      const spec = resolveVitSpec('', preset);
      const n = describeJsModel('', preset).parameters;
      t.ok(n > JS_MAX_PARAMETERS);
      const err = (() => {
        try {
          checkJsModelSize(spec, n, false);
        } catch (e) {
          return e as Error;
        }
      })();
      t.type(err, UserError, preset);
      t.match(err!.message, `${(n / 1e6).toFixed(1)} M parameters: the pure-JS backend would need about`);
      t.match(err!.message, 'use --backend native, or pass --force');
      t.notOk(err!.message.includes('\n'), 'one line');
      t.doesNotThrow(() => checkJsModelSize(spec, n, true), `${preset} with force`);
    }
    t.doesNotThrow(() =>
      checkJsModelSize(resolveVitSpec('', 'hibou-b'), describeJsModel('', 'hibou-b').parameters, false),
    );
    t.doesNotThrow(() => loadJsModel(folder('timm_giant_reg4_swiglu')));
  },
);

t.test('loading refuses before reading weights; the distiller refuses a large teacher', async (t) => {
  // A Hibou-L config.json with no weights next to it: the refusal must come first (no "missing weights" error).
  const dir = path.join(t.testdir(), 'hibou-l');
  mkdirSync(dir);
  writeFileSync(
    path.join(dir, 'config.json'),
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
  t.throws(() => loadJsModel(dir), /303\.7 M parameters: the pure-JS backend would need about \d+ s per image/);
  t.throws(
    () => loadJsModel(dir, '', { force: true }),
    /has no model.safetensors/,
    'with force it goes on to the weights',
  );
  t.throws(() => createJsModel('', 'h-optimus-0'), /1134\.8 M parameters/);
  const err = await JsDistiller.create({ teacher: dir, student: folder('hf_dinov2_reg_swiglu'), force: false }).catch(
    (e) => e,
  );
  t.match(err.message, /303\.7 M parameters/);
});

t.test('the js backend says what to do for a GPU device or half precision', async (t) => {
  t.throws(
    () => loadJsModel(folder('hf_dinov2_gelu'), '', { device: 'cuda' }),
    /CPU only, but device 'cuda' was asked for: use --device cpu or --backend native/,
  );
  t.throws(() => loadJsModel(folder('hf_dinov2_gelu'), '', { dtype: 'fp16' }), /fp32 only, but dtype 'fp16'/);
});

t.test('--force reaches the js backend through chooseBackend, for models and distillers', async (t) => {
  const dir = path.join(t.testdir(), 'hibou-l');
  mkdirSync(dir);
  writeFileSync(
    path.join(dir, 'config.json'),
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
  const plain = chooseBackend({ backend: 'js' }).backend;
  await t.rejects(plain.loadModel({ folder: dir }), /303\.7 M parameters/);
  const forced = chooseBackend({ backend: 'js', force: true }).backend;
  await t.rejects(forced.loadModel({ folder: dir }), /has no model.safetensors/, 'forced: on to the (missing) weights');
  await t.rejects(
    createBackendDistiller(plain, { teacher: dir, student: folder('hf_dinov2_swiglu') }),
    /303\.7 M parameters/,
  );
  await t.rejects(
    createBackendDistiller(forced, { teacher: dir, student: folder('hf_dinov2_swiglu') }),
    /has no model.safetensors/,
  );
});
