// G2L's distillation step on the pure-JS backend: the engine's Distiller (native/engine/train/distiller.cpp) step for
// step, so that both backends give the same weights from the same models, seed and tiles.
//
//   tiles uint8 (B,H,W,3) -> augmentBatch (one view, both normalisations; params from mt19937(mix(seed, step)))
//     -> teacher forward, no grad                                     zt (B,Dt)
//     -> student forward, keeping activations                         zs (B,Ds)
//     -> projector Linear(Ds -> Dt) + log-sum loss (./loss.ts)        scalar, dzs, dW, db
//     -> student backward (./vit.ts) -> AdamW with cosine lr and wd schedules
//
// The projector starts as nn.Linear does, U(-1/sqrt(Ds), 1/sqrt(Ds)), drawn by libtorch's CPU generator from the
// seed: the same numbers as the engine. Checkpoints are the engine's state.safetensors (same keys, same file format:
// ./safetensors.ts), so a run saved on one backend resumes on the other.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import path from 'node:path';
import { UserError } from '../../errors.js';
import type { BackendDistillerConfig, BackendStepResult, Float32Tensor, Normalization, Uint8Tensor } from '../types.js';
import { augmentBatch, Mt19937, sampleAugmentParams } from './augment.js';
import { logSumLossJs } from './loss.js';
import { checkJsModelSize, JsModel, loadJsModel } from './model.js';
import { CHECKSUM_KEY, readStoredTensors, type StoredTensor, writeSafetensors } from './safetensors.js';
import {
  describeSpec,
  outDim,
  parameterCount,
  type Regularization,
  reportedDrop,
  resolveVitSpec,
  studentRegularization,
} from '../../models/spec.js';
import type { VitDrop } from './vit.js';
import { OPTIMIZER_DEFAULTS } from '../../defaults.js';
import { definedOnly } from '../../util/objects.js';

/** The engine's DistillerConfig (lib/distill's configuration passes straight through); `dist` is engine-only. */
export type JsDistillerConfig = BackendDistillerConfig;
export type JsStepResult = BackendStepResult;

type Optim = Required<NonNullable<JsDistillerConfig['optimizer']>>;

const OPTIM_DEFAULTS: Optim = { ...OPTIMIZER_DEFAULTS, totalSteps: 1 };

// ---------------------------------------------------------------------------------------------------------------
// Schedules and weight-decay groups (native/engine/train/optim.cpp)
// ---------------------------------------------------------------------------------------------------------------

function cosine(start: number, end: number, k: number, kMax: number): number {
  // torch.optim.lr_scheduler.CosineAnnealingLR's closed form
  if (kMax <= 0) return start;
  if (k > kMax) k = kMax;
  return end + ((start - end) * (1 + Math.cos((Math.PI * k) / kMax))) / 2;
}

export function scheduleAt(c: Optim, step: number): { lr: number; weightDecay: number } {
  if (step < 0) step = 0;
  const lr =
    step < c.warmupSteps
      ? (c.lr * (step + 1)) / c.warmupSteps
      : cosine(c.lr, c.finalLr, step - c.warmupSteps, c.totalSteps - c.warmupSteps);
  return { lr, weightDecay: cosine(c.weightDecay, c.finalWeightDecay, step, c.totalSteps) };
}

const NO_DECAY = [
  'bias',
  'norm',
  'token',
  'pos_embed',
  'position_embeddings',
  'ls1.',
  'ls2.',
  'layer_scale',
  'gamma',
  'lambda1',
];

/** No weight decay on biases, norms, LayerScale, tokens and position embeddings (1-D tensors and by name). */
export function takesWeightDecay(key: string, shape: number[]): boolean {
  if (shape.length <= 1) return false;
  return !NO_DECAY.some((p) => key.includes(p));
}

/** splitmix64 of (seed, step): the seed of each step's augmentation draws. */
export function stepSeed(seed: number | bigint, step: number): bigint {
  const M = (1n << 64n) - 1n;
  let z = (BigInt(seed) + 0x9e3779b97f4a7c15n * (BigInt(step) + 1n)) & M;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
  return z ^ (z >> 31n);
}

