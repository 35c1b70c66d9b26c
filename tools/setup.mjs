#!/usr/bin/env node
// `npm run setup`: installs what is missing and builds what is stale, on a fresh clone of a fresh machine.
// Idempotent: every step checks first and says "up to date" when there is nothing to do (a few seconds in all).
//
// Steps, in order:
//   npm       node_modules from package-lock.json (npm ci / npm install)
//   system    Debian packages the project needs (OpenSlide's runtime library; build tools), when run as root
//   python    .venv with tools/requirements.txt (the pinned torch, the reference libraries, nvcc for the CUDA check)
//   libtorch  found in this order: LIBTORCH, Torch_DIR, the project's .venv, python3's torch
//   engine    CMakeLists.txt through cmake-js into build-engine/ (CUDA when nvcc and a CUDA libtorch are present)
//   slides    binding.gyp through node-gyp into build/ (local Node headers, nothing downloaded)
//   ts        TypeScript into dist/
//
// Environment: LIBTORCH, Torch_DIR (libtorch to build against); G2L_CUDA=AUTO|ON|OFF and
// G2L_CUDA_ARCHITECTURES="80;90" (engine CUDA build); G2L_SETUP_SKIP_SYSTEM=1 (no apt-get).
// Flags: --only <step>[,<step>...] runs those steps alone.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const venv = path.join(root, '.venv');
const venvPython = path.join(venv, 'bin', 'python');
const requirements = path.join(root, 'tools', 'requirements.txt');
const engineBuild = path.join(root, 'build-engine');
const engineRecord = path.join(engineBuild, 'g2l-build.json');
const DEBIAN_PACKAGES = ['libopenslide0'];
const BUILD_TOOLS = { cmake: 'cmake', ninja: 'ninja-build', 'g++': 'g++', make: 'make' };

const args = process.argv.slice(2);
const onlyIdx = args.indexOf('--only');
const only = onlyIdx >= 0 ? new Set(args[onlyIdx + 1].split(',')) : null;
const started = Date.now();

class SetupError extends Error {}

function say(step, msg) {
  process.stdout.write(`setup: ${step.padEnd(8)} ${msg}\n`);
}

function run(step, cmd, cmdArgs, options = {}) {
  say(step, `$ ${[cmd, ...cmdArgs].join(' ')}`);
  const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit', ...options });
  if (r.error) throw new SetupError(`${step}: could not run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new SetupError(`${step}: \`${[cmd, ...cmdArgs].join(' ')}\` failed (exit ${r.status})`);
}

function capture(cmd, cmdArgs, options = {}) {
  try {
    return execFileSync(cmd, cmdArgs, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], ...options }).trim();
  } catch {
    return null;
  }
}

function which(cmd) {
  return capture('sh', ['-c', `command -v ${cmd}`]);
}

const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);

function newestMtime(dir, filter = () => true) {
  let newest = 0;
  if (!existsSync(dir)) return newest;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(p, filter));
    else if (filter(p)) newest = Math.max(newest, mtime(p));
  }
  return newest;
}

function writeJsonAtomic(file, value) {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, file);
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

// ---------------------------------------------------------------------------------------------------------------
function stepNpm() {
  const installed = path.join(root, 'node_modules', '.package-lock.json');
  if (existsSync(installed) && mtime(installed) >= mtime(path.join(root, 'package-lock.json'))) {
    say('npm', 'up to date');
    return;
  }
  say('npm', 'installing the npm packages of package-lock.json');
  run('npm', 'npm', [existsSync(path.join(root, 'node_modules')) ? 'install' : 'ci', '--no-audit', '--no-fund']);
}

