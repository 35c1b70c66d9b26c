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
  /** Stopped by SIGTERM (a cluster's scheduler, `kill`) after saving state (128 + SIGTERM). */
  terminated: 143,
  /** Stopped by SIGHUP (the terminal closed) after saving state (128 + SIGHUP). */
  hangup: 129,
} as const;

/** The signals a command stops cleanly on, with their exit codes (128 + the signal's number). */
export const STOP_SIGNALS = {
  SIGINT: ExitCode.interrupted,
  SIGTERM: ExitCode.terminated,
  SIGHUP: ExitCode.hangup,
} as const;
export type StopSignal = keyof typeof STOP_SIGNALS;

/** The exit code for a stop whose AbortSignal's reason is the signal's name (SIGINT's 130 for any other reason). */
export function stopExitCode(signal: AbortSignal | undefined): number {
  const reason = signal?.reason as unknown;
  return typeof reason === 'string' && reason in STOP_SIGNALS
    ? STOP_SIGNALS[reason as StopSignal]
    : ExitCode.interrupted;
}

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
