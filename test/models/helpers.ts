// Shared by the model tests: the fixtures of tools/make_model_fixtures.py (tiny timm / transformers ViTs, their
// inputs, and the embeddings timm and transformers computed for them) and the native backend under test.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeBackend, loadEngineAddon } from '../../lib/backends/index.js';
import type { EmbedInput } from '../../lib/backends/types.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const FIXTURES = path.join(HERE, '..', 'fixtures', 'models');

export interface ModelFixture {
  layout: 'timm' | 'hf';
  architecture?: string;
  modelType?: string;
  storedDtype: string;
  embedDim: number;
  inputSize: number;
  parameters: number;
  mean: number[];
  std: number[];
  preset?: string;
  sharded?: boolean;
  expected: Record<string, number[][]>;
}

export interface Manifest {
  versions: Record<string, string>;
  inputs: Record<string, { file: string; dtype: 'uint8'; shape: number[] }>;
  cases: Record<string, [string, 'uint8' | 'float32']>;
  presetParameters: Record<string, number>;
  models: Record<string, ModelFixture>;
}

export const manifest: Manifest = JSON.parse(readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8'));

export function modelFolder(name: string): string {
  return path.join(FIXTURES, name);
}

const inputCache = new Map<string, { data: Uint8Array; shape: number[] }>();

/** The uint8 (N,H,W,3) images of an input entry. */
export function images(name: string): { data: Uint8Array; shape: number[] } {
  let x = inputCache.get(name);
  if (!x) {
    const spec = manifest.inputs[name];
    x = { data: new Uint8Array(readFileSync(path.join(FIXTURES, spec.file))), shape: spec.shape };
    inputCache.set(name, x);
  }
  return x;
}

/** (N,H,W,3) uint8 -> (N,3,H,W) float32 (u8 - 128) / 64: exact in float32, as the fixture script computes it. */
export function floatImages(u8: { data: Uint8Array; shape: number[] }): { data: Float32Array; shape: number[] } {
  const [n, h, w] = u8.shape;
  const hw = h * w;
  const out = new Float32Array(n * 3 * hw);
  for (let b = 0; b < n; b++) {
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < hw; p++) out[(b * 3 + c) * hw + p] = (u8.data[(b * hw + p) * 3 + c] - 128) / 64;
    }
  }
  return { data: out, shape: [n, 3, h, w] };
}

/** The input of a named case (manifest.cases). */
export function caseInput(caseName: string): EmbedInput {
  const [input, kind] = manifest.cases[caseName];
  const u8 = images(input);
  return kind === 'uint8' ? u8 : floatImages(u8);
}

/**
 * Relative error of `actual` against the reference: max |a - e| / max |e| over the case's outputs (the outputs
 * are O(1) LayerNorm outputs, so this is the error relative to their scale), plus the element-wise maximum of
 * |a - e| / |e| over elements with |e| >= 0.05 (near-zero elements make any relative measure meaningless).
 */
export function relativeError(actual: ArrayLike<number>, expected: number[]): { rel: number; elementwise: number } {
  let maxDiff = 0;
  let maxRef = 0;
  let elementwise = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (Number.isNaN(d)) return { rel: Infinity, elementwise: Infinity };
    maxDiff = Math.max(maxDiff, d);
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
    if (Math.abs(expected[i]) >= 0.05) elementwise = Math.max(elementwise, d / Math.abs(expected[i]));
  }
  return { rel: maxDiff / maxRef, elementwise };
}

export function nativeBackend(): NativeBackend {
  return new NativeBackend(loadEngineAddon());
}