/** libtorch's CPU uniform_(from, to) on float32: 24 low bits of each mt19937 draw, arithmetic in float32. */
function torchUniform(n: number, from: number, to: number, rng: Mt19937): Float32Array {
  const out = new Float32Array(n);
  const f = Math.fround(from),
    range = Math.fround(Math.fround(to) - f);
  for (let i = 0; i < n; i++) {
    const x = Math.fround((rng.next() & 0xffffff) * 2 ** -24);
    out[i] = Math.fround(Math.fround(x * range) + f);
  }
  return out;
}

interface Slot {
  key: string;
  shape: number[];
  param: Float32Array;
  grad: Float32Array;
  m: Float32Array;
  v: Float32Array;
  decay: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// The Distiller
// ---------------------------------------------------------------------------------------------------------------

export class JsDistiller {
  private stepIndex = 0;
  private updates = 0;
  private readonly slots: Slot[] = [];
  private readonly optim: Optim;
  readonly projectorWeight: Float32Array;
  readonly projectorBias: Float32Array;
  /** The student's training-only rates (its config.json's, then config.studentDrop). */
  readonly studentDrop: Regularization;

  private constructor(
    readonly config: JsDistillerConfig,
    readonly teacher: JsModel,
    readonly student: JsModel,
  ) {
    this.studentDrop = studentRegularization(student.spec, config.studentDrop);
    this.optim = { ...OPTIM_DEFAULTS, ...definedOnly(config.optimizer ?? {}) } as Optim;
    const ds = outDim(student.spec),
      dt = outDim(teacher.spec); // pooled widths (2*D for cls+mean)
    const rng = new Mt19937(BigInt(config.seed ?? 0));
    const bound = 1 / Math.sqrt(ds);
    this.projectorWeight = torchUniform(dt * ds, -bound, bound, rng);
    this.projectorBias = torchUniform(dt, -bound, bound, rng);
    for (const key of student.vit.trainableKeys()) {
      const w = student.vit.weights.get(key)!;
      this.addSlot(`student/${key}`, w.shape, w.data);
    }
    this.addSlot('projector.weight', [dt, ds], this.projectorWeight);
    this.addSlot('projector.bias', [dt], this.projectorBias);
  }

  private addSlot(key: string, shape: number[], param: Float32Array): void {
    this.slots.push({
      key,
      shape,
      param,
      grad: new Float32Array(param.length),
      m: new Float32Array(param.length),
      v: new Float32Array(param.length),
      decay: takesWeightDecay(key, shape),
    });
  }

  /** Loads both models (strict about weights; refused over the js size limit unless config.force). */
  static async create(config: JsDistillerConfig): Promise<JsDistiller> {
    if ((config.device ?? 'cpu') !== 'cpu') {
      throw new UserError(
        `the js backend runs on the CPU only, but device '${config.device}' was asked for: use --device cpu or --backend native`,
      );
    }
    const td = config.teacherDtype ?? 'auto';
    if (td !== 'auto' && td !== 'float32') {
      throw new UserError(
        `the js backend runs the teacher in float32 only, but teacherDtype '${td}' was asked for: use auto or float32, or --backend native`,
      );
    }
    if (config.teacherFp8) {
      throw new UserError(
        'the js backend has no FP8 teacher (teacherFp8): --teacher-fp8 needs the native engine on a CUDA GPU with FP8 tensor cores (compute capability 8.9+); drop the flag',
      );
    }
    if ((config.accumulationSteps ?? 1) < 1) throw new UserError('accumulationSteps must be at least 1');
    studentRegularization(
      resolveVitSpec(config.student, config.studentPreset ?? '', config.studentPool ?? ''),
      config.studentDrop,
    ); // refusals first
    // Before any weights are read: a step costs a teacher forward plus about three student forwards.
    for (const [what, folder, preset, pool] of [
      ['teacher', config.teacher, config.teacherPreset, config.teacherPool],
      ['student', config.student, config.studentPreset, config.studentPool],
    ] as const) {
      const spec = resolveVitSpec(folder, preset ?? '', pool ?? '');
      checkJsModelSize(spec, parameterCount(spec), config.force, what);
    }
    const teacher = loadJsModel(config.teacher, config.teacherPreset ?? '', { force: true, pool: config.teacherPool });
    const student = loadJsModel(config.student, config.studentPreset ?? '', { force: true, pool: config.studentPool });
    return new JsDistiller(config, teacher, student);
  }

