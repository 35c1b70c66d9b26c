// Distiller: the library face of one distillation run in the engine (native/engine/train/distiller.cpp). Every call runs
// off the event loop; calls are serialised in the engine, so a caller may prepare the next batch while a step runs.
//
//   const d = await Distiller.create({ teacher: 'models/h-optimus-0', student: 'models/hibou-l', totalSteps: 1000 });
//   const r = await d.step(tiles);            // tiles: uint8 (B,256,256,3) -> { loss, lr, weightDecay, gradNorm }
//   await d.save('run/checkpoints/step-100'); await d.export('run/student');
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { writeDirAtomic } from '../io/atomic.js';
import { MANIFEST_FILE, verifyManifest, writeManifest } from '../io/manifest.js';
import { META_FILE, META_FORMAT, parseMeta } from './checkpoint.js';
import { createBackendDistiller, getBackend, NativeBackend } from '../backends/index.js';
import type { AugmentConfig, BackendDistiller, BackendName, Float32Tensor, Uint8Tensor } from '../backends/index.js';
import type { BackendDistillerConfig, StudentDrop } from '../backends/types.js';
import type { NativeDistillerInfo, NativeStepResult } from './native-types.js';
import type { DistSettings } from '../parallel/env.js';
import {
  AUGMENT_DEFAULTS,
  KERNEL_DEFAULTS,
  LOSS_DEFAULTS,
  OPTIMIZER_DEFAULTS,
  RUN_SHAPE_DEFAULTS,
  TEACHER_FP8_LAYERS_DEFAULT,
} from '../defaults.js';
import { definedOnly } from '../util/objects.js';
import { kernelsSchema, teacherFp8LayersSchema, type KernelOptions } from './config.js';

/** G2L's method constants (docs/method.md) and the engine's implementation choices; each is configurable. */
export const DISTILL_DEFAULTS = Object.freeze({
  ...OPTIMIZER_DEFAULTS,
  ...LOSS_DEFAULTS,
  accumulationSteps: RUN_SHAPE_DEFAULTS.accumulationSteps,
  kernels: KERNEL_DEFAULTS,
  teacherFp8Layers: TEACHER_FP8_LAYERS_DEFAULT,
});

export interface DistillerConfig {
  /** Teacher model folder (config.json + model.safetensors). */
  teacher: string;
  teacherPreset?: string;
  /** cls | mean | cls+mean: overrides the teacher's pooling ('' keeps it). */
  teacherPool?: string;
  /** Student model folder; the student is exported in this folder's layout. */
  student: string;
  studentPreset?: string;
  studentPool?: string;
  /** The planned number of steps: the cosine schedules run over it. */
  totalSteps: number;
  device?: string;
  seed?: number;
  lr?: number;
  finalLr?: number;
  weightDecay?: number;
  finalWeightDecay?: number;
  warmupSteps?: number;
  /** 0: no clipping. */
  clipGradNorm?: number;
  accumulationSteps?: number;
  alpha?: number;
  reduction?: 'batch' | 'sample';
  bnEps?: number;
  teacherBn?: boolean;
  /** Data parallelism: 'global' (default) BatchNorm statistics and log-sum over all ranks' rows; 'local' per rank. */
  sync?: 'global' | 'local';
  teacherDtype?: 'auto' | 'float16' | 'bfloat16' | 'float32';
  /** bf16 autocast of the student on CUDA (default true). */
  autocast?: boolean;
  /**
   * FP8 (E4M3) matrix products in the frozen teacher (default false): a CUDA GPU of compute capability 8.9+ (H100,
   * H200, L40S), teacherDtype auto or bfloat16; accepted only while the first batch's teacher features keep cosine
   * >= 0.999 with the bf16 ones (info().teacherFp8MinCosine). Refused on the CPU and by the js backend.
   */
  teacherFp8?: boolean;
  /** With teacherFp8: the kinds of the teacher's Linear layers in FP8, a subset of qkv, proj, fc1, fc2 (default qkv, fc1). */
  teacherFp8Layers?: ('qkv' | 'proj' | 'fc1' | 'fc2')[];
  /**
   * Which implementation each engine operation runs (lib/distill/config.ts kernelsSchema; unset keys: KERNEL_DEFAULTS).
   * Validated on both backends; the js backend has one implementation of each and ignores them.
   */
  kernels?: Partial<KernelOptions>;
  /**
   * Test hooks, not run options (no run configuration sets them). teacherFp8Emulate: the FP8 teacher's products
   * emulated (quantise -> dequantise -> float32 matmul) on any device instead of refused without FP8 tensor cores,
   * so CPU tests exercise the FP8 path (native engine only; g2l/distill.h teacher_fp8_emulate).
   */
  testing?: { teacherFp8Emulate?: boolean };
  /** The student's dropout / drop-path rates over its config.json's (BackendDistillerConfig.studentDrop). */
  studentDrop?: StudentDrop;
  augment?: AugmentConfig;
  backend?: BackendName;
  /** js backend: run models it would need hours for instead of refusing them. */
  force?: boolean;
  /**
   * Data parallelism (lib/parallel): this process is one rank of a world; create() joins the others (it returns once all
   * have joined) and step() takes this rank's share of each global batch. Null or absent: one process.
   */
  dist?: DistSettings | null;
}

