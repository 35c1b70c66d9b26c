// A distillation run in a folder, as `g2l-native distill` and the demo drive it:
//
// <run>/config.json              the resolved configuration (defaults < config file < flags)
// <run>/log.jsonl                one line a step: step (1-based), loss, lr, wd, gradNorm, imgPerSec, memoryBytes
// <run>/checkpoints/step-N/      after N steps: state.safetensors (student, projector, AdamW moments, step), distiller.json
//                                (sampler position, early-stopping window) and manifest.json (each file's size and
//                                sha256, written last), in a temporary folder renamed into place. A resume takes the
//                                newest checkpoint that matches its manifest (lib/distill/checkpoint.ts)
// <run>/student/                 the student in its own layout (config.json + model.safetensors), at the end
//
// Resume continues exactly: batches, augmentations and the projector are functions of (seed, step), and the
// checkpoint holds everything else, so N steps straight equal N/2 + resume + N/2.
import type { BackendName } from '../backends/index.js';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { ExitCode, UserError, stopExitCode } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import {
  configDifferences,
  mergeInputs,
  resolveConfig,
  runConfigSchema,
  upgradeSavedConfig,
  modelPath,
  type RunConfig,
  type RunConfigInput,
} from './config.js';
import {
  META_FILE,
  checkpointFolders,
  newestIntactCheckpoint,
  parseMeta,
  removeTempCheckpoints,
  type ResumePoint,
} from './checkpoint.js';
import { Distiller, type DistillerConfig, type StepResult } from './distiller.js';
import { EarlyStopping, type EarlyStopState } from './early-stop.js';
import { openTileSource, type TileSource } from './tiles.js';
import { deviceForRank, type DistSettings } from '../parallel/env.js';

export interface DistillRunOptions {
  /** The run folder. */
  out: string;
  /** What the config file and the flags set (unset keys take the defaults, or the saved run's on resume). */
  input: RunConfigInput;
  /** Planned length in epochs of the tile source instead of input.steps. */
  epochs?: number;
  /** Continue the run in `out` from its latest checkpoint. */
  resume?: boolean;
  /** Resume even when `input` changes the saved configuration; on the js backend, also run large models. */
  force?: boolean;
  /** Compute backend (default: native, falling back to js with a warning). */
  backend?: BackendName;
  /** Pause (with a checkpoint, without exporting) once this many steps are done. */
  until?: number;
  /** Draw a progress bar on stderr. */
  progress?: boolean;
  /**
   * Aborted (SIGINT, SIGTERM, SIGHUP): the run checkpoints after the step in flight and throws a UserError whose exit
   * code is 128 + the signal's number when the reason is the signal's name ('SIGTERM'), else 130.
   */
  signal?: AbortSignal;
  /** Called after every step, with the line written to log.jsonl. */
  onStep?: (line: LogLine) => void;
  /** Messages for the person running it (default: stderr). */
  log?: (message: string) => void;
  /**
   * Data parallelism (lib/parallel): this process is one rank of a world. Every rank steps on its share of each global
   * batch (batchSize tiles per rank); rank 0 alone writes config.json, log.jsonl, checkpoints and the export.
   */
  dist?: DistSettings | null;
  /** Called with the ready Distiller before the first step (after a resume's load), and after the export. */
  onReady?: (distiller: Distiller) => Promise<void>;
  /** Test hooks handed to the Distiller (DistillerConfig.testing); not part of the run's configuration. */
  testing?: DistillerConfig['testing'];
  onDone?: (distiller: Distiller) => Promise<void>;
}

export interface LogLine {
  step: number;
  loss: number;
  lr: number;
  wd: number;
  gradNorm: number;
  imgPerSec: number;
  memoryBytes: number;
  /** With --teacher-fp8, on the first step of a process: the acceptance check's worst cosine against bf16. */
  teacherFp8MinCosine?: number;
  /** On the step after which early stopping ended the run: the rule and why (EarlyStopping.update's reason). */
  earlyStop?: string;
}

export type StopReason = 'completed' | 'early-stopping' | 'until';

export interface DistillRunResult {
  runDir: string;
  config: RunConfig;
  stepsDone: number;
  stoppedBy: StopReason;
  /** With stoppedBy 'early-stopping': the rule and why. */
  stopReason?: string;
  lastCheckpoint: string | null;
  /** The exported student (null when paused by `until`). */
  studentDir: string | null;
  skippedSlides: { slide: string; error: string }[];
}

