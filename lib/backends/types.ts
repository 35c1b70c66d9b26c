// The one interface through which lib/ reaches compute: the native engine (lib/backends/native.ts) and the
// pure-JS backend (lib/backends/js/) implement it, so every command and the library API run on either.
// Each area of the engine adds its methods here as it lands (models, distillation, augmentation).
import { AUGMENT_DEFAULTS } from '../defaults.js';
import type { KernelOptions } from '../distill/config.js';

/** A dense, C-ordered tensor as it crosses the backend boundary. */
export interface Tensor<T extends ArrayBufferView = Float32Array> {
  data: T;
  shape: number[];
}

export type Float32Tensor = Tensor<Float32Array>;
export type Uint8Tensor = Tensor<Uint8Array>;

export interface DeviceInfo {
  index: number;
  name: string;
  computeCapability: string;
  totalMemoryBytes: number;
}

/** What the backend was built with and what it can use now. */
export interface BackendInfo {
  backend: BackendName;
  libtorchVersion: string | null;
  cudaBuilt: boolean;
  cudaArchitectures: string[];
  cudaAvailable: boolean;
  cudaRuntimeVersion: string | null;
  devices: DeviceInfo[];
  cpuThreads: number;
}

export type BackendName = 'native' | 'js';

// ---------------------------------------------------------------------------------------------------------------
// Gated-attention MIL for slide-level tasks (engine: native/engine/include/g2l/mil.h; twin: js/mil.ts)
// ---------------------------------------------------------------------------------------------------------------

/** ABMIL parameters by name (fc, attention_a, attention_b, attention_c, classifier: .weight and .bias). */
export type MilParams = Record<string, FloatTensor>;

/** Bags as (sum N, D) features and offsets (B+1); labels per bag for training and losses. */
export interface MilBags {
  features: FloatTensor;
  offsets: number[];
  labels?: number[];
}

/** The steps of each epoch (bag indices whose mean loss is one AdamW step), a learning rate per step. */
export interface MilTrainPlan {
  epochs: number[][][];
  lr: number[];
  weightDecay: number;
  /** Epochs without a better validation loss before stopping (0: never). */
  patience: number;
}

export interface MilTrainResult {
  params: MilParams;
  trainLoss: number[];
  valLoss: number[];
  bestEpoch: number;
  epochsRun: number;
}

export interface MilBackend {
  abmilTrain(
    init: MilParams,
    train: MilBags,
    val: MilBags | null,
    plan: MilTrainPlan,
    device?: string,
  ): Promise<MilTrainResult>;
  /** Class probabilities (B, K). */
  abmilPredict(params: MilParams, bags: MilBags, device?: string): Promise<FloatTensor>;
  /** Mean cross-entropy over the bags and its gradients (tests). */
  abmilLoss(params: MilParams, bags: MilBags, device?: string): Promise<{ loss: number; grads: MilParams }>;
}

// ---------------------------------------------------------------------------------------------------------------
// Evaluation of frozen features: the cosine top-k of kNN and the robustness index, and the linear probe
// (engine: native/engine/include/g2l/eval.h on libtorch; js: lib/eval/topk.ts and logistic.ts, WebAssembly SIMD)
// ---------------------------------------------------------------------------------------------------------------

export interface TopK {
  k: number;
  /** [nq, k] base row indices, best first; -1 where a query has fewer than k allowed neighbours. */
  idx: Int32Array;
  /** [nq, k] float64 cosine similarities matching idx (NaN where idx is -1). */
  sim: Float64Array;
}

export interface TopKOptions {
  /** Group per query and per base row (e.g. slide); base rows in the query's own group are never neighbours. */
  queryGroup?: Int32Array;
  baseGroup?: Int32Array;
  /** js backend: threads to search with (default: all available CPUs when the search is big enough to pay for them).
   *  The native engine uses libtorch's intra-op threads. */
  threads?: number;
  /** Called as queries finish with the number done (the native engine calls it once, at the end). */
  onProgress?: (done: number, total: number) => void;
  /** Native engine: cpu, cuda, cuda:<i> (default cpu); the js backend runs on the CPU only. */
  device?: string;
}

