// Reading small text and JSON files with errors a user can act on: a missing, unreadable or damaged file is one line
// naming the file and what to do, never an exception from the file system or the JSON parser.
import { promises as fs } from 'node:fs';
import { UserError } from '../errors.js';

/** The text of `file`; `fix` ends the message when it cannot be read. */
export async function readText(file: string, fix: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'EISDIR' ? 'it is a folder' : code === 'ENOENT' ? 'it does not exist' : (code ?? (e as Error).message);
    throw new UserError(`${file}: cannot read (${why}); ${fix}`);
  }
}

/** The parsed JSON of `file`; `fix` ends the message when it cannot be read or parsed. */
export async function readJson(file: string, fix: string): Promise<unknown> {
  const text = await readText(file, fix);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new UserError(`${file} is damaged (not valid JSON); ${fix}`);
  }
}
