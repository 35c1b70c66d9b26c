// Every output is written to a temporary sibling and renamed into place, so a crash or a Ctrl-C never leaves a
// half-written file where a finished one is expected.
import { existsSync, promises as fs, writeFileSync, renameSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';

/** A file-system error while writing `target` as one line naming it (EISDIR: a folder is in the way, ENOSPC, ...). */
function writeError(target: string, e: unknown): unknown {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (!code || !/^E[A-Z]+$/.test(code) || e instanceof UserError) return e;
  const why =
    code === 'EISDIR' || code === 'ENOTEMPTY'
      ? 'a folder is in its place'
      : code === 'ENOSPC'
        ? 'the disk is full'
        : code;
  return new UserError(`cannot write ${target} (${why}): move what is in the way, or check free space and permissions`);
}

// The temporary files and folders of writes in flight, so that a command stopped by a signal can remove them before
// it exits (abandonWritesSync): a stopped command leaves finished outputs and nothing half-written.
const inFlight = new Map<string, { target: string; old?: string }>();

/** Registers a temporary file that another writer (NpyWriter, an .h5) renames into place; returns its release. */
export function trackTemp(tmp: string, target: string): () => void {
  inFlight.set(tmp, { target });
  return () => inFlight.delete(tmp);
}

/** Removes the temporary files of every write in flight; a folder replaced half-way gets its old self back. */
export function abandonWritesSync(): void {
  for (const [tmp, w] of inFlight) {
    if (w.old && existsSync(w.old) && !existsSync(w.target)) renameSync(w.old, w.target);
    rmSync(tmp, { recursive: true, force: true });
    if (w.old) rmSync(w.old, { recursive: true, force: true });
  }
  inFlight.clear();
}

function tempSibling(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${Date.now().toString(36)}.tmp`);
}

/** Writes `data` to `target` atomically (temp file + rename), creating the parent folder. */
export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  const tmp = tempSibling(target);
  inFlight.set(tmp, { target });
  try {
    await fs.mkdir(path.dirname(target), { recursive: true });
    await fs.writeFile(tmp, data);
    await fs.rename(tmp, target);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw writeError(target, e);
  } finally {
    inFlight.delete(tmp);
  }
}

/** Synchronous twin of writeFileAtomic, for exit paths (SIGINT) where the event loop may not run again. */
export function writeFileAtomicSync(target: string, data: string | Uint8Array): void {
  const tmp = tempSibling(target);
  try {
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(tmp, data);
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw writeError(target, e);
  }
}

/**
 * Builds a folder atomically: `fill` writes into a temporary sibling folder, which then replaces `target`
 * (an existing `target` is removed only after the new one is complete).
 */
export async function writeDirAtomic(target: string, fill: (tmpDir: string) => Promise<void>): Promise<void> {
  const tmp = tempSibling(target);
  const old = `${tmp}.old`;
  inFlight.set(tmp, { target, old });
  try {
    await fs.mkdir(path.dirname(target), { recursive: true });
    await fs.mkdir(tmp, { recursive: true });
    await fill(tmp);
    const had = await fs.stat(target).then(
      () => true,
      () => false,
    );
    if (had) await fs.rename(target, old);
    await fs.rename(tmp, target);
    if (had) await fs.rm(old, { recursive: true, force: true });
  } catch (e) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw writeError(target, e);
  } finally {
    inFlight.delete(tmp);
  }
}
