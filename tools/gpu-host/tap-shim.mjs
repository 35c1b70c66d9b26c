// A small stand-in for `tap`, for the GPU host (no npm there): tools/gpu-host/pack.mjs installs it as
// .gpu/tests/node_modules/tap/index.js next to the compiled CUDA-path tests. It implements the part of tap's API those
// tests use (t.test with { skip } / { todo }, ok, notOk, equal, not, same, notSame, match, notMatch, type, pass, fail,
// skip, comment, rejects, throws, doesNotThrow, teardown) with tap's semantics for them (tap 21, @tapjs/asserts);
// anything else on `t` throws, so a test never passes by calling something the shim does not do.
//
// Subtests run one after another in the order they were declared; a subtest ends when its function has settled,
// its own subtests have run, and its pending t.rejects have settled; then its teardowns run. Output is TAP-like:
// `ok N - msg` / `not ok N - msg` (N counts assertions over the whole file, indented by depth), a YAML-ish block
// under each failure, and last `# <file>: P passed, F failed, S skipped`. The exit code is 1 when anything failed,
// when the file threw at load, on an uncaught exception or unhandled rejection, when work was left pending, or when
// no assertion ran at all.
//
// Run a file through tools/gpu-host/run-one.mjs (it imports the file, waits for the root, prints the summary and
// exits); a compiled test file run directly with node finishes on 'beforeExit' instead.
import path from 'node:path';
import { inspect, format } from 'node:util';

const KEY = Symbol.for('g2l-native.tap-shim');
const SHIM_FILE = new URL(import.meta.url).pathname;

class Unsupported extends Error {
  constructor(what) {
    super(
      `tap shim: ${what} is not supported (the GPU-host shim implements only what the CUDA-path tests use; extend tools/gpu-host/tap-shim.mjs)`,
    );
    this.name = 'TapShimUnsupported';
  }
}

const state = {
  file: process.argv[1] ? path.relative(process.cwd(), process.argv[1]) : '(unknown)',
  n: 0,
  passed: 0,
  failed: 0,
  skipped: 0,
  todo: 0,
  finished: false,
  driven: false,
};

const out = (depth, line) => process.stdout.write(`${'    '.repeat(depth)}${line}\n`);

const show = (v) => inspect(v, { depth: 4, maxArrayLength: 12, maxStringLength: 400, breakLength: 120 });

/** The first stack frame outside this file: where the assertion was called. */
function callSite(err = new Error()) {
  const lines = String(err.stack ?? '')
    .split('\n')
    .slice(1);
  const frame = lines.find((l) => !l.includes(SHIM_FILE) && !l.includes('node:internal'));
  return frame ? frame.trim().replace(/^at /, '') : undefined;
}

function diagnostics(depth, extra) {
  const entries = Object.entries(extra).filter(([, v]) => v !== undefined);
  if (!entries.length) return;
  out(depth, '  ---');
  for (const [k, v] of entries) {
    const text = typeof v === 'string' ? v : show(v);
    const lines = text.split('\n');
    if (lines.length === 1) out(depth, `  ${k}: ${lines[0]}`);
    else {
      out(depth, `  ${k}: |`);
      for (const l of lines) out(depth, `    ${l}`);
    }
  }
  out(depth, '  ...');
}

// --- comparisons (tcompare's `same` and `match`, for the values tests pass) -------------------------------------

const isArrayLike = (v) => Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView));

