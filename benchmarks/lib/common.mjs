// Shared by benchmarks/run.mjs (CPU) and benchmarks/gpu.mjs (GPU host): inputs, timing, the PyTorch reference.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** @typedef {import('../../dist/backends/types.js').Uint8Tensor} Uint8Tensor */
/** @typedef {import('../../test/helpers/engine-testing.js').EngineTestingAddon} EngineTestingAddon */

/**
 * The JSON line tools/reference_step.py prints (one-shot mode): what it ran on, and the timings of the --mode asked.
 * @typedef {object} ReferenceResult
 * @property {string} torch
 * @property {string} device
 * @property {number} threads
 * @property {number} batch
 * @property {number} embed_batch
 * @property {boolean} compile
 * @property {string} python
 * @property {string} [gpu]
 * @property {number[]} [step_times_s]
 * @property {number} [distill_img_s]
 * @property {number} [final_loss]
 * @property {number} [peak_memory_gib]
 * @property {number[]} [embed_times_s]
 * @property {number} [embed_img_s]
 * @property {undefined} [error]
 */
/** @typedef {{ error: string }} ReferenceFailure */

/**
 * tools/reference_step.py --serve: its first line (`ready` and what it runs on) and its answer to a request.
 * @typedef {Omit<ReferenceResult, 'error'> & { ready: true }} ReferenceInfo
 * @typedef {{ op: string, s: number, error?: string }} ReferenceAnswer
 */

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The engine's test and measurement entries (native/engine/include/g2l/testing.h: evalMatmulRate, fp8Linear, ...),
 * the module g2l_engine_testing.node the repository's set-up builds beside the production addon (the typed loader of
 * the tests is test/helpers/engine-testing.ts). `native` is dist/backends/native.js.
 * @param {typeof import('../../dist/backends/native.js')} native
 * @returns {EngineTestingAddon}
 */
export function loadEngineTesting(native) {
  native.loadEngineAddon(); // first: it sets up OpenMP
  const file = path.join(path.dirname(native.enginePath()), 'g2l_engine_testing.node');
  if (!existsSync(file)) throw new Error(`${file} does not exist: run npm run setup in the repository`);
  return createRequire(import.meta.url)(file);
}

/**
 * Deterministic tissue-like uint8 tiles (B,S,S,3).
 * @param {number} B
 * @param {number} S
 * @param {number} seed
 * @returns {Uint8Tensor}
 */
export function makeTiles(B, S, seed) {
  const data = new Uint8Array(B * S * S * 3);
  let h = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    h = (Math.imul(h ^ (h >>> 15), 2246822519) + 0x9e3779b9) >>> 0;
    const p = Math.floor(i / 3),
      x = p % S,
      y = Math.floor(p / S) % S,
      c = i % 3;
    data[i] = Math.max(0, Math.min(255, Math.round(170 + 50 * Math.sin(x / 13 + y / (7 + c)) + ((h & 31) - 16))));
  }
  return { data, shape: [B, S, S, 3] };
}

/** @param {readonly number[]} xs */
export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};

/**
 * Seconds of each of `runs` calls of `fn` after `warmup` untimed ones (each call awaited: it ends on the host).
 * @param {() => unknown} fn
 * @param {number} warmup
 * @param {number} runs
 */
export async function timeRuns(fn, warmup, runs) {
  for (let i = 0; i < warmup; i++) await fn();
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    times.push((performance.now() - t0) / 1000);
  }
  return times;
}

/**
 * A python with torch, timm, transformers and safetensors: --python, G2L_PYTHON, the .venv, python3; else null.
 * @param {string | undefined} explicit
 * @returns {string | null}
 */
export function findPython(explicit) {
  /** @type {(p: string | undefined) => p is string} */
  const given = (p) => !!p;
  for (const py of [explicit, process.env.G2L_PYTHON, path.join(ROOT, '.venv', 'bin', 'python'), 'python3'].filter(
    given,
  )) {
    if (py.includes('/') && !existsSync(py)) continue;
    const r = spawnSync(py, ['-c', 'import torch, timm, transformers, safetensors'], { encoding: 'utf8' });
    if (r.status === 0) return py;
  }
  return null;
}

