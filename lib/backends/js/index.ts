// The pure-JS backend: the same interface as the native engine, in JavaScript only (no native code, no
// WebAssembly), for portability and as the baseline the benchmarks compare against.
import os from 'node:os';
import { UserError } from '../../errors.js';
import type { Backend, BackendInfo, Float32Tensor, Uint8Tensor } from '../types.js';
import type { AugmentConfig, AugmentedBatch, AugmentOptions, Normalization } from '../types.js';
import { augmentBatch, sampleAugmentParams } from './augment.js';
import type { FloatTensor, LogSumLossOptions, LogSumLossResult } from '../types.js';
import { logSumLossJs } from './loss.js';
import type { ModelDescription, ModelHandle, ModelLoadOptions, ModelSource } from '../types.js';

export class JsBackend implements Backend {
  readonly name = 'js' as const;

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

  // Models: the pure-JS ViT is not wired in yet; the engine runs them (lib/backends/native.ts).
  async describeModel(_source: ModelSource): Promise<ModelDescription> {
    throw modelsNotYet();
  }

  async loadModel(_source: ModelSource, _options?: ModelLoadOptions): Promise<ModelHandle> {
    throw modelsNotYet();
  }

  async createModel(_source: ModelSource, _options?: ModelLoadOptions & { seed?: number }): Promise<ModelHandle> {
    throw modelsNotYet();
  }

  async logSumLoss(zs: FloatTensor, zt: FloatTensor, options: LogSumLossOptions): Promise<LogSumLossResult> {
    requireCpu(options.device ?? 'cpu');
    return logSumLossJs(zs, zt, options);
  }
}

function modelsNotYet(): UserError {
  return new UserError('the js backend cannot run models yet: use --backend native (build the engine with `npm run setup`)');
}

export function requireCpu(device: string): void {
  if (device !== 'cpu') {
    throw new UserError(`the js backend runs on the CPU only, but device '${device}' was asked for: use --device cpu or --backend native`);
  }
}

export const jsCpuCount = (): number => os.availableParallelism?.() ?? os.cpus().length;