const CONFIG_FILE = 'config.json';
const LOG_FILE = 'log.jsonl';
const KEEP_CHECKPOINTS = 3;

interface CheckpointExtra {
  earlyStop: EarlyStopState;
  sampler: { step: number; tiles: number };
  lastLoss: number | null;
  /** The run's configuration when the checkpoint was written: config.json is checked against it on resume. */
  config?: RunConfig;
}

export function checkpointDir(runDir: string, steps: number): string {
  return path.join(runDir, 'checkpoints', `step-${steps}`);
}

/** The complete checkpoints of a run, oldest first, as [steps, folder]. */
export async function listCheckpoints(runDir: string): Promise<[number, string][]> {
  const dir = path.join(runDir, 'checkpoints');
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  return names
    .map((n) => /^step-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null && existsSync(path.join(dir, m[0], 'distiller.json')))
    .map((m): [number, string] => [Number(m[1]), path.join(dir, m[0])])
    .sort((a, b) => a[0] - b[0]);
}

function resolvePaths(input: RunConfigInput): RunConfigInput {
  const out = { ...input };
  for (const key of ['teacher', 'student'] as const) if (out[key]) out[key] = modelPath(out[key]!);
  if (out.slides && !out.slides.startsWith('synthetic')) out.slides = path.resolve(out.slides);
  return out;
}

/** config.json of a run, or what is wrong with it. */
function readConfigJson(file: string): RunConfig | string {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code ? `cannot be read (${code})` : 'is damaged (not valid JSON)';
  }
  const parsed = runConfigSchema.safeParse(upgradeSavedConfig(value));
  return parsed.success ? parsed.data : 'is not a g2l-native run configuration';
}

/**
 * The configuration a run resumes with: config.json, checked against the copy in the checkpoint it resumes from (a
 * difference is refused unless `force`); when config.json is missing or damaged, that copy.
 */
async function readSavedConfig(
  runDir: string,
  point: ResumePoint | null,
  force: boolean,
  say: (m: string) => void,
): Promise<RunConfig> {
  const file = path.join(runDir, CONFIG_FILE);
  const own = existsSync(file) ? readConfigJson(file) : null;
  let copy: RunConfig | undefined;
  if (point) {
    const meta = parseMeta(await fs.readFile(path.join(point.dir, META_FILE), 'utf8'), path.join(point.dir, META_FILE));
    const parsed = runConfigSchema.safeParse(upgradeSavedConfig((meta.extra as Partial<CheckpointExtra>).config));
    if (parsed.success) copy = parsed.data;
  }
  const where = point ? path.relative(runDir, point.dir) : '';
  if (typeof own === 'object' && own !== null) {
    const diffs = copy ? configDifferences(copy, own as RunConfigInput) : [];
    if (diffs.length && !force) {
      throw new UserError(
        `${file} differs from the configuration ${where} was written with (${diffs.join('; ')}): it was edited or damaged. ` +
          'Restore it, or pass --force to resume with it as it is',
      );
    }
    return own;
  }
  if (copy) {
    say(`g2l-native: warning: ${file} ${own ?? 'is missing'}: using the configuration saved in ${where}`);
    return copy;
  }
  if (own === null)
    throw new UserError(`nothing to resume in ${runDir}: it has no ${CONFIG_FILE}; start the run without --resume`);
  throw new UserError(`${file} ${own}: start a new run in another --out folder`);
}

/** The last step in log.jsonl (0 when none); a line cut short by a kill is ignored. */
async function lastLoggedStep(file: string): Promise<number> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  let last = 0;
  for (const l of text.split('\n')) {
    try {
      last = Math.max(last, Number((JSON.parse(l) as LogLine).step) || 0);
    } catch {
      // not a whole line
    }
  }
  return last;
}