/**
 * Runs tools/reference_step.py with `args`; returns its JSON line, or { error }.
 * @param {string} python
 * @param {string[]} args
 * @param {number} [timeoutMs]
 * @returns {ReferenceResult | ReferenceFailure}
 */
export function runReference(python, args, timeoutMs = 20 * 60 * 1000) {
  const r = spawnSync(python, [path.join(ROOT, 'tools', 'reference_step.py'), ...args], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
    timeout: timeoutMs,
  });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !last.startsWith('{')) {
    return {
      error: `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}: ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`,
    };
  }
  return JSON.parse(last);
}

/**
 * tools/reference_step.py --serve as a long-lived child: `time(op)` asks it to run `op` (distill, distill-noaug,
 * embed) once and resolves to the seconds it measured, so that its steps can be interleaved with the engine's.
 * Resolves once the models are loaded, to { info, time, close }; rejects with the child's last stderr lines.
 * @param {string} python
 * @param {string[]} args
 * @param {number} [timeoutMs]
 * @returns {Promise<{ info: ReferenceInfo, time: (op: string) => Promise<number>, close: () => Promise<void> }>}
 */
export function startReference(python, args, timeoutMs = 10 * 60 * 1000) {
  const child = spawn(python, [path.join(ROOT, 'tools', 'reference_step.py'), '--serve', ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const lines = createInterface({ input: child.stdout });
  /** @type {{ resolve: (msg: ReferenceAnswer | ReferenceInfo) => void, reject: (e: Error) => void }[]} */
  const waiting = [];
  /** @type {Error | null} */
  let failed = null;
  /** @param {string} why */
  const fail = (why) => {
    failed ??= new Error(`${why}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
    for (const w of waiting.splice(0)) w.reject(failed);
  };
  lines.on('line', (line) => {
    if (!line.startsWith('{')) return; // a library's chatter on stdout
    const w = waiting.shift();
    if (!w) return;
    const msg = JSON.parse(line);
    if (msg.error) w.reject(new Error(`reference: ${msg.error}`));
    else w.resolve(msg);
  });
  child.on('exit', (code, signal) => fail(`reference exited (${signal ?? code})`));
  child.on('error', (e) => fail(`reference did not start (${e.message})`));
  /** @returns {Promise<ReferenceAnswer | ReferenceInfo>} */
  const next = () =>
    new Promise((resolve, reject) => {
      if (failed) return reject(failed);
      const timer = setTimeout(() => {
        child.kill();
        fail(`reference timed out after ${timeoutMs / 1000} s`);
      }, timeoutMs);
      waiting.push({
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  return next().then((info) => ({
    info: /** @type {ReferenceInfo} */ (info),
    time: async (op) => {
      const answer = next();
      child.stdin.write(`${op}\n`);
      return /** @type {ReferenceAnswer} */ (await answer).s;
    },
    close: () =>
      /** @type {Promise<void>} */ (
        new Promise((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.stdin.end('quit\n');
        })
      ),
  }));
}

/**
 * Quantile q of xs (linear interpolation between order statistics, numpy's default).
 * @param {readonly number[]} xs
 * @param {number} q
 */
export function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  const at = (s.length - 1) * q,
    lo = Math.floor(at),
    hi = Math.ceil(at);
  return s[lo] + (s[hi] - s[lo]) * (at - lo);
}

/** The 1-, 5- and 15-minute load averages, rounded. */
export const loadAverage = () => os.loadavg().map((x) => +x.toFixed(2));

/** @param {number | null | undefined} x */
export const fmt = (x) => (x === null || x === undefined ? 'n/a' : x >= 10 ? x.toFixed(1) : x.toFixed(2));
/**
 * @param {number | null | undefined} a
 * @param {number | null | undefined} b
 */
export const ratio = (a, b) => (a && b ? +(a / b).toFixed(2) : null);
