// The configuration of a distillation run: G2L's defaults (docs/method.md), a YAML or JSON file over them, command-line
// flags over the file. The resolved result is what <run>/config.json holds and what a resume compares against.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { z } from 'zod';
import { UserError } from '../errors.js';
import { HF_PREFIX, resolveHfModel } from '../models/hub.js';
import {
  DIST_BUCKET_BYTES_DEFAULT,
  EARLY_STOPPING_DEFAULTS,
  KERNEL_DEFAULTS,
  LOSS_DEFAULTS,
  OPTIMIZER_DEFAULTS,
  RUN_SHAPE_DEFAULTS,
  TEACHER_FP8_LAYERS_DEFAULT,
} from '../defaults.js';

const augmentSchema = z
  .object({
    enabled: z.boolean(),
    crop: z.number().int().positive(),
    pHflip: z.number().min(0).max(1),
    pVflip: z.number().min(0).max(1),
    pJitter: z.number().min(0).max(1),
    brightness: z.number().min(0),
    contrast: z.number().min(0),
    saturation: z.number().min(0),
    hue: z.number().min(0).max(0.5),
    pBlur: z.number().min(0).max(1),
    blurKernel: z.number().int().positive(),
    blurSigmaMin: z.number().positive(),
    blurSigmaMax: z.number().positive(),
  })
  .strict()
  .partial();

/** The student's training-only rates over its config.json's (lib/backends/types.ts StudentDrop). */
const rate = z.number().min(0).max(1);
const studentDropSchema = z
  .object({
    dropPath: rate,
    attnDrop: rate,
    projDrop: rate,
    posDrop: rate,
    headDrop: rate,
    hiddenDrop: rate,
    patchDrop: z.literal(0),
  })
  .strict()
  .partial();

/**
 * Which implementation each engine operation runs (native/engine/include/g2l/kernels.h; defaults: lib/defaults.ts
 * KERNEL_DEFAULTS). The same mathematics each way, differing by rounding; the js backend ignores them.
 */
export const kernelsSchema = z
  .object({
    /** A separate-q/k/v student trains with one packed q/k/v product. */
    packQkv: z.boolean(),
    /** The fused LayerNorm / LayerScale (and the teacher's residual + LayerNorm) kernels. */
    fusedNorm: z.boolean(),
    /** The fused SwiGLU kernel. */
    fusedSwiglu: z.boolean(),
    /** AdamW: 'auto' fused on CUDA, foreach on the CPU; 'on' / 'off' force one. */
    fusedAdamw: z.enum(['auto', 'on', 'off']),
    /** The SDPA backend libtorch tries first on CUDA ('auto': libtorch's order). */
    sdpa: z.enum(['auto', 'cudnn', 'flash', 'efficient', 'math']),
    /** FP8 teacher: activation quantisation by the fused CUDA kernel ('cuda', where it applies) or at:: ops ('aten'). */
    fp8Quant: z.enum(['cuda', 'aten']),
    /** FP8 teacher: _scaled_mm with fast accumulation (faster on Hopper, less precise). */
    fp8FastAccum: z.boolean(),
  })
  .strict();
export type KernelOptions = z.infer<typeof kernelsSchema>;

/** The kinds of the teacher's Linear layers in FP8 (--teacher-fp8): a non-empty subset of qkv, proj, fc1, fc2. */
export const teacherFp8LayersSchema = z
  .array(z.enum(['qkv', 'proj', 'fc1', 'fc2']))
  .min(1)
  .refine((a) => new Set(a).size === a.length, { message: 'each layer kind once' });