  private norms(): { teacher: Normalization; student: Normalization } {
    return {
      teacher: { mean: this.teacher.spec.mean, std: this.teacher.spec.std },
      student: { mean: this.student.spec.mean, std: this.student.spec.std },
    };
  }

  private checkTiles(tiles: Uint8Tensor, what: string): void {
    const crop = this.config.augment?.crop ?? 224;
    if (!(tiles.data instanceof Uint8Array) || tiles.shape.length !== 4 || tiles.shape[3] !== 3) {
      throw new UserError(`${what}: expected uint8 tiles (B,H,W,3), got (${tiles.shape.join(',')})`);
    }
    if (tiles.shape[1] < crop || tiles.shape[2] < crop) {
      throw new UserError(`${what}: tiles of ${tiles.shape[1]}x${tiles.shape[2]} are smaller than the crop (${crop})`);
    }
  }

  /** One step on tiles uint8 (B,H,W,3): augmentation, both models, loss, backward, AdamW. */
  async step(tiles: Uint8Tensor): Promise<JsStepResult> {
    this.checkTiles(tiles, 'step');
    const [batch, H, W] = tiles.shape;
    const accum = this.config.accumulationSteps ?? 1;
    if (batch % accum !== 0 || batch / accum < 2) {
      throw new UserError(
        `step: a batch of ${batch} tiles cannot be split into ${accum} micro-batches of at least 2 (BatchNorm needs 2 samples): change batchSize or accumulationSteps`,
      );
    }
    const augment = this.config.augment ?? {};
    const params = sampleAugmentParams(batch, H, W, augment, stepSeed(this.config.seed ?? 0, this.stepIndex));
    const { teacher: tn, student: sn } = this.norms();
    const views = augmentBatch(tiles, params, augment, tn, sn, 'float32');
    const crop = views.student.shape[2];
    const per = 3 * crop * crop;
    for (const s of this.slots) s.grad.fill(0);
    const grads = new Map<string, Float32Array>();
    for (const s of this.slots) if (s.key.startsWith('student/')) grads.set(s.key.slice(8), s.grad);
    const projW = this.slots[this.slots.length - 2].grad,
      projB = this.slots[this.slots.length - 1].grad;
    const micro = batch / accum;
    const Ds = outDim(this.student.spec),
      Dt = outDim(this.teacher.spec);
    let lossSum = 0;
    // The student's dropout and drop path: uniform draws from mt19937(mix(mix(seed, step), rank 0)), in order over
    // the micro-batches, so a resumed run draws the same masks (the engine seeds its own generator the same way; the
    // two backends' masks differ, their rates and scaling do not).
    const r = this.studentDrop;
    let drop: VitDrop | null = null;
    if (r.dropPath > 0 || r.attnDrop > 0 || r.projDrop > 0 || r.posDrop > 0 || r.headDrop > 0 || r.hiddenDrop > 0) {
      const rng = new Mt19937(stepSeed(stepSeed(this.config.seed ?? 0, this.stepIndex), 0));
      drop = { rates: r, random: () => rng.next() * 2 ** -32 };
    }
    for (let m = 0; m < accum; m++) {
      const tIn = (views.teacher.data as Float32Array).subarray(m * micro * per, (m + 1) * micro * per);
      const sIn = views.student.data.subarray(m * micro * per, (m + 1) * micro * per);
      const zt = this.teacher.vit.forward(tIn, micro, crop, crop).embeddings;
      const { embeddings: zs, cache } = this.student.vit.forward(sIn, micro, crop, crop, true, drop);
      const r = logSumLossJs(
        { data: zs, shape: [micro, Ds] },
        { data: zt, shape: [micro, Dt] },
        {
          W: { data: this.projectorWeight, shape: [Dt, Ds] },
          b: { data: this.projectorBias, shape: [Dt] },
          alpha: this.config.loss?.alpha,
          reduction: this.config.loss?.reduction as 'batch' | 'sample' | undefined,
          bnEps: this.config.loss?.bnEps,
          teacherBn: this.config.loss?.teacherBn,
        },
      );
      const scale = 1 / accum;
      const dzs = new Float32Array(micro * Ds);
      for (let i = 0; i < dzs.length; i++) dzs[i] = r.grads.zs.data[i] * scale;
      for (let i = 0; i < projW.length; i++) projW[i] += r.grads.W.data[i] * scale;
      for (let i = 0; i < projB.length; i++) projB[i] += r.grads.b.data[i] * scale;
      this.student.vit.backward(cache!, dzs, grads);
      lossSum += r.loss;
    }
    const gradNorm = this.adamw();
    const sched = scheduleAt(this.optim, this.stepIndex);
    const result = {
      step: this.stepIndex,
      loss: lossSum / accum,
      lr: sched.lr,
      weightDecay: sched.weightDecay,
      gradNorm,
      deviceMemoryBytes: 0,
    };
    this.stepIndex += 1;
    return result;
  }

