// The pure-JS backend: the same interface as the native engine, in JavaScript only (no native code, no
// WebAssembly), for portability and as the baseline the benchmarks compare against.
import os from 'node:os';
import { UserError } from '../../errors.js';
import type { Backend, BackendInfo, Float32Tensor, Uint8Tensor } from '../types.js';
import type { AugmentConfig, AugmentedBatch, AugmentOptions, Normalization } from '../types.js';
import { augmentBatch, sampleAugmentParams } from './augment.js';
import type { FloatTensor, LogSumLossOptions, LogSumLossResult } from '../types.js';
import { logSumLossJs } from './loss.js';
import type { EmbedInput, ModelDescription, ModelHandle, ModelInfo, ModelLoadOptions, ModelSource } from '../types.js';
import { createJsModel, describeJsModel, JsModel, loadJsModel } from './model.js';

export class JsBackend implements Backend {
  readonly name = 'js' as const;
  /** Load models over the js size limit instead of refusing them (--force). */
  readonly force: boolean;

  constructor(options: { force?: boolean } = {}) {
    this.force = options.force ?? false;
  }

  async info(): Promise<BackendInfo> {
    return {
      backend: 'js',
      libtorchVersion: null,
      cudaBuilt: false,
      cudaArchitectures: [],
      cudaAvailable: false,
      cudaRuntimeVersion: null,
      devices: [],
      cpuThreads: 1,
    };
  }

  async normalizeImages(images: Uint8Tensor, mean: readonly number[], std: readonly number[], device = 'cpu'): Promise<Float32Tensor> {
    requireCpu(device);
    const [n, h, w, c] = images.shape;
    if (images.shape.length !== 4 || c !== 3) {
      throw new UserError(`normalizeImages: expected uint8 images of shape (N,H,W,3), got (${images.shape.join(',')})`);
    }
    const hw = h * w;
    const out = new Float32Array(n * 3 * hw);
    const src = images.data;
    for (let ch = 0; ch < 3; ch++) {
      // Same arithmetic as the engine: x * (1/(255 std)) + (-mean/std), in float32.
      const scale = Math.fround(1 / Math.fround(255 * std[ch]));
      const shift = Math.fround(-mean[ch] / std[ch]);
      for (let b = 0; b < n; b++) {
        const o = b * 3 * hw + ch * hw;
        const s = b * hw * 3 + ch;
        for (let p = 0; p < hw; p++) out[o + p] = src[s + p * 3] * scale + shift;
      }
    }
    return { data: out, shape: [n, 3, h, w] };
  }

  async sampleAugmentParams(batch: number, tileH: number, tileW: number, config: AugmentConfig, seed: number | bigint): Promise<Float32Tensor> {
    return sampleAugmentParams(batch, tileH, tileW, config, seed);
  }

  async augmentBatch(
    tiles: Uint8Tensor,
    params: Float32Tensor | { seed: number | bigint },
    config: AugmentConfig,
    teacherNorm: Normalization,
    studentNorm: Normalization,
    options: AugmentOptions = {},
  ): Promise<AugmentedBatch> {
    requireCpu(options.device ?? 'cpu');
    const p = 'seed' in params ? sampleAugmentParams(tiles.shape[0], tiles.shape[1], tiles.shape[2], config, params.seed) : params;
    return augmentBatch(tiles, p, config, teacherNorm, studentNorm, options.teacherDtype ?? 'float16');
  }

  allocateTileBuffer(bytes: number): Uint8Array {
    return new Uint8Array(bytes);
  }

  // Models: the pure-JS ViT (./vit.ts), refused over JS_MAX_PARAMETERS unless options.force (./model.ts).
  async describeModel(source: ModelSource): Promise<ModelDescription> {
    const { dtype: _d, device: _v, ...desc } = describeJsModel(source.folder ?? '', source.preset ?? '');
    return desc;
  }

  async loadModel(source: ModelSource, options: ModelLoadOptions = {}): Promise<ModelHandle> {
    return new JsModelHandle(loadJsModel(source.folder ?? '', source.preset ?? '', { force: this.force, ...options }));
  }

  async createModel(source: ModelSource, options: ModelLoadOptions & { seed?: number } = {}): Promise<ModelHandle> {
    return new JsModelHandle(createJsModel(source.folder ?? '', source.preset ?? '', options.seed ?? 0, { force: this.force, ...options }));
  }

  async logSumLoss(zs: FloatTensor, zt: FloatTensor, options: LogSumLossOptions): Promise<LogSumLossResult> {
    requireCpu(options.device ?? 'cpu');
    return logSumLossJs(zs, zt, options);
  }
}

/** A model held by the js backend. Calls run on the calling thread, one at a time (the Encoder queues them). */
class JsModelHandle implements ModelHandle {
  readonly info: ModelInfo;
  private model: JsModel | null;

  constructor(model: JsModel) {
    this.model = model;
    this.info = model.info() as ModelInfo;
  }

  private live(what: string): JsModel {
    if (!this.model) throw new UserError(`${what}: the model has been disposed`);
    return this.model;
  }

  async embed(images: EmbedInput): Promise<Float32Tensor> {
    return this.live('embed').embed(images);
  }

  async exportTo(folder: string): Promise<void> {
    await this.live('export').exportTo(folder);
  }

  async dispose(): Promise<void> {
    this.model?.dispose();
    this.model = null;
  }
}

export function requireCpu(device: string): void {
  if (device !== 'cpu') {
    throw new UserError(`the js backend runs on the CPU only, but device '${device}' was asked for: use --device cpu or --backend native`);
  }
}

export const jsCpuCount = (): number => os.availableParallelism?.() ?? os.cpus().length;
