// CMakeLists.txt also configures with plain CMake (no cmake-js), as on the GPU host that has no npm: given the
// torch prefix and the Node-API header folders, it configures and compiles the addon's translation units.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from '../helpers/cli.js';

const record = path.join(ROOT, 'build-engine', 'g2l-build.json');
const prefix: string | null = existsSync(record) ? JSON.parse(readFileSync(record, 'utf8')).key.prefix : null;
const hasNinja = spawnSync('sh', ['-c', 'command -v ninja']).status === 0;

t.test(
  'plain cmake configures and compiles the addon glue',
  { skip: prefix && hasNinja ? false : 'no engine build record or no ninja: run npm run setup' },
  async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'g2l-cmake-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const configure = spawnSync(
      'cmake',
      [
        '-S',
        ROOT,
        '-B',
        dir,
        '-G',
        'Ninja',
        '-DCMAKE_BUILD_TYPE=Release',
        '-DG2L_CUDA=OFF',
        `-DCMAKE_PREFIX_PATH=${prefix}`,
        `-DNODE_API_INCLUDE_DIR=${path.join(ROOT, 'node_modules', 'node-api-headers', 'include')}`,
        `-DNODE_ADDON_API_DIR=${path.join(ROOT, 'node_modules', 'node-addon-api')}`,
      ],
      { encoding: 'utf8' },
    );
    t.equal(
      configure.status,
      0,
      `cmake configures${configure.status ? `:\n${configure.stdout}\n${configure.stderr}` : ''}`,
    );
    t.match(configure.stdout, /g2l-native: CPU engine/);
    const build = spawnSync(
      'cmake',
      ['--build', dir, '--target', 'CMakeFiles/g2l_addon_objects.dir/native/addon/convert.cpp.o'],
      { encoding: 'utf8' },
    );
    t.equal(
      build.status,
      0,
      `the addon glue compiles against the Node-API headers${build.status ? `:\n${build.stdout}` : ''}`,
    );
  },
);
