// How users name a model: a hub folder, `hf:org/name[@revision]` (a folder of the Hugging Face cache, found offline:
// lib/models/hub.ts), `preset:<name>:<folder>` (a preset over a folder whose config.json is incomplete, or has none),
// or `preset:<name>` (the architecture alone: random weights for benchmarks).
import { UserError } from '../errors.js';
import { resolveModelFolder } from './hub.js';
import { presetNames } from './spec.js';
import type { ModelPool, ModelSource } from '../backends/types.js';

/** The presets (lib/models/spec.ts, the one registry), TRIDENT's aliases included. */
export const PRESETS: readonly string[] = presetNames();

/** Parses a --model value. */
export function parseModelArg(value: string): ModelSource {
  if (!value.startsWith('preset:')) return { folder: resolveModelFolder(value) };
  const rest = value.slice('preset:'.length);
  const colon = rest.indexOf(':');
  const preset = colon < 0 ? rest : rest.slice(0, colon);
  const folder = colon < 0 ? undefined : rest.slice(colon + 1);
  if (!PRESETS.includes(preset)) {
    throw new UserError(`--model ${value}: unknown preset '${preset}'; known presets are ${PRESETS.join(', ')}`);
  }
  if (folder !== undefined && folder.length === 0) {
    throw new UserError(`--model ${value}: no folder after the preset; write preset:${preset}:<folder>`);
  }
  return folder === undefined ? { preset } : { preset, folder: resolveModelFolder(folder) };
}

export const POOLS: readonly ModelPool[] = ['cls', 'mean', 'cls+mean'];

/** Normalises what Encoder.load accepts into a ModelSource; `pool` (an option) overrides the source's own. */
export function toModelSource(source: string | ModelSource, pool?: string): ModelSource {
  const p = pool ?? (typeof source === 'string' ? undefined : source?.pool);
  if (p !== undefined && !(POOLS as readonly string[]).includes(p)) {
    throw new UserError(`unknown pooling '${p}': use ${POOLS.join(', ')}`);
  }
  const withPool = (s: ModelSource): ModelSource => (p === undefined ? s : { ...s, pool: p as ModelPool });
  if (typeof source === 'string') return withPool(parseModelArg(source));
  if (!source || (!source.folder && !source.preset)) {
    throw new UserError('a model needs a folder, a preset, or both: { folder } | { preset, folder }');
  }
  if (source.preset && !PRESETS.includes(source.preset)) {
    throw new UserError(`unknown preset '${source.preset}'; known presets are ${PRESETS.join(', ')}`);
  }
  return withPool({
    folder: source.folder === undefined ? undefined : resolveModelFolder(source.folder),
    preset: source.preset,
  });
}

/** The form parseModelArg reads, for messages and logs. */
export function formatModelSource(s: ModelSource): string {
  if (!s.preset) return s.folder ?? '';
  return s.folder ? `preset:${s.preset}:${s.folder}` : `preset:${s.preset}`;
}
