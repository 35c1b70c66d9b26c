// `hf:org/name[@revision]`: a model a Hugging Face cache already holds, found offline (nothing is downloaded). The
// cache is the first of HF_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub and ~/.cache/huggingface/hub that
// exists; in it, models--org--name/refs/<revision> names the commit whose files are in snapshots/<commit>/ (a
// revision may also be a commit hash, or a prefix of one, of a snapshot folder). Default revision: main.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../errors.js';

export const HF_PREFIX = 'hf:';

/** The cache folders searched, in order (whether or not they exist). */
export function hfCacheCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  if (env.HF_HUB_CACHE) out.push(env.HF_HUB_CACHE);
  if (env.HF_HOME) out.push(path.join(env.HF_HOME, 'hub'));
  if (env.XDG_CACHE_HOME) out.push(path.join(env.XDG_CACHE_HOME, 'huggingface', 'hub'));
  out.push(path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
  return [...new Set(out)];
}

/** Resolves `hf:org/name[@revision]` to its snapshot folder; a clear error lists every place it looked. */
export function resolveHfModel(ref: string, env: NodeJS.ProcessEnv = process.env): string {
  const m = /^hf:([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+)(?:@([A-Za-z0-9_./-]+))?$/.exec(ref);
  if (!m)
    throw new UserError(
      `${ref}: expected hf:<org>/<name> or hf:<org>/<name>@<revision>, e.g. hf:bioptimus/H-optimus-0`,
    );
  const [, org, name, revision = 'main'] = m;
  const looked: string[] = [];
  for (const cache of hfCacheCandidates(env)) {
    const repo = path.join(cache, `models--${org}--${name}`);
    if (!existsSync(repo)) {
      looked.push(`${repo} (absent)`);
      continue;
    }
    const refFile = path.join(repo, 'refs', revision);
    let commit = existsSync(refFile) ? readFileSync(refFile, 'utf8').trim() : revision;
    const snapshots = path.join(repo, 'snapshots');
    if (!existsSync(path.join(snapshots, commit)) && /^[0-9a-f]{7,40}$/.test(commit) && existsSync(snapshots)) {
      const matches = readdirSync(snapshots).filter((s) => s.startsWith(commit));
      if (matches.length === 1) commit = matches[0];
    }
    const folder = path.join(snapshots, commit);
    if (existsSync(path.join(folder, 'config.json'))) return folder;
    looked.push(
      `${folder} (${existsSync(folder) ? 'no config.json' : existsSync(refFile) ? `refs/${revision} names it, but it is absent` : `no refs/${revision} and no such snapshot`})`,
    );
  }
  throw new UserError(
    `${ref} is not in a Hugging Face cache on this machine (nothing is downloaded): looked in ${looked.join('; ')}. ` +
      'Download it once with `huggingface-cli download` (or set HF_HUB_CACHE / HF_HOME), or pass the model folder itself',
  );
}

/** A model folder from a folder path or an hf: reference. */
export function resolveModelFolder(value: string): string {
  return value.startsWith(HF_PREFIX) ? resolveHfModel(value) : value;
}