  /** AdamW at the current step (torch.optim.AdamW's arithmetic, as the engine's foreach version); returns the grad norm. */
  private adamw(): number {
    const c = this.optim;
    const { lr, weightDecay: wd } = scheduleAt(c, this.stepIndex);
    let sq = 0;
    for (const s of this.slots) for (let i = 0; i < s.grad.length; i++) sq += s.grad[i] * s.grad[i];
    const gradNorm = Math.sqrt(sq);
    const clip = c.clipGradNorm > 0 ? Math.min(1, c.clipGradNorm / (gradNorm + 1e-6)) : 1;
    this.updates += 1;
    const bc1 = 1 - c.beta1 ** this.updates,
      bc2 = 1 - c.beta2 ** this.updates;
    const stepSize = lr / bc1,
      sqrtBc2 = Math.sqrt(bc2);
    for (const s of this.slots) {
      const decay = s.decay && wd !== 0 ? 1 - lr * wd : 1;
      const { param: p, grad: g, m, v } = s;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i] * clip;
        p[i] *= decay;
        m[i] += (1 - c.beta1) * (gi - m[i]);
        v[i] = c.beta2 * v[i] + (1 - c.beta2) * gi * gi;
        p[i] -= (stepSize * m[i]) / (Math.sqrt(v[i]) / sqrtBc2 + c.eps);
      }
    }
    return gradNorm;
  }

  /** Embeddings of centre-cropped tiles, no augmentation: (B,D) of the student or the teacher. */
  async features(tiles: Uint8Tensor, which: 'student' | 'teacher'): Promise<Float32Tensor> {
    this.checkTiles(tiles, 'features');
    const [B, H, W] = tiles.shape;
    const centre = { ...(this.config.augment ?? {}), enabled: false };
    const { teacher: tn, student: sn } = this.norms();
    const views = augmentBatch(tiles, sampleAugmentParams(B, H, W, centre, 0), centre, tn, sn, 'float32');
    const model = which === 'teacher' ? this.teacher : this.student;
    const input = which === 'teacher' ? (views.teacher.data as Float32Array) : views.student.data;
    const crop = views.student.shape[2];
    return { data: model.vit.forward(input, B, crop, crop).embeddings, shape: [B, outDim(model.spec)] };
  }

  /**
   * Writes the state into `folder`/state.safetensors in the engine's own format and keys (student/<key>,
   * projector.*, optimizer/exp_avg[_sq]/<key>, optimizer/updates, step, seed; F32 and I64, the data's CRC-32 in the
   * metadata): either backend resumes from it.
   */
  async save(folder: string): Promise<void> {
    const tensors = new Map<string, { shape: number[]; data: Float32Array | BigInt64Array }>();
    for (const s of this.slots) {
      tensors.set(s.key, { shape: s.shape, data: s.param });
      tensors.set(`optimizer/exp_avg/${s.key}`, { shape: s.shape, data: s.m });
      tensors.set(`optimizer/exp_avg_sq/${s.key}`, { shape: s.shape, data: s.v });
    }
    const long = (v: number | bigint) => ({ shape: [1], data: BigInt64Array.from([BigInt(v)]) });
    tensors.set('optimizer/updates', long(this.updates));
    tensors.set('step', long(this.stepIndex));
    tensors.set('seed', long(BigInt.asIntN(64, BigInt(this.config.seed ?? 0))));
    await mkdir(folder, { recursive: true });
    await writeSafetensors(path.join(folder, STATE_FILE), tensors, { format: 'pt' }, { checksum: true });
  }

  /**
   * Restores a state.safetensors written by save() on either backend; the models must be those of the run that saved
   * it. As the engine's load(): header, checksum, metadata and key set checked exactly, each tensor's dtype and shape.
   */
  async load(folder: string): Promise<void> {
    const file = path.join(folder, STATE_FILE);
    if (!existsSync(file)) {
      if (existsSync(path.join(folder, LEGACY_STATE_FILE))) {
        throw new UserError(
          `load: ${folder} holds ${LEGACY_STATE_FILE}: a checkpoint written by an earlier g2l-native (format state.pt), ` +
            'which this version does not read; finish that run with the g2l-native version that wrote it, or start it again',
        );
      }
      throw new UserError(`load: cannot read ${file}: is this a checkpoint folder of a g2l-native run?`);
    }
    const advice = 'resume from an earlier checkpoints/step-N folder';
    const { tensors: state, metadata } = readStoredTensors(file, advice);
    const damaged = (what: string) =>
      new UserError(`load: ${file} ${what}: the checkpoint is damaged or from another run; ${advice}`);
    const metaKeys = Object.keys(metadata).sort();
    if (metaKeys.join() !== [CHECKSUM_KEY, 'format'].sort().join() || metadata.format !== 'pt') {
      throw damaged(`does not have the __metadata__ g2l-native writes ({format: pt, ${CHECKSUM_KEY}})`);
    }
    const unused = new Set(state.keys());
    const get = (key: string, dtype: StoredTensor['dtype'], shape: number[]): StoredTensor => {
      const t = state.get(key);
      if (!t) throw damaged(`has no '${key}' (is it from another model?)`);
      if (t.dtype !== dtype || t.shape.join(',') !== shape.join(',')) {
        throw damaged(
          `has '${key}' as ${t.dtype} (${t.shape}) but the run needs ${dtype} (${shape}) (is it from another model?)`,
        );
      }
      unused.delete(key);
      return t;
    };
    // Everything is checked before anything is copied: a refused file leaves the state as it was.
    const copies: [Float32Array, Float32Array][] = [];
    const take = (key: string, dst: Float32Array, shape: number[]) =>
      copies.push([dst, get(key, 'float32', shape).data as Float32Array]);
    const long = (key: string) => (get(key, 'int64', [1]).data as BigInt64Array)[0];
    for (const s of this.slots) {
      take(s.key, s.param, s.shape);
      take(`optimizer/exp_avg/${s.key}`, s.m, s.shape);
      take(`optimizer/exp_avg_sq/${s.key}`, s.v, s.shape);
    }
    const updates = long('optimizer/updates'),
      step = long('step');
    long('seed');
    if (unused.size) throw damaged(`holds '${[...unused].sort()[0]}', which this run does not have`);
    if (step < 0n || updates < 0n) throw damaged('has a negative step');
    for (const [dst, src] of copies) dst.set(src);
    this.updates = Number(updates);
    this.stepIndex = Number(step);
  }

  async exportStudent(folder: string): Promise<void> {
    await this.student.exportTo(folder);
  }

  get stepsTaken(): number {
    return this.stepIndex;
  }

  info() {
    const t = this.teacher.spec,
      s = this.student.spec;
    return {
      studentDim: outDim(s),
      teacherDim: outDim(t),
      studentParams: this.student.vit.parameterCount(),
      teacherParams: this.teacher.vit.parameterCount(),
      device: 'cpu',
      teacherModel: describeSpec(t),
      studentModel: describeSpec(s),
      teacherMean: [...t.mean],
      teacherStd: [...t.std],
      studentMean: [...s.mean],
      studentStd: [...s.std],
      step: this.stepIndex,
      studentDrop: reportedDrop(s, this.studentDrop),
    };
  }

  /** Trained tensors by state key (student/<checkpoint key>, projector.weight, projector.bias), live views. */
  trainedState(): Map<string, Float32Array> {
    return new Map(this.slots.map((s) => [s.key, s.param]));
  }

  /** The gradients of the last step (before clipping), by state key. */
  lastGradients(): Map<string, Float32Array> {
    return new Map(this.slots.map((s) => [s.key, s.grad]));
  }
}

