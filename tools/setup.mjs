#!/usr/bin/env node
// Set-up of g2l-native, in two modes. Idempotent: every step checks first and says "up to date" when there is
// nothing to do (a few seconds in all); every step says what it does and how long it took.
//
// In the repository (`npm run setup`; `npm test` and `npm run bench` add --dev):
//   npm       node_modules from package-lock.json (npm ci / npm install)
//   system    Debian packages the project needs (OpenSlide's runtime library; build tools), when run as root
//   python    .venv with libtorch: torch==2.11.0 (tools/requirements.txt) where an NVIDIA driver is present, else
//             tools/requirements-cpu.txt with --no-deps (the wheel without its 2.9 GB of NVIDIA libraries);
//             skipped when LIBTORCH or Torch_DIR names a libtorch
//   dev       (--dev only) tools/requirements-dev.txt into .venv: the reference libraries and nvcc the tests use
//   libtorch  found in this order: LIBTORCH, Torch_DIR, the project's .venv, python3's torch
//   engine    CMakeLists.txt through cmake-js into build-engine/ (CUDA when nvcc and a CUDA libtorch are present)
//   slides    binding.gyp through node-gyp into build/ (local Node headers, nothing downloaded)
//   ts        TypeScript into dist/
//
// In an installed package (`g2l-native setup`, which passes --package --out <cache>; lib/commands/setup.ts):
//   tools     the prerequisites (C++ compiler, make, cmake, python3): one message each with the install command
//   libtorch  LIBTORCH, Torch_DIR, python3's torch 2.11.x, an earlier setup's <cache>/python; else torch==2.11.0
//             from PyPI into <cache>/python (without the NVIDIA wheels where no NVIDIA driver is present)
//   engine    the package's CMakeLists.txt and native/ through cmake-js into <cache>/build-engine/
//   slides    the package's binding.gyp and native/slides copied into <cache>, node-gyp there into <cache>/build/
// The package folder itself is not written to; the loader (lib/backends/native.ts) looks in <cache> after it.
//
// Environment: LIBTORCH, Torch_DIR (libtorch to build against); G2L_CUDA=AUTO|ON|OFF and
// G2L_CUDA_ARCHITECTURES="80;90" (engine CUDA build); G2L_SETUP_SKIP_SYSTEM=1 (no apt-get).
// Flags: --only <step>[,<step>...] runs those steps alone; --dev adds the developer part; --package --out <dir>.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const TORCH_VERSION = '2.11.0';
const requirementsUser = path.join(root, 'tools', 'requirements.txt');
const requirementsCpu = path.join(root, 'tools', 'requirements-cpu.txt');
const requirementsDev = path.join(root, 'tools', 'requirements-dev.txt');
const DEBIAN_PACKAGES = ['libopenslide0'];
const BUILD_TOOLS = { cmake: 'cmake', ninja: 'ninja-build', 'g++': 'g++', make: 'make' };

const args = process.argv.slice(2);
const flagValue = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : null;
};
const only = flagValue('--only') ? new Set(flagValue('--only').split(',')) : null;
const dev = args.includes('--dev');
const packageMode = args.includes('--package');
// Where the builds go: the repository itself, or the per-user cache an installed package builds into.
const out = packageMode ? path.resolve(flagValue('--out') ?? '') : root;
const venv = packageMode ? path.join(out, 'python') : path.join(root, '.venv');
const venvPython = path.join(venv, 'bin', 'python');
const engineBuild = path.join(out, 'build-engine');
const engineRecord = path.join(engineBuild, 'g2l-build.json');
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
    return execFileSync(cmd, cmdArgs, {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      ...options,
    }).trim();
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

