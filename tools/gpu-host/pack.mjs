#!/usr/bin/env node
// Packs the CUDA-path tests for a GPU host without npm (tools/gpu-host/README.md): compiles them, the
// test helpers they import and the whole of lib/ with the TypeScript compiler into .gpu/tests/ (ignored by git),
// keeping the repository's layout (.gpu/tests/lib/..., .gpu/tests/test/...) so relative imports and import.meta.url
// paths work, and adds what they need instead of node_modules:
//   node_modules/tap    tools/gpu-host/tap-shim.mjs: the part of tap's API the tests use; anything else throws
//   node_modules/sharp  tools/gpu-host/sharp-stub.mjs: importable, throws when used (the tests decode no image)
//   node_modules/zod, node_modules/js-yaml (and what they depend on)   copied from node_modules: pure JavaScript that
//                       lib/ imports (the run configuration's schema and files); their JavaScript files only
//   package.json        name, version and "type": "module" (lib/version.ts reads PACKAGE_ROOT/package.json)
//   run-one.mjs         runs one compiled test file under the shim: TAP-like lines, a summary line, exit 1 on failure
//   run.sh              runs the files of tests.txt (or those named), one log each, then every file's summary
//   link.sh             (run.sh calls it) test/fixtures and build-engine as links into the repository
//   setup-root.sh       for benchmarks/gpu.mjs (imports ../dist): links dist -> .gpu/tests/lib when there is no dist/
//
// Here:      node tools/gpu-host/pack.mjs [--out .gpu/tests] [--strict] [test/x.test.ts ...]   (default: the CUDA tests)
// GPU host:  (repo root, engine built with cmake into build-engine/)  NODE=/path/to/node .gpu/tests/run.sh [files]
//
// --strict fails on TypeScript errors (by default they are printed and the files emitted anyway). The pack also
// follows every import of the compiled tests and fails if one reaches a package that is neither built into Node nor
// stubbed here, since it would not load on the host.
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { execFileSync } from 'node:child_process';
import { isBuiltin } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SRC = path.join(REPO, 'tools', 'gpu-host');
const MARKER = '.g2l-gpu-pack';

/** The tap tests with CUDA cases (each skips them without a CUDA device). */
export const CUDA_TESTS = [
  'test/models/cuda.test.ts',
  'test/models/fused-ops.test.ts',
  'test/augment/reference.test.ts',
  'test/distill/distiller.test.ts',
  'test/distill/loss.test.ts',
  'test/parallel/world-of-one.test.ts',
  'test/distill/teacher-fp8-cuda.test.ts',
  'test/distill/fused-paths.test.ts',
  'test/distill/attention.test.ts', // last: the others first if the checks' time runs out
];

/** Packages replaced by stubs: name -> source file under tools/gpu-host/. */
const STUBS = { tap: 'tap-shim.mjs', sharp: 'sharp-stub.mjs' };
/** Pure-JavaScript packages lib/ imports, copied from node_modules with the packages they depend on. */
const VENDORED = ['zod', 'js-yaml'];
const travels = (name) => name in STUBS || VENDORED.includes(name);
const described = (name) => (name in STUBS ? `${name} (stub)` : VENDORED.includes(name) ? `${name} (copied)` : name);

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    out: { type: 'string', default: path.join('.gpu', 'tests') },
    strict: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  process.stdout.write(
    readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('//'))
      .map((l) => l.slice(3))
      .join('\n') + '\n',
  );
  process.exit(0);
}

const OUT = path.resolve(REPO, opt.out);
const tests = (positionals.length ? positionals : CUDA_TESTS).map((f) => {
  const abs = path.resolve(REPO, f);
  const rel = path.relative(REPO, abs);
  if (rel.startsWith('..') || !rel.endsWith('.ts') || !existsSync(abs))
    throw new Error(`gpu-pack: ${f} is not a .ts file in the repository`);
  return rel;
});

const log = (m) => process.stdout.write(`gpu-pack: ${m}\n`);

function walk(dir, keep, acc = []) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, keep, acc);
    else if (keep(p)) acc.push(p);
  }
  return acc;
}

// --- a clean output folder, never one that is not ours ---------------------------------------------------------------
if (path.relative(REPO, OUT).startsWith('..') || OUT === REPO)
  throw new Error(`gpu-pack: --out must be a folder inside the repository (${OUT})`);
if (existsSync(OUT)) {
  if (readdirSync(OUT).length && !existsSync(path.join(OUT, MARKER)))
    throw new Error(`gpu-pack: ${OUT} exists and was not written by gpu-pack; remove it first`);
  rmSync(OUT, { recursive: true, force: true });
}
mkdirSync(OUT, { recursive: true });
writeFileSync(path.join(OUT, MARKER), `written by tools/gpu-host/pack.mjs on ${new Date().toISOString()}\n`);