export interface LogisticOptions {
  /** Inverse regularisation strength (scikit-learn's C; for two classes the binomial model's). */
  C: number;
  /** Stop when max |∇(objective / N)| <= gtol (default 1e-8). */
  gtol?: number;
  /** L-BFGS iteration cap (default 10000). */
  maxIter?: number;
  /** js backend: 'auto' (SIMD when it fits in memory), or force one implementation (tests). */
  engine?: 'auto' | 'simd' | 'js';
  /** js backend: called after each L-BFGS iteration. */
  onIteration?: (iter: number, loss: number, gradMax: number) => void;
  /** Native engine: cpu, cuda, cuda:<i> (default cpu). */
  device?: string;
}

export interface LogisticModel {
  nClasses: number;
  d: number;
  /** [K, D] weights and [K] intercepts. */
  W: Float64Array;
  b: Float64Array;
  iterations: number;
  converged: boolean;
  /** Final max |∇(objective / N)|. */
  gradMax: number;
  /** Final objective / N. */
  loss: number;
  /** Which implementation fitted it: the js backend's SIMD or plain objective, or the native engine's. */
  engine: 'simd' | 'js' | 'native';
}

/** The evaluation half of Backend: both give the same neighbours and the same probe (test/eval/references.test.ts). */
export interface EvalBackend {
  /**
   * The k nearest base rows of every query row by cosine similarity; query [nq, d], base [nb, d] row-major float32
   * (zero rows have similarity 0 to everything). Pass the same array as query and base to search a set against itself.
   */
  cosineTopK(
    query: Float32Array,
    nq: number,
    base: Float32Array,
    nb: number,
    d: number,
    k: number,
    options?: TopKOptions,
  ): Promise<TopK>;
  /** The linear probe (scikit-learn's LogisticRegression objective, L-BFGS to max |gradient| gtol) on X [n, d], y in [0, K). */
  fitLogistic(
    X: Float32Array,
    y: Int32Array,
    n: number,
    d: number,
    nClasses: number,
    options: LogisticOptions,
  ): Promise<LogisticModel>;
  /** Linear and debiased linear CKA of x [n, dx] and y [n, dy] (rows the same samples; lib/eval/cka.ts). */
  linearCka(
    x: Float32Array,
    dx: number,
    y: Float32Array,
    dy: number,
    n: number,
    device?: string,
  ): Promise<{ linear: number; debiased: number }>;
  /** RBF CKA over all n x n pairs (the caller subsamples large sets; lib/eval/cka.ts). */
  rbfCka(x: Float32Array, dx: number, y: Float32Array, dy: number, n: number, device?: string): Promise<number>;
}

export interface Backend extends AugmentBackend, DistillBackend, ModelBackend, MilBackend, EvalBackend {
  readonly name: BackendName;
  info(): Promise<BackendInfo>;
  /**
   * uint8 RGB images (N,H,W,3) -> float32 (N,3,H,W), (x/255 - mean[c]) / std[c]: the model input of an image.
   */
  normalizeImages(
    images: Uint8Tensor,
    mean: readonly number[],
    std: readonly number[],
    device?: string,
  ): Promise<Float32Tensor>;
}

// ---------------------------------------------------------------------------------------------------------------
// Tile augmentation (G2L, docs/method.md, "Constants"; engine: native/engine/train/augment.h)
// ---------------------------------------------------------------------------------------------------------------

/** Augmentation options; every field defaults to G2L's recipe (DEFAULT_AUGMENT_CONFIG). */
export interface AugmentConfig {
  /** false: centre crop only. */
  enabled?: boolean;
  crop?: number;
  pHflip?: number;
  pVflip?: number;
  pJitter?: number;
  brightness?: number;
  contrast?: number;
  saturation?: number;
  hue?: number;
  pBlur?: number;
  blurKernel?: number;
  blurSigmaMin?: number;
  blurSigmaMax?: number;
}

