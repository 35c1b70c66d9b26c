// Every CUDA source compiles with nvcc for the default architectures, so a GPU host never meets a compile error
// first. nvcc comes from PATH, CUDACXX, or the .venv's nvidia-cuda-nvcc (tools/requirements.txt).
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from '../helpers/cli.js';

function findNvcc(): string | null {
  if (process.env.CUDACXX && existsSync(process.env.CUDACXX)) return process.env.CUDACXX;
  try {
    return execFileSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' }).trim() || null;
  } catch {
    /* not on PATH */
  }
  const venv = path.join(ROOT, '.venv', 'lib');
  if (!existsSync(venv)) return null;
  for (const py of readdirSync(venv)) {
    const p = path.join(venv, py, 'site-packages', 'nvidia', 'cu13', 'bin', 'nvcc');
    if (existsSync(p)) return p;
  }
  return null;
}

const nvcc = findNvcc();
const cudaDir = path.join(ROOT, 'native', 'engine', 'kernels', 'cuda');
const sources = readdirSync(cudaDir).filter((f) => f.endsWith('.cu'));

t.test(
  'CUDA sources compile for sm_80 and sm_90',
  { skip: nvcc ? false : 'nvcc not found (PATH, CUDACXX or .venv): run npm run setup' },
  async (t) => {
    t.ok(sources.length > 0, 'there are CUDA sources');
    const out = mkdtempSync(path.join(os.tmpdir(), 'g2l-nvcc-'));
    for (const src of sources) {
      const r = spawnSync(
        nvcc!,
        [
          '-std=c++17',
          '-O3',
          '--use_fast_math',
          '-gencode=arch=compute_80,code=sm_80',
          '-gencode=arch=compute_90,code=sm_90',
          '-I',
          path.join(ROOT, 'native', 'engine'),
          '-I',
          path.join(ROOT, 'native', 'engine', 'include'),
          '-c',
          path.join(cudaDir, src),
          '-o',
          path.join(out, `${src}.o`),
        ],
        { encoding: 'utf8' },
      );
      t.equal(r.status, 0, `${src} compiles${r.status ? `:\n${r.stderr}` : ''}`);
    }
  },
);
