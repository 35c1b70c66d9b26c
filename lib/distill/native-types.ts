// The shape of the addon's Distiller object (native/addon/distill.cpp), as lib/distill/distiller.ts uses it. The
// configuration and results are the Backend interface's (lib/backends/types.ts), which the js backend shares; the
// engine receives the two models resolved (lib/models/spec.ts) instead of folder, preset and pooling.
import type { BackendDistiller, BackendDistillerConfig, BackendStepResult } from '../backends/types.js';
import { nativeModelSpec, resolveVitSpec, studentRegularization, type NativeModelSpec } from '../models/spec.js';

type ModelKeys =
  'teacher' | 'teacherPreset' | 'teacherPool' | 'student' | 'studentPreset' | 'studentPool' | 'studentDrop';

/** The engine's configuration keys (g2l::DistillerConfig), camelCased: the models as resolved specs. */
export type NativeDistillerConfig = Omit<BackendDistillerConfig, ModelKeys | 'force' | 'augment'> & {
  teacher: NativeModelSpec;
  /** Its drop: the student's training-only rates (config.json's, then studentDrop). */
  student: NativeModelSpec;
  augment?: Record<string, number | boolean>;
};
export type NativeStepResult = BackendStepResult;
export type NativeDistillerInfo = ReturnType<BackendDistiller['info']>;
export type NativeDistiller = BackendDistiller;

export interface NativeDistillerConstructor {
  /** Loads both models (off the JS thread) and resolves to a ready Distiller. */
  create(config: NativeDistillerConfig): Promise<NativeDistiller>;
}

/** A backend configuration as the engine takes it: teacher and student resolved, the student's rates applied. */
export function toEngineConfig(config: BackendDistillerConfig): NativeDistillerConfig {
  const {
    teacher,
    teacherPreset,
    teacherPool,
    student,
    studentPreset,
    studentPool,
    studentDrop,
    force: _force,
    augment,
    ...rest
  } = config;
  const teacherSpec = resolveVitSpec(teacher, teacherPreset ?? '', teacherPool ?? '');
  const studentSpec = resolveVitSpec(student, studentPreset ?? '', studentPool ?? '');
  studentSpec.drop = studentRegularization(studentSpec, studentDrop ?? {});
  return {
    ...rest,
    teacher: nativeModelSpec(teacherSpec),
    student: nativeModelSpec(studentSpec),
    ...(augment ? { augment: { ...augment } as Record<string, number | boolean> } : {}),
  };
}
