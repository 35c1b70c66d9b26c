// The pure-JS backend: the same interface as the native engine, in JavaScript only (no native code), for
// portability and as the baseline the benchmarks compare against. Evaluation's hot products run in a WebAssembly
// SIMD kernel assembled at run time (lib/eval/simd.ts): still no build step and no dependency.
import os from 'node:os';
import { UserError } from '../../errors.js';
import type { Backend, BackendInfo, Float32Tensor, Uint8Tensor } from '../types.js';
import type { AugmentConfig, AugmentedBatch, AugmentOptions, Normalization } from '../types.js';
import { augmentBatch, sampleAugmentParams } from './augment.js';
import type {
  FloatTensor,
  LogSumLossOptions,
  LogSumLossResult,
  MilBags,
  MilParams,
  MilTrainPlan,
  MilTrainResult,
} from '../types.js';
import { logSumLossJs } from './loss.js';
import { abmilLossJs, abmilPredictJs, abmilTrainJs } from './mil.js';
import type { EmbedInput, ModelDescription, ModelHandle, ModelInfo, ModelLoadOptions, ModelSource } from '../types.js';
import { Worker } from 'node:worker_threads';
import { describeJsModel, preflightJsModel } from './model.js';
import type { LogisticModel, LogisticOptions, TopK, TopKOptions } from '../types.js';
import { cosineTopK } from '../../eval/topk.js';
import { fitLogistic } from '../../eval/logistic.js';
import { linearCka, rbfCka } from '../../eval/cka.js';

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

  async normalizeImages(
    images: Uint8Tensor,
    mean: readonly number[],
    std: readonly number[],
    device = 'cpu',
  ): Promise<Float32Tensor> {
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

  async sampleAugmentParams(
    batch: number,
    tileH: number,
    tileW: number,
    config: AugmentConfig,
    seed: number | bigint,
  ): Promise<Float32Tensor> {
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
    const p =
      'seed' in params
        ? sampleAugmentParams(tiles.shape[0], tiles.shape[1], tiles.shape[2], config, params.seed)
        : params;
    return augmentBatch(tiles, p, config, teacherNorm, studentNorm, options.teacherDtype ?? 'float16');
  }

  allocateTileBuffer(bytes: number): Uint8Array {
    return new Uint8Array(bytes);
  }

  // Models: the pure-JS ViT (./vit.ts), refused over JS_MAX_PARAMETERS unless options.force (./model.ts).
  async describeModel(source: ModelSource): Promise<ModelDescription> {
    const {
      dtype: _d,
      device: _v,
      ...desc
    } = describeJsModel(source.folder ?? '', source.preset ?? '', source.pool ?? '');
    return desc;
  }

  async loadModel(source: ModelSource, options: ModelLoadOptions = {}): Promise<ModelHandle> {
    return JsModelHandle.start('load', source, { force: this.force, ...options });
  }

  async createModel(source: ModelSource, options: ModelLoadOptions & { seed?: number } = {}): Promise<ModelHandle> {
    return JsModelHandle.start('create', source, { force: this.force, ...options });
  }

  async logSumLoss(zs: FloatTensor, zt: FloatTensor, options: LogSumLossOptions): Promise<LogSumLossResult> {
    requireCpu(options.device ?? 'cpu');
    return logSumLossJs(zs, zt, options);
  }

  async abmilTrain(
    init: MilParams,
    train: MilBags,
    val: MilBags | null,
    plan: MilTrainPlan,
    device = 'cpu',
  ): Promise<MilTrainResult> {
    requireCpu(device);
    return abmilTrainJs(init, train, val, plan);
  }

  async abmilPredict(params: MilParams, bags: MilBags, device = 'cpu'): Promise<FloatTensor> {
    requireCpu(device);
    return abmilPredictJs(params, bags);
  }

  async abmilLoss(params: MilParams, bags: MilBags, device = 'cpu'): Promise<{ loss: number; grads: MilParams }> {
    requireCpu(device);
    return abmilLossJs(params, bags);
  }

  // Evaluation: the WebAssembly SIMD search (worker threads for large searches) and probe (on this thread).
  async cosineTopK(
    query: Float32Array,
    nq: number,
    base: Float32Array,
    nb: number,
    d: number,
    k: number,
    options: TopKOptions = {},
  ): Promise<TopK> {
    requireCpu(options.device ?? 'cpu');
    return cosineTopK(query, nq, base, nb, d, k, options);
  }

  async fitLogistic(
    X: Float32Array,
    y: Int32Array,
    n: number,
    d: number,
    nClasses: number,
    options: LogisticOptions,
  ): Promise<LogisticModel> {
    requireCpu(options.device ?? 'cpu');
    return fitLogistic(X, y, n, d, nClasses, options);
  }

  async linearCka(
    x: Float32Array,
    dx: number,
    y: Float32Array,
    dy: number,
    n: number,
    device = 'cpu',
  ): Promise<{ linear: number; debiased: number }> {
    requireCpu(device);
    return linearCka(x, dx, y, dy, n);
  }

  async rbfCka(x: Float32Array, dx: number, y: Float32Array, dy: number, n: number, device = 'cpu'): Promise<number> {
    requireCpu(device);
    return rbfCka(x, dx, y, dy, n);
  }
}

