// Models on the pure-JS backend: load a hub folder, create one with random weights, embed images, export. The
// counterpart of the engine's g2l/models.h, with the same preprocessing (uint8 images resized to the model's input
// size with antialiased bicubic, scaled and normalised; float32 images used as given) and a guard that refuses
// models the js backend would need hours for.
import path from 'node:path';
import { UserError } from '../../errors.js';
import { writeDirAtomic } from '../../io/atomic.js';
import type { Float32Tensor, Uint8Tensor } from '../types.js';
import { Mt19937 } from './augment.js';
import { writeSafetensors } from './safetensors.js';
import {
  describeSpec,
  expectedShapes,
  exportJson,
  isBufferKey,
  outDim,
  parameterCount,
  resolveVitSpec,
  type ExportJson,
  type VitSpec,
} from '../../models/spec.js';
import { loadVit, resizeBicubic, Vit, type Weight } from './vit.js';
import type { ModelDescription } from '../types.js';

/** What a model is (the engine's ModelInfo): a description, with the js backend's fixed dtype and device. */
export interface JsModelInfo extends ModelDescription {
  mean: [number, number, number];
  std: [number, number, number];
  dtype: 'fp32' | null;
  device: 'cpu' | null;
}

export interface JsModelOptions {
  device?: string;
  dtype?: string;
  /** Load even a model the js backend would need hours for (see checkJsModelSize). */
  force?: boolean;
  /** cls | mean | cls+mean: overrides the model's own pooling. */
  pool?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// The size guard
// ---------------------------------------------------------------------------------------------------------------

/**
 * Sustained float32 throughput of the js kernels on one core, GFLOP/s: 1.5 measured for a ViT block forward +
 * backward at width 128 (benchmarks/lib/foundation-choice.mjs); it is used only to tell users how long they would
 * wait.
 */
export const JS_GFLOPS = 1.5;
/** Largest model the js backend loads without --force: ViT-B size (86 M parameters, about 25 s per 224 px image). */
export const JS_MAX_PARAMETERS = 100_000_000;

/** Forward FLOPs of one image at the model's input size: 2 * params * tokens plus attention. */
export function forwardFlops(spec: VitSpec, parameters: number): number {
  const grid = Math.floor(spec.inputSize / spec.patchSize);
  const T = 1 + spec.numRegisters + grid * grid;
  return 2 * parameters * T + 4 * spec.depth * T * T * spec.embedDim;
}

/** Throws the one-line refusal for a model over JS_MAX_PARAMETERS, unless `force`. */
export function checkJsModelSize(spec: VitSpec, parameters: number, force: boolean | undefined, what = 'model'): void {
  if (force || parameters <= JS_MAX_PARAMETERS) return;
  const secondsPerImage = forwardFlops(spec, parameters) / (JS_GFLOPS * 1e9);
  throw new UserError(
    `the ${what} ${spec.folder || spec.preset} (${describeSpec(spec)}) has ${(parameters / 1e6).toFixed(1)} M parameters: the pure-JS backend ` +
      `would need about ${secondsPerImage.toFixed(0)} s per image forward (hours for a dataset); build the native engine (npm run setup) and ` +
      `use --backend native, or pass --force to run it on js anyway`,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------------------------

export class JsModel {
  private disposed = false;
  constructor(
    readonly vit: Vit,
    private readonly files: ExportJson,
  ) {}

  get spec(): VitSpec {
    return this.vit.spec;
  }

  info(): JsModelInfo {
    return infoOf(this.spec, this.vit.parameterCount(), true);
  }

  dispose(): void {
    this.disposed = true;
    this.vit.weights.clear();
  }

  /**
   * images uint8 (N,H,W,3) RGB or float32 (N,3,H,W) normalised -> float32 (N,D), in chunks of `batchSize`
   * (bounded memory).
   */
  embed(images: Uint8Tensor | Float32Tensor, batchSize = 8): Float32Tensor {
    if (this.disposed) throw new UserError('embed: this model was disposed; load it again');
    const s = this.spec;
    const D = outDim(s);
    if (images.data instanceof Uint8Array) {
      const [N, H, W, C] = images.shape;
      if (images.shape.length !== 4 || C !== 3)
        throw new UserError(`embed: expected uint8 images (N,H,W,3), got (${images.shape.join(',')})`);
      const out = new Float32Array(N * D);
      for (let i = 0; i < N; i += batchSize) {
        const n = Math.min(batchSize, N - i);
        const x = prepareImages(images.data.subarray(i * H * W * 3, (i + n) * H * W * 3), n, H, W, s);
        out.set(this.vit.forward(x, n, s.inputSize, s.inputSize).embeddings, i * D);
      }
      return { data: out, shape: [N, D] };
    }
    const [N, C, H, W] = images.shape;
    if (images.shape.length !== 4 || C !== 3)
      throw new UserError(`embed: expected float32 images (N,3,H,W), got (${images.shape.join(',')})`);
    const out = new Float32Array(N * D);
    for (let i = 0; i < N; i += batchSize) {
      const n = Math.min(batchSize, N - i);
      out.set(
        this.vit.forward(images.data.subarray(i * 3 * H * W, (i + n) * 3 * H * W) as Float32Array, n, H, W).embeddings,
        i * D,
      );
    }
    return { data: out, shape: [N, D] };
  }

  /** Writes config.json + model.safetensors (float32) [+ preprocessor_config.json] (lib/models/spec.ts exportJson), atomically. */
  async exportTo(folder: string): Promise<void> {
    await writeDirAtomic(folder, async (tmp) => {
      await writeSafetensors(path.join(tmp, 'model.safetensors'), this.vit.weights);
      const { writeFile } = await import('node:fs/promises');
      await writeFile(path.join(tmp, 'config.json'), this.files.config);
      if (this.files.preprocessor !== null)
        await writeFile(path.join(tmp, 'preprocessor_config.json'), this.files.preprocessor);
    });
  }
}

function checkCpuFp32(options: JsModelOptions): void {
  if ((options.device ?? 'cpu') !== 'cpu') {
    throw new UserError(
      `the js backend runs on the CPU only, but device '${options.device}' was asked for: use --device cpu or --backend native`,
    );
  }
  if (options.dtype && !['fp32', 'float32'].includes(options.dtype)) {
    throw new UserError(
      `the js backend computes in fp32 only, but dtype '${options.dtype}' was asked for: use --dtype fp32 or --backend native`,
    );
  }
}

/** What loading would refuse, checked without reading weights: device, dtype, the folder's config, the size. */
export function preflightJsModel(folder: string, preset = '', options: JsModelOptions = {}): VitSpec {
  checkCpuFp32(options);
  const spec = resolveVitSpec(folder, preset, options.pool ?? '');
  checkJsModelSize(spec, parameterCount(spec), options.force);
  return spec;
}

/** Loads a hub folder and/or preset; refuses models over JS_MAX_PARAMETERS unless options.force. */
export function loadJsModel(folder: string, preset = '', options: JsModelOptions = {}): JsModel {
  const spec = preflightJsModel(folder, preset, options);
  const vit = loadVit(folder, preset, options.pool ?? '');
  return new JsModel(vit, exportJson(spec));
}

/** The architecture of a folder/preset with random weights (the engine's init_random scheme, js's own draws). */
export function createJsModel(folder: string, preset = '', seed = 0, options: JsModelOptions = {}): JsModel {
  const spec = preflightJsModel(folder, preset, options);
  const rng = new Mt19937(seed);
  const normal = (std: number) => {
    const u1 = (rng.next() + 1) / 4294967297,
      u2 = rng.next() / 4294967296;
    return std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  };
  const weights = new Map<string, Weight>();
  for (const [key, shape] of expectedShapes(spec)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const leaf = key.slice(key.lastIndexOf('.') + 1);
    if (leaf === 'gamma' || leaf === 'lambda1') data.fill(spec.initValues > 0 ? spec.initValues : 1);
    else if (key.includes('norm') && leaf === 'weight') data.fill(1);
    else if (leaf === 'bias' || key.includes('mask_token')) data.fill(0);
    else if (key.includes('cls_token') || key.includes('reg'))
      for (let i = 0; i < data.length; i++) data[i] = normal(1e-6);
    else for (let i = 0; i < data.length; i++) data[i] = normal(0.02);
    weights.set(key, { shape, data });
  }
  return new JsModel(new Vit(spec, weights), exportJson(spec));
}

/** A folder/preset's architecture and parameter count, without reading weights. */
export function describeJsModel(folder: string, preset = '', pool = ''): JsModelInfo {
  const spec = resolveVitSpec(folder, preset, pool);
  return infoOf(spec, parameterCount(spec), false);
}

function infoOf(s: VitSpec, parameters: number, loaded: boolean): JsModelInfo {
  return {
    family: s.family,
    layout: s.layout,
    preset: s.preset || null,
    folder: s.folder || null,
    mlp: s.mlp,
    dims: outDim(s),
    width: s.embedDim,
    pool: s.pool,
    depth: s.depth,
    numHeads: s.numHeads,
    numRegisters: s.numRegisters,
    patchSize: s.patchSize,
    inputSize: s.inputSize,
    parameters,
    mean: float32x3(s.mean),
    std: float32x3(s.std),
    dtype: loaded ? 'fp32' : null,
    device: loaded ? 'cpu' : null,
  };
}

/** mean/std as the float32 values images are normalised with (what the engine reports too). */
const float32x3 = (v: readonly number[]): [number, number, number] => [
  Math.fround(v[0]),
  Math.fround(v[1]),
  Math.fround(v[2]),
];

/**
 * uint8 (n,H,W,3) -> float32 (n,3,S,S) at the model's input size S: resized with antialiased bicubic on [0,255]
 * when H,W differ from S (as the engine and the fixtures' F.interpolate do), then x/255 normalised in float32.
 */
export function prepareImages(u8: Uint8Array, n: number, H: number, W: number, spec: VitSpec): Float32Array {
  const S = spec.inputSize;
  let x: Float32Array = new Float32Array(n * 3 * H * W);
  for (let b = 0; b < n; b++)
    for (let c = 0; c < 3; c++) {
      const o = (b * 3 + c) * H * W,
        src = b * H * W * 3 + c;
      for (let p = 0; p < H * W; p++) x[o + p] = u8[src + p * 3];
    }
  if (H !== S || W !== S) x = resizeBicubic(x, n, 3, H, W, S, S, true);
  for (let b = 0; b < n; b++)
    for (let c = 0; c < 3; c++) {
      const o = (b * 3 + c) * S * S;
      const mean = Math.fround(spec.mean[c]),
        std = Math.fround(spec.std[c]);
      for (let p = 0; p < S * S; p++) x[o + p] = (Math.fround(x[o + p] / 255) - mean) / std;
    }
  return x;
}

export { isBufferKey };
