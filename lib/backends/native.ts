// Finds and loads the native engine (the cmake-js build of CMakeLists.txt): G2L_ENGINE_PATH, else the package
// folder's build-engine/, else (installed package) the one `npx g2l-native setup` built in the per-user cache. When it
// cannot load, the error lists the likely causes with the command that fixes each, as sharp does;
// lib/backends/index.ts throws it, or falls back to js where the caller allowed that (the CLI does).
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT, SETUP_COMMAND, nativeBuildRoots } from '../version.js';
import type { Backend, BackendInfo, Float32Tensor, Uint8Tensor } from './types.js';
import type { AugmentConfig, AugmentedBatch, AugmentOptions, Normalization, TeacherDtype } from './types.js';
import type { FloatTensor, LogSumLossOptions, LogSumLossResult } from './types.js';
import type { NativeDistillerConstructor } from '../distill/native-types.js';
import type {
  EmbedInput,
  MilBags,
  MilParams,
  MilTrainPlan,
  MilTrainResult,
  ModelDescription,
  ModelDtype,
  ModelHandle,
  ModelInfo,
  ModelLoadOptions,
  ModelSource,
} from './types.js';
import type { Float64Tensor, LogisticModel, LogisticOptions, Tensor, TopK, TopKOptions } from './types.js';
import { UserError } from '../errors.js';
import { nativeModelSpec, resolveVitSpec, type NativeModelSpec } from '../models/spec.js';
import { exitAtOnceWhileBusy, type ExitIfBusy } from '../util/exit.js';

/** The functions the addon exports (native/addon). */
export interface EngineAddon extends ExitIfBusy {
  runtimeInfo(): Promise<{
    engineVersion: string;
    libtorchVersion: string;
    cudaBuilt: boolean;
    cudaArchitectures: string[];
    cudaAvailable: boolean;
    cudaRuntimeVersion: string;
    devices: BackendInfo['devices'];
    cpuThreads: number;
    parallelInfo: string;
  }>;
  normalizeImages(
    images: Uint8Tensor,
    mean: readonly number[],
    std: readonly number[],
    device: string,
  ): Promise<Float32Tensor>;
  sampleAugmentParams(
    batch: number,
    tileH: number,
    tileW: number,
    config: AugmentConfig,
    seed: number | bigint,
  ): Promise<Float32Tensor>;
  augmentBatch(
    tiles: Uint8Tensor,
    params: Float32Tensor,
    config: AugmentConfig,
    teacherNorm: Normalization,
    studentNorm: Normalization,
    teacherDtype: TeacherDtype,
    device: string,
  ): Promise<AugmentedBatch>;
  allocTileBuffer(bytes: number, pinned: boolean): Uint8Array;
  // Distillation (native/addon/distill.cpp)
  logSumLoss(
    zs: FloatTensor,
    zt: FloatTensor,
    W: FloatTensor,
    b: FloatTensor,
    options: { alpha?: number; reduction?: string; bnEps?: number; teacherBn?: boolean },
    device: string,
  ): Promise<LogSumLossResult>;
  // ABMIL (native/addon/mil.cpp)
  abmilTrain(
    init: MilParams,
    train: MilBags,
    val: MilBags | null,
    plan: MilTrainPlan,
    device: string,
  ): Promise<MilTrainResult>;
  abmilPredict(params: MilParams, bags: MilBags, device: string): Promise<FloatTensor>;
  abmilLoss(params: MilParams, bags: MilBags, device: string): Promise<{ loss: number; grads: MilParams }>;
  // Models (native/addon/models.cpp); a handle is an opaque External
  loadModel(spec: NativeModelSpec, device: string, dtype: string): Promise<NativeModelRef>;
  createModel(spec: NativeModelSpec, device: string, dtype: string, seed: number): Promise<NativeModelRef>;
  describeModel(spec: NativeModelSpec): Promise<NativeModelInfo>;
  modelInfo(handle: NativeModelRef): NativeModelInfo;
  modelEmbed(handle: NativeModelRef, images: EmbedInput): Promise<Float32Tensor>;
  modelExport(handle: NativeModelRef, folder: string): Promise<void>;
  modelDispose(handle: NativeModelRef): Promise<void>;
  Distiller: NativeDistillerConstructor;
  // Evaluation (native/addon/eval.cpp); groups and labels as Float64Array of integers
  evalCosineTopK(
    query: Float32Tensor,
    base: Float32Tensor,
    options: {
      k: number;
      queryGroup?: Float64Tensor;
      baseGroup?: Float64Tensor;
      device?: string;
      queryBlock?: number;
      baseBlock?: number;
    },
  ): Promise<{ idx: Tensor<BigInt64Array>; sim: Float64Tensor }>;
  evalFitLogistic(
    X: Float32Tensor,
    y: Float64Tensor,
    nClasses: number,
    options: { C: number; gtol?: number; maxIter?: number; device?: string },
  ): Promise<{
    W: Float64Tensor;
    b: Float64Tensor;
    iterations: number;
    converged: boolean;
    gradMax: number;
    loss: number;
  }>;
  evalLinearCka(x: Float32Tensor, y: Float32Tensor, device: string): Promise<{ linear: number; debiased: number }>;
  evalRbfCka(x: Float32Tensor, y: Float32Tensor, device: string): Promise<number>;
}