export type StepResult = NativeStepResult;
export type DistillerInfo = NativeDistillerInfo;

/** Every kernel choice resolved (defaults under the given ones) and validated, for either backend. */
function resolveKernels(given: Partial<KernelOptions> | undefined): KernelOptions {
  const parsed = kernelsSchema.safeParse({ ...KERNEL_DEFAULTS, ...definedOnly(given ?? {}) });
  if (!parsed.success) {
    throw new UserError(
      `Distiller: kernels: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(object)'}: ${i.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}

function resolveFp8Layers(given: DistillerConfig['teacherFp8Layers']): ('qkv' | 'proj' | 'fc1' | 'fc2')[] {
  const parsed = teacherFp8LayersSchema.safeParse(given ?? [...TEACHER_FP8_LAYERS_DEFAULT]);
  if (!parsed.success) {
    throw new UserError(
      `Distiller: teacherFp8Layers ${JSON.stringify(given)}: ${parsed.error.issues.map((i) => i.message).join('; ')}: give a non-empty subset of qkv, proj, fc1, fc2`,
    );
  }
  return parsed.data;
}

/** The backend's configuration, every value resolved here (lib/defaults.ts): the engine's own defaults never decide. */
export function toBackendConfig(c: DistillerConfig): BackendDistillerConfig {
  const d = DISTILL_DEFAULTS;
  return {
    teacher: c.teacher,
    teacherPreset: c.teacherPreset ?? '',
    student: c.student,
    studentPreset: c.studentPreset ?? '',
    teacherPool: c.teacherPool ?? '',
    studentPool: c.studentPool ?? '',
    device: c.device ?? 'cpu',
    seed: c.seed ?? 0,
    accumulationSteps: c.accumulationSteps ?? d.accumulationSteps,
    teacherDtype: c.teacherDtype ?? 'auto',
    autocast: c.autocast ?? true,
    teacherFp8: c.teacherFp8 ?? false,
    teacherFp8Layers: resolveFp8Layers(c.teacherFp8Layers),
    kernels: resolveKernels(c.kernels),
    ...(c.testing?.teacherFp8Emulate ? { teacherFp8Emulate: true } : {}),
    ...(c.studentDrop && Object.keys(c.studentDrop).length > 0 ? { studentDrop: { ...c.studentDrop } } : {}),
    loss: {
      alpha: c.alpha ?? d.alpha,
      reduction: c.reduction ?? d.reduction,
      bnEps: c.bnEps ?? d.bnEps,
      teacherBn: c.teacherBn ?? d.teacherBn,
      sync: c.sync ?? d.sync,
    },
    optimizer: {
      lr: c.lr ?? d.lr,
      finalLr: c.finalLr ?? d.finalLr,
      weightDecay: c.weightDecay ?? d.weightDecay,
      finalWeightDecay: c.finalWeightDecay ?? d.finalWeightDecay,
      warmupSteps: c.warmupSteps ?? d.warmupSteps,
      totalSteps: c.totalSteps,
      clipGradNorm: c.clipGradNorm ?? d.clipGradNorm,
      beta1: d.beta1,
      beta2: d.beta2,
      eps: d.eps,
    },
    // Every value resolved here: the engine's own defaults are never what decides (lib/defaults.ts).
    augment: { ...AUGMENT_DEFAULTS, ...definedOnly(c.augment ?? {}) } as Record<string, number | boolean>,
    ...(c.dist && c.dist.worldSize > 1 ? { dist: { ...c.dist } } : {}),
  };
}

export class Distiller {
  private constructor(
    private readonly engine: BackendDistiller,
    readonly config: DistillerConfig,
    private readonly allocate: (bytes: number) => Uint8Array,
  ) {}

  /** Loads teacher and student (strict about their weights) and builds projector and optimiser. */
  static async create(config: DistillerConfig): Promise<Distiller> {
    if (!Number.isInteger(config.totalSteps) || config.totalSteps < 1) {
      throw new UserError(`Distiller: totalSteps must be a positive integer, got ${config.totalSteps}`);
    }
    // The native engine, or the pure-JS backend (asked for, or after one warning when the engine cannot load).
    const backend = getBackend({ backend: config.backend, force: config.force });
    if (config.dist && config.dist.worldSize > 1 && !(backend instanceof NativeBackend)) {
      throw new UserError(
        'data-parallel distillation (--nproc, RANK/WORLD_SIZE) needs the native engine: run `npm run setup`, and do not pass --backend js',
      );
    }
    try {
      const engine = await createBackendDistiller(backend, { ...toBackendConfig(config), force: config.force });
      // Tile batches for a CUDA device in page-locked memory: the engine then copies them asynchronously.
      const pinned = backend instanceof NativeBackend && (config.device ?? 'cpu').startsWith('cuda');
      const allocate = pinned
        ? (n: number) => backend.allocateTileBuffer(n, { pinned: true })
        : (n: number) => new Uint8Array(n);
      return new Distiller(engine, config, allocate);
    } catch (e) {
      throw asUserError(e);
    }
  }

  /**
   * Memory for a batch of tiles that step() and features() read fastest: page-locked (pinned) host memory when the
   * run is on a CUDA device with the native engine (the upload is then asynchronous), else an ordinary Uint8Array.
   * A buffer may be refilled as soon as the call that read it has returned.
   */
  allocateTileBuffer(bytes: number): Uint8Array {
    return this.allocate(bytes);
  }

  /**
   * One step on uint8 tiles (B,H,W,3): augmentation, teacher, student, loss, backward, AdamW. options.stop: this rank
   * asks to stop after this step; result.stop says whether any rank did (data parallelism: the same on all ranks, so
   * they stop after the same step).
   */
  async step(tiles: Uint8Tensor, options: { stop?: boolean } = {}): Promise<StepResult> {
    try {
      return await this.engine.step(tiles, options);
    } catch (e) {
      throw asUserError(e);
    }
  }

  /** Embeddings (B,D) float32 of centre-cropped tiles, without augmentation. */
  async features(tiles: Uint8Tensor, which: 'student' | 'teacher'): Promise<Float32Tensor> {
    return this.engine.features(tiles, which);
  }

  /**
   * Writes the full state (student, projector, optimiser moments, step; `extra` for the caller's own state such as
   * the sampler position) into `folder`, atomically: a temporary sibling folder renamed into place. The folder's
   * manifest.json (each file's size and sha256) is written last; load() checks it.
   */
  async save(folder: string, extra: Record<string, unknown> = {}): Promise<void> {
    await writeDirAtomic(folder, async (tmp) => {
      await this.engine.save(tmp);
      const meta = { format: META_FORMAT, step: this.engine.info().step, extra };
      await fs.writeFile(path.join(tmp, META_FILE), `${JSON.stringify(meta, null, 2)}\n`);
      await writeManifest(tmp);
    });
  }

  /**
   * Restores a folder written by save(); returns its `extra`. The folder is checked against its manifest first
   * (options.verified: the caller has just done so); a folder without one (an older g2l-native) is read as it is.
   */
  async load(folder: string, options: { verified?: boolean } = {}): Promise<Record<string, unknown>> {
    const file = path.join(folder, META_FILE);
    if (!options.verified && existsSync(path.join(folder, MANIFEST_FILE))) {
      const problem = await verifyManifest(folder);
      if (problem)
        throw new UserError(
          `checkpoint ${folder} is damaged: ${problem}; resume from an earlier checkpoints/step-N folder`,
        );
    }
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch {
      throw new UserError(
        `${folder} is not a g2l-native checkpoint (no readable ${META_FILE}): pass a checkpoints/step-N folder`,
      );
    }
    const meta = parseMeta(text, file);
    try {
      await this.engine.load(folder);
    } catch (e) {
      throw asUserError(e);
    }
    return meta.extra;
  }

  /** Exports the student in its own layout (config.json + model.safetensors) to `folder`. */
  async export(folder: string): Promise<void> {
    await this.engine.exportStudent(path.resolve(folder));
  }

  info(): DistillerInfo {
    return this.engine.info();
  }

  get stepsTaken(): number {
    return this.engine.info().step;
  }
}

/** Engine errors are about the user's input (models, shapes, files): one line, no stack. */
function asUserError(e: unknown): Error {
  if (e instanceof UserError) return e;
  const msg = (e as Error)?.message ?? String(e);
  return new UserError(msg.split('\n')[0]);
}
