// Checkpoint integrity: a run's checkpoints/step-N folders each hold a manifest (lib/io/manifest.ts) written last;
// a resume takes the newest checkpoint that matches its manifest and holds a readable distiller.json, reports every
// newer one it passes over (which file, what is wrong), and refuses (exit 2) when none is intact.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { MANIFEST_FILE, verifyManifest } from '../io/manifest.js';

export const META_FILE = 'distiller.json';
export const META_FORMAT = 'g2l-native/distiller@1';
/**
 * A checkpoint holds the backend's tensors, state.safetensors (student/<param>, projector.weight/bias,
 * optimizer/<key>, step, seed; F32 and I64, the data's CRC-32 in its metadata; written by the backend's save():
 * native/engine/train/distiller.cpp, lib/backends/js/distill.ts), distiller.json (META_FILE: the format, the step, and
 * the run's own state in `extra`: sampler position, early stopping, last loss, the run's configuration) and
 * manifest.json. The learning-rate and weight-decay schedules and every random draw are functions of (seed, step),
 * so nothing else is saved for them.
 */
export const STATE_FILE = 'state.safetensors';
/** What an earlier g2l-native wrote instead of STATE_FILE (a torch pickle): recognised, not read. */
export const LEGACY_STATE_FILE = 'state.pt';

export interface CheckpointMeta {
  format: string;
  step: number;
  extra: Record<string, unknown>;
}

/** Parses a checkpoint's distiller.json; throws a UserError naming the file when it is not one. */
export function parseMeta(text: string, file: string): CheckpointMeta {
  let meta: Partial<CheckpointMeta>;
  try {
    meta = JSON.parse(text) as Partial<CheckpointMeta>;
  } catch {
    throw new UserError(`${file} is damaged (not valid JSON): resume from an earlier checkpoints/step-N folder`);
  }
  const ok =
    meta !== null &&
    typeof meta === 'object' &&
    meta.format === META_FORMAT &&
    Number.isSafeInteger(meta.step) &&
    (meta.step as number) >= 0 &&
    meta.extra !== null &&
    typeof meta.extra === 'object' &&
    !Array.isArray(meta.extra);
  if (!ok)
    throw new UserError(
      `${file} is not a g2l-native checkpoint description (format ${META_FORMAT}): resume from an earlier checkpoint`,
    );
  return meta as CheckpointMeta;
}

/** Null when the checkpoint folder is intact (manifest matches, distiller.json readable), else what is wrong. */
export async function checkCheckpoint(dir: string): Promise<string | null> {
  return (await verifyManifest(dir)) ?? (await metaProblem(dir));
}

/** Null when distiller.json reads as a checkpoint description, else what is wrong. */
async function metaProblem(dir: string): Promise<string | null> {
  const file = path.join(dir, META_FILE);
  try {
    parseMeta(await fs.readFile(file, 'utf8'), file);
  } catch (e) {
    return e instanceof UserError ? `${META_FILE}: ${e.message.slice(file.length + 1)}` : `${META_FILE} cannot be read`;
  }
  return null;
}

/** Every checkpoints/step-N folder of a run, complete or not, oldest first, as [steps, folder]. */
export async function checkpointFolders(runDir: string): Promise<[number, string][]> {
  const dir = path.join(runDir, 'checkpoints');
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  return entries
    .map((e) => [e, /^step-(\d+)$/.exec(e.name)] as const)
    .filter(([e, m]) => m !== null && e.isDirectory())
    .map(([, m]): [number, string] => [Number(m![1]), path.join(dir, m![0])])
    .sort((a, b) => a[0] - b[0]);
}

/** Removes what an interrupted checkpoint write leaves behind (temporary sibling folders, see lib/io/atomic.ts). */
export async function removeTempCheckpoints(runDir: string): Promise<void> {
  const dir = path.join(runDir, 'checkpoints');
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    if (/^\.step-\d+\..*\.tmp(\.old)?$/.test(name)) await fs.rm(path.join(dir, name), { recursive: true, force: true });
  }
}

export interface ResumePoint {
  steps: number;
  dir: string;
  /** The newer checkpoints passed over, newest first, with what is wrong with each. */
  damaged: { steps: number; dir: string; problem: string }[];
  /** The folder has no manifest (written by a g2l-native before manifests): only its readers check it. */
  unverified?: boolean;
}

/** A folder written before checkpoints had manifests: distiller.json and the engine's files, no manifest.json. */
async function withoutManifest(dir: string): Promise<boolean> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  return (
    !names.includes(MANIFEST_FILE) &&
    names.includes(META_FILE) &&
    names.some((n) => n !== META_FILE && !n.startsWith('.'))
  );
}

/**
 * The newest intact checkpoint of a run, or null when the run has no checkpoint folder at all. Throws an exit-2
 * UserError listing each problem when there are checkpoints and none is intact.
 */
export async function newestIntactCheckpoint(runDir: string): Promise<ResumePoint | null> {
  const all = await checkpointFolders(runDir);
  if (all.length === 0) return null;
  for (const [steps, dir] of [...all].reverse()) {
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    if (names.includes(LEGACY_STATE_FILE) && !names.includes(STATE_FILE)) {
      throw new UserError(
        `${path.join(runDir, 'checkpoints', `step-${steps}`)} was written by an earlier g2l-native (checkpoint format ${LEGACY_STATE_FILE}), ` +
          `which this version does not read (it reads ${STATE_FILE}): finish the run with the g2l-native version that started it, ` +
          'or start it again in a new --out folder',
      );
    }
  }
  const damaged: ResumePoint['damaged'] = [];
  for (const [steps, dir] of [...all].reverse()) {
    const unverified = await withoutManifest(dir);
    const problem = unverified ? await metaProblem(dir) : await checkCheckpoint(dir);
    if (!problem) return { steps, dir, damaged, unverified };
    damaged.push({ steps, dir, problem });
  }
  throw new UserError(
    `no intact checkpoint to resume in ${path.join(runDir, 'checkpoints')}: ` +
      `${damaged.map((d) => `step-${d.steps}: ${d.problem}`).join('; ')}. ` +
      'Start the run again in a new --out folder (or remove the checkpoints folder and start it without --resume)',
  );
}
