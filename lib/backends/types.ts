// The one interface through which lib/ reaches compute: the native engine (lib/backends/native.ts) and the
// pure-JS backend (lib/backends/js/) implement it, so every command and the library API run on either.
// Each area of the engine adds its methods here as it lands (models, distillation, augmentation).

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

export interface Backend {
  readonly name: BackendName;
  info(): Promise<BackendInfo>;
  /**
   * uint8 RGB images (N,H,W,3) -> float32 (N,3,H,W), (x/255 - mean[c]) / std[c]: the model input of an image.
   */
  normalizeImages(images: Uint8Tensor, mean: readonly number[], std: readonly number[], device?: string): Promise<Float32Tensor>;
}