function writeTextAtomic(file, text) {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** An npm package's folder, wherever npm put it (the repository's node_modules, or hoisted in an app's). */
function packageDir(name) {
  try {
    return path.dirname(require.resolve(`${name}/package.json`));
  } catch {
    return null;
  }
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** An NVIDIA driver is present: the kernel module is loaded, or its user-space library is installed. */
function nvidiaDriver() {
  if (existsSync('/proc/driver/nvidia/version')) return true;
  const ldconfig = capture('sh', ['-c', 'ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null']);
  return Boolean(ldconfig && /\blibcuda\.so\.1\b/.test(ldconfig));
}

const sha256 = (text) => createHash('sha256').update(text).digest('hex');

// The command that installs a missing tool, per platform.
const INSTALL_HINTS = {
  'g++': { debian: 'sudo apt-get install g++', fedora: 'sudo dnf install gcc-c++', mac: 'xcode-select --install' },
  make: { debian: 'sudo apt-get install make', fedora: 'sudo dnf install make', mac: 'xcode-select --install' },
  cmake: {
    debian: 'sudo apt-get install cmake (or: python3 -m pip install --user cmake)',
    fedora: 'sudo dnf install cmake',
    mac: 'brew install cmake',
  },
  python3: {
    debian: 'sudo apt-get install python3 python3-venv',
    fedora: 'sudo dnf install python3',
    mac: 'brew install python',
  },
  'python3-venv': {
    debian: 'sudo apt-get install python3-venv',
    fedora: 'sudo dnf install python3',
    mac: 'brew install python',
  },
};

function installHint(tool) {
  const h = INSTALL_HINTS[tool];
  if (process.platform === 'darwin') return h.mac;
  if (existsSync('/etc/debian_version') || which('apt-get')) return h.debian;
  if (which('dnf')) return h.fedora;
  return h.debian;
}

// ---------------------------------------------------------------------------------------------------------------
function stepNpm() {
  const installed = path.join(root, 'node_modules', '.package-lock.json');
  if (existsSync(installed) && mtime(installed) >= mtime(path.join(root, 'package-lock.json'))) return 'up to date';
  say('npm', 'installing the npm packages of package-lock.json');
  run('npm', 'npm', [existsSync(path.join(root, 'node_modules')) ? 'install' : 'ci', '--no-audit', '--no-fund']);
  return 'installed';
}

function stepSystem() {
  if (process.env.G2L_SETUP_SKIP_SYSTEM === '1') return 'skipped (G2L_SETUP_SKIP_SYSTEM=1)';
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
    return hasDpkg
      ? `up to date (${DEBIAN_PACKAGES.join(', ')})`
      : 'build tools present (no dpkg: install OpenSlide yourself for slide files)';
  }
  if (!hasDpkg || !isRoot) {
    say(
      'system',
      `missing: ${missing.join(' ')}. Install them (Debian/Ubuntu: sudo apt-get install ${missing.join(' ')}); ` +
        'continuing without them (OpenSlide slides will be unreadable).',
    );
    if (missing.some((m) => Object.values(BUILD_TOOLS).includes(m))) {
      throw new SetupError(
        `system: the build tools ${missing.join(', ')} are missing: install them and run npm run setup again`,
      );
    }
    return 'incomplete';
  }
  say('system', `installing Debian packages: ${missing.join(' ')}`);
  run('system', 'apt-get', ['update', '-qq'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  run('system', 'apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  return `installed ${missing.join(' ')}`;
}

/** Installed package: each missing prerequisite gets one line with the command that installs it. */
function stepTools() {
  const missing = [];
  if (!which('c++') && !which('g++') && !which('clang++') && !process.env.CXX) missing.push('g++');
  if (!which('make')) missing.push('make');
  if (!which('cmake')) missing.push('cmake');
  const needPython = !process.env.LIBTORCH && !process.env.Torch_DIR && !existsSync(venvPython);
  if (needPython && !which('python3')) missing.push('python3');
  for (const tool of missing) {
    const what = {
      'g++': 'no C++ compiler (c++, g++ or clang++)',
      make: 'no make',
      cmake: 'no cmake',
      python3: 'no python3 (needed to install libtorch; or set LIBTORCH)',
    }[tool];
    process.stderr.write(`setup: missing  ${what}: ${installHint(tool)}\n`);
  }
  if (missing.length > 0)
    throw new SetupError(
      `tools: ${missing.length} prerequisite(s) missing (above): install them and run the setup again`,
    );
  const compiler = process.env.CXX || which('c++') || which('g++') || which('clang++');
  return `C++ compiler ${compiler}, ${which('cmake')}${which('ninja') ? ', ninja' : ''}${needPython ? `, ${which('python3')}` : ''}`;
}

/** Installs libtorch (PyPI's torch) into `venv`: the whole wheel where an NVIDIA driver is present, else without the NVIDIA wheels. */
function installTorch(step) {
  const driver = nvidiaDriver();
  const file = driver ? requirementsUser : requirementsCpu;
  const variant = driver ? 'full' : 'cpu';
  const wanted = sha256(`${variant}\n${readFileSync(file, 'utf8')}`);
  const stamp = path.join(venv, '.g2l-libtorch.sha256');
  if (existsSync(venvPython) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === wanted) {
    return `up to date (${venv} matches ${path.relative(root, file)})`;
  }
  const python = which('python3');
  if (!python)
    throw new SetupError(
      `${step}: python3 is not installed (${installHint('python3')}); or set LIBTORCH to an unpacked libtorch folder`,
    );
  if (!existsSync(venvPython)) {
    say(step, `creating ${venv}`);
    const r = spawnSync(python, ['-m', 'venv', venv], { encoding: 'utf8' });
    if (r.status !== 0) {
      throw new SetupError(
        `${step}: \`python3 -m venv\` failed (${(r.stderr || '').trim().split('\n').pop()}): ${installHint('python3-venv')}`,
      );
    }
  }
  const pip = [venvPython, '-m', 'pip', 'install', '--disable-pip-version-check', '-q'];
  if (driver) {
    say(
      step,
      `installing ${path.relative(root, file)} into ${venv} (an NVIDIA driver is present: torch with its CUDA libraries)`,
    );
    run(step, pip[0], [...pip.slice(1), '-r', file]);
  } else {
    say(
      step,
      `installing ${path.relative(root, file)} into ${venv} with --no-deps (no NVIDIA driver: torch without the NVIDIA wheels)`,
    );
    run(step, pip[0], [...pip.slice(1), '--no-deps', '-r', file]);
  }
  writeTextAtomic(stamp, `${wanted}\n`);
  return `installed torch ${TORCH_VERSION} (${variant === 'cpu' ? 'CPU libtorch' : 'with CUDA'})`;
}

/** Repository: the user part of .venv, libtorch. */
function stepPython() {
  if (process.env.LIBTORCH || process.env.Torch_DIR)
    return `skipped (libtorch from ${process.env.LIBTORCH ? 'LIBTORCH' : 'Torch_DIR'})`;
  return installTorch('python');
}

/** Repository, --dev: the reference libraries and nvcc the tests and benchmarks use. */
function stepDev() {
  const wanted = sha256(readFileSync(requirementsDev, 'utf8'));
  const stamp = path.join(venv, '.g2l-requirements-dev.sha256');
  if (existsSync(venvPython) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === wanted) {
    return 'up to date (.venv matches tools/requirements-dev.txt)';
  }
  const python = which('python3');
  if (!existsSync(venvPython)) {
    if (!python) throw new SetupError(`dev: python3 is not installed (${installHint('python3')})`);
    say('dev', 'creating .venv');
    run('dev', python, ['-m', 'venv', venv]);
  }
  say('dev', 'installing tools/requirements-dev.txt into .venv (the reference libraries and nvcc that the tests use)');
  run('dev', venvPython, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', '-r', requirementsDev]);
  writeTextAtomic(stamp, `${wanted}\n`);
  return 'installed';
}

// Reads torch's version and CMake folder without importing torch (which, for PyPI's wheel, needs its CUDA libraries).
const TORCH_PROBE = [
  'import importlib.util, os, re',
  "s = importlib.util.find_spec('torch')",
  'd = os.path.dirname(s.origin)',
  "print(re.search(r\"__version__\\s*(?::\\s*str)?\\s*=\\s*'([^']+)'\", open(os.path.join(d, 'version.py')).read()).group(1))",
  "print(os.path.join(d, 'share', 'cmake'))",
].join('\n');

function pyTorch(python) {
  const outText = capture(python, ['-c', TORCH_PROBE]);
  if (!outText) return null;
  const [versionFull, prefix] = outText.split('\n');
  if (!existsSync(path.join(prefix, 'Torch', 'TorchConfig.cmake'))) return null;
  return { version: versionFull.split('+')[0], versionFull, prefix, root: path.resolve(prefix, '..', '..') };
}

function fromEnvironment() {
  if (process.env.LIBTORCH) {
    const lt = path.resolve(process.env.LIBTORCH);
    const prefix = path.join(lt, 'share', 'cmake');
    if (!existsSync(path.join(prefix, 'Torch', 'TorchConfig.cmake'))) {
      throw new SetupError(
        `libtorch: LIBTORCH=${lt} has no share/cmake/Torch/TorchConfig.cmake; point it at an unpacked libtorch folder`,
      );
    }
    const versionFile = path.join(lt, 'build-version');
    const version = existsSync(versionFile)
      ? readFileSync(versionFile, 'utf8').trim()
      : (torchVersionFile(lt) ?? 'unknown');
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
    const version = existsSync(versionFile)
      ? readFileSync(versionFile, 'utf8').trim()
      : (torchVersionFile(rootDir) ?? 'unknown');
    return { source: 'Torch_DIR', version: version.split('+')[0], versionFull: version, prefix, root: rootDir };
  }
  return null;
}

/** torch/version.py of a pip-installed torch folder (LIBTORCH or Torch_DIR may point into one). */
function torchVersionFile(dir) {
  const file = path.join(dir, 'version.py');
  if (!existsSync(file)) return null;
  return /__version__\s*(?::\s*str)?\s*=\s*'([^']+)'/.exec(readFileSync(file, 'utf8'))?.[1] ?? null;
}

/** Finds libtorch. Repository: LIBTORCH, Torch_DIR, .venv, python3. Package: LIBTORCH, Torch_DIR, python3 (2.11.x), the cache. */
function findLibtorch() {
  const env = fromEnvironment();
  if (env) return env;
  if (!packageMode && existsSync(venvPython)) {
    const t = pyTorch(venvPython);
    if (t) return { source: '.venv', ...t };
  }
  const python = which('python3');
  if (python) {
    const t = pyTorch(python);
    if (t && (!packageMode || t.version.startsWith('2.11.'))) return { source: 'python3', ...t };
    if (t) say('libtorch', `python3's torch is ${t.versionFull}, not 2.11.x: not using it`);
  }
  // An earlier setup's cache, when its install finished (the stamp is written last).
  if (packageMode && existsSync(path.join(venv, '.g2l-libtorch.sha256'))) {
    const t = pyTorch(venvPython);
    if (t) return { source: 'cache', ...t };
  }
  return null;
}

let torch = null;

function stepLibtorch() {
  torch = findLibtorch();
  if (!torch && packageMode) {
    say(
      'libtorch',
      `not found (no LIBTORCH, Torch_DIR, or python3 with torch 2.11.x): installing torch==${TORCH_VERSION} from PyPI into ${venv}`,
    );
    installTorch('libtorch');
    const t = pyTorch(venvPython);
    if (!t) throw new SetupError(`libtorch: torch was installed into ${venv} but its CMake files were not found`);
    torch = { source: 'cache', ...t };
  }
  if (!torch) {
    throw new SetupError(
      'libtorch: not found. Set LIBTORCH or Torch_DIR, or let setup install the pinned torch into .venv ' +
        '(run `npm run setup` without --only)',
    );
  }
  if (torch.version !== TORCH_VERSION)
    say('libtorch', `warning: the project is pinned to torch ${TORCH_VERSION}; ${torch.version} may not build`);
  return `${torch.versionFull} from ${torch.source} (${torch.root})`;
}

function nodeHeaders() {
  const headers = packageDir('node-api-headers');
  const addonApi = packageDir('node-addon-api');
  if (
    !headers ||
    !existsSync(path.join(headers, 'include', 'node_api.h')) ||
    !addonApi ||
    !existsSync(path.join(addonApi, 'napi.h'))
  ) {
    throw new SetupError('engine: node-api-headers or node-addon-api is missing from node_modules: run npm install');
  }
  return { include: path.join(headers, 'include'), addonApi };
}

/** sha256 over the engine's sources as shipped: CMakeLists.txt, native/engine and native/addon. */
function engineSourcesHash() {
  const hash = createHash('sha256');
  const files = ['CMakeLists.txt'];
  for (const dir of ['native/engine', 'native/addon']) {
    for (const f of readdirSync(path.join(root, dir), { recursive: true })) {
      if (statSync(path.join(root, dir, String(f))).isFile()) files.push(path.join(dir, String(f)));
    }
  }
  for (const f of files.sort())
    hash
      .update(`${f}\0`)
      .update(readFileSync(path.join(root, f)))
      .update('\0');
  return hash.digest('hex');
}

function stepEngine() {
  if (!torch) stepLibtorch();
  const cuda = (process.env.G2L_CUDA || 'AUTO').toUpperCase();
  const archs = process.env.G2L_CUDA_ARCHITECTURES || '80;90';
  // The sources' folder is part of the key: CMake refuses a build folder configured for another source tree.
  const key = {
    prefix: torch.prefix,
    cuda,
    archs,
    node: process.versions.modules,
    ...(packageMode ? { source: root } : {}),
  };
  const addon = path.join(engineBuild, 'Release', 'g2l_engine.node');
  let record = null;
  try {
    record = JSON.parse(readFileSync(engineRecord, 'utf8'));
  } catch {
    record = null;
  }
  const sameConfig =
    record &&
    JSON.stringify(record.key) === JSON.stringify(key) &&
    existsSync(path.join(engineBuild, 'CMakeCache.txt'));
  const headers = nodeHeaders();
  // Installed package: the build is current while the shipped sources are byte for byte those it was built from (a
  // reinstall of the same version rewrites their mtimes, not their contents), so the precompiled header can go.
  const sources = packageMode ? engineSourcesHash() : undefined;
  let result;
  if (packageMode && sameConfig && record.sources === sources && existsSync(addon)) {
    result = 'up to date';
  } else if (sameConfig && !packageMode) {
    // Already configured for this libtorch: let the build tool decide what is stale (a no-op takes a second).
    const before = mtime(addon);
    run('engine', 'cmake', ['--build', engineBuild, '--parallel', '2'], { stdio: ['ignore', 'ignore', 'inherit'] });
    result = mtime(addon) === before ? 'up to date' : `rebuilt ${addon}`;
  } else {
    say(
      'engine',
      `building the engine over libtorch ${torch.version} (CUDA: ${cuda}, architectures ${archs}) into ${engineBuild}`,
    );
    const cmakeJsDir = packageDir('cmake-js');
    if (!cmakeJsDir) throw new SetupError('engine: cmake-js is missing from node_modules: run npm install');
    const defs = [
      `--CDCMAKE_PREFIX_PATH=${torch.prefix}`,
      `--CDG2L_CUDA=${cuda}`,
      `--CDG2L_CUDA_ARCHITECTURES=${archs}`,
      `--CDNODE_ADDON_API_DIR=${headers.addonApi}`,
      '--CDCMAKE_BUILD_TYPE=Release',
      // g2l_engine_testing.node (native/addon/testing.cpp) serves the repository's tests and benchmarks only.
      `--CDG2L_TESTING=${packageMode ? 'OFF' : 'ON'}`,
    ];
    run('engine', process.execPath, [
      path.join(cmakeJsDir, 'bin', 'cmake-js'),
      'rebuild',
      '--directory',
      root,
      '--out',
      engineBuild,
      '--parallel',
      '2',
      ...(which('ninja') ? ['-G', 'Ninja'] : []),
      ...defs,
    ]);
    result = `built ${addon}`;
  }
  if (!existsSync(addon)) throw new SetupError(`engine: the build finished but ${addon} is missing`);
  const testing = path.join(engineBuild, 'Release', 'g2l_engine_testing.node');
  if (!packageMode && !existsSync(testing)) {
    throw new SetupError(`engine: the build finished but ${testing} (the tests' module) is missing`);
  }
  const cache = readFileSync(path.join(engineBuild, 'CMakeCache.txt'), 'utf8');
  const withCuda = /G2L_ENGINE_CUDA:INTERNAL=ON/.test(cache);
  if (packageMode && result !== 'up to date') {
    // libtorch's precompiled header (~700 MB) only speeds up this build: the cache keeps the engine, not it.
    let freed = 0;
    for (const f of readdirSync(engineBuild, { recursive: true })) {
      const p = path.join(engineBuild, String(f));
      if (/\.(gch|pch)$/.test(p)) {
        freed += statSync(p).size;
        rmSync(p, { force: true });
      }
    }
    if (freed > 0) say('engine', `removed the precompiled header (${(freed / 2 ** 20).toFixed(0)} MiB) from the cache`);
  }
  writeJsonAtomic(engineRecord, {
    ...(sources ? { sources } : {}),
    key,
    libtorch: { version: torch.versionFull, root: torch.root, source: torch.source },
    cuda: withCuda,
    cudaArchitectures: withCuda ? archs.split(';') : [],
  });
  return result;
}

function nodeDir() {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) return prefix;
  const configured = capture('npm', ['config', 'get', 'nodedir']);
  if (configured && configured !== 'undefined' && existsSync(path.join(configured, 'include', 'node', 'common.gypi')))
    return configured;
  throw new SetupError(
    `slides: Node's headers were not found (no ${path.join(prefix, 'include', 'node', 'common.gypi')}). ` +
      'Install the Node.js development headers (Debian: apt-get install libnode-dev, or use the official Node.js tarball) ' +
      'or run `npm config set nodedir <Node install prefix>`',
  );
}

/** What the slide addon compiles: binding.gyp, native/slides, and the addon headers it includes (../addon/async.h). */
function slideSources(base) {
  const files = [
    'binding.gyp',
    ...readdirSync(path.join(root, 'native', 'slides')).map((f) => path.join('native', 'slides', f)),
  ];
  for (const f of readdirSync(path.join(root, 'native', 'addon')))
    if (f.endsWith('.h')) files.push(path.join('native', 'addon', f));
  return files.map((f) => path.join(base, f));
}

/** Package mode: node-gyp builds into <cwd>/build, so the slide sources are copied into the cache (when changed). */
function stageSlideSources() {
  for (const rel of slideSources('')) {
    const src = path.join(root, rel);
    const dst = path.join(out, rel);
    if (existsSync(dst) && readFileSync(dst).equals(readFileSync(src))) continue;
    mkdirSync(path.dirname(dst), { recursive: true });
    copyFileSync(src, `${dst}.${process.pid}.tmp`);
    renameSync(`${dst}.${process.pid}.tmp`, dst);
  }
}

function stepSlides() {
  if (packageMode) stageSlideSources();
  const outFile = path.join(out, 'build', 'Release', 'g2l_slides.node');
  const sources = Math.max(...slideSources(out).map(mtime));
  if (existsSync(outFile) && mtime(outFile) >= sources) return 'up to date';
  say('slides', `building the slide-reader addon (node-gyp, local Node headers) into ${path.dirname(outFile)}`);
  const nodeGypDir = packageDir('node-gyp');
  if (!nodeGypDir) throw new SetupError('slides: node-gyp is missing from node_modules: run npm install');
  const addonApi = packageDir('node-addon-api');
  // binding.gyp asks node for require('node-addon-api') from `out`: NODE_PATH lets that resolve outside node_modules.
  const env = {
    ...process.env,
    ...(addonApi
      ? { NODE_PATH: [path.dirname(addonApi), process.env.NODE_PATH].filter(Boolean).join(path.delimiter) }
      : {}),
  };
  run(
    'slides',
    process.execPath,
    [path.join(nodeGypDir, 'bin', 'node-gyp.js'), 'rebuild', `--nodedir=${nodeDir()}`, '-j', '2'],
    {
      cwd: out,
      env,
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  if (!existsSync(outFile)) throw new SetupError(`slides: node-gyp finished but ${outFile} is missing`);
  return `built ${outFile}`;
}

function stepTs() {
  const stamp = path.join(root, 'dist', '.tsbuildinfo');
  const newest = Math.max(
    newestMtime(path.join(root, 'lib')),
    mtime(path.join(root, 'tsconfig.json')),
    mtime(path.join(root, 'package.json')),
  );
  if (existsSync(stamp) && mtime(stamp) >= newest) return 'up to date';
  say('ts', 'compiling lib/ into dist/');
  run('ts', process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
  return 'compiled';
}

const steps = packageMode
  ? { tools: stepTools, libtorch: stepLibtorch, engine: stepEngine, slides: stepSlides }
  : {
      npm: stepNpm,
      system: stepSystem,
      python: stepPython,
      dev: stepDev,
      libtorch: stepLibtorch,
      engine: stepEngine,
      slides: stepSlides,
      ts: stepTs,
    };

try {
  if (packageMode && !flagValue('--out'))
    throw new SetupError('--package needs --out <folder> (g2l-native setup passes its cache)');
  if (only)
    for (const s of only)
      if (!steps[s]) throw new SetupError(`unknown step '${s}': use ${Object.keys(steps).join(', ')}`);
  for (const [name, fn] of Object.entries(steps)) {
    if (only ? !only.has(name) : name === 'dev' && !dev) continue;
    const t0 = Date.now();
    const result = fn();
    say(name, `${result} [${((Date.now() - t0) / 1000).toFixed(1)} s]`);
  }
  say('done', `in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (e) {
  if (e instanceof SetupError) {
    process.stderr.write(`setup: failed: ${e.message}\n`);
    process.exit(1);
  }
  throw e;
}