/** tap's t.same: deep equivalence, loose (==) on primitives; arrays/typed arrays element-wise; the same own keys. */
function same(a, b, seen = new Map()) {
  if (a === b || (a == b && (a === null || typeof a !== 'object') && (b === null || typeof b !== 'object')))
    return true;
  if (typeof a === 'number' && typeof b === 'number') return Number.isNaN(a) && Number.isNaN(b);
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (seen.get(a) === b) return true;
  seen.set(a, b);
  if (isArrayLike(a) || isArrayLike(b)) {
    if (!isArrayLike(a) || !isArrayLike(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!same(a[i], b[i], seen)) return false;
    return true;
  }
  if (a instanceof Date || b instanceof Date)
    return a instanceof Date && b instanceof Date && a.getTime() === b.getTime();
  if (a instanceof RegExp || b instanceof RegExp) return String(a) === String(b);
  if (a instanceof Map || b instanceof Map || a instanceof Set || b instanceof Set) {
    if (a.constructor !== b.constructor || a.size !== b.size) return false;
    return same([...a.entries()], [...b.entries()], seen);
  }
  if (a instanceof Error && b instanceof Error && (a.message !== b.message || a.name !== b.name)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) if (!Object.prototype.hasOwnProperty.call(b, k) || !same(a[k], b[k], seen)) return false;
  return true;
}

/** tap's t.match: regexes test strings, strings are substrings, classes are instanceof, objects match key by key. */
function match(found, pattern, seen = new Map()) {
  if (found === pattern) return true;
  if (pattern instanceof RegExp) {
    if (found instanceof RegExp) return String(found) === String(pattern);
    if (found === null || found === undefined) return false;
    pattern.lastIndex = 0;
    return pattern.test(typeof found === 'string' ? found : String(found));
  }
  if (typeof pattern === 'function') {
    if (pattern === String) return typeof found === 'string';
    if (pattern === Number) return typeof found === 'number';
    if (pattern === Boolean) return typeof found === 'boolean';
    if (pattern === Symbol) return typeof found === 'symbol';
    if (pattern === BigInt) return typeof found === 'bigint';
    if (pattern === Function) return typeof found === 'function';
    if (pattern === Object) return found !== null && found !== undefined;
    return found !== null && (typeof found === 'object' || typeof found === 'function') && found instanceof pattern;
  }
  if (typeof pattern === 'string') {
    if (typeof found === 'string') return found.includes(pattern);
    return found == pattern; // loose on purpose: tap's match() compares a string pattern loosely
  }
  if (pattern === null || typeof pattern !== 'object') {
    return found == pattern || (Number.isNaN(pattern) && Number.isNaN(found));
  }
  if (found === null || found === undefined || (typeof found !== 'object' && typeof found !== 'function')) return false;
  if (seen.get(found) === pattern) return true;
  seen.set(found, pattern);
  if (isArrayLike(pattern)) {
    if (!isArrayLike(found) || found.length < pattern.length) return false;
    for (let i = 0; i < pattern.length; i++) if (!match(found[i], pattern[i], seen)) return false;
    return true;
  }
  for (const k of Object.keys(pattern)) if (!match(found[k], pattern[k], seen)) return false;
  return true;
}

function typeOk(obj, klass) {
  if (obj === klass) return true;
  if (typeof klass === 'function') {
    if (obj !== null && (typeof obj === 'object' || typeof obj === 'function') && obj instanceof klass) return true;
    return match(obj, klass);
  }
  if (typeof klass !== 'string') throw new Unsupported(`t.type with a ${typeof klass} as the type`);
  const tof = obj === null ? 'null' : Array.isArray(obj) ? 'array' : typeof obj;
  if (tof === klass || typeof obj === klass) return true;
  // a constructor's name: t.type(x, 'Float32Array')
  for (let p = obj === null || obj === undefined ? null : Object.getPrototypeOf(obj); p; p = Object.getPrototypeOf(p)) {
    if (p.constructor?.name === klass) return true;
  }
  return false;
}

// --- the test objects ----------------------------------------------------------------------------------------------

/** Normalises (message, extra) like tap: a string message, else the default. */
const msgOf = (msg, dflt) =>
  typeof msg === 'string' && msg ? msg : msg === undefined || typeof msg === 'object' ? dflt : String(msg);

/** tap's normalizeThrowsArgs: (wanted, message, extra) where a string `wanted` is the message. */
function throwsArgs(dflt, wanted, message) {
  if (typeof wanted === 'string') return [undefined, wanted || dflt];
  if (message && typeof message === 'object') return [wanted, dflt];
  return [wanted, message || dflt];
}

const RUN = Symbol('run');
const SETTLE = Symbol('settle');
const FATAL = Symbol('fatal');

const OPTION_KEYS = new Set(['skip', 'todo', 'timeout', 'bail', 'diagnostic']);

class Test {
  #name;
  #depth;
  #chain = Promise.resolve();
  #pending = new Set();
  #teardowns = [];
  #ended = false;

  constructor(name, depth) {
    this.#name = name;
    this.#depth = depth;
  }

  get name() {
    return this.#name;
  }

  // -- reporting
  #point(ok, msg, extra = {}, directive = '') {
    if (this.#ended) {
      return this.#afterEnd(ok, msg);
    }
    state.n++;
    if (directive === 'SKIP') state.skipped++;
    else if (directive === 'TODO') state.todo++;
    else if (ok) state.passed++;
    else state.failed++;
    out(this.#depth, `${ok ? 'ok' : 'not ok'} ${state.n} - ${msg}${directive ? ` # ${directive}` : ''}`);
    if (!ok) diagnostics(this.#depth, { at: callSite(), ...extra });
    return ok;
  }

  #afterEnd(ok, msg) {
    state.n++;
    state.failed++;
    out(
      0,
      `not ok ${state.n} - assertion after the end of subtest "${this.#name}": ${msg} (${ok ? 'passed' : 'failed'})`,
    );
    diagnostics(0, { at: callSite() });
    return false;
  }

  // -- assertions
  pass(msg, extra) {
    return this.#point(true, msgOf(msg, '(unnamed test)'), extra);
  }
  fail(msg, extra) {
    return this.#point(false, msgOf(msg, '(unnamed test)'), typeof extra === 'object' && extra ? extra : {});
  }
  ok(obj, msg) {
    return this.#point(Boolean(obj), msgOf(msg, 'expect truthy value'), { found: obj, wanted: 'truthy' });
  }
  notOk(obj, msg) {
    return this.#point(!obj, msgOf(msg, 'expect falsey value'), { found: obj, wanted: 'falsey' });
  }
  equal(found, wanted, msg) {
    return this.#point(found === wanted, msgOf(msg, 'should be equal'), { found, wanted, compare: '===' });
  }
  not(found, doNotWant, msg) {
    return this.#point(found !== doNotWant, msgOf(msg, 'should not be equal'), { found, doNotWant, compare: '!==' });
  }
  same(found, wanted, msg) {
    return this.#point(same(found, wanted), msgOf(msg, 'should be equivalent'), { found, wanted });
  }
  notSame(found, doNotWant, msg) {
    return this.#point(!same(found, doNotWant), msgOf(msg, 'should not be equivalent'), { found, doNotWant });
  }
  match(found, pattern, msg) {
    return this.#point(match(found, pattern), msgOf(msg, 'should match pattern provided'), { found, pattern });
  }
  notMatch(found, pattern, msg) {
    return this.#point(!match(found, pattern), msgOf(msg, 'should not match pattern provided'), { found, pattern });
  }
  type(obj, klass, msg) {
    const name = typeof klass === 'function' ? klass.name || '(anonymous constructor)' : klass;
    return this.#point(typeOk(obj, klass), msgOf(msg, `type is ${name}`), { found: obj, wanted: name });
  }
  throws(fn, wanted, message) {
    if (typeof fn !== 'function') throw new Unsupported('t.throws without a function');
    const [w, m] = throwsArgs(fn.name || 'expected to throw', wanted, message);
    try {
      fn();
    } catch (er) {
      if (!w) return this.#point(true, m) && er;
      return this.#point(match(w instanceof RegExp ? er?.message : er, w), m, { found: er, pattern: w }) && er;
    }
    return this.#point(false, m, { wanted: w ?? 'an error' });
  }
  doesNotThrow(fn, msg) {
    if (typeof fn !== 'function') throw new Unsupported('t.doesNotThrow without a function');
    try {
      fn();
    } catch (er) {
      return this.#point(false, msgOf(msg, fn.name || 'expect to not throw'), { error: er });
    }
    return this.#point(true, msgOf(msg, fn.name || 'expect to not throw'));
  }
  rejects(fnOrPromise, wanted, message) {
    const [w, m] = throwsArgs('expected to reject', wanted, message);
    let p;
    try {
      p = typeof fnOrPromise === 'function' ? fnOrPromise() : fnOrPromise;
    } catch (er) {
      p = Promise.reject(er);
    }
    if (!p || typeof p.then !== 'function') {
      return Promise.resolve(this.#point(false, 'no promise or async function provided to t.rejects'));
    }
    const at = callSite();
    const done = Promise.resolve(p).then(
      () => this.#point(false, m, { at, wanted: w ?? 'a rejection', found: 'resolved' }),
      (er) => {
        if (!w) return this.#point(true, m) && (er || true);
        return (
          this.#point(match(w instanceof RegExp ? er?.message : er, w), m, { at, found: er, pattern: w }) &&
          (er || true)
        );
      },
    );
    this.#pending.add(done);
    done.finally(() => this.#pending.delete(done));
    return done;
  }

  // -- structure
  comment(...args) {
    const text = format(...args);
    for (const l of text.split('\n')) out(this.#depth, `# ${l}`);
  }
  teardown(fn) {
    if (typeof fn !== 'function') throw new Unsupported('t.teardown without a function');
    this.#teardowns.push(fn);
  }
  skip(name, opts, fn) {
    // tap's t.skip is a skipped subtest: it never runs its function.
    ({ name } = parseTestArgs(name, opts, fn, true));
    return Promise.resolve(this.#point(true, name, {}, 'SKIP'));
  }
  test(name, opts, fn) {
    const a = parseTestArgs(name, opts, fn, false);
    if (this.#ended) {
      this.#afterEnd(false, `t.test("${a.name}")`);
      return Promise.resolve(false);
    }
    const run = async () => {
      if (a.opts.skip)
        return this.#point(true, a.name + (typeof a.opts.skip === 'string' ? ` (${a.opts.skip})` : ''), {}, 'SKIP');
      if (a.opts.todo)
        return this.#point(true, a.name + (typeof a.opts.todo === 'string' ? ` (${a.opts.todo})` : ''), {}, 'TODO');
      out(this.#depth, `# Subtest: ${a.name}`);
      const child = makeTest(a.name, this.#depth + 1);
      return child[RUN](a.fn).then((failures) => {
        out(this.#depth, `# ${failures ? 'failed' : 'passed'}: ${a.name}${failures ? ` (${failures} failed)` : ''}`);
        return failures === 0;
      });
    };
    const p = this.#chain.then(run);
    this.#chain = p.catch(() => {});
    return p;
  }

  /** Runs fn(this) and everything it queued; resolves to this test's failures (its subtests' included). */
  async [RUN](fn) {
    const before = state.failed;
    try {
      await fn(proxyOf(this));
    } catch (er) {
      this.#threw(er);
    }
    await this[SETTLE]();
    for (const td of this.#teardowns.reverse()) {
      try {
        await td();
      } catch (er) {
        this.#threw(er, 'teardown threw');
      }
    }
    this.#ended = true;
    return state.failed - before;
  }

  /** Waits until the queued subtests and pending t.rejects have settled (they may queue more). */
  async [SETTLE]() {
    for (;;) {
      const chain = this.#chain;
      await chain;
      if (this.#pending.size) await Promise.allSettled([...this.#pending]);
      if (chain === this.#chain && !this.#pending.size) return;
    }
  }

  #threw(er, what = 'threw') {
    const msg = er instanceof Error ? er.message.split('\n')[0] : String(er);
    this.#point(false, `${this.#name === 'TAP' ? 'the test file' : this.#name} ${what}: ${msg}`, {
      at: undefined,
      stack: er instanceof Error ? er.stack : undefined,
      ...(er instanceof Unsupported ? { note: 'unsupported tap API' } : {}),
    });
  }

  [FATAL](er, what) {
    this.#threw(er, what);
  }
}

function parseTestArgs(name, opts, fn, isSkip) {
  if (typeof name === 'function') [name, opts, fn] = [name.name || '(unnamed test)', {}, name];
  else if (typeof name === 'object' && name !== null) [name, opts, fn] = [opts?.name || '(unnamed test)', name, opts];
  if (typeof opts === 'function') [opts, fn] = [{}, opts];
  opts = opts ?? {};
  if (typeof name !== 'string') name = String(name ?? '(unnamed test)');
  for (const k of Object.keys(opts)) if (!OPTION_KEYS.has(k)) throw new Unsupported(`the test option "${k}"`);
  if (!isSkip && typeof fn !== 'function') throw new Unsupported(`t.test("${name}") without a function (a todo test)`);
  return { name, opts, fn };
}

/** Every property of t that the shim does not implement throws when read. */
const ALLOWED = new Set([
  'name',
  'pass',
  'fail',
  'ok',
  'notOk',
  'equal',
  'not',
  'same',
  'notSame',
  'match',
  'notMatch',
  'type',
  'throws',
  'doesNotThrow',
  'rejects',
  'comment',
  'teardown',
  'skip',
  'test',
]);
const proxies = new WeakMap();
function proxyOf(test) {
  let p = proxies.get(test);
  if (!p) {
    p = new Proxy(test, {
      get(target, prop) {
        if (typeof prop === 'symbol') return prop === Symbol.toStringTag ? 'Test' : undefined;
        if (prop === 'then') return undefined; // not a thenable
        if (!ALLOWED.has(prop)) throw new Unsupported(`t.${prop}`);
        const v = target[prop];
        return typeof v === 'function' ? v.bind(target) : v;
      },
      set(_target, prop) {
        throw new Unsupported(`setting t.${String(prop)}`);
      },
    });
    proxies.set(test, p);
  }
  return p;
}

function makeTest(name, depth) {
  return new Test(name, depth);
}

// --- the root and the end of the run -------------------------------------------------------------------------------

const root = makeTest('TAP', 0);

function summary() {
  const pendingNote = state.n === 0 ? ' (no assertion ran)' : '';
  out(
    0,
    `# ${state.file}: ${state.passed} passed, ${state.failed} failed, ${state.skipped} skipped${state.todo ? `, ${state.todo} todo` : ''}${pendingNote}`,
  );
  return state.failed > 0 || (state.passed === 0 && state.skipped === 0) ? 1 : 0;
}

/** Waits for the root's queue; prints the summary; sets (and returns) the exit code. */
async function finish() {
  await root[SETTLE]();
  if (state.finished) return process.exitCode ?? 0;
  state.finished = true;
  const code = summary();
  process.exitCode = code;
  return code;
}

process.on('unhandledRejection', (er) => root[FATAL](er, 'had an unhandled rejection'));
process.on('uncaughtException', (er) => root[FATAL](er, 'had an uncaught exception'));
process.on('beforeExit', () => {
  if (state.finished) return;
  if (state.driven) {
    // run-one.mjs awaits the import and then finish(): an empty event loop before that means a promise never settles.
    root[FATAL](
      new Error('the event loop drained with the file or a test still pending (a promise that never settles)'),
      'did not finish',
    );
    state.finished = true;
    process.exitCode = summary();
    return;
  }
  // Run directly with node: the root's queue settles within microtasks if nothing is left pending.
  let settled = false;
  root[SETTLE]().then(() => (settled = true));
  setImmediate(() => {
    if (state.finished) return;
    if (!settled)
      root[FATAL](
        new Error('the event loop drained with a test still pending (a promise that never settles)'),
        'did not finish',
      );
    state.finished = true;
    process.exitCode = summary();
  });
});
process.on('exit', (code) => {
  if (!state.finished) {
    state.finished = true;
    out(0, `not ok ${++state.n} - the process exited (code ${code}) before the tests finished`);
    state.failed++;
    summary();
    process.exitCode = 1;
  }
});

/** For run-one.mjs: names the file in the summary and marks the run as driven. */
globalThis[KEY] = {
  driven(file) {
    state.driven = true;
    state.file = file;
  },
  loadFailed(er) {
    root[FATAL](er, 'failed to load');
  },
  finish,
};

const t = proxyOf(root);
export default t;
export { t };