/** Keeps the log consistent with the checkpoint a run resumes from: drops lines of steps after it. */
async function truncateLog(file: string, steps: number): Promise<number> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  const lines = text.split('\n');
  let damaged = 0;
  const kept = lines.filter((l, i) => {
    if (l.trim() === '') return false;
    try {
      const { step } = JSON.parse(l) as LogLine;
      return Number.isSafeInteger(step) && step <= steps;
    } catch {
      if (i < lines.length - 1) damaged += 1; // not the last line, which a kill may have cut short
      return false;
    }
  });
  await writeFileAtomic(file, kept.length ? `${kept.join('\n')}\n` : '');
  return damaged;
}

/**
 * A distillation run: its configuration (new, or the saved one on resume), the tile source and the Distiller, the
 * state a resume restores, the steps, and the export.
 */
export async function runDistill(options: DistillRunOptions): Promise<DistillRunResult> {
  const runDir = path.resolve(options.out);
  const say = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const ranks = rankRoles(options.dist ?? null);
  // The checkpoint to resume from, checked against its manifest before the models load (a bad one fails fast).
  const resumePoint: ResumePoint | null = options.resume ? await newestIntactCheckpoint(runDir) : null;
  const config = options.resume
    ? await resumedConfig(runDir, resumePoint, options, say)
    : await newRunConfig(runDir, options);
  if (ranks.primary) await writeRunConfig(runDir, config);
  const source = await openTileSource(config.slides, {
    seed: config.seed,
    tileSizePx: config.tileSizePx,
    balance: config.tileSampling,
  });
  const run = new RunState(runDir, config, source, await createRunDistiller(config, options), ranks, say);
  run.reportStudentDrop();
  if (options.resume) await run.restore(resumePoint);
  await run.alignLog();
  await options.onReady?.(run.distiller);
  try {
    const ended = await trainSteps(run, options);
    return await finishRun(run, ended, options);
  } finally {
    run.bar?.stop();
    await source.close();
  }
}

interface RankRoles {
  dist: DistSettings | null;
  /** The one rank that writes (config.json, log.jsonl, checkpoints, export). */
  primary: boolean;
  world: number;
  shard: { rank: number; worldSize: number } | null;
}

function rankRoles(dist: DistSettings | null): RankRoles {
  return {
    dist,
    primary: !dist || dist.rank === 0,
    world: dist?.worldSize ?? 1,
    shard: dist ? { rank: dist.rank, worldSize: dist.worldSize } : null,
  };
}

/** A new run's configuration: refused where `out` already holds a run; --epochs turned into steps of the tile source. */
async function newRunConfig(runDir: string, options: DistillRunOptions): Promise<RunConfig> {
  const input = resolvePaths(options.input);
  if ((await checkpointFolders(runDir)).length > 0 || existsSync(path.join(runDir, 'student'))) {
    throw new UserError(`${runDir} already holds a run: continue it with --resume, or choose another --out folder`);
  }
  if (options.epochs === undefined) return resolveConfig(input);
  if (input.steps !== undefined) throw new UserError('distill: give --steps or --epochs, not both');
  const probe = resolveConfig({ ...input, steps: 1 });
  const source = await openTileSource(probe.slides, {
    seed: probe.seed,
    tileSizePx: probe.tileSizePx,
    balance: probe.tileSampling,
  });
  const perEpoch = source.stepsPerEpoch(probe.batchSize, options.dist?.worldSize ?? 1);
  await source.close();
  return resolveConfig({ ...input, steps: Math.max(1, Math.ceil(options.epochs * perEpoch)) });
}

/** A resumed run's configuration: the saved one, with what the flags change only under --force. */
async function resumedConfig(
  runDir: string,
  point: ResumePoint | null,
  options: DistillRunOptions,
  say: (m: string) => void,
): Promise<RunConfig> {
  const input = resolvePaths(options.input);
  const saved = await readSavedConfig(runDir, point, options.force === true, say);
  const diffs = configDifferences(saved, input);
  if (options.epochs !== undefined) diffs.push(`--epochs ${options.epochs} (the saved run plans ${saved.steps} steps)`);
  if (diffs.length && !options.force) {
    throw new UserError(
      `the resumed run's configuration differs from ${path.join(runDir, CONFIG_FILE)}: ${diffs.join('; ')}. ` +
        'Drop those options to resume as it was, or pass --force to resume with them',
    );
  }
  if (!diffs.length) return saved;
  say(`g2l-native: resuming with changed configuration (--force): ${diffs.join('; ')}`);
  return resolveConfig(mergeInputs(saved as RunConfigInput, input));
}

