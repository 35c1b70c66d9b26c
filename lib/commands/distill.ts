// `g2l-native distill --teacher <folder> --student <folder> --slides <manifest dir | synthetic[:N]> --out <run>
//  [--config <yaml|json>] [--steps N | --epochs E] [--batch-size B] [--device D] [--resume [<run>]] [--force]
//  [--seed S] [--until N]`: distils the teacher into the student (lib/distill/run.ts has the run folder's layout).
// Exit codes: 0 done (or paused by --until), 2 bad input, refused resume or no intact checkpoint, 1 NaN/Inf loss;
// stopped by a signal after writing a checkpoint: 130 SIGINT, 143 SIGTERM, 129 SIGHUP (a second signal quits at once).
import type { BackendName } from '../backends/index.js';
import type { CommandModule } from 'yargs';
import { STOP_SIGNALS, UserError, type StopSignal } from '../errors.js';
import { mergeInputs, readConfigFile, type RunConfigInput } from '../distill/config.js';
import { runDistill } from '../distill/run.js';
import { distFromEnv } from '../parallel/env.js';
import { launchIfRequested, nprocOption } from '../parallel/cli.js';

interface DistillArgs {
  teacher?: string;
  'teacher-preset'?: string;
  student?: string;
  'student-preset'?: string;
  'teacher-pool'?: 'cls' | 'mean' | 'cls+mean';
  'student-pool'?: 'cls' | 'mean' | 'cls+mean';
  slides?: string;
  out?: string;
  config?: string;
  steps?: number;
  epochs?: number;
  'batch-size'?: number;
  device?: string;
  seed?: number;
  lr?: number;
  'checkpoint-every'?: number;
  resume?: string;
  force: boolean;
  backend?: BackendName;
  until?: number;
  progress: boolean;
  nproc?: number;
  'teacher-fp8'?: boolean;
  'early-stopping'?: string;
  'bn-sync'?: 'global' | 'local';
}

/** The options the user set explicitly, as a partial run configuration (flags over the config file). */
function flagsInput(a: DistillArgs): RunConfigInput {
  const input: RunConfigInput = {
    teacher: a.teacher,
    teacherPreset: a['teacher-preset'],
    student: a.student,
    studentPreset: a['student-preset'],
    teacherPool: a['teacher-pool'],
    studentPool: a['student-pool'],
    slides: a.slides,
    steps: a.steps,
    batchSize: a['batch-size'],
    device: a.device,
    seed: a.seed,
    checkpointEvery: a['checkpoint-every'],
    teacherFp8: a['teacher-fp8'],
  };
  if (a.lr !== undefined) input.optimizer = { lr: a.lr };
  if (a['bn-sync'] !== undefined) input.loss = { sync: a['bn-sync'] };
  const es = a['early-stopping'];
  if (es !== undefined)
    input.earlyStopping =
      es === 'off' ? { enabled: false } : { enabled: true, rule: es as 'consecutive' | 'total' | 'ratio' };
  return Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as RunConfigInput;
}

