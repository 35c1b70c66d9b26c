// Runs many CLI invocations (or checkpoint loads) in one child process, so that a fault-injection suite can try
// hundreds of damaged files in a few minutes: the child imports the compiled CLI once and calls its main() per case,
// printing a JSON line before and after each. A case that kills the child (a signal, or any exit mid-case) is
// recorded as a crash and the child is restarted at the next case; a case that stalls is killed after `caseTimeoutMs`.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LIB_JS, childEnv } from './cli.js';

export type HarnessCase =
  | { kind: 'cli'; args: string[] }
  /** Distiller.load(folder) on a Distiller of the fixture pair made once per backend. */
  | { kind: 'load'; folder: string; backend: 'native' | 'js'; teacher: string; student: string };

export interface HarnessResult {
  /** The CLI's exit code (load: 0, or the error's exit code), null when the child died in the case. */
  code: number | null;
  /** What the child died of (a signal, or its exit code) when code is null. */
  died: string | null;
  stderr: string;
}

const CHILD = `
import { readFileSync, writeSync } from 'node:fs';
const [casesFile, fromArg] = process.argv.slice(2);
const { main } = await import(${JSON.stringify(path.join(LIB_JS, 'cli.js'))});
const { Distiller } = await import(${JSON.stringify(path.join(LIB_JS, 'distill', 'distiller.js'))});
const cases = JSON.parse(readFileSync(casesFile, 'utf8'));
const say = (o) => writeSync(1, JSON.stringify(o) + '\\n');
let captured = '';
process.stderr.write = (chunk) => { captured += String(chunk); return true; };
process.stdout.write = () => true;
const distillers = {};
for (let i = Number(fromArg); i < cases.length; i++) {
  const c = cases[i];
  say({ start: i });
  captured = '';
  process.exitCode = undefined;
  let code;
  if (c.kind === 'load') {
    distillers[c.backend] ??= await Distiller.create({ teacher: c.teacher, student: c.student, totalSteps: 10, backend: c.backend });
    try {
      await distillers[c.backend].load(c.folder);
      code = 0;
    } catch (e) {
      code = typeof e?.exitCode === 'number' ? e.exitCode : 1;
      captured += (e?.name === 'UserError' ? 'g2l-native: ' : 'g2l-native: internal error: ') + (e?.message ?? String(e)) + '\\n';
    }
  } else {
    code = await main(c.args);
  }
  process.exitCode = undefined;
  say({ done: i, code, stderr: captured.slice(-3000) });
}
process.exit(0);
`;

/** Runs every case; results in the cases' order. */
export async function runHarness(
  cases: HarnessCase[],
  options: { env?: NodeJS.ProcessEnv; caseTimeoutMs?: number } = {},
): Promise<HarnessResult[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-harness-'));
  const casesFile = path.join(dir, 'cases.json');
  const script = path.join(dir, 'child.mjs');
  writeFileSync(casesFile, JSON.stringify(cases));
  writeFileSync(script, CHILD);
  const results: HarnessResult[] = new Array(cases.length);
  let from = 0;
  while (from < cases.length) {
    const current = await new Promise<number>((resolve) => {
      const child = spawn(process.execPath, [script, casesFile, String(from)], {
        env: childEnv(options.env),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let started = -1;
      let pending = '';
      let stderr = '';
      let timer: NodeJS.Timeout | null = null;
      const arm = () => {
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => child.kill('SIGKILL'), options.caseTimeoutMs ?? 120_000);
      };
      arm();
      child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-3000)));
      child.stdout.on('data', (d) => {
        pending += d;
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const msg = JSON.parse(pending.slice(0, nl)) as {
            start?: number;
            done?: number;
            code?: number;
            stderr?: string;
          };
          pending = pending.slice(nl + 1);
          arm();
          if (msg.start !== undefined) started = msg.start;
          else if (msg.done !== undefined) {
            results[msg.done] = { code: msg.code ?? null, died: null, stderr: msg.stderr ?? '' };
            started = -1;
          }
        }
      });
      child.on('close', (code, signal) => {
        if (timer) clearTimeout(timer);
        if (started >= 0) {
          results[started] = { code: null, died: signal ?? `exit ${code}`, stderr };
          resolve(started + 1);
        } else {
          // Died between cases (or finished): everything before the first missing result is done.
          let next = from;
          while (next < cases.length && results[next]) next++;
          if (next < cases.length && code !== 0) results[next] = { code: null, died: signal ?? `exit ${code}`, stderr };
          resolve(next < cases.length && code !== 0 ? next + 1 : next);
        }
      });
    });
    from = current;
  }
  return results;
}