async function writeRunConfig(runDir: string, config: RunConfig): Promise<void> {
  await fs.mkdir(runDir, { recursive: true });
  await writeFileAtomic(path.join(runDir, CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
}

function createRunDistiller(config: RunConfig, options: DistillRunOptions): Promise<Distiller> {
  return Distiller.create({
    backend: options.backend,
    force: options.force,
    teacher: config.teacher,
    teacherPreset: config.teacherPreset,
    student: config.student,
    studentPreset: config.studentPreset,
    teacherPool: config.teacherPool,
    studentPool: config.studentPool,
    totalSteps: config.steps,
    device: deviceForRank(config.device, options.dist ?? null),
    seed: config.seed,
    ...config.optimizer,
    ...config.loss,
    accumulationSteps: config.accumulationSteps,
    teacherDtype: config.teacherDtype,
    autocast: config.autocast,
    teacherFp8: config.teacherFp8,
    teacherFp8Layers: config.teacherFp8Layers,
    kernels: config.kernels,
    studentDrop: config.studentDrop,
    augment: config.augment,
    dist: options.dist ? { ...options.dist, bucketBytes: config.distBucketBytes } : null,
    testing: options.testing,
  });
}

/** What a run holds between its steps: the position, early stopping, the last checkpoint, the progress bar. */
class RunState {
  steps = 0;
  early: EarlyStopping;
  lastCheckpoint: string | null = null;
  /** The step of the last checkpoint written or resumed from (-1: none). */
  lastSavedAt = -1;
  lastLoss: number | null = null;
  bar: cliProgress.SingleBar | null = null;
  readonly logFile: string;

  constructor(
    readonly runDir: string,
    readonly config: RunConfig,
    readonly source: TileSource,
    readonly distiller: Distiller,
    readonly ranks: RankRoles,
    readonly say: (m: string) => void,
  ) {
    this.early = new EarlyStopping(config.earlyStopping);
    this.logFile = path.join(runDir, LOG_FILE);
  }

  /** The student's training-only dropout / drop path (its config.json's rates, then studentDrop), said when in use. */
  reportStudentDrop(): void {
    const drops = Object.entries(this.distiller.info().studentDrop ?? {}).filter(([, v]) => (v ?? 0) > 0);
    if (this.ranks.primary && drops.length)
      this.say(`g2l-native: student dropout / drop path in training: ${drops.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  }

  /** Loads the resume point (damaged newer checkpoints set aside first) and says how many steps are repeated. */
  async restore(point: ResumePoint | null): Promise<void> {
    const { runDir, say } = this;
    if (this.ranks.primary) await removeTempCheckpoints(runDir);
    if (!point) {
      say(`g2l-native: ${runDir} has no checkpoint yet: starting it from step 0`);
      return;
    }
    const { steps: at, dir, damaged } = point;
    const logged = await lastLoggedStep(this.logFile);
    const repeated = Math.max(logged, ...damaged.map((d) => d.steps)) - at;
    for (const d of damaged) {
      say(
        `g2l-native: warning: checkpoint ${path.relative(runDir, d.dir)} is damaged: ${d.problem}; kept aside as ${path.basename(d.dir)}.damaged`,
      );
      if (this.ranks.primary) await setAside(d.dir);
    }
    if (point.unverified) {
      say(
        `g2l-native: warning: ${path.relative(runDir, dir)} has no manifest.json (written by an older g2l-native): only its readers check it`,
      );
    }
    const extra = (await this.distiller.load(dir, { verified: true })) as unknown as CheckpointExtra;
    this.steps = at;
    this.early = new EarlyStopping(this.config.earlyStopping, extra.earlyStop, at);
    this.lastCheckpoint = dir;
    this.lastSavedAt = at;
    const again =
      repeated > 0 ? `; ${repeated} step${repeated === 1 ? ' is' : 's are'} repeated (${at + 1}-${at + repeated})` : '';
    if (damaged.length)
      say(
        `g2l-native: warning: resuming ${runDir} from the newest intact checkpoint, ${path.relative(runDir, dir)}${again}`,
      );
    else say(`g2l-native: resuming ${runDir} from ${path.relative(runDir, dir)}${again}`);
  }

  /** Keeps log.jsonl consistent with the step the run starts from. */
  async alignLog(): Promise<void> {
    if (!this.ranks.primary) return;
    const damaged = await truncateLog(this.logFile, this.steps);
    if (damaged)
      this.say(`g2l-native: warning: ${this.logFile}: ${damaged} damaged line${damaged === 1 ? '' : 's'} dropped`);
  }

  /** Writes checkpoints/step-N (rank 0) and keeps the newest KEEP_CHECKPOINTS. */
  async checkpoint(): Promise<void> {
    const dir = checkpointDir(this.runDir, this.steps);
    if (this.ranks.primary) {
      const extra: CheckpointExtra = {
        earlyStop: this.early.snapshot(),
        sampler: { step: this.steps, tiles: this.source.size },
        lastLoss: this.lastLoss,
        config: this.config,
      };
      await this.distiller.save(dir, extra as unknown as Record<string, unknown>);
      const all = await listCheckpoints(this.runDir);
      for (const [, old] of all.slice(0, Math.max(0, all.length - KEEP_CHECKPOINTS)))
        await fs.rm(old, { recursive: true, force: true });
    }
    this.lastCheckpoint = dir;
    this.lastSavedAt = this.steps;
  }

  /**
   * Stopped by a signal: the state after the last finished step is checkpointed (unless it already is); the
   * UserError carries the signal's exit code.
   */
  async interrupted(signal: AbortSignal | undefined): Promise<UserError> {
    if (this.steps > 0 && this.lastSavedAt !== this.steps) await this.checkpoint();
    this.bar?.stop();
    const code = stopExitCode(signal);
    if (this.steps === 0)
      return new UserError(
        `interrupted before the first step: nothing to save; start it again with g2l-native distill --resume --out ${this.runDir}`,
        code,
      );
    return new UserError(
      `interrupted after step ${this.steps}: checkpoint written to ${this.lastCheckpoint}; continue with g2l-native distill --resume --out ${this.runDir}`,
      code,
    );
  }
}

/** Moves a damaged checkpoint out of the way (checkpoints/step-N.damaged, replacing an older one of that name). */
async function setAside(dir: string): Promise<void> {
  await fs.rm(`${dir}.damaged`, { recursive: true, force: true });
  await fs.rename(dir, `${dir}.damaged`).catch(() => undefined);
}

/** Where and why the loop ended. */
interface LoopEnd {
  stoppedBy: StopReason;
  stopReason?: string;
}

/** The steps, from the run's position to the planned end (or --until), each logged; checkpoints on schedule. */
async function trainSteps(run: RunState, options: DistillRunOptions): Promise<LoopEnd> {
  const { config, distiller, source, ranks } = run;
  const end = Math.min(config.steps, options.until ?? Number.POSITIVE_INFINITY);
  run.bar = options.progress
    ? new cliProgress.SingleBar(
        {
          format: ' {bar} {value}/{total} steps | loss {loss} | {ips} img/s | ETA {eta_formatted}',
          stream: process.stderr,
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : null;
  run.bar?.start(config.steps, run.steps, { loss: '-', ips: '-' });
  const result: LoopEnd = { stoppedBy: 'completed' };
  let fp8Reported = false;
  // Two batch buffers in turn (page-locked on CUDA, so the engine's upload is asynchronous): the engine reads one in
  // a step while the next batch fills the other; a buffer is refilled only after the step that read it returned.
  const bytes = config.batchSize * config.tileSizePx * config.tileSizePx * 3;
  const buffers: Uint8Array[] = [];
  const fill = (step: number) => {
    const slot = step % 2;
    buffers[slot] ??= distiller.allocateTileBuffer(bytes);
    return source.batch(step, config.batchSize, ranks.shard, buffers[slot]);
  };
  let next = run.steps < end ? fill(run.steps) : null;
  while (run.steps < end) {
    // One process stops between steps (a signal during a checkpoint write, or before the first step); ranks of a
    // world stop only through the step's agreement below.
    if (ranks.world === 1 && options.signal?.aborted) throw await run.interrupted(options.signal);
    const tiles = await next!;
    const t0 = performance.now();
    // An interrupt (SIGINT) reaches the ranks of a world at different moments: each passes what it has seen and
    // the step returns whether any rank asked, so all stop after the same step (the rest would wait for the
    // stopped ones in their next collective).
    const pending = distiller.step(tiles, { stop: options.signal?.aborted === true });
    // The next batch is prepared while the engine runs this step on its worker thread.
    next = run.steps + 1 < end ? fill(run.steps + 1) : null;
    const r: StepResult = await pending;
    const seconds = (performance.now() - t0) / 1000;
    run.steps += 1;
    const line = logLine(run, r, seconds);
    if (config.teacherFp8 && !fp8Reported) fp8Reported = reportFp8(run, line);
    const decision =
      config.earlyStopping.enabled && Number.isFinite(r.loss) ? run.early.update(r.loss) : { stop: false };
    if (decision.stop) line.earlyStop = decision.reason;
    if (ranks.primary) await fs.appendFile(run.logFile, `${JSON.stringify(line)}\n`);
    options.onStep?.(line);
    if (!Number.isFinite(r.loss)) throw nonFiniteLoss(run, r.loss);
    run.lastLoss = r.loss;
    run.bar?.update(run.steps, { loss: r.loss.toFixed(4), ips: line.imgPerSec.toFixed(1) });
    if (ranks.world > 1 ? r.stop === true : options.signal?.aborted) throw await run.interrupted(options.signal);
    if (decision.stop) {
      result.stoppedBy = 'early-stopping';
      result.stopReason = decision.reason;
      run.say(`\ng2l-native: early stopping after step ${run.steps}: ${decision.reason}`);
      break;
    }
    if (run.steps % config.checkpointEvery === 0 && run.steps < end) await run.checkpoint();
  }
  if (result.stoppedBy === 'completed' && run.steps < config.steps) result.stoppedBy = 'until';
  return result;
}

function logLine(run: RunState, r: StepResult, seconds: number): LogLine {
  return {
    step: run.steps,
    loss: r.loss,
    lr: r.lr,
    wd: r.weightDecay,
    gradNorm: r.gradNorm,
    imgPerSec: (run.config.batchSize * run.ranks.world) / seconds,
    memoryBytes: r.deviceMemoryBytes || process.memoryUsage().rss,
  };
}

/** With --teacher-fp8: the acceptance check's cosine, once it is known (said, and put on the step's log line). */
function reportFp8(run: RunState, line: LogLine): boolean {
  const info = run.distiller.info();
  if (typeof info.teacherFp8MinCosine !== 'number') return false;
  line.teacherFp8MinCosine = info.teacherFp8MinCosine;
  run.say(
    `g2l-native: FP8 teacher accepted: features within cosine ${info.teacherFp8MinCosine.toFixed(5)} of bf16 ` +
      `(${info.teacherFp8Layers ?? '?'} of ${info.teacherLinearLayers ?? '?'} products in FP8)`,
  );
  return true;
}

function nonFiniteLoss(run: RunState, loss: number): UserError {
  return new UserError(
    `the loss became ${loss} at step ${run.steps}: the run stopped. Last good checkpoint: ` +
      `${run.lastCheckpoint ?? 'none (no checkpoint was written before it)'}; resume from it with a lower learning rate ` +
      'or gradient clipping (optimizer.lr, optimizer.clipGradNorm in --config, then --resume --force)',
    ExitCode.failure,
  );
}

/** The last checkpoint (unless the last step has one) and, unless paused by --until, the student's export. */
async function finishRun(
  run: RunState,
  { stoppedBy, stopReason }: LoopEnd,
  options: DistillRunOptions,
): Promise<DistillRunResult> {
  if (run.lastSavedAt !== run.steps) await run.checkpoint();
  let studentDir: string | null = null;
  if (stoppedBy !== 'until') {
    studentDir = path.join(run.runDir, 'student');
    if (run.ranks.primary) await run.distiller.export(studentDir);
  }
  await options.onDone?.(run.distiller);
  return {
    runDir: run.runDir,
    config: run.config,
    stepsDone: run.steps,
    stoppedBy,
    stopReason,
    lastCheckpoint: run.lastCheckpoint,
    studentDir,
    skippedSlides: run.source.skipped,
  };
}

/** The steps of log.jsonl, in order. */
export async function readLog(runDir: string): Promise<LogLine[]> {
  const text = await fs.readFile(path.join(runDir, LOG_FILE), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as LogLine);
}