export const distillCommand: CommandModule<object, DistillArgs> = {
  command: 'distill',
  describe: 'Distil a teacher model into a student on tiles of the target cancer (G2L)',
  builder: (y) =>
    y
      .option('teacher', { type: 'string', describe: 'Teacher model folder (config.json + model.safetensors)' })
      .option('teacher-preset', {
        type: 'string',
        describe: 'Teacher preset (h-optimus-0, uni2-h, ...) when its config.json is incomplete',
      })
      .option('student', { type: 'string', describe: 'Student model folder; exported in the same layout' })
      .option('student-preset', { type: 'string', describe: 'Student preset (hibou-l, hibou-b, ...)' })
      .option('teacher-pool', {
        type: 'string',
        choices: ['cls', 'mean', 'cls+mean'],
        describe:
          'Teacher embedding pooling, overriding its own (config or preset): class token, mean of the patch tokens, or both (2*D)',
      })
      .option('student-pool', {
        type: 'string',
        choices: ['cls', 'mean', 'cls+mean'],
        describe: 'Student embedding pooling (the projector is sized from it; the exported student records it)',
      })
      .option('slides', { type: 'string', describe: 'Tile manifest folder from `g2l-native tile`, or synthetic[:N]' })
      .option('out', { type: 'string', describe: 'Run folder: config.json, log.jsonl, checkpoints/, student/' })
      .option('config', { type: 'string', describe: 'YAML or JSON file with any run settings (flags win)' })
      .option('steps', { type: 'number', describe: 'Planned steps (the cosine schedules run over them)' })
      .option('epochs', { type: 'number', describe: 'Planned length in passes over the tiles, instead of --steps' })
      .option('batch-size', { type: 'number', describe: 'Tiles per step (default 32)' })
      .option('device', { type: 'string', describe: 'cpu, cuda or cuda:<index> (default cpu)' })
      .option('seed', { type: 'number', describe: 'Seed of the tile order, augmentations and projector (default 0)' })
      .option('lr', { type: 'number', describe: 'Peak learning rate (default 1e-4)' })
      .option('checkpoint-every', { type: 'number', describe: 'Steps between checkpoints (default 500)' })
      .option('teacher-fp8', {
        type: 'boolean',
        describe:
          'FP8 (E4M3) teacher matrix products: faster on GPUs of compute capability 8.9+ (H100/H200); the teacher runs in bf16, refused if its features drift (cosine < 0.999)',
      })
      .option('bn-sync', {
        type: 'string',
        choices: ['global', 'local'],
        describe:
          'With several ranks: BatchNorm statistics and log-sum over the global batch (global, default: N ranks x B = 1 x N.B) or per rank with averaged gradients (local, as DDP)',
      })
      .option('early-stopping', {
        type: 'string',
        choices: ['consecutive', 'total', 'ratio', 'off'],
        describe:
          'Early-stopping rule (default consecutive: patience steps in a row above the running mean; total: the literal count; ratio: a divergence guard); config earlyStopping.* sets window, patience, factor, minSteps',
      })
      .option('resume', {
        type: 'string',
        describe: 'Continue the run in --out (or in the folder given) from its latest checkpoint',
      })
      .option('force', {
        type: 'boolean',
        default: false,
        describe:
          'Resume even with options that change the saved configuration; on the js backend, run large models anyway',
      })
      .option('until', {
        type: 'number',
        describe: 'Pause after this many steps (checkpoint, no export); --resume continues',
      })
      .option('progress', { type: 'boolean', default: true, describe: 'Show a progress bar (on a terminal)' })
      .option('nproc', nprocOption) as never,
  handler: async (argv) => {
    const resume = argv.resume !== undefined;
    const out = (resume && argv.resume) || argv.out;
    if (!out) throw new UserError('distill: no run folder: pass --out <run> (or --resume <run> to continue one)');
    if (resume && argv.resume && argv.out && argv.out !== argv.resume) {
      throw new UserError(
        `distill: --resume ${argv.resume} and --out ${argv.out} name different runs: give one of them`,
      );
    }
    // Data parallelism (lib/parallel): --nproc N runs N workers of this command; a worker (or a torchrun/SLURM process)
    // finds its rank in the environment.
    const launched = await launchIfRequested(
      argv.nproc,
      out,
      `g2l-native distill --resume --out ${out} --nproc ${argv.nproc}`,
    );
    if (launched !== null) {
      process.exitCode = launched;
      return;
    }
    const dist = distFromEnv();
    const input = mergeInputs(argv.config ? readConfigFile(argv.config) : {}, flagsInput(argv));
    // SIGINT (Ctrl-C), SIGTERM (kill, a scheduler's time limit) and SIGHUP (the terminal closed) all finish the step
    // in flight, write a checkpoint and exit 128 + the signal's number; a second signal quits at once.
    const controller = new AbortController();
    const handlers = (Object.keys(STOP_SIGNALS) as StopSignal[]).map((name) => {
      const handler = () => {
        if (controller.signal.aborted) process.exit(STOP_SIGNALS[name]); // the second one does not wait for the checkpoint
        try {
          process.stderr.write(
            `\ng2l-native: ${name}: finishing the current step and writing a checkpoint (a second signal quits now)\n`,
          );
        } catch {
          // stderr may be gone with the terminal (SIGHUP)
        }
        controller.abort(name);
      };
      process.on(name, handler);
      return [name, handler] as const;
    });
    try {
      const r = await runDistill({
        out,
        input,
        epochs: argv.epochs,
        resume,
        force: argv.force,
        backend: argv.backend,
        until: argv.until,
        progress: argv.progress && process.stderr.isTTY === true,
        signal: controller.signal,
        dist,
      });
      if (dist && dist.rank !== 0) return; // rank 0 reports
      for (const s of r.skippedSlides)
        process.stderr.write(`g2l-native: warning: slide ${s.slide} skipped: ${s.error}\n`);
      const what =
        r.stoppedBy === 'until'
          ? `paused after ${r.stepsDone} of ${r.config.steps} steps; continue with --resume --out ${r.runDir}`
          : `${r.stepsDone} steps${r.stopReason ? ` (early stopping: ${r.stopReason})` : ''}; student: ${r.studentDir}`;
      process.stdout.write(`distilled ${what}\n  run: ${r.runDir}\n`);
    } finally {
      for (const [name, handler] of handlers) process.off(name, handler);
    }
  },
};
