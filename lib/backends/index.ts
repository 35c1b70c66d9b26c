// Backend selection: native by default, js on request. When the engine cannot load, library calls throw its load
// error (a service must not quietly run 15-40x slower), unless the caller asked for js or allowed the fallback:
// per call (`fallback: true`) or for the process (allowBackendFallback(), which the CLI calls: one warning, then js).
import { UserError } from '../errors.js';
import { JsBackend } from './js/index.js';
import { EngineLoadError, NativeBackend, loadEngineAddon } from './native.js';
import type { Backend, BackendDistiller, BackendDistillerConfig, BackendName } from './types.js';
import { JsDistillerWorker } from './js/distill.js';
import { toEngineConfig } from '../distill/native-types.js';

export * from './types.js';
export { EngineLoadError, NativeBackend, enginePath, loadEngineAddon, readBuildRecord } from './native.js';
export { JsBackend } from './js/index.js';

export interface BackendOptions {
  /**
   * 'native' (fail if the engine cannot load), 'js', or undefined: native, and when the engine cannot load, its
   * EngineLoadError is thrown unless `fallback` (or allowBackendFallback()) allows js.
   */
  backend?: BackendName;
  /** With backend undefined: go on with js, after one warning, when the engine cannot load. */
  fallback?: boolean;
  /** Where the fallback warning goes (default: stderr). */
  warn?: (message: string) => void;
  /** js backend: load models it would need hours for instead of refusing them (--force). */
  force?: boolean;
}

export interface BackendChoice {
  backend: Backend;
  /** Why the native engine is not in use, when it was not asked for explicitly and could not load. */
  fallbackReason: string | null;
}

let processFallback = false;
let warned = false;

/**
 * Lets every backend choice of this process (Encoder.load, Distiller.create, ...) without an explicit backend fall
 * back to js when the engine cannot load, with one warning per process. The CLI does this; a library user opts in.
 */
export function allowBackendFallback(allow = true): void {
  processFallback = allow;
}

export function chooseBackend(options: BackendOptions = {}): BackendChoice {
  if (options.backend === 'js') return { backend: new JsBackend({ force: options.force }), fallbackReason: null };
  try {
    return { backend: new NativeBackend(loadEngineAddon()), fallbackReason: null };
  } catch (e) {
    if (!(e instanceof EngineLoadError)) throw e;
    if (options.backend === 'native') throw new UserError(e.message);
    if (!(options.fallback ?? processFallback)) throw e;
    if (options.warn) {
      options.warn(fallbackWarning(e));
    } else if (!warned) {
      warned = true;
      process.stderr.write(`${fallbackWarning(e)}\n`);
    }
    return { backend: new JsBackend({ force: options.force }), fallbackReason: e.message };
  }
}

function fallbackWarning(e: EngineLoadError): string {
  return `g2l-native: warning: ${e.message}\n  Continuing with the pure-JS backend (slower); pass --backend js to silence this.`;
}

export function getBackend(options: BackendOptions = {}): Backend {
  return chooseBackend(options).backend;
}

/**
 * A Distiller on `backend`: the engine's (addon Distiller) or the js backend's (in a worker thread, so steps run off
 * the event loop), which takes the same step on the same models, seed and tiles (test/js-backend/distill.test.ts).
 * The js one refuses models it would need hours for unless config.force.
 */
export async function createBackendDistiller(
  backend: Backend,
  config: BackendDistillerConfig,
): Promise<BackendDistiller> {
  if (backend instanceof NativeBackend) {
    return backend.addon.Distiller.create(toEngineConfig(config)) as Promise<BackendDistiller>;
  }
  return JsDistillerWorker.create({
    ...config,
    force: config.force ?? (backend instanceof JsBackend ? backend.force : false),
  });
}
