// The engine's test and measurement entries (native/engine/include/g2l/testing.h), exported by the separate module
// g2l_engine_testing.node that the repository's set-up builds beside the production addon (CMake G2L_TESTING;
// native/addon/testing.cpp). The production addon exports none of them; lib/ never loads this module.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { enginePath, loadEngineAddon } from '../../lib/backends/native.js';
import type { Float32Tensor, StudentDrop } from '../../lib/backends/types.js';
import { resolveVitSpec, nativeModelSpec, studentRegularization, type NativeModelSpec } from '../../lib/models/spec.js';

type T2 = Float32Tensor;
export interface AllReduceTiming {
  bytes: number;
  medianMs: number;
  busGbps: number;
  backend: string;
  worldSize: number;
  device: string;
}

export interface EngineTestingAddon {
  /** The engine's own C++ defaults, for the test that holds them equal to lib/defaults.ts. */
  methodDefaults(): {
    optimizer: Record<string, number>;
    loss: { alpha: number; reduction: string; bnEps: number; teacherBn: boolean; sync: string };
    augment: Record<string, number | boolean>;
    /** g2l::KernelOptions and DistillerConfig::teacher_fp8_layers. */
    kernels: Record<string, number | boolean | string>;
    teacherFp8Layers: string[];
  };
  /** A training-mode forward of the model `spec` loads (CPU, float32): dropout and drop path at the rates `drop`. */
  embedTrain(spec: NativeModelSpec, images: T2, seed: number, drop: Record<string, number>): Promise<T2>;
  runOptimizer(
    names: string[],
    params: T2[],
    gradsPerStep: T2[][],
    config: object,
  ): Promise<{ params: T2[][]; lr: number[]; weightDecay: number[]; gradNorm: number[] }>;
  fp8QuantizeRows(
    x: T2,
    o: { device?: string; mode?: string },
  ): Promise<{ codes: { data: Uint8Array; shape: number[] }; scales: T2; dequantized: T2 }>;
  fp8Linear(x: T2, w: T2, b: T2, o: { device?: string; emulate?: boolean; fastAccum?: boolean }): Promise<T2>;
  fusedNormCheck(o: {
    device?: string;
    rows?: number;
    d?: number;
    dtype?: string;
    seed?: number;
  }): Promise<Record<string, number>>;
  /** Multiply-adds per second of one f32 product [m,k]·[n,k]ᵀ on `device`, best of `reps`. */
  evalMatmulRate(m: number, n: number, k: number, device: string, reps: number): Promise<number>;
  distAllReduceTiming(dist: Record<string, unknown>, bytes: number, repeats: number): Promise<AllReduceTiming>;
}

let cached: EngineTestingAddon | undefined;

/** The test module beside the engine lib/ loads (the production addon is loaded first: it sets up OpenMP). */
export function loadEngineTesting(): EngineTestingAddon {
  if (cached) return cached;
  loadEngineAddon();
  const file = path.join(path.dirname(enginePath()), 'g2l_engine_testing.node');
  if (!existsSync(file)) {
    throw new Error(`${file} does not exist: the tests' module is built by the repository's set-up (npm run setup)`);
  }
  cached = createRequire(import.meta.url)(file) as EngineTestingAddon;
  return cached;
}

/** Model::embed in training mode for the model of `folder`: its config.json's rates replaced by `drop`. */
export async function embedTrain(folder: string, images: T2, seed: number, drop: StudentDrop = {}): Promise<T2> {
  const spec = resolveVitSpec(folder);
  return loadEngineTesting().embedTrain(nativeModelSpec(spec), images, seed, { ...studentRegularization(spec, drop) });
}
