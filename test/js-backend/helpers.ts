// Shared by the js-backend tests: the model fixtures of tools/make_model_fixtures.py (tiny timm / transformers ViTs
// with the embeddings those libraries computed) and the native engine, when it loads, to compare against.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadEngineAddon } from '../../lib/backends/native.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const FIXTURES = path.join(HERE, '..', 'fixtures', 'models');

export interface Manifest {
  inputs: Record<string, { file: string; shape: number[] }>;
  cases: Record<string, [string, 'uint8' | 'float32']>;
  presetParameters: Record<string, number>;
  models: Record<
    string,
    { layout: string; storedDtype: string; embedDim: number; parameters: number; expected: Record<string, number[][]> }
  >;
}

export const manifest: Manifest = JSON.parse(readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8'));
export const folder = (name: string): string => path.join(FIXTURES, name);

export function u8Images(name: string): { data: Uint8Array; shape: number[] } {
  const spec = manifest.inputs[name];
  return { data: new Uint8Array(readFileSync(path.join(FIXTURES, spec.file))), shape: spec.shape };
}

/** (N,H,W,3) uint8 -> (N,3,H,W) float32 (u8 - 128) / 64, exactly as the fixture script. */
export function floatImages(u8: { data: Uint8Array; shape: number[] }): { data: Float32Array; shape: number[] } {
  const [n, h, w] = u8.shape;
  const out = new Float32Array(n * 3 * h * w);
  for (let b = 0; b < n; b++)
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < h * w; p++) {
        out[(b * 3 + c) * h * w + p] = (u8.data[(b * h * w + p) * 3 + c] - 128) / 64;
      }
  return { data: out, shape: [n, 3, h, w] };
}

/** max |a - e| / max |e|. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let diff = 0,
    scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return diff / scale;
}

/** The engine addon, or why it is not there (tests that compare against it skip with that reason). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function engine(): { addon: any; skip: string | false } {
  try {
    return { addon: loadEngineAddon(), skip: false };
  } catch (e) {
    return { addon: null, skip: `native engine not loadable (${(e as Error).message.split('\n')[0]}): npm run setup` };
  }
}

/** Deterministic tissue-like uint8 tiles (B,S,S,3): smooth colour fields plus a hash pattern. */
export function tiles(B: number, S: number, seed = 1): { data: Uint8Array; shape: number[] } {
  const data = new Uint8Array(B * S * S * 3);
  let h = seed >>> 0;
  for (let b = 0; b < B; b++)
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++)
        for (let c = 0; c < 3; c++) {
          h = (Math.imul(h ^ (h >>> 15), 2246822519) + 0x9e3779b9) >>> 0;
          const base = 150 + 60 * Math.sin((x * (c + 1)) / 17 + (y * (b + 2)) / 23 + c);
          data[((b * S + y) * S + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(base + ((h & 63) - 32))));
        }
  return { data, shape: [B, S, S, 3] };
}