// .gpu/ must stay out of git (it is in .gitignore; prepare.sh also adds it to .git/info/exclude).
try {
  execFileSync('git', ['check-ignore', '-q', path.relative(REPO, OUT)], { cwd: REPO });
} catch {
  const exclude = path.join(REPO, '.git', 'info', 'exclude');
  mkdirSync(path.dirname(exclude), { recursive: true });
  writeFileSync(exclude, (existsSync(exclude) ? readFileSync(exclude, 'utf8') : '') + '/.gpu/\n');
  log('added /.gpu/ to .git/info/exclude');
}

// --- compile: lib/ (all of it: worker files are loaded by URL, not imported) + the tests and what they import ------
const ts = (await import('typescript')).default;
const configFile = ts.readConfigFile(path.join(REPO, 'tsconfig.json'), ts.sys.readFile);
if (configFile.error) throw new Error(ts.flattenDiagnosticMessageText(configFile.error.messageText, '\n'));
const parsed = ts.parseJsonConfigFileContent(configFile.config, ts.sys, REPO);
const options = {
  ...parsed.options,
  rootDir: REPO,
  outDir: OUT,
  declaration: false,
  declarationMap: false,
  sourceMap: false,
  inlineSourceMap: false,
  incremental: false,
  composite: false,
  tsBuildInfoFile: undefined,
  noEmit: false,
  noEmitOnError: false,
  removeComments: true, // smaller, and the import scan below sees no commented-out imports
};
const libFiles = walk(path.join(REPO, 'lib'), (p) => p.endsWith('.ts') && !p.endsWith('.d.ts'));
const program = ts.createProgram([...libFiles, ...tests.map((f) => path.join(REPO, f))], options);
const diagnostics = ts.getPreEmitDiagnostics(program);
const emitted = program.emit();
const all = [...diagnostics, ...emitted.diagnostics];
if (all.length) {
  const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => REPO, getNewLine: () => '\n' };
  process.stdout.write(ts.formatDiagnostics(all, host));
  log(`${all.length} TypeScript diagnostic(s)${opt.strict ? '' : ' (emitted anyway; --strict fails on them)'}`);
  if (opt.strict) process.exit(1);
}
const outside = program
  .getSourceFiles()
  .map((s) => path.relative(REPO, s.fileName))
  .filter((f) => !f.split(path.sep).includes('node_modules') && !f.startsWith('lib/') && !f.startsWith('test/'));
if (outside.length) throw new Error(`gpu-pack: the tests import files outside lib/ and test/: ${outside.join(', ')}`);
const compiled = tests.map((f) => f.replace(/\.ts$/, '.js'));
for (const f of compiled) if (!existsSync(path.join(OUT, f))) throw new Error(`gpu-pack: ${f} was not emitted`);

// --- what travels beside the compiled files ---------------------------------------------------------------------------
const pkg = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8'));
writeFileSync(
  path.join(OUT, 'package.json'),
  JSON.stringify(
    {
      name: pkg.name,
      version: pkg.version,
      private: true,
      type: 'module',
      description: 'the CUDA-path tests compiled by tools/gpu-host/pack.mjs',
    },
    null,
    2,
  ) + '\n',
);
for (const [name, file] of Object.entries(STUBS)) {
  const dir = path.join(OUT, 'node_modules', name);
  mkdirSync(dir, { recursive: true });
  copyFileSync(path.join(SRC, file), path.join(dir, 'index.js'));
  writeFileSync(
    path.join(dir, 'package.json'),
    JSON.stringify(
      { name, version: '0.0.0-g2l-gpu-stub', type: 'module', main: './index.js', exports: { '.': './index.js' } },
      null,
      2,
    ) + '\n',
  );
}
/** Copies package `name` (found from `from`, as Node resolves it) and its dependencies into OUT/node_modules; returns
 *  the names copied. JavaScript and JSON only: no type declarations, source maps or TypeScript sources. */
