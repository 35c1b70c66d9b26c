// The TRIDENT-named presets (lib/models/spec.ts): a tiny random model of each family written by its own library
// (timm or transformers) with TRIDENT's kwargs (tools/make_preset_fixtures.py), embedded through the preset on both
// backends against TRIDENT's forward at 1e-4; the real-size architectures' parameter counts and output widths (the
// library on the meta device); TRIDENT's aliases of the presets known under the models' own names.
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Encoder } from '../../lib/models/encoder.js';
import { loadJsModel, describeJsModel } from '../../lib/backends/js/model.js';
import type { EmbedInput } from '../../lib/backends/types.js';
import { engine } from '../js-backend/helpers.js';
import { floatImages, nativeBackend, relativeError } from './helpers.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FIXTURES = path.join(HERE, '..', 'fixtures', 'presets');
interface PresetFixture {
  architecture: string;
  pool: string;
  width: number;
  dims: number;
  parameters: number;
  fullParameters: number;
  fullDims: number;
  mean: number[];
  std: number[];
  expected: Record<string, number[][]>;
}
const manifest: {
  inputs: Record<string, string>;
  cases: Record<string, [string, 'uint8' | 'float32']>;
  models: Record<string, PresetFixture>;
} = JSON.parse(readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8'));
const { skip } = engine();

function caseInput(caseName: string): EmbedInput {
  const [input, kind] = manifest.cases[caseName];
  const u8 = new Uint8Array(readFileSync(path.join(FIXTURES, manifest.inputs[input])));
  const size = input === 'images_224' ? 224 : 168;
  const images = { data: u8, shape: [2, size, size, 3] };
  return kind === 'uint8' ? images : floatImages(images);
}

for (const [preset, fx] of Object.entries(manifest.models)) {
  const folder = path.join(FIXTURES, preset);
  const check = (
    t: Test,
    info: { preset: string | null; pool: string; dims: number; parameters: number; mean: number[] },
    label: string,
  ) => {
    t.equal(info.pool, fx.pool, `${label}: pool ${fx.pool}`);
    t.equal(info.dims, fx.dims, `${label}: ${fx.dims}-d`);
    t.equal(info.parameters, fx.parameters, `${label}: parameters as timm counts them`);
    t.ok(
      info.mean.every((m, i) => Math.abs(m - fx.mean[i]) < 1e-6),
      `${label}: the preset's normalisation`,
    );
  };
  t.test(`${preset} (${fx.architecture}, ${fx.pool}): js backend against TRIDENT's forward`, async (t) => {
    const model = loadJsModel(folder, preset);
    check(t, model.info(), 'js');
    for (const [caseName, want] of Object.entries(fx.expected)) {
      const err = relativeError(model.embed(caseInput(caseName) as never).data, want.flat());
      t.ok(
        err.rel <= 1e-4 && err.elementwise <= 1e-4,
        `${caseName}: relative error ${err.rel.toExponential(2)}, element-wise ${err.elementwise.toExponential(2)} <= 1e-4`,
      );
    }
    const full = describeJsModel('', preset);
    t.equal(full.parameters, fx.fullParameters, `full size: ${fx.fullParameters} parameters`);
    t.equal(full.dims, fx.fullDims, `full size: ${fx.fullDims}-d`);
  });
  t.test(`${preset} (${fx.architecture}, ${fx.pool}): native engine against TRIDENT's forward`, { skip }, async (t) => {
    const backend = nativeBackend();
    const enc = await Encoder.load({ preset, folder }, { backend, device: 'cpu' });
    t.teardown(() => enc.dispose());
    check(t, enc.info, 'native');
    for (const [caseName, want] of Object.entries(fx.expected)) {
      const err = relativeError((await enc.embed(caseInput(caseName))).data, want.flat());
      t.ok(
        err.rel <= 1e-4 && err.elementwise <= 1e-4,
        `${caseName}: relative error ${err.rel.toExponential(2)}, element-wise ${err.elementwise.toExponential(2)} <= 1e-4`,
      );
    }
    const full = await backend.describeModel({ preset });
    t.equal(full.parameters, fx.fullParameters, `full size: ${fx.fullParameters} parameters`);
    t.equal(full.dims, fx.fullDims, `full size: ${fx.fullDims}-d`);
  });
}

t.test("Virchow2's config is recognised without a preset (its SwiGLU layer and pooling live in code)", async (t) => {
  const folder = path.join(FIXTURES, 'virchow2');
  t.equal(loadJsModel(folder).info().preset, 'virchow2');
  if (!skip) t.equal((await nativeBackend().describeModel({ folder })).preset, 'virchow2');
});

t.test("TRIDENT's names of the presets known under the models' own names", async (t) => {
  for (const [alias, name] of [
    ['hoptimus0', 'h-optimus-0'],
    ['uni_v2', 'uni2-h'],
    ['hibou_l', 'hibou-l'],
    ['hibou_b', 'hibou-b'],
  ]) {
    const a = describeJsModel('', alias),
      b = describeJsModel('', name);
    t.same(a, b, `js: ${alias} is ${name}`);
    if (!skip)
      t.same(
        await nativeBackend().describeModel({ preset: alias }),
        await nativeBackend().describeModel({ preset: name }),
        `native: ${alias} is ${name}`,
      );
  }
});

t.test(
  'an export of H0-mini (its config.json leaves the SwiGLU layer to code) records the preset and reloads without it',
  async (t) => {
    const folder = path.join(FIXTURES, 'h0-mini');
    const input = caseInput('u8_224');
    const dir = t.testdir();
    const js = loadJsModel(folder, 'h0-mini');
    await js.exportTo(path.join(dir, 'js'));
    const backends: [string, string][] = [['js', path.join(dir, 'js')]];
    if (!skip) {
      const enc = await Encoder.load({ preset: 'h0-mini', folder }, { backend: nativeBackend(), device: 'cpu' });
      t.teardown(() => enc.dispose());
      await enc.exportTo(path.join(dir, 'native'));
      backends.push(['native', path.join(dir, 'native')]);
    }
    t.throws(
      () => loadJsModel(folder, '', { pool: 'cls' }),
      /mlp\.fc2\.weight/,
      'the folder alone does not describe it (a GELU MLP of other widths)',
    );
    const want = manifest.models['h0-mini'].expected.u8_224.flat();
    for (const [side, out] of backends) {
      const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
      t.equal(cfg.g2l_preset, 'h0-mini', `${side}: config.json records the preset`);
      const again = loadJsModel(out);
      t.equal(again.info().preset, 'h0-mini', `${side}: the export reloads as h0-mini without naming it`);
      const err = relativeError(again.embed(input as never).data, want);
      t.ok(err.rel <= 1e-4, `${side}: the same embeddings (relative error ${err.rel.toExponential(2)})`);
    }
  },
);