/** Every key of a run; the file may give any subset, nested groups as objects. */
export const runConfigSchema = z
  .object({
    teacher: z.string().min(1),
    teacherPreset: z.string(),
    /** Overrides the teacher's pooling (its config's or preset's): cls, mean or cls+mean; '' keeps it. */
    teacherPool: z.enum(['', 'cls', 'mean', 'cls+mean']),
    student: z.string().min(1),
    studentPreset: z.string(),
    /** The student's pooling: a cls+mean student embeds 2*D (the projector follows) and is exported with it. */
    studentPool: z.enum(['', 'cls', 'mean', 'cls+mean']),
    /** A folder of tile manifests (g2l-native tile), or "synthetic[:N]" for generated tiles. */
    slides: z.string().min(1),
    /** Planned steps (the cosine schedules run over them); --epochs converts to steps. */
    steps: z.number().int().positive(),
    batchSize: z.number().int().min(2),
    device: z.string(),
    seed: z.number().int().min(0),
    tileSizePx: z.number().int().positive(),
    /** Which tiles a batch draws: uniform over tiles (the paper), or a slide uniformly first ('slides'). */
    tileSampling: z.enum(['tiles', 'slides']),
    accumulationSteps: z.number().int().positive(),
    teacherDtype: z.enum(['auto', 'float16', 'bfloat16', 'float32']),
    autocast: z.boolean(),
    /** FP8 (E4M3) teacher matrix products on a GPU of compute capability 8.9+ (--teacher-fp8). Runs saved before the
     *  key existed read as false. */
    teacherFp8: z.boolean().default(false),
    /** With teacherFp8: which kinds of the teacher's Linear layers get FP8 weights (default qkv, fc1). */
    teacherFp8Layers: teacherFp8LayersSchema,
    /** Engine implementation choices (kernelsSchema); recorded so that a resume runs the same ones. */
    kernels: kernelsSchema,
    /** Data parallelism: the gradient all-reduce bucket size in bytes. */
    distBucketBytes: z.number().int().positive(),
    /**
     * The student's dropout and drop-path rates (training only), each replacing its config.json's value; unset ones
     * keep the config's. timm: dropPath, attnDrop, projDrop, posDrop, headDrop; transformers: dropPath, attnDrop,
     * hiddenDrop; patchDrop: 0 only. (`student` is the model folder.) Runs saved before the key read as {}.
     */
    studentDrop: studentDropSchema.default({}),
    optimizer: z
      .object({
        lr: z.number().positive(),
        finalLr: z.number().min(0),
        weightDecay: z.number().min(0),
        finalWeightDecay: z.number().min(0),
        warmupSteps: z.number().int().min(0),
        clipGradNorm: z.number().min(0),
      })
      .strict(),
    loss: z
      .object({
        alpha: z.number().min(1),
        reduction: z.enum(['batch', 'sample']),
        bnEps: z.number().min(0),
        teacherBn: z.boolean(),
        /** Data parallelism: BatchNorm statistics and the log-sum over the global batch, or per rank as DDP (--bn-sync). */
        sync: z.enum(['global', 'local']),
      })
      .strict(),
    earlyStopping: z
      .object({
        enabled: z.boolean(),
        /** Which reading of G2L's rule (lib/distill/early-stop.ts): consecutive (default), total, ratio. */
        rule: z.enum(['consecutive', 'total', 'ratio']),
        /** Steps in the running mean. */
        window: z.number().int().positive(),
        /** consecutive: this many steps in a row above the running mean stop the run; total: more than this many. */
        patience: z.number().int().min(0),
        /** ratio: a loss above factor * |running mean| stops the run. */
        factor: z.number().positive(),
        /** Nothing stops before this many steps. */
        minSteps: z.number().int().min(0),
      })
      .strict(),
    augment: augmentSchema,
    /** Write checkpoints/step-N every this many steps (and at the end). */
    checkpointEvery: z.number().int().positive(),
  })
  .strict();

export type RunConfig = z.infer<typeof runConfigSchema>;

/** A partial config: what a file or the flags give. */
export type RunConfigInput = {
  [K in keyof RunConfig]?: RunConfig[K] extends object ? Partial<RunConfig[K]> : RunConfig[K];
};

