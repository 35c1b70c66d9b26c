// G2L's defaults, in one place. Every other module (the run configuration, the Distiller, both backends, the
// augmentation) takes its defaults from here, and the native engine receives every value resolved; its own C++
// defaults (g2l/distill.h, g2l/augment.h, for C++ callers) are held equal to these by test/distill/defaults.test.ts.
// docs/method.md has the same table with the reasoning where the paper is silent.

/** AdamW and its schedules. */
export const OPTIMIZER_DEFAULTS = Object.freeze({
  /** Peak learning rate: the paper. */
  lr: 1e-4,
  /** The cosine anneals the learning rate to 0 over the planned steps: the paper ("cosine annealing"), to zero as torch's CosineAnnealingLR with eta_min 0. */
  finalLr: 0,
  /** Weight decay: the paper. */
  weightDecay: 0.05,
  /** The weight decay is annealed by a cosine too, to 0: the paper. */
  finalWeightDecay: 0,
  /** No warm-up: the paper names none. */
  warmupSteps: 0,
  /** AdamW's betas and eps: PyTorch's defaults (the paper names none). */
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  /** No gradient clipping: the paper names none. */
  clipGradNorm: 0,
});

/** The projector's BatchNorm and the log-sum loss (Miles & Mikolajczyk, AAAI 2024, which G2L adopts, and its code). */
export const LOSS_DEFAULTS = Object.freeze({
  /** The exponent of log sum |f_s - f_t|^alpha: 4, the paper. */
  alpha: 4,
  /** One log over the sum of the whole batch: the canonical loss code. */
  reduction: 'batch' as 'batch' | 'sample',
  /** BatchNorm1d without affine, eps 1e-4: the canonical loss code. */
  bnEps: 1e-4,
  /** The teacher's features are batch-normalised too: the canonical loss code. */
  teacherBn: true,
  /** BatchNorm statistics over all ranks (N ranks x B = 1 process x N.B); 'local' = per rank as DDP: docs/method.md. */
  sync: 'global' as 'global' | 'local',
});

/**
 * The augmentation: crop 224 of 256, flips p 0.5, colour jitter p 0.5 (0.15, 0.15, 0.1, 0.05) in random order,
 * Gaussian blur p 0.1 with a 9x9 kernel: the paper; blur sigma U[0.1, 2]: torchvision GaussianBlur's default range
 * (the paper gives the kernel only); jitter semantics: torchvision ColorJitter.
 */
export const AUGMENT_DEFAULTS = Object.freeze({
  enabled: true,
  crop: 224,
  pHflip: 0.5,
  pVflip: 0.5,
  pJitter: 0.5,
  brightness: 0.15,
  contrast: 0.15,
  saturation: 0.1,
  hue: 0.05,
  pBlur: 0.1,
  blurKernel: 9,
  blurSigmaMin: 0.1,
  blurSigmaMax: 2.0,
});

/** "The current loss exceeds the running mean of the last 100 iterations more than 10 times": the paper; the rule's reading, docs/method.md. */
export const EARLY_STOPPING_DEFAULTS = Object.freeze({
  enabled: true,
  rule: 'consecutive' as 'consecutive' | 'total' | 'ratio',
  window: 100,
  patience: 10,
  /** ratio rule: a loss above factor x |running mean| (a divergence guard; not in the paper). */
  factor: 10,
  minSteps: 0,
});

/** The run's shape. */
export const RUN_SHAPE_DEFAULTS = Object.freeze({
  /** 32 tiles a step: the paper (on 3 GPUs). */
  batchSize: 32,
  /** Tiles of 256 px at 0.5 um/px: the paper. */
  tileSizePx: 256,
  /** Sampling uniform over tiles: the paper trains on its tiles, not on slides. */
  tileSampling: 'tiles' as 'tiles' | 'slides',
  accumulationSteps: 1,
  checkpointEvery: 500,
});

/**
 * Which implementation each operation of the native engine runs (g2l/kernels.h KernelOptions, whose C++ defaults
 * test/distill/defaults.test.ts holds equal to these). The same mathematics each way, differing by rounding, so a run
 * records them in config.json and a resume uses its own. The js backend has one implementation of each and ignores them.
 */
export const KERNEL_DEFAULTS = Object.freeze({
  /** A separate-q/k/v student (Hibou-L) trains with one packed q/k/v product: same dot products, fewer casts (docs/gpu-benchmarks.md). */
  packQkv: true,
  /** The fused LayerNorm / LayerScale kernels (cuda/norm.cu): off, their gain not yet measured on a GPU (docs/gpu-benchmarks.md). */
  fusedNorm: false,
  /** The fused SwiGLU kernel (cuda/swiglu.cu): on. */
  fusedSwiglu: true,
  /** libtorch's fused AdamW on CUDA, the foreach path (torch.optim.AdamW's default, what the fixtures hold) on the CPU. */
  fusedAdamw: 'auto' as 'auto' | 'on' | 'off',
  /** libtorch's own SDPA backend order. */
  sdpa: 'auto' as 'auto' | 'cudnn' | 'flash' | 'efficient' | 'math',
  /** FP8 teacher: activation rows quantised by the fused CUDA kernel where it applies ('aten': at:: ops). */
  fp8Quant: 'cuda' as 'cuda' | 'aten',
  /** FP8 teacher: _scaled_mm without fast accumulation. */
  fp8FastAccum: false,
});

/** The teacher's Linear layer kinds in FP8 with --teacher-fp8: qkv + fc1 kept the features above the 0.999 cosine gate on the H200; proj and fc2 as well fell to 0.9988 (docs/gpu-benchmarks.md). */
export const TEACHER_FP8_LAYERS_DEFAULT: readonly ('qkv' | 'proj' | 'fc1' | 'fc2')[] = Object.freeze(['qkv', 'fc1']);

/** Gradient all-reduce bucket size of data parallelism: 25 MB, DDP's default (bucket_cap_mb). */
export const DIST_BUCKET_BYTES_DEFAULT = 25 * 1024 * 1024;