/** G2L's augmentation (lib/defaults.ts AUGMENT_DEFAULTS, with the sources of its values). */
export const DEFAULT_AUGMENT_CONFIG: Required<AugmentConfig> = AUGMENT_DEFAULTS;

/**
 * Columns of the per-sample parameter rows (B,15) float32 (g2l/augment.h AugmentParamColumn). The jitter factors
 * and order apply only when `jitter` is 1; order slots hold a permutation of 0 brightness, 1 contrast,
 * 2 saturation, 3 hue (torchvision's ColorJitter fn_idx).
 */
export const AugmentParam = Object.freeze({
  cropX: 0,
  cropY: 1,
  hflip: 2,
  vflip: 3,
  jitter: 4,
  brightness: 5,
  contrast: 6,
  saturation: 7,
  hue: 8,
  order0: 9,
  blur: 13,
  sigma: 14,
  count: 15,
});

export interface Normalization {
  mean: readonly number[];
  std: readonly number[];
}

/** Per-model normalisations (docs/method.md, from each model's pretrained config). */
export const NORMALIZATIONS = Object.freeze({
  hOptimus0: { mean: [0.707223, 0.578729, 0.703617], std: [0.211883, 0.230117, 0.177517] } as Normalization,
  hibou: { mean: [0.7068, 0.5755, 0.722], std: [0.195, 0.2316, 0.1816] } as Normalization,
  imagenet: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] } as Normalization,
});

export type TeacherDtype = 'float16' | 'bfloat16' | 'float32';

export interface AugmentOptions {
  /** Element type of the teacher's input (default float16: the teacher runs in half precision). */
  teacherDtype?: TeacherDtype;
  device?: string;
}

/** float16/bfloat16 tensors hold their IEEE bits in a Uint16Array. */
export interface TypedTensor extends Tensor<Float32Array | Uint16Array> {
  dtype: TeacherDtype;
}

export interface AugmentedBatch {
  /** (B,3,crop,crop), teacherDtype, teacher normalisation. */
  teacher: TypedTensor;
  /** (B,3,crop,crop) float32, student normalisation. */
  student: Float32Tensor & { dtype: 'float32' };
}

/** The augmentation half of Backend; both backends give the same parameters for a seed and the same images. */
export interface AugmentBackend {
  /** (B,15) float32 parameters drawn from mt19937(seed), identical on both backends. */
  sampleAugmentParams(
    batch: number,
    tileH: number,
    tileW: number,
    config: AugmentConfig,
    seed: number | bigint,
  ): Promise<Float32Tensor>;
  /**
   * tiles uint8 (B,H,W,3) -> one augmented view for both models, (B,3,crop,crop) each. `params` are fixed
   * parameters (sampleAugmentParams) or a seed to draw them from.
   */
  augmentBatch(
    tiles: Uint8Tensor,
    params: Float32Tensor | { seed: number | bigint },
    config: AugmentConfig,
    teacherNorm: Normalization,
    studentNorm: Normalization,
    options?: AugmentOptions,
  ): Promise<AugmentedBatch>;
  /**
   * Memory for tile batches (TileBatchLoader's `allocate`): page-locked when `pinned` and the native engine has a
   * CUDA device, so a batch goes to the GPU in one DMA; plain memory otherwise (and always on the js backend).
   */
  allocateTileBuffer(bytes: number, options?: { pinned?: boolean }): Uint8Array;
}

// ---------------------------------------------------------------------------------------------------------------
// Distillation: the log-sum loss (Miles & Mikolajczyk, AAAI 2024; engine: native/engine/train/loss.h)
// ---------------------------------------------------------------------------------------------------------------

export type Float64Tensor = Tensor<Float64Array>;
/** float32 or float64: the loss is computed in the dtype it is given. */
export type FloatTensor = Tensor<Float32Array | Float64Array>;

