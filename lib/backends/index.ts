// Backend selection: native by default, js on request, and js with one warning when the engine cannot load.
import { UserError } from '../errors.js';
import { JsBackend } from './js/index.js';
import { EngineLoadError, NativeBackend, loadEngineAddon } from './native.js';
import type { Backend, BackendDistiller, BackendDistillerConfig, BackendName } from './types.js';
import { JsDistillerWorker } from './js/distill.js';

export * from './types.js';
export { EngineLoadError, NativeBackend, enginePath, loadEngineAddon, readBuildRecord } from './native.js';
export { JsBackend } from './js/index.js';

export interface BackendOptions {
  /** 'native' (fail if the engine cannot load), 'js', or undefined: native, else js with a warning. */
  backend?: BackendName;
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

export function chooseBackend(options: BackendOptions = {}): BackendChoice {
  if (options.backend === 'js') return { backend: new JsBackend({ force: options.force }), fallbackReason: null };
  try {
    return { backend: new NativeBackend(loadEngineAddon()), fallbackReason: null };
  } catch (e) {
    if (!(e instanceof EngineLoadError)) throw e;
    if (options.backend === 'native') throw new UserError(e.message);
    const warn = options.warn ?? ((m: string) => process.stderr.write(`${m}\n`));
    warn(`g2l-native: warning: ${e.message}\n  Continuing with the pure-JS backend (slower); pass --backend js to silence this.`);
    return { backend: new JsBackend({ force: options.force }), fallbackReason: e.message };
  }
}

export function getBackend(options: BackendOptions = {}): Backend {
  return chooseBackend(options).backend;
}

/**
 * A Distiller on `backend`: the engine's (addon Distiller) or the js backend's (in a worker thread, so steps run off
 * the event loop), which takes the same step on the same models, seed and tiles (test/js-backend/distill.test.ts).
 * The js one refuses models it would need hours for unless config.force.
 */
export async function createBackendDistiller(backend: Backend, config: BackendDistillerConfig): Promise<BackendDistiller> {
  if (backend instanceof NativeBackend) {
    const { force: _force, augment, ...engineConfig } = config;
    return backend.addon.Distiller.create({ ...engineConfig, augment: { ...augment } as Record<string, number | boolean> }) as Promise<BackendDistiller>;
  }
  return JsDistillerWorker.create({ ...config, force: config.force ?? (backend instanceof JsBackend ? backend.force : false) });
}
