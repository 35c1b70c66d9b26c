// Stop signals for the commands that write finished outputs one by one (tile, embed, eval): SIGINT, SIGTERM or SIGHUP
// ends the command at once with 128 + the signal's number, after removing the temporary files of the writes in
// flight (lib/io/atomic.ts). Every output in place is whole, since each was renamed there only once complete.
// `distill` handles the same signals itself (it finishes its step and writes a checkpoint).
import { STOP_SIGNALS, type StopSignal } from '../errors.js';
import { abandonWritesSync } from '../io/atomic.js';

/** Installs the handlers; returns the function that removes them. `again` tells the user how to continue. */
export function exitCleanlyOnSignals(command: string, again: string): () => void {
  const handlers = (Object.keys(STOP_SIGNALS) as StopSignal[]).map((name) => {
    const handler = () => {
      abandonWritesSync();
      try {
        process.stderr.write(
          `\ng2l-native: ${command} stopped by ${name}: the outputs written so far are complete; ${again}\n`,
        );
      } catch {
        // stderr may be gone with the terminal (SIGHUP)
      }
      process.exit(STOP_SIGNALS[name]);
    };
    process.on(name, handler);
    return [name, handler] as const;
  });
  return () => {
    for (const [name, handler] of handlers) process.off(name, handler);
  };
}
