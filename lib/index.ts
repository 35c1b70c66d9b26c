// g2l-native library API. Every heavy call is async and runs off the event loop.
export { VERSION } from './version.js';
export { UserError, ExitCode } from './errors.js';
export { getBackend, chooseBackend, EngineLoadError, JsBackend, NativeBackend } from './backends/index.js';
export type { Backend, BackendInfo, BackendName, Tensor, Float32Tensor, Uint8Tensor } from './backends/index.js';
export { installationInfo } from './commands/info.js';
export { Encoder, type EncoderOptions } from './models/encoder.js';