export interface LogSumLossOptions {
  /** Projector weight (Dt,Ds). */
  W: FloatTensor;
  /** Projector bias (Dt). */
  b: FloatTensor;
  /** Exponent of |f_s - f_t| (default 4). */
  alpha?: number;
  /** 'batch' (default): log of the sum over batch and features; 'sample': mean over samples of log row sums. */
  reduction?: 'batch' | 'sample';
  /** BatchNorm1d eps of both sides (default 1e-4). */
  bnEps?: number;
  /** Normalise the teacher features too (default true). */
  teacherBn?: boolean;
  device?: string;
}

export interface LogSumLossResult {
  loss: number;
  /** Gradients of the loss, in the inputs' dtype: zs (B,Ds), W (Dt,Ds), b (Dt). */
  grads: { zs: FloatTensor; W: FloatTensor; b: FloatTensor };
}

/** The distillation half of Backend. */
export interface DistillBackend {
  /**
   * log-sum(BN(zs W^T + b), BN(zt)) and its gradients, for zs (B,Ds) student features and zt (B,Dt) teacher
   * features: scores how well two feature sets align under a linear projector.
   */
  logSumLoss(zs: FloatTensor, zt: FloatTensor, options: LogSumLossOptions): Promise<LogSumLossResult>;
}

// ---------------------------------------------------------------------------------------------------------------
// Models: teacher and student ViTs (timm and transformers DINOv2 families; engine: native/engine/models/model.h)
// ---------------------------------------------------------------------------------------------------------------

/** Weight precision of a loaded model: fp32 on the CPU; fp16 or bf16 on CUDA. */
export type ModelDtype = 'fp32' | 'fp16' | 'bf16';

/** Where a model comes from: a hub folder (timm or transformers layout), a preset, or a preset over a folder. */
export interface ModelSource {
  folder?: string;
  /** h-optimus-0, hibou-l, hibou-b, uni2-h: what the official config.json leaves out. */
  preset?: string;
  /** Overrides the model's own pooling (its config's or its preset's). */
  pool?: ModelPool;
}

/** How the final tokens become the embedding: the class token, the mean of the patch tokens (class and register
 *  tokens excluded), or both concatenated (2 * width). */
export type ModelPool = 'cls' | 'mean' | 'cls+mean';

/** What a model is: the architecture resolved from its folder and/or preset. */
export interface ModelDescription {
  /** timm architecture ("vit_giant_patch14_reg4_dinov2") or transformers model_type ("dinov2_with_registers"). */
  family: string;
  layout: 'timm' | 'hf';
  preset: string | null;
  folder: string | null;
  mlp: 'gelu' | 'swiglu_packed' | 'swiglu_hf';
  /** Embedding width: the token width, or twice it for cls+mean pooling. */
  dims: number;
  /** The transformer's token width D. */
  width: number;
  pool: ModelPool;
  depth: number;
  numHeads: number;
  numRegisters: number;
  patchSize: number;
  /** px: uint8 images are resized to inputSize x inputSize before embedding. */
  inputSize: number;
  /** Elements over every checkpoint tensor, as timm / transformers count them. */
  parameters: number;
  mean: number[];
  std: number[];
}

/** A loaded model: its description plus where and how it runs. */
export interface ModelInfo extends ModelDescription {
  dtype: ModelDtype;
  device: string;
}

export interface ModelLoadOptions {
  /** cpu, cuda, cuda:<i> (default cpu). */
  device?: string;
  /** Default fp32. */
  dtype?: ModelDtype;
  /** js backend: load even a model it would need hours for (refused otherwise, with the reason). */
  force?: boolean;
}

/** Images as embed takes them: RGB uint8 (N,H,W,3), or normalised float32 (N,3,H,W) used as given. */
export type EmbedInput = Uint8Tensor | Float32Tensor;

