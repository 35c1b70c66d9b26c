// Shared by the augmentation tests: the fixtures of tools/make_augment_fixtures.py and the backends under test.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { JsBackend, NativeBackend, loadEngineAddon, type Backend } from '../../lib/backends/index.js';
import { bfloat16BitsToFloat, halfBitsToFloat } from '../../lib/backends/js/augment.js';
import type { AugmentedBatch, Normalization, TypedTensor } from '../../lib/backends/types.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const FIXTURES = path.join(HERE, '..', 'fixtures', 'augment');

export interface AugmentFixture {
  name: string;
  tiles: { data: Uint8Array; shape: number[] };
  params: { data: Float32Array; shape: number[] };
  /** torchvision's output in [0,1], (B,3,crop,crop), float64 from the uint16 quantisation. */
  expected: Float64Array;
  config: { crop: number; blurKernel: number };
}

export function loadFixture(name: string): AugmentFixture {
  const meta = JSON.parse(readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));
  const raw = gunzipSync(readFileSync(path.join(FIXTURES, `${name}.bin.gz`)));
  const nTiles = meta.tiles.shape.reduce((a: number, b: number) => a * b, 1);
  const nExp = meta.expected.shape.reduce((a: number, b: number) => a * b, 1);
  if (raw.length !== nTiles + 2 * nExp)
    throw new Error(`${name}.bin.gz has ${raw.length} bytes, expected ${nTiles + 2 * nExp}`);
  const tiles = new Uint8Array(raw.buffer, raw.byteOffset, nTiles).slice();
  const q = new Uint16Array(raw.buffer.slice(raw.byteOffset + nTiles, raw.byteOffset + nTiles + 2 * nExp));
  const expected = new Float64Array(nExp);
  for (let i = 0; i < nExp; i++) expected[i] = q[i] / meta.expected.scale;
  const rows: number[][] = meta.params;
  return {
    name,
    tiles: { data: tiles, shape: meta.tiles.shape },
    params: { data: Float32Array.from(rows.flat()), shape: [rows.length, rows[0].length] },
    expected,
    config: meta.config,
  };
}

/** Maps a normalised output back to [0,1]: x = y * std + mean. */
export function denormalise(t: TypedTensor | AugmentedBatch['student'], norm: Normalization): Float64Array {
  const [b, c, h, w] = t.shape;
  const hw = h * w;
  const out = new Float64Array(b * c * hw);
  const read =
    t.dtype === 'float16'
      ? (i: number) => halfBitsToFloat(t.data[i])
      : t.dtype === 'bfloat16'
        ? (i: number) => bfloat16BitsToFloat(t.data[i])
        : (i: number) => t.data[i];
  for (let i = 0; i < out.length; i++) {
    const ch = Math.floor(i / hw) % c;
    out[i] = read(i) * norm.std[ch] + norm.mean[ch];
  }
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): { max: number; at: number } {
  let max = 0;
  let at = -1;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= max)) {
      max = d;
      at = i;
    }
  }
  return { max, at };
}

/** Both backends; the native engine is the one G2L_ENGINE_PATH (or `npm run setup`) names. */
export function backends(): Backend[] {
  return [new NativeBackend(loadEngineAddon()), new JsBackend()];
}