/**
 * A model held by the js backend, in its own worker thread (./model-worker.ts): embed and export run off the event
 * loop, one call at a time (the Encoder queues them).
 */
class JsModelHandle implements ModelHandle {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (m: WorkerReply) => void; reject: (e: Error) => void }>();
  private disposed = false;

  private constructor(
    private readonly worker: Worker,
    readonly info: ModelInfo,
  ) {
    worker.on('message', (m: WorkerReply) => this.settle(m));
    worker.on('error', (e) => this.failAll(e));
    worker.on('exit', () => this.failAll(new Error('the js model worker exited')));
  }

  static start(
    kind: 'load' | 'create',
    source: ModelSource,
    options: ModelLoadOptions & { seed?: number; force?: boolean },
  ): Promise<JsModelHandle> {
    // Refusals (device, dtype, config, size) here and now; the worker then reads the weights.
    preflightJsModel(source.folder ?? '', source.preset ?? '', { ...options, pool: source.pool });
    const here = import.meta.url;
    const file = new URL(here.endsWith('.ts') ? './model-worker.ts' : './model-worker.js', here);
    const worker = new Worker(file, {
      workerData: {
        kind,
        folder: source.folder ?? '',
        preset: source.preset ?? '',
        seed: options.seed ?? 0,
        options: { device: options.device, dtype: options.dtype, force: options.force, pool: source.pool },
      },
    });
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => reject(e);
      worker.once('error', onError);
      worker.once('message', (m: WorkerReply) => {
        worker.off('error', onError);
        if (!m.ok) {
          void worker.terminate();
          reject(m.user ? new UserError(m.message!) : new Error(m.message));
        } else {
          worker.unref();
          resolve(new JsModelHandle(worker, m.info as ModelInfo));
        }
      });
    });
  }

  private call(op: string, payload: Record<string, unknown> = {}, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    if (this.disposed) return Promise.reject(new UserError(`${op}: the model has been disposed`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ op, id, ...payload }, transfer);
    });
  }

  private settle(m: WorkerReply): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (this.pending.size === 0) this.worker.unref();
    if (m.ok) p.resolve(m);
    else p.reject(m.user ? new UserError(m.message!) : new Error(m.message));
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  async embed(images: EmbedInput): Promise<Float32Tensor> {
    // A copy travels to the worker (the caller keeps its buffer); the result comes back without a copy.
    const r = await this.call('embed', { data: images.data.slice(), shape: [...images.shape] });
    return { data: r.data as Float32Array, shape: r.shape! };
  }

  async exportTo(folder: string): Promise<void> {
    await this.call('export', { folder });
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    await this.call('dispose');
    this.disposed = true;
    await this.worker.terminate();
  }
}

interface WorkerReply {
  id: number;
  ok: boolean;
  message?: string;
  user?: boolean;
  info?: unknown;
  data?: Float32Array;
  shape?: number[];
}

export function requireCpu(device: string): void {
  if (device !== 'cpu') {
    throw new UserError(
      `the js backend runs on the CPU only, but device '${device}' was asked for: use --device cpu or --backend native`,
    );
  }
}

export const jsCpuCount = (): number => os.availableParallelism?.() ?? os.cpus().length;