/** An engine model (an N-API External); only the addon reads it. */
export type NativeModelRef = { readonly __nativeModel: unique symbol };
/** ModelInfo as the addon returns it: dtype and device are null from describeModel. */
export type NativeModelInfo = Omit<ModelInfo, 'dtype' | 'device'> & { dtype: ModelDtype | null; device: string | null };

/** Where the set-up records which libtorch the engine was built against (tools/setup.mjs). */
export interface EngineBuildRecord {
  libtorch: { version: string; root: string; source: string };
  cuda: boolean;
  cudaArchitectures: string[];
}

const ENGINE_FILE = path.join('build-engine', 'Release', 'g2l_engine.node');
export const DEFAULT_ENGINE_PATH = path.join(PACKAGE_ROOT, ENGINE_FILE);

/**
 * The engine binary to load: G2L_ENGINE_PATH when set (a custom build), else the first that exists of the package
 * folder's (`npm run setup`) and, in an installed package, the setup cache's (`npx g2l-native setup`); when none
 * does, the package folder's.
 */
export function enginePath(): string {
  if (process.env.G2L_ENGINE_PATH) return process.env.G2L_ENGINE_PATH;
  for (const dir of nativeBuildRoots()) {
    const file = path.join(dir, ENGINE_FILE);
    if (existsSync(file)) return file;
  }
  return DEFAULT_ENGINE_PATH;
}

export function readBuildRecord(): EngineBuildRecord | null {
  const file = path.join(path.dirname(path.dirname(enginePath())), 'g2l-build.json');
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as EngineBuildRecord;
  } catch {
    return null;
  }
}

export class EngineLoadError extends Error {
  constructor(
    message: string,
    readonly enginePath: string,
    readonly causeMessage: string,
  ) {
    super(message);
    this.name = 'EngineLoadError';
  }
}

/** Turns a dlopen/require failure into the causes a user can act on. */
export function explainLoadFailure(file: string, err: unknown): EngineLoadError {
  const detail = (err as Error)?.message ?? String(err);
  const causes: string[] = [];
  if (!existsSync(file)) {
    const looked = process.env.G2L_ENGINE_PATH ? [file] : nativeBuildRoots().map((d) => path.join(d, ENGINE_FILE));
    causes.push(`the engine is not built (no ${looked.join(', no ')}): run \`${SETUP_COMMAND}\``);
  } else if (/lib(c10|torch[a-z_]*)\.so|libtorch|c10/.test(detail)) {
    causes.push(
      `the libtorch it was built against has moved or been removed: run \`${SETUP_COMMAND}\` to rebuild, ` +
        `or point LIBTORCH at a libtorch folder and run \`${SETUP_COMMAND}\` again`,
    );
  } else if (/NODE_MODULE_VERSION|napi|Module did not self-register/i.test(detail)) {
    causes.push(`it was built for another Node.js: run \`${SETUP_COMMAND}\` with this Node.js (${process.version})`);
  } else if (/GLIBC|CXXABI/.test(detail)) {
    causes.push(
      `it was built with a newer C++ runtime than this machine has: run \`${SETUP_COMMAND}\` on this machine`,
    );
  } else if (/cuda|cudart|cublas|nvrtc|nccl/i.test(detail)) {
    causes.push(
      'it was built with CUDA but the CUDA libraries are missing here: install the NVIDIA driver and CUDA runtime, ' +
        `or rebuild a CPU engine with \`G2L_CUDA=OFF ${SETUP_COMMAND}\``,
    );
  } else {
    causes.push(`the binary is damaged or from another machine: run \`${SETUP_COMMAND}\` to rebuild it`);
  }
  const msg =
    `the native engine could not be loaded from ${file}.\n` +
    `  Cause: ${detail.split('\n')[0]}\n` +
    causes.map((c) => `  Likely: ${c}`).join('\n');
  return new EngineLoadError(msg, file, detail);
}

let cached: { file: string; addon: EngineAddon } | null = null;

/**
 * How long an idle libtorch intra-op (OpenMP) thread of this process spins before it sleeps, unless the user set
 * GOMP_SPINCOUNT or OMP_WAIT_POLICY: libgomp reads it once, when the engine loads libtorch. libgomp's default
 * (300,000 spins, milliseconds) keeps a waiting thread on its core: on a CPU shared with other processes the thread
 * the step waits for is then descheduled behind it, and an embed of the benchmark's teacher took 1.05 s instead of
 * 0.26-0.30 s (load average 7, 2 cores, 2026-12-05). 10,000 spins cover the gaps between one call's kernels (as
 * fast as the default on a quiet machine) and sleep between calls. The environment is restored after the load, so
 * child processes inherit the user's.
 */