/** G2L's defaults (lib/defaults.ts, with their sources): AdamW lr 1e-4, wd 0.05, both cosine to 0; alpha 4; batch 32. */
export const RUN_DEFAULTS: Omit<RunConfig, 'teacher' | 'student' | 'slides' | 'steps'> = {
  teacherPreset: '',
  studentPreset: '',
  teacherPool: '',
  studentPool: '',
  batchSize: RUN_SHAPE_DEFAULTS.batchSize,
  device: 'cpu',
  seed: 0,
  tileSizePx: RUN_SHAPE_DEFAULTS.tileSizePx,
  tileSampling: RUN_SHAPE_DEFAULTS.tileSampling,
  accumulationSteps: RUN_SHAPE_DEFAULTS.accumulationSteps,
  teacherDtype: 'auto',
  autocast: true,
  teacherFp8: false,
  teacherFp8Layers: [...TEACHER_FP8_LAYERS_DEFAULT],
  kernels: { ...KERNEL_DEFAULTS },
  distBucketBytes: DIST_BUCKET_BYTES_DEFAULT,
  studentDrop: {},
  optimizer: (({ lr, finalLr, weightDecay, finalWeightDecay, warmupSteps, clipGradNorm }) => ({
    lr,
    finalLr,
    weightDecay,
    finalWeightDecay,
    warmupSteps,
    clipGradNorm,
  }))(OPTIMIZER_DEFAULTS),
  loss: { ...LOSS_DEFAULTS },
  earlyStopping: { ...EARLY_STOPPING_DEFAULTS },
  augment: {},
  checkpointEvery: RUN_SHAPE_DEFAULTS.checkpointEvery,
};

const partialSchema = runConfigSchema
  .extend({
    optimizer: runConfigSchema.shape.optimizer.partial(),
    loss: runConfigSchema.shape.loss.partial(),
    earlyStopping: runConfigSchema.shape.earlyStopping.partial(),
    kernels: kernelsSchema.partial(),
    studentDrop: studentDropSchema,
    teacherFp8: z.boolean(), // no default here: a file that does not set it leaves it to the defaults / the saved run
  })
  .partial();

function issuesLine(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ');
}

/**
 * A saved config.json as this version reads it: keys that earlier versions did not write get the value those runs
 * used, so a resumed run behaves as it did (early stopping was the literal 'total' count before the rule existed).
 */
export function upgradeSavedConfig(raw: unknown): unknown {
  if (!raw || typeof raw !== 'object') return raw;
  const cfg = { ...(raw as Record<string, unknown>) };
  const es = cfg.earlyStopping;
  if (es && typeof es === 'object' && !('rule' in es)) {
    cfg.earlyStopping = { rule: 'total', factor: 10, minSteps: 0, ...(es as object) };
  }
  if (!('tileSampling' in cfg)) cfg.tileSampling = 'tiles';
  const loss = cfg.loss;
  if (loss && typeof loss === 'object' && !('sync' in loss)) cfg.loss = { sync: 'global', ...(loss as object) };
  // Before the engine choices were recorded they came from G2L_* environment variables, whose defaults these are;
  // the FP8 layer set was then all four kinds.
  if (!('kernels' in cfg)) {
    cfg.kernels = {
      packQkv: true,
      fusedNorm: false,
      fusedSwiglu: true,
      fusedAdamw: 'auto',
      sdpa: 'auto',
      fp8Quant: 'cuda',
      fp8FastAccum: false,
    };
  }
  if (!('teacherFp8Layers' in cfg)) cfg.teacherFp8Layers = ['qkv', 'proj', 'fc1', 'fc2'];
  if (!('distBucketBytes' in cfg)) cfg.distBucketBytes = 25 * 1024 * 1024;
  return cfg;
}

