// Every output is written to a temporary sibling and renamed into place, so a crash or a Ctrl-C never leaves a
// half-written file where a finished one is expected.
import { promises as fs, writeFileSync, renameSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';

function tempSibling(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${Date.now().toString(36)}.tmp`);
}

/** Writes `data` to `target` atomically (temp file + rename), creating the parent folder. */
export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  await fs.mkdir(path.dirname(target), { recursive: true });
  const tmp = tempSibling(target);
  try {
    await fs.writeFile(tmp, data);
    await fs.rename(tmp, target);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
}

/** Synchronous twin of writeFileAtomic, for exit paths (SIGINT) where the event loop may not run again. */
export function writeFileAtomicSync(target: string, data: string | Uint8Array): void {
  mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempSibling(target);
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Builds a folder atomically: `fill` writes into a temporary sibling folder, which then replaces `target`
 * (an existing `target` is removed only after the new one is complete).
 */
export async function writeDirAtomic(target: string, fill: (tmpDir: string) => Promise<void>): Promise<void> {
  await fs.mkdir(path.dirname(target), { recursive: true });
  const tmp = tempSibling(target);
  await fs.mkdir(tmp, { recursive: true });
  try {
    await fill(tmp);
    const old = `${tmp}.old`;
    const had = await fs.stat(target).then(() => true, () => false);
    if (had) await fs.rename(target, old);
    await fs.rename(tmp, target);
    if (had) await fs.rm(old, { recursive: true, force: true });
  } catch (e) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw e;
  }
}
