// The shape of the addon's Distiller object (native/addon/distill.cpp), as lib/distill/distiller.ts uses it. The
// configuration and results are the Backend interface's (lib/backends/types.ts), which the js backend shares.
import type { BackendDistiller, BackendDistillerConfig, BackendStepResult } from '../backends/types.js';

/** The engine's configuration keys (g2l::DistillerConfig), camelCased; every field has the engine's default. */
export type NativeDistillerConfig = BackendDistillerConfig;
export type NativeStepResult = BackendStepResult;
export type NativeDistillerInfo = ReturnType<BackendDistiller['info']>;
export type NativeDistiller = BackendDistiller;

export interface NativeDistillerConstructor {
  /** Loads both models (off the JS thread) and resolves to a ready Distiller. */
  create(config: NativeDistillerConfig): Promise<NativeDistiller>;
}
