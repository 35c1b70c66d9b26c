// User-facing errors: one clear line (what failed, where, what to do) and an exit code that means something.
// The CLI prints `message` alone for a UserError; any other error is a bug and gets its stack with --verbose.

/** Exit codes of the g2l-native command line. */
export const ExitCode = {
  ok: 0,
  /** Generic failure that is not the user's input (a bug, an engine crash). */
  failure: 1,
  /** Bad input: a missing file, a malformed config, a model that does not match its weights. */
  usage: 2,
  /** Interrupted by SIGINT after saving state (128 + SIGINT). */
  interrupted: 130,
} as const;

export class UserError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = ExitCode.usage) {
    super(message);
    this.name = 'UserError';
    this.exitCode = exitCode;
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}