function stepSystem() {
  if (process.env.G2L_SETUP_SKIP_SYSTEM === '1') {
    say('system', 'skipped (G2L_SETUP_SKIP_SYSTEM=1)');
    return;
  }
  const hasDpkg = which('dpkg-query') && which('apt-get');
  const missing = [];
  for (const [tool, pkg] of Object.entries(BUILD_TOOLS)) if (!which(tool)) missing.push(pkg);
  if (hasDpkg) {
    for (const pkg of DEBIAN_PACKAGES) {
      const status = capture('dpkg-query', ['-W', '-f=${Status}', pkg]);
      if (!status || !status.includes('install ok installed')) missing.push(pkg);
    }
  }
  if (missing.length === 0) {
    say('system', hasDpkg ? `up to date (${DEBIAN_PACKAGES.join(', ')})` : 'build tools present (no dpkg: install OpenSlide yourself for slide files)');
    return;
  }
  if (!hasDpkg || !isRoot) {
    say('system', `missing: ${missing.join(' ')}. Install them (Debian/Ubuntu: sudo apt-get install ${missing.join(' ')}); ` +
      'continuing without them (OpenSlide slides will be unreadable).');
    if (missing.some((m) => Object.values(BUILD_TOOLS).includes(m))) {
      throw new SetupError(`system: the build tools ${missing.join(', ')} are missing: install them and run npm run setup again`);
    }
    return;
  }
  say('system', `installing Debian packages: ${missing.join(' ')}`);
  run('system', 'apt-get', ['update', '-qq'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  run('system', 'apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
}

function stepPython() {
  const wanted = createHash('sha256').update(readFileSync(requirements)).digest('hex');
  const stamp = path.join(venv, '.g2l-requirements.sha256');
  if (existsSync(venvPython) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === wanted) {
    say('python', 'up to date (.venv matches tools/requirements.txt)');
    return;
  }
  const python = which('python3');
  if (!python) throw new SetupError('python: python3 is not installed; install Python 3.10+ and run npm run setup again');
  if (!existsSync(venvPython)) {
    say('python', 'creating .venv');
    run('python', python, ['-m', 'venv', venv]);
  }
  say('python', 'installing tools/requirements.txt into .venv (the pinned torch==2.11.0 and the reference libraries)');
  run('python', venvPython, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', '-r', requirements]);
  writeFileSync(stamp, `${wanted}\n`);
}

/** Finds libtorch: LIBTORCH, Torch_DIR, the project's .venv, python3's torch. */
function findLibtorch() {
  const pyTorch = (python) => {
    const out = capture(python, ['-c', 'import torch;print(torch.__version__);print(torch.utils.cmake_prefix_path)']);
    if (!out) return null;
    const [version, prefix] = out.split('\n');
    return { version: version.split('+')[0], versionFull: version, prefix, root: path.resolve(prefix, '..', '..') };
  };
  if (process.env.LIBTORCH) {
    const lt = path.resolve(process.env.LIBTORCH);
    const prefix = path.join(lt, 'share', 'cmake');
    if (!existsSync(path.join(prefix, 'Torch', 'TorchConfig.cmake'))) {
      throw new SetupError(`libtorch: LIBTORCH=${lt} has no share/cmake/Torch/TorchConfig.cmake; point it at an unpacked libtorch folder`);
    }
    const versionFile = path.join(lt, 'build-version');
    const version = existsSync(versionFile) ? readFileSync(versionFile, 'utf8').trim() : 'unknown';
    return { source: 'LIBTORCH', version: version.split('+')[0], versionFull: version, prefix, root: lt };
  }
  if (process.env.Torch_DIR) {
    const dir = path.resolve(process.env.Torch_DIR);
    if (!existsSync(path.join(dir, 'TorchConfig.cmake'))) {
      throw new SetupError(`libtorch: Torch_DIR=${dir} has no TorchConfig.cmake; point it at the folder that holds it`);
    }
    const prefix = path.resolve(dir, '..');
    const rootDir = path.resolve(dir, '..', '..', '..');
    const versionFile = path.join(rootDir, 'build-version');
    const version = existsSync(versionFile) ? readFileSync(versionFile, 'utf8').trim() : 'unknown';
    return { source: 'Torch_DIR', version: version.split('+')[0], versionFull: version, prefix, root: rootDir };
  }
  if (existsSync(venvPython)) {
    const t = pyTorch(venvPython);
    if (t) return { source: '.venv', ...t };
  }
  const python = which('python3');
  if (python) {
    const t = pyTorch(python);
    if (t) return { source: 'python3', ...t };
  }
  return null;
}

function nodeHeaders() {
  const include = path.join(root, 'node_modules', 'node-api-headers', 'include');
  const addonApi = path.join(root, 'node_modules', 'node-addon-api');
  if (!existsSync(path.join(include, 'node_api.h')) || !existsSync(path.join(addonApi, 'napi.h'))) {
    throw new SetupError('engine: node-api-headers or node-addon-api is missing from node_modules: run npm install');
  }
  return { include, addonApi };
}

function stepEngine() {
  const torch = findLibtorch();
  if (!torch) {
    throw new SetupError('libtorch: not found. Set LIBTORCH or Torch_DIR, or let setup install the pinned torch into .venv ' +
      '(run `npm run setup` without --only)');
  }
  say('libtorch', `${torch.versionFull} from ${torch.source} (${torch.root})`);
  if (torch.version !== '2.11.0') say('libtorch', `warning: the project is pinned to torch 2.11.0; ${torch.version} may not build`);
  const cuda = (process.env.G2L_CUDA || 'AUTO').toUpperCase();
  const archs = process.env.G2L_CUDA_ARCHITECTURES || '80;90';
  const key = { prefix: torch.prefix, cuda, archs, node: process.versions.modules };
  const addon = path.join(engineBuild, 'Release', 'g2l_engine.node');
  let record = null;
  try {
    record = JSON.parse(readFileSync(engineRecord, 'utf8'));
  } catch {
    record = null;
  }
  const sameConfig = record && JSON.stringify(record.key) === JSON.stringify(key) && existsSync(path.join(engineBuild, 'CMakeCache.txt'));
  const headers = nodeHeaders();
  if (sameConfig) {
    // Already configured for this libtorch: let the build tool decide what is stale (a no-op takes a second).
    const before = mtime(addon);
    run('engine', 'cmake', ['--build', engineBuild, '--parallel', '2'], { stdio: ['ignore', 'ignore', 'inherit'] });
    say('engine', mtime(addon) === before ? 'up to date' : `rebuilt ${path.relative(root, addon)}`);
  } else {
    say('engine', `building the engine over libtorch ${torch.version} (CUDA: ${cuda}, architectures ${archs})`);
    const cmakeJs = path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
    const defs = [
      `--CDCMAKE_PREFIX_PATH=${torch.prefix}`,
      `--CDG2L_CUDA=${cuda}`,
      `--CDG2L_CUDA_ARCHITECTURES=${archs}`,
      `--CDNODE_ADDON_API_DIR=${headers.addonApi}`,
      '--CDCMAKE_BUILD_TYPE=Release',
    ];
    run('engine', process.execPath, [cmakeJs, 'rebuild', '--out', 'build-engine', '--parallel', '2', ...(which('ninja') ? ['-G', 'Ninja'] : []), ...defs]);
  }
  if (!existsSync(addon)) throw new SetupError(`engine: the build finished but ${addon} is missing`);
  const cache = readFileSync(path.join(engineBuild, 'CMakeCache.txt'), 'utf8');
  const withCuda = /G2L_ENGINE_CUDA:INTERNAL=ON/.test(cache);
  writeJsonAtomic(engineRecord, {
    key,
    libtorch: { version: torch.versionFull, root: torch.root, source: torch.source },
    cuda: withCuda,
    cudaArchitectures: withCuda ? archs.split(';') : [],
  });
}

function nodeDir() {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) return prefix;
  const configured = capture('npm', ['config', 'get', 'nodedir']);
  if (configured && configured !== 'undefined' && existsSync(path.join(configured, 'include', 'node', 'common.gypi'))) return configured;
  throw new SetupError(
    `slides: Node's headers were not found (no ${path.join(prefix, 'include', 'node', 'common.gypi')}). ` +
      'Install the Node.js development headers (Debian: apt-get install libnode-dev, or use the official Node.js tarball) ' +
      'or run `npm config set nodedir <Node install prefix>`',
  );
}

function stepSlides() {
  const out = path.join(root, 'build', 'Release', 'g2l_slides.node');
  const sources = Math.max(newestMtime(path.join(root, 'native', 'slides')), mtime(path.join(root, 'binding.gyp')));
  if (existsSync(out) && mtime(out) >= sources) {
    say('slides', 'up to date');
    return;
  }
  say('slides', 'building the slide-reader addon (node-gyp, local Node headers)');
  const nodeGyp = path.join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  run('slides', process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodeDir()}`, '-j', '2'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (!existsSync(out)) throw new SetupError(`slides: node-gyp finished but ${out} is missing`);
}

function stepTs() {
  const stamp = path.join(root, 'dist', '.tsbuildinfo');
  const newest = Math.max(newestMtime(path.join(root, 'lib')), mtime(path.join(root, 'tsconfig.json')), mtime(path.join(root, 'package.json')));
  if (existsSync(stamp) && mtime(stamp) >= newest) {
    say('ts', 'up to date');
    return;
  }
  say('ts', 'compiling lib/ into dist/');
  run('ts', process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
}

const steps = { npm: stepNpm, system: stepSystem, python: stepPython, engine: stepEngine, slides: stepSlides, ts: stepTs };

try {
  if (only) for (const s of only) if (!steps[s]) throw new SetupError(`unknown step '${s}': use ${Object.keys(steps).join(', ')}`);
  for (const [name, fn] of Object.entries(steps)) if (!only || only.has(name)) fn();
  say('done', `in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (e) {
  if (e instanceof SetupError) {
    process.stderr.write(`setup: failed: ${e.message}\n`);
    process.exit(1);
  }
  throw e;
}
