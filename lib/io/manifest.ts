// A folder's manifest: manifest.json lists every other file of the folder with its size and sha256, and is written
// last (temp file + rename), so a folder whose manifest reads back and matches is complete and undamaged. Generic over
// the folder's files: checkpoints (state.safetensors, distiller.json, or whatever a backend writes) use it as they are.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from './atomic.js';

export const MANIFEST_FILE = 'manifest.json';
const FORMAT = 'g2l-native/manifest@1';

export interface ManifestEntry {
  file: string;
  size: number;
  sha256: string;
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 22 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The folder's regular files (recursively, '/'-separated relative names), except the manifest and temp files. */
async function filesOf(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.name.startsWith('.') || rel === MANIFEST_FILE) continue;
    if (e.isDirectory()) out.push(...(await filesOf(dir, rel)));
    else if (e.isFile()) out.push(rel);
  }
  return out.sort();
}

/** Writes `dir`/manifest.json over the folder's files, atomically; call it after the last file is written. */
export async function writeManifest(dir: string): Promise<ManifestEntry[]> {
  const files: ManifestEntry[] = [];
  for (const file of await filesOf(dir)) {
    const full = path.join(dir, file);
    files.push({ file, size: (await fs.stat(full)).size, sha256: await sha256(full) });
  }
  await writeFileAtomic(path.join(dir, MANIFEST_FILE), `${JSON.stringify({ format: FORMAT, files }, null, 2)}\n`);
  return files;
}

/**
 * Checks `dir` against its manifest: null when every listed file is there with its size and sha256, else one line
 * saying which file and what is wrong (files the manifest does not list are not checked).
 */
export async function verifyManifest(dir: string): Promise<string | null> {
  const file = path.join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT'
      ? `no ${MANIFEST_FILE} (the folder was not finished)`
      : `${MANIFEST_FILE} cannot be read (${code ?? (e as Error).message})`;
  }
  let files: ManifestEntry[];
  try {
    const parsed = JSON.parse(text) as { format?: unknown; files?: unknown };
    if (parsed.format !== FORMAT || !Array.isArray(parsed.files)) throw new Error('format');
    files = parsed.files as ManifestEntry[];
    for (const f of files) {
      const ok =
        f &&
        typeof f.file === 'string' &&
        f.file !== '' &&
        !f.file.split('/').includes('..') &&
        !path.isAbsolute(f.file) &&
        Number.isSafeInteger(f.size) &&
        f.size >= 0 &&
        typeof f.sha256 === 'string' &&
        /^[0-9a-f]{64}$/.test(f.sha256);
      if (!ok) throw new Error('entry');
    }
  } catch {
    return `${MANIFEST_FILE} is damaged (not the JSON a g2l-native manifest holds)`;
  }
  if (files.length === 0) return `${MANIFEST_FILE} lists no files`;
  for (const f of files) {
    const full = path.join(dir, f.file);
    const st = await fs.stat(full).catch(() => null);
    if (!st) return `${f.file} is missing`;
    if (!st.isFile()) return `${f.file} is not a file`;
    if (st.size !== f.size) return `${f.file} has ${st.size} bytes, the manifest says ${f.size}`;
    let digest: string;
    try {
      digest = await sha256(full);
    } catch (e) {
      return `${f.file} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
    }
    if (digest !== f.sha256) return `${f.file} does not match its sha256 in the manifest (its bytes changed)`;
  }
  return null;
}