/** A model held by a backend. One call runs at a time per handle; the Encoder queues and batches calls. */
export interface ModelHandle {
  readonly info: ModelInfo;
  /** (N,H,W,3) uint8 or (N,3,H,W) float32 -> (N,D) float32: the class token after the final norm. */
  embed(images: EmbedInput): Promise<Float32Tensor>;
  /** Writes config.json + model.safetensors in the folder's own layout (atomically). */
  exportTo(folder: string): Promise<void>;
  /** Frees the weights; the handle cannot be used afterwards. */
  dispose(): Promise<void>;
}

/** The model half of Backend. */
export interface ModelBackend {
  /** Resolves a folder/preset without reading weights (config.json, preprocessor_config.json, presets). */
  describeModel(source: ModelSource): Promise<ModelDescription>;
  /** Loads the weights (strict: missing, unexpected and mis-shaped keys fail together, before any work). */
  loadModel(source: ModelSource, options?: ModelLoadOptions): Promise<ModelHandle>;
  /** The same architecture with random weights from `seed` (benchmarks, demos): no weights are read. */
  createModel(source: ModelSource, options?: ModelLoadOptions & { seed?: number }): Promise<ModelHandle>;
}

// ---------------------------------------------------------------------------------------------------------------
// The Distiller on a backend (the engine's addon Distiller, or the js backend's twin in lib/backends/js/distill.ts)
// ---------------------------------------------------------------------------------------------------------------

/** The engine's DistillerConfig, camelCased (lib/distill builds it); `force` lets the js backend run large models. */
export interface BackendDistillerConfig {
  teacher: string;
  teacherPreset?: string;
  student: string;
  studentPreset?: string;
  /** cls | mean | cls+mean overrides a model's pooling; '' keeps it. */
  teacherPool?: string;
  studentPool?: string;
  device?: string;
  seed?: number;
  accumulationSteps?: number;
  teacherDtype?: 'auto' | 'float16' | 'bfloat16' | 'float32';
  autocast?: boolean;
  /**
   * FP8 (E4M3) matrix products in the teacher (native engine on a CUDA GPU of compute capability 8.9+; the js
   * backend refuses it). The teacher then runs in bfloat16; see native/engine/kernels/quant.h.
   */
  teacherFp8?: boolean;
  /** With teacherFp8: the kinds of the teacher's Linear layers in FP8 (qkv, proj, fc1, fc2; lib/ passes it resolved). */
  teacherFp8Layers?: string[];
  /** Test hook (g2l/distill.h teacher_fp8_emulate): the FP8 products emulated on any device. Native engine only. */
  teacherFp8Emulate?: boolean;
  /**
   * Which implementation each engine operation runs (native/engine/include/g2l/kernels.h; lib/distill/config.ts
   * kernelsSchema documents each; lib/ passes every key resolved from lib/defaults.ts KERNEL_DEFAULTS). They replace
   * the G2L_* environment switches of earlier versions. The js backend has one implementation of each and ignores them.
   */
  kernels?: Partial<KernelOptions>;
  /**
   * The student's training-only dropout and drop-path rates (0..1), replacing its config.json's; absent keys keep
   * the config's. timm students: dropPath (drop_path_rate, linear over the blocks), attnDrop (attn_drop_rate),
   * projDrop (proj_drop_rate), posDrop (pos_drop_rate), headDrop (drop_rate); transformers Dinov2 students:
   * dropPath (drop_path_rate, every layer), attnDrop (attention_probs_dropout_prob), hiddenDrop
   * (hidden_dropout_prob). patchDrop: only 0 (timm PatchDropout is not supported; 0 overrides the config's).
   * The teacher never drops anything; features() never either.
   */
  studentDrop?: StudentDrop;
  /** sync (data parallelism): 'global' BatchNorm statistics and log-sum over all ranks, 'local' per rank (DDP). */
  loss?: { alpha?: number; reduction?: string; bnEps?: number; teacherBn?: boolean; sync?: 'global' | 'local' };
  optimizer?: {
    lr?: number;
    finalLr?: number;
    weightDecay?: number;
    finalWeightDecay?: number;
    warmupSteps?: number;
    totalSteps?: number;
    beta1?: number;
    beta2?: number;
    eps?: number;
    clipGradNorm?: number;
  };
  augment?: AugmentConfig;
  force?: boolean;
  /** Data parallelism (native engine only; native/addon/dist.cpp): joins the process group before loading the models. */
  dist?: {
    rank: number;
    worldSize: number;
    localRank?: number;
    masterAddr?: string;
    masterPort?: number;
    backend?: string;
    timeoutMs?: number;
    bucketBytes?: number;
  };
}

