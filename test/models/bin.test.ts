// pytorch_model.bin weights (tools/make_bin_fixtures.py): read on both backends into the same tensors as the
// safetensors of the same weights (equal embeddings, and timm / transformers' references at 1e-4), one .bin and
// sharded .bin with an index; a .bin whose pickle would run a command is refused on both backends, naming the file
// and the global, and the command never runs; a .bin that does not match its config gets the strict key error.
import t from 'tap';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Encoder } from '../../lib/models/encoder.js';
import { loadJsModel } from '../../lib/backends/js/model.js';
import { readModelWeights } from '../../lib/backends/js/safetensors.js';
import { engine } from '../js-backend/helpers.js';
import { caseInput, manifest, modelFolder, nativeBackend, relativeError } from './helpers.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = (name: string) => path.join(HERE, '..', 'fixtures', 'bin', name);
const EVIL_MARKER = 'g2l-bin-fixture-was-executed'; // tools/make_bin_fixtures.py: what the payload would touch
const { skip } = engine();

const pairs = [
  ['timm_bin', 'timm_giant_reg4_swiglu'],
  ['hf_bin_sharded', 'hf_dinov2_reg_swiglu'],
] as const;

for (const [bin, safe] of pairs) {
  t.test(`${bin}: the js backend reads the same tensors as ${safe}'s safetensors`, async (t) => {
    const a = readModelWeights(BIN(bin)),
      b = readModelWeights(modelFolder(safe));
    t.same([...a.keys()].sort(), [...b.keys()].sort(), 'same keys');
    const differ = [...b].filter(
      ([k, v]) => a.get(k)!.shape.join() !== v.shape.join() || !a.get(k)!.data.every((x, i) => x === v.data[i]),
    );
    t.same(
      differ.map(([k]) => k),
      [],
      'every tensor has the same shape and values',
    );
    const model = loadJsModel(BIN(bin));
    const fx = manifest.models[safe];
    for (const caseName of ['u8_224', 'f32_168']) {
      const y = model.embed(caseInput(caseName) as never);
      t.ok(
        relativeError(y.data, fx.expected[caseName].flat()).rel <= 1e-4,
        `${caseName}: the reference library's embedding at 1e-4`,
      );
    }
  });

  t.test(`${bin}: the engine embeds exactly as from ${safe}'s safetensors`, { skip }, async (t) => {
    const backend = nativeBackend();
    const fromBin = await Encoder.load(BIN(bin), { backend, device: 'cpu' });
    const fromSafe = await Encoder.load(modelFolder(safe), { backend, device: 'cpu' });
    t.teardown(async () => {
      await fromBin.dispose();
      await fromSafe.dispose();
    });
    t.equal(fromBin.info.parameters, fromSafe.info.parameters);
    for (const caseName of ['u8_224', 'f32_168']) {
      const x = await fromBin.embed(caseInput(caseName));
      const y = await fromSafe.embed(caseInput(caseName));
      t.ok(
        x.data.every((v, i) => v === y.data[i]),
        `${caseName}: equal outputs`,
      );
      t.ok(
        relativeError(x.data, manifest.models[safe].expected[caseName].flat()).rel <= 1e-4,
        `${caseName}: reference at 1e-4`,
      );
    }
  });
}

t.test('a .bin whose pickle would run a command is refused on both backends, and nothing runs', async (t) => {
  const dir = t.testdir();
  const cwd = process.cwd();
  process.chdir(dir); // the payload would touch its marker in the working directory
  t.teardown(() => process.chdir(cwd));
  for (const name of ['evil_global', 'evil_stack_global']) {
    const file = path.join(BIN(name), 'pytorch_model.bin');
    const refusal = new RegExp(
      `${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: its pickle names the global posix\\.system; refused without running anything`,
    );
    t.throws(() => readModelWeights(BIN(name)), refusal, `${name}: js refuses, naming the file and the global`);
    await t.rejects(Encoder.load(BIN(name), { backend: 'js' }), refusal, `${name}: js Encoder refuses`);
    if (!skip)
      await t.rejects(
        Encoder.load(BIN(name), { backend: nativeBackend(), device: 'cpu' }),
        refusal,
        `${name}: the engine refuses`,
      );
  }
  t.notOk(existsSync(path.join(dir, EVIL_MARKER)), 'the payload never ran');
  t.notOk(existsSync(path.join(cwd, EVIL_MARKER)), 'the payload never ran (repository root)');
});

t.test('a .bin that does not match its config: one error listing every problem, on both backends', async (t) => {
  const dir = path.join(t.testdir(), 'mismatch');
  mkdirSync(dir);
  copyFileSync(path.join(BIN('hf_bin_sharded'), 'config.json'), path.join(dir, 'config.json'));
  copyFileSync(path.join(BIN('timm_bin'), 'pytorch_model.bin'), path.join(dir, 'pytorch_model.bin'));
  const problems = /missing.*unexpected/s;
  t.throws(() => loadJsModel(dir), problems);
  if (!skip) await t.rejects(Encoder.load(dir, { backend: nativeBackend(), device: 'cpu' }), problems);
});