function vendor(name, from = REPO, done = new Set()) {
  if (done.has(name)) return done;
  let dir = from;
  let pkgDir;
  for (;;) {
    const candidate = path.join(dir, 'node_modules', name);
    if (existsSync(path.join(candidate, 'package.json'))) {
      pkgDir = candidate;
      break;
    }
    if (dir === REPO || path.dirname(dir) === dir) throw new Error(`gpu-pack: ${name} is not installed (npm install)`);
    dir = path.dirname(dir);
  }
  done.add(name);
  const keep = (f) =>
    !f.split(path.sep).includes('node_modules') && !/\.(ts|cts|mts|map)$/.test(f) && !/\.md$/i.test(f);
  for (const f of walk(pkgDir, (p) => keep(path.relative(pkgDir, p)))) {
    const to = path.join(OUT, 'node_modules', name, path.relative(pkgDir, f));
    mkdirSync(path.dirname(to), { recursive: true });
    copyFileSync(f, to);
  }
  const deps = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).dependencies ?? {};
  for (const dep of Object.keys(deps)) vendor(dep, pkgDir, done);
  return done;
}
const vendored = new Set();
for (const name of VENDORED) vendor(name, REPO, vendored);
log(`copied from node_modules: ${[...vendored].join(', ')}`);
copyFileSync(path.join(SRC, 'run-one.mjs'), path.join(OUT, 'run-one.mjs'));
for (const sh of ['run.sh', 'link.sh', 'setup-root.sh']) {
  copyFileSync(path.join(SRC, sh), path.join(OUT, sh));
  chmodSync(path.join(OUT, sh), 0o755);
}
writeFileSync(path.join(OUT, 'tests.txt'), compiled.join('\n') + '\n');

// --- every module the tests can load, and the packages they need ----------------------------------------------------
const IMPORT_RE =
  /(?:^|[\s;})])(?:import|export)\s*(?:[\w$*{}\s,]+?\s*from\s*)?['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)|new URL\(\s*['"](\.[^'"]+\.js)['"]\s*,\s*import\.meta\.url/gm;

/** Follows relative imports (static, dynamic with a literal, worker URLs) from `entries`; returns the bare packages. */
function reach(entries) {
  const seen = new Set();
  const packages = new Map(); // name -> first importer
  const missing = [];
  const stack = [...entries];
  while (stack.length) {
    const file = stack.pop();
    if (seen.has(file)) continue;
    seen.add(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2] ?? m[3];
      if (spec.startsWith('.')) {
        const target = path.resolve(path.dirname(file), spec);
        if (existsSync(target)) stack.push(target);
        else missing.push(`${path.relative(REPO, file)} -> ${spec}`);
      } else if (!isBuiltin(spec)) {
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
        if (!packages.has(name)) packages.set(name, path.relative(REPO, file));
      }
    }
    // The js backend starts its workers from a ternary ('./x.ts' : './x.js'): follow the .js branch too.
    for (const m of text.matchAll(/['"](\.\/[\w-]+-worker\.js)['"]/g)) {
      const target = path.resolve(path.dirname(file), m[1]);
      if (existsSync(target)) stack.push(target);
    }
  }
  return { modules: seen.size, packages, missing };
}

const r = reach(compiled.map((f) => path.join(OUT, f)));
const unstubbed = [...r.packages].filter(([name]) => !travels(name));
log(
  `${compiled.length} test files, ${r.modules} modules reachable from them; packages: ${[...r.packages.keys()].map(described).join(', ') || 'none'}`,
);
if (r.missing.length)
  throw new Error(`gpu-pack: imports that do not resolve in ${opt.out}:\n  ${r.missing.join('\n  ')}`);
if (unstubbed.length) {
  throw new Error(
    `gpu-pack: the tests reach packages that do not travel to the GPU host: ${unstubbed.map(([n, by]) => `${n} (imported by ${by})`).join(', ')}`,
  );
}

// The GPU host's benchmark imports ../dist/...: the same modules as .gpu/tests/lib/ (setup-root.sh links dist there).
for (const script of ['gpu.mjs']) {
  const file = path.join(REPO, 'benchmarks', script);
  if (!existsSync(file)) continue;
  const imports = readFileSync(file, 'utf8').matchAll(/from\s*['"]\.\.\/dist\/([^'"]+)['"]/g);
  const entries = [...imports].map((m) => path.join(OUT, 'lib', m[1])).filter((f) => existsSync(f));
  const b = reach(entries);
  const needs = [...b.packages.keys()];
  const extra = needs.filter((n) => !travels(n));
  log(
    `benchmarks/${script}: its dist/ imports reach ${b.modules} modules; packages: ${needs.map(described).join(', ') || 'none'}` +
      (extra.length ? ` -- NOT available on the host: ${extra.join(', ')}` : ''),
  );
}

// --- size -----------------------------------------------------------------------------------------------------------
const files = walk(OUT, () => true);
const bytes = files.reduce((s, f) => s + statSync(f).size, 0);
log(`wrote ${path.relative(REPO, OUT)}/: ${files.length} files, ${(bytes / 1024).toFixed(0)} KiB`);
log(
  `on the GPU host, from the repository root: NODE=<node> ${path.relative(REPO, OUT)}/run.sh   (G2L_ENGINE_PATH defaults to build-engine/Release/g2l_engine.node)`,
);