/** Training-only rates of the student (BackendDistillerConfig.studentDrop). */
export interface StudentDrop {
  dropPath?: number;
  attnDrop?: number;
  projDrop?: number;
  posDrop?: number;
  headDrop?: number;
  hiddenDrop?: number;
  patchDrop?: number;
}

export interface BackendStepResult {
  step: number;
  loss: number;
  lr: number;
  weightDecay: number;
  gradNorm: number;
  deviceMemoryBytes: number;
  /** Whether any rank passed { stop: true } to this step: the same on every rank (one process: its own request). */
  stop?: boolean;
}

/** One run's state on a backend: both implement these calls with the same results (test/js-backend/distill.test.ts). */
export interface BackendDistiller {
  /** options.stop: this rank asks the run to stop after this step (result.stop is the agreement of all ranks). */
  step(tiles: Uint8Tensor, options?: { stop?: boolean }): Promise<BackendStepResult>;
  features(tiles: Uint8Tensor, which: 'student' | 'teacher'): Promise<Float32Tensor>;
  /** Writes the state into `folder` (state.safetensors: the same keys and format on both backends). */
  save(folder: string): Promise<void>;
  load(folder: string): Promise<void>;
  exportStudent(folder: string): Promise<void>;
  info(): {
    studentDim: number;
    teacherDim: number;
    studentParams: number;
    teacherParams: number;
    device: string;
    teacherModel: string;
    studentModel: string;
    teacherMean: number[];
    teacherStd: number[];
    studentMean: number[];
    studentStd: number[];
    step: number;
    /** The student's effective training-only rates (its config.json's, then studentDrop), the keys of its library. */
    studentDrop?: StudentDrop;
    /** The native engine's frozen-teacher preparation (absent on the js backend): LayerScale vectors folded of all. */
    teacherLayerScalesFolded?: number;
    teacherLayerScales?: number;
    /** FP8 teacher: Linear layers with FP8 weights of all, emulated (the teacherFp8Emulate test hook) or not, and the smallest
     *  cosine of FP8 against bf16 teacher features over the first teacher batch (null before it; absent without FP8). */
    teacherFp8?: boolean;
    teacherFp8Layers?: number;
    teacherLinearLayers?: number;
    teacherFp8Emulated?: boolean;
    teacherFp8MinCosine?: number | null;
    /** The native engine's fused kernels as this Distiller runs them (kernels.fusedSwiglu, kernels.fusedNorm; absent
     *  on the js backend). On, each still falls back to the unfused ops where its kernel does not apply
     *  (native/engine/kernels/fused.h). */
    fusedSwiglu?: boolean;
    fusedNorm?: boolean;
    /** kernels.packQkv (default on): a student with separate q/k/v weights trains with one packed q/k/v product. */
    packedQkv?: boolean;
    /** The native engine's attention (absent on the js backend): the kernels.sdpa preference
     *  ('auto', 'cudnn', 'flash', 'efficient', 'math') and the libtorch SDPA backend each model's last attention ran
     *  on ('flash_attention', 'cudnn_attention', 'efficient_attention', 'math'; null before its first forward). */
    sdpa?: string;
    teacherAttention?: string | null;
    studentAttention?: string | null;
  };
}