// The engine's file names (native/engine/train/distiller.cpp kStateFile, kLegacyStateFile).
const STATE_FILE = 'state.safetensors';
const LEGACY_STATE_FILE = 'state.pt';

// ---------------------------------------------------------------------------------------------------------------
// The same Distiller in a worker thread (./distill-worker.ts): what the backend hands out, so steps run off the
// event loop. info() answers from the state returned with the last call.
// ---------------------------------------------------------------------------------------------------------------

type DistillerInfo = ReturnType<JsDistiller['info']>;
interface Reply {
  id: number;
  ok: boolean;
  message?: string;
  user?: boolean;
  value?: unknown;
  info?: DistillerInfo;
}

export class JsDistillerWorker {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();

  private constructor(
    private readonly worker: Worker,
    private lastInfo: DistillerInfo,
  ) {
    worker.on('message', (r: Reply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) worker.unref();
      if (r.info) this.lastInfo = r.info;
      if (r.ok) p.resolve(r);
      else p.reject(r.user ? new UserError(r.message!) : new Error(r.message));
    });
    worker.on('error', (e) => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    });
  }

  static async create(config: JsDistillerConfig): Promise<JsDistillerWorker> {
    // Refusals before the worker starts: device, teacher dtype, folders and the size guard.
    if ((config.device ?? 'cpu') !== 'cpu') {
      throw new UserError(
        `the js backend runs on the CPU only, but device '${config.device}' was asked for: use --device cpu or --backend native`,
      );
    }
    for (const [what, folder, preset, pool] of [
      ['teacher', config.teacher, config.teacherPreset, config.teacherPool],
      ['student', config.student, config.studentPreset, config.studentPool],
    ] as const) {
      const spec = resolveVitSpec(folder, preset ?? '', pool ?? '');
      checkJsModelSize(spec, parameterCount(spec), config.force, what);
    }
    const here = import.meta.url;
    const worker = new Worker(new URL(here.endsWith('.ts') ? './distill-worker.ts' : './distill-worker.js', here), {
      workerData: config,
    });
    const first = await new Promise<Reply>((resolve, reject) => {
      worker.once('error', reject);
      worker.once('message', resolve);
    });
    if (!first.ok) {
      await worker.terminate();
      throw first.user ? new UserError(first.message!) : new Error(first.message);
    }
    worker.unref();
    return new JsDistillerWorker(worker, first.info!);
  }

  private call(op: string, payload: Record<string, unknown> = {}): Promise<Reply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ op, id, ...payload });
    });
  }

  async step(tiles: Uint8Tensor, options: { stop?: boolean } = {}): Promise<JsStepResult> {
    const r = (await this.call('step', { tiles: { data: tiles.data, shape: tiles.shape } })).value as JsStepResult;
    // One process, no world: the stop request is this process's own.
    return { ...r, stop: options.stop === true };
  }

  async features(tiles: Uint8Tensor, which: 'student' | 'teacher'): Promise<Float32Tensor> {
    return (await this.call('features', { tiles: { data: tiles.data, shape: tiles.shape }, which }))
      .value as Float32Tensor;
  }

  async save(folder: string): Promise<void> {
    await this.call('save', { folder });
  }
  async load(folder: string): Promise<void> {
    await this.call('load', { folder });
  }
  async exportStudent(folder: string): Promise<void> {
    await this.call('exportStudent', { folder });
  }

  info(): DistillerInfo {
    return this.lastInfo;
  }

  /** Ends the worker (the weights go with it). */
  async dispose(): Promise<void> {
    await this.worker.terminate();
  }
}