export const ENGINE_GOMP_SPINCOUNT = '10000';

function withOpenMpDefaults<T>(load: () => T): T {
  if (process.env.GOMP_SPINCOUNT !== undefined || process.env.OMP_WAIT_POLICY !== undefined) return load();
  process.env.GOMP_SPINCOUNT = ENGINE_GOMP_SPINCOUNT;
  try {
    return load();
  } finally {
    delete process.env.GOMP_SPINCOUNT;
  }
}

/** Loads the addon once per path; throws EngineLoadError with the causes when it cannot. */
export function loadEngineAddon(file: string = enginePath()): EngineAddon {
  if (cached && cached.file === file) return cached.addon;
  if (!existsSync(file)) throw explainLoadFailure(file, new Error(`${file} does not exist`));
  try {
    const addon = withOpenMpDefaults(() => createRequire(import.meta.url)(file) as EngineAddon);
    exitAtOnceWhileBusy(addon);
    cached = { file, addon };
    return addon;
  } catch (e) {
    throw explainLoadFailure(file, e);
  }
}

export class NativeBackend implements Backend {
  readonly name = 'native' as const;
  constructor(readonly addon: EngineAddon) {}

  async info(): Promise<BackendInfo> {
    const r = await this.addon.runtimeInfo();
    return {
      backend: 'native',
      libtorchVersion: r.libtorchVersion,
      cudaBuilt: r.cudaBuilt,
      cudaArchitectures: r.cudaArchitectures,
      cudaAvailable: r.cudaAvailable,
      cudaRuntimeVersion: r.cudaRuntimeVersion || null,
      devices: r.devices,
      cpuThreads: r.cpuThreads,
    };
  }

  async normalizeImages(
    images: Uint8Tensor,
    mean: readonly number[],
    std: readonly number[],
    device = 'cpu',
  ): Promise<Float32Tensor> {
    return this.addon.normalizeImages(images, mean, std, device);
  }

  sampleAugmentParams(
    batch: number,
    tileH: number,
    tileW: number,
    config: AugmentConfig,
    seed: number | bigint,
  ): Promise<Float32Tensor> {
    return this.addon.sampleAugmentParams(batch, tileH, tileW, config, seed);
  }

  async augmentBatch(
    tiles: Uint8Tensor,
    params: Float32Tensor | { seed: number | bigint },
    config: AugmentConfig,
    teacherNorm: Normalization,
    studentNorm: Normalization,
    options: AugmentOptions = {},
  ): Promise<AugmentedBatch> {
    const p =
      'seed' in params
        ? await this.sampleAugmentParams(tiles.shape[0], tiles.shape[1], tiles.shape[2], config, params.seed)
        : params;
    return this.addon.augmentBatch(
      tiles,
      p,
      config,
      teacherNorm,
      studentNorm,
      options.teacherDtype ?? 'float16',
      options.device ?? 'cpu',
    );
  }

  allocateTileBuffer(bytes: number, options: { pinned?: boolean } = {}): Uint8Array {
    return this.addon.allocTileBuffer(bytes, options.pinned ?? true);
  }

  logSumLoss(zs: FloatTensor, zt: FloatTensor, options: LogSumLossOptions): Promise<LogSumLossResult> {
    const { W, b, device, ...loss } = options;
    return this.addon.logSumLoss(zs, zt, W, b, loss, device ?? 'cpu');
  }

  abmilTrain(
    init: MilParams,
    train: MilBags,
    val: MilBags | null,
    plan: MilTrainPlan,
    device = 'cpu',
  ): Promise<MilTrainResult> {
    return userErrors(this.addon.abmilTrain(init, train, val, plan, device));
  }

  abmilPredict(params: MilParams, bags: MilBags, device = 'cpu'): Promise<FloatTensor> {
    return userErrors(this.addon.abmilPredict(params, bags, device));
  }

  abmilLoss(params: MilParams, bags: MilBags, device = 'cpu'): Promise<{ loss: number; grads: MilParams }> {
    return userErrors(this.addon.abmilLoss(params, bags, device));
  }

