// g2l-native library API. Every heavy call is async and runs off the event loop.
export { VERSION } from './version.js';
export { UserError, ExitCode } from './errors.js';
export {
  getBackend,
  chooseBackend,
  allowBackendFallback,
  EngineLoadError,
  JsBackend,
  NativeBackend,
} from './backends/index.js';
export type { Backend, BackendInfo, BackendName, Tensor, Float32Tensor, Uint8Tensor } from './backends/index.js';
export { createBackendDistiller, type BackendDistiller, type BackendDistillerConfig } from './backends/index.js';
export { installationInfo } from './commands/info.js';
export { Encoder, type EncoderOptions } from './models/encoder.js';
export { openSlide, type Slide, type SlideProperties } from './slides/reader.js';
export { runTiling, type TileRunOptions, type TileRunResult } from './slides/tile-run.js';
export { makeSyntheticSlides } from './slides/synthetic.js';
export { TileSampler, type TileRef, type SamplerOptions, type SamplerState } from './data/sampler.js';
export { TileBatchLoader, type TileBatch, type LoaderOptions } from './data/batches.js';
export { DEFAULT_AUGMENT_CONFIG, NORMALIZATIONS, AugmentParam } from './backends/types.js';
export type { AugmentConfig, AugmentedBatch, Normalization } from './backends/types.js';
export {
  Distiller,
  DISTILL_DEFAULTS,
  type DistillerConfig,
  type StepResult,
  type DistillerInfo,
} from './distill/distiller.js';
export { logSumLoss, type LogSumLossOptions, type LogSumLossResult } from './distill/loss.js';
export {
  runDistill,
  readLog,
  listCheckpoints,
  type DistillRunOptions,
  type DistillRunResult,
  type LogLine,
} from './distill/run.js';
export { RUN_DEFAULTS, readConfigFile, resolveConfig, type RunConfig, type RunConfigInput } from './distill/config.js';
export { runDemo, type DemoOptions, type DemoReport } from './distill/demo.js';
