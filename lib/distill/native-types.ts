// The shape of the addon's Distiller object (native/addon/distill.cpp), as lib/distill/distiller.ts uses it.
import type { Float32Tensor, Uint8Tensor } from '../backends/types.js';

/** The engine's configuration keys (g2l::DistillerConfig), camelCased; every field has the engine's default. */
export interface NativeDistillerConfig {
  teacher: string;
  teacherPreset?: string;
  student: string;
  studentPreset?: string;
  device?: string;
  seed?: number;
  accumulationSteps?: number;
  teacherDtype?: 'auto' | 'float16' | 'bfloat16' | 'float32';
  autocast?: boolean;
  loss?: { alpha?: number; reduction?: string; bnEps?: number; teacherBn?: boolean };
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
  augment?: Record<string, number | boolean>;
  /** Data parallelism (native/addon/dist.cpp): joins the process group before loading the models. */
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

export interface NativeStepResult {
  step: number;
  loss: number;
  lr: number;
  weightDecay: number;
  gradNorm: number;
  deviceMemoryBytes: number;
}

export interface NativeDistillerInfo {
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
  /** Steps taken so far. */
  step: number;
}

export interface NativeDistiller {
  step(tiles: Uint8Tensor): Promise<NativeStepResult>;
  save(folder: string): Promise<void>;
  load(folder: string): Promise<void>;
  exportStudent(folder: string): Promise<void>;
  features(tiles: Uint8Tensor, which: 'student' | 'teacher'): Promise<Float32Tensor>;
  info(): NativeDistillerInfo;
}

export interface NativeDistillerConstructor {
  /** Loads both models (off the JS thread) and resolves to a ready Distiller. */
  create(config: NativeDistillerConfig): Promise<NativeDistiller>;
}
