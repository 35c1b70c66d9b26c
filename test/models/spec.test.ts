// The one model registry (lib/models/spec.ts) and what the engine receives from it: a plain, fully resolved spec in
// which every field is required (the engine has no model defaults of its own that could disagree), checked for
// consistency before anything is built; export writes the config.json the registry says on both backends.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createJsModel, describeJsModel, loadJsModel } from '../../lib/backends/js/model.js';
import { exportJson, nativeModelSpec, resolveVitSpec } from '../../lib/models/spec.js';
import { engine } from '../js-backend/helpers.js';
import { modelFolder, nativeBackend } from './helpers.js';

const { skip, addon } = engine();

t.test('the engine describes exactly what the registry resolved, for every fixture and preset', { skip }, async (t) => {
  const cases: [string, string][] = [
    ...['timm_giant_reg4_swiglu', 'timm_large_gelu', 'timm_uni2h_like', 'hf_dinov2_gelu', 'hf_dinov2_reg_swiglu'].map(
      (f): [string, string] => [modelFolder(f), ''],
    ),
    ['', 'h-optimus-0'],
    ['', 'hibou-l'],
    ['', 'uni2-h'],
    ['', 'virchow2'],
    ['', 'h0-mini'],
    ['', 'phikon_v2'],
    ['', 'gigapath'],
  ];
  for (const [folder, preset] of cases) {
    const native = await nativeBackend().describeModel({ folder: folder || undefined, preset: preset || undefined });
    const js = describeJsModel(folder, preset);
    const { dtype: _a, device: _b, ...jsDesc } = js;
    t.same(native, jsDesc, `${preset || path.basename(folder)}: the engine's description is the registry's`);
  }
});

t.test(
  'every field of the spec is required; an inconsistent spec is refused before anything is built',
  { skip },
  async (t) => {
    const spec = nativeModelSpec(resolveVitSpec(modelFolder('timm_giant_reg4_swiglu')));
    for (const key of ['embedDim', 'pool', 'mean', 'drop', 'configJson'] as const) {
      const partial: Record<string, unknown> = { ...spec };
      delete partial[key];
      await t.rejects(
        async () => addon.describeModel(partial),
        new RegExp(`spec\\.${key} is missing`),
        `${key} missing: named`,
      );
    }
    await t.rejects(addon.describeModel({ ...spec, pool: 'max' }), /pool 'max' is not one of cls, mean, cls\+mean/);
    await t.rejects(addon.describeModel({ ...spec, numHeads: 5 }), /embedding dim 32 is not divisible by 5 heads/);
    await t.rejects(
      addon.describeModel({ ...spec, mlp: 'swiglu_hf' }),
      /mlp 'swiglu_hf' is not one of gelu, swiglu_packed/,
    );
    await t.rejects(addon.describeModel({ ...spec, drop: { ...spec.drop, dropPath: 2 } }), /rate is outside \[0, 1\]/);
    await t.rejects(addon.describeModel({ ...spec, configJson: '' }), /config_json is empty/);
  },
);

t.test("export writes the registry's config.json on both backends", { skip }, async (t) => {
  const dir = t.testdir();
  for (const [folder, preset, pool] of [
    [modelFolder('hf_dinov2_reg_swiglu'), '', 'cls+mean'],
    ['', 'h0-mini', ''],
    ['', 'hibou-b', 'mean'],
  ] as const) {
    const spec = resolveVitSpec(folder, preset, pool);
    const want = exportJson(spec);
    const source = { folder: folder || undefined, preset: preset || undefined, pool: pool || undefined };
    const handle = folder ? await nativeBackend().loadModel(source) : await nativeBackend().createModel(source);
    const name = `${preset || path.basename(folder)}-${pool || 'own'}`;
    await handle.exportTo(path.join(dir, `native-${name}`));
    await handle.dispose();
    const js = folder ? loadJsModel(folder, preset, { pool }) : createJsModel(folder, preset, 0, { pool });
    await js.exportTo(path.join(dir, `js-${name}`));
    for (const side of ['native', 'js']) {
      t.equal(
        readFileSync(path.join(dir, `${side}-${name}`, 'config.json'), 'utf8'),
        want.config,
        `${side} ${name}: config.json`,
      );
      if (want.preprocessor !== null) {
        t.equal(
          readFileSync(path.join(dir, `${side}-${name}`, 'preprocessor_config.json'), 'utf8'),
          want.preprocessor,
          `${side} ${name}: preprocessor_config.json`,
        );
      }
    }
  }
});
