// The process's exit while native work is in flight. process.exit() (a second stop signal, a failed command) ends in
// C's exit(), which runs the static destructors of libtorch, libgomp and the slide libraries while the engine
// thread or a slide read is still inside them: the process then died by SIGSEGV instead of exiting with its code.
// Each addon's exitIfBusy(code) ends the process at once with the code when one of its calls is still working
// (native/addon/async.h); otherwise the exit goes on as usual.

/** What an addon offers for it. */
export interface ExitIfBusy {
  exitIfBusy(code: number): void;
}

/** Installs the 'exit' listener for a loaded addon (once per addon). */
export function exitAtOnceWhileBusy(addon: ExitIfBusy): void {
  process.on('exit', (code) => addon.exitIfBusy(typeof code === 'number' ? code : 1));
}