  async cosineTopK(
    query: Float32Array,
    nq: number,
    base: Float32Array,
    nb: number,
    d: number,
    k: number,
    options: TopKOptions = {},
  ): Promise<TopK> {
    if (k < 1) throw new UserError(`k must be at least 1, got ${k}`);
    const q = { data: query.subarray(0, nq * d), shape: [nq, d] };
    // The same memory as query and base: a set searched against itself (the engine normalises it once).
    const b = base === query && nb === nq ? q : { data: base.subarray(0, nb * d), shape: [nb, d] };
    const grouped = options.queryGroup !== undefined && options.baseGroup !== undefined;
    const r = await userErrors(
      this.addon.evalCosineTopK(q, b, {
        k,
        device: options.device ?? 'cpu',
        ...(grouped
          ? {
              queryGroup: { data: Float64Array.from(options.queryGroup!), shape: [nq] },
              baseGroup: { data: Float64Array.from(options.baseGroup!), shape: [nb] },
            }
          : {}),
      }),
    );
    options.onProgress?.(nq, nq);
    return { k, idx: Int32Array.from(r.idx.data, Number), sim: r.sim.data };
  }

  async fitLogistic(
    X: Float32Array,
    y: Int32Array,
    n: number,
    d: number,
    nClasses: number,
    options: LogisticOptions,
  ): Promise<LogisticModel> {
    const r = await userErrors(
      this.addon.evalFitLogistic(
        { data: X.subarray(0, n * d), shape: [n, d] },
        { data: Float64Array.from(y.subarray(0, n)), shape: [n] },
        nClasses,
        { C: options.C, gtol: options.gtol, maxIter: options.maxIter, device: options.device ?? 'cpu' },
      ),
    );
    return {
      nClasses,
      d,
      W: r.W.data,
      b: r.b.data,
      iterations: r.iterations,
      converged: r.converged,
      gradMax: r.gradMax,
      loss: r.loss,
      engine: 'native',
    };
  }

  linearCka(
    x: Float32Array,
    dx: number,
    y: Float32Array,
    dy: number,
    n: number,
    device = 'cpu',
  ): Promise<{ linear: number; debiased: number }> {
    return userErrors(
      this.addon.evalLinearCka(
        { data: x.subarray(0, n * dx), shape: [n, dx] },
        { data: y.subarray(0, n * dy), shape: [n, dy] },
        device,
      ),
    );
  }

  rbfCka(x: Float32Array, dx: number, y: Float32Array, dy: number, n: number, device = 'cpu'): Promise<number> {
    return userErrors(
      this.addon.evalRbfCka(
        { data: x.subarray(0, n * dx), shape: [n, dx] },
        { data: y.subarray(0, n * dy), shape: [n, dy] },
        device,
      ),
    );
  }

  // A model is resolved here (lib/models/spec.ts, the one registry: folder, preset, pooling) and the engine receives
  // the plain spec. Engine errors about a model folder (mismatched weights, a truncated file) are the user's to fix.
  async describeModel(source: ModelSource): Promise<ModelDescription> {
    const spec = resolveVitSpec(source.folder ?? '', source.preset ?? '', source.pool ?? '');
    const { dtype: _d, device: _v, ...desc } = await userErrors(this.addon.describeModel(nativeModelSpec(spec)));
    return desc;
  }

  async loadModel(source: ModelSource, options: ModelLoadOptions = {}): Promise<ModelHandle> {
    const spec = resolveVitSpec(source.folder ?? '', source.preset ?? '', source.pool ?? '');
    const ref = await userErrors(
      this.addon.loadModel(nativeModelSpec(spec), options.device ?? 'cpu', options.dtype ?? 'fp32'),
    );
    return new NativeModel(this.addon, ref);
  }

  async createModel(source: ModelSource, options: ModelLoadOptions & { seed?: number } = {}): Promise<ModelHandle> {
    const spec = resolveVitSpec(source.folder ?? '', source.preset ?? '', source.pool ?? '');
    const ref = await userErrors(
      this.addon.createModel(
        nativeModelSpec(spec),
        options.device ?? 'cpu',
        options.dtype ?? 'fp32',
        options.seed ?? 0,
      ),
    );
    return new NativeModel(this.addon, ref);
  }
}

async function userErrors<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw new UserError((e as Error).message);
  }
}

/** A model held by the engine. */
export class NativeModel implements ModelHandle {
  readonly info: ModelInfo;
  private ref: NativeModelRef | null;

  constructor(
    private readonly addon: EngineAddon,
    ref: NativeModelRef,
  ) {
    this.ref = ref;
    this.info = addon.modelInfo(ref) as ModelInfo;
  }

  private handle(what: string): NativeModelRef {
    if (!this.ref) throw new UserError(`${what}: the model has been disposed`);
    return this.ref;
  }

  embed(images: EmbedInput): Promise<Float32Tensor> {
    return this.addon.modelEmbed(this.handle('embed'), images);
  }

  exportTo(folder: string): Promise<void> {
    return userErrors(this.addon.modelExport(this.handle('export'), folder));
  }

  async dispose(): Promise<void> {
    const ref = this.ref;
    this.ref = null;
    if (ref) await this.addon.modelDispose(ref);
  }
}