/** Reads a YAML or JSON config file (any subset of RunConfig). */
export function readConfigFile(file: string): RunConfigInput {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new UserError(`cannot read the config file ${file}: check the path`);
  }
  let raw: unknown;
  try {
    raw = /\.json$/i.test(file) ? JSON.parse(text) : yaml.load(text);
  } catch (e) {
    throw new UserError(
      `${file} is not valid ${/\.json$/i.test(file) ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`,
    );
  }
  const parsed = partialSchema.safeParse(raw ?? {});
  if (!parsed.success)
    throw new UserError(`${file}: ${issuesLine(parsed.error)}: fix these keys (see g2l-native distill --help)`);
  const cfg = parsed.data as RunConfigInput;
  // Model and slide paths in a file are relative to the file.
  for (const key of ['teacher', 'student', 'slides'] as const) {
    const v = cfg[key];
    if (v && !v.startsWith('synthetic') && !v.startsWith(HF_PREFIX) && !path.isAbsolute(v))
      cfg[key] = path.resolve(path.dirname(file), v);
  }
  return cfg;
}

/** A model given as a folder (made absolute) or as hf:org/name (its cache snapshot folder, found offline). */
export function modelPath(value: string): string {
  return value.startsWith(HF_PREFIX) ? resolveHfModel(value) : path.resolve(value);
}

/** Layers inputs left to right (later wins), nested groups key by key. */
export function mergeInputs(...inputs: RunConfigInput[]): RunConfigInput {
  const out: Record<string, unknown> = {};
  for (const input of inputs) {
    for (const [k, v] of Object.entries(input)) {
      if (v === undefined) continue;
      if (v && typeof v === 'object' && !Array.isArray(v))
        out[k] = { ...((out[k] as object) ?? {}), ...dropUndefined(v) };
      else out[k] = v;
    }
  }
  return out as RunConfigInput;
}

function dropUndefined(o: object): object {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/** Defaults + input -> a complete, validated config; names what is missing. */
export function resolveConfig(input: RunConfigInput): RunConfig {
  const merged = mergeInputs(RUN_DEFAULTS as RunConfigInput, input);
  for (const key of ['teacher', 'student', 'slides', 'steps'] as const) {
    if (merged[key] === undefined) {
      throw new UserError(`distill: no ${key} given: pass --${key} (or set "${key}" in the --config file)`);
    }
  }
  for (const key of ['teacher', 'student'] as const) merged[key] = modelPath(merged[key] as string);
  if (!String(merged.slides).startsWith('synthetic')) merged.slides = path.resolve(merged.slides as string);
  const parsed = runConfigSchema.safeParse(merged);
  if (!parsed.success) throw new UserError(`distill: invalid configuration: ${issuesLine(parsed.error)}`);
  if (
    parsed.data.batchSize % parsed.data.accumulationSteps !== 0 ||
    parsed.data.batchSize / parsed.data.accumulationSteps < 2
  ) {
    throw new UserError(
      `distill: batchSize ${parsed.data.batchSize} must split into accumulationSteps ${parsed.data.accumulationSteps} micro-batches of at least 2 tiles`,
    );
  }
  return parsed.data;
}

/** Leaf-by-leaf differences "key: saved -> requested" for the keys `requested` sets. */
export function configDifferences(saved: RunConfig, requested: RunConfigInput): string[] {
  const diffs: string[] = [];
  const walk = (a: unknown, b: unknown, prefix: string) => {
    if (b && typeof b === 'object' && !Array.isArray(b)) {
      for (const [k, v] of Object.entries(b)) {
        if (v === undefined) continue;
        walk((a as Record<string, unknown> | undefined)?.[k], v, prefix ? `${prefix}.${k}` : k);
      }
    } else if (JSON.stringify(a) !== JSON.stringify(b)) {
      diffs.push(`${prefix}: ${JSON.stringify(a)} -> ${JSON.stringify(b)}`);
    }
  };
  walk(saved, requested, '');
  return diffs;
}
