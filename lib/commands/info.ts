// `g2l-native info [--json]`: what this installation is and what it can use.
import type { CommandModule } from 'yargs';
import sharp from 'sharp';
import { chooseBackend, enginePath, readBuildRecord, type BackendName } from '../backends/index.js';
import { openslideStatus } from '../slides/addon.js';
import { VERSION } from '../version.js';

export interface InstallationInfo {
  version: string;
  backend: BackendName;
  backendFallbackReason: string | null;
  enginePath: string;
  libtorch: { version: string; source: string | null; root: string | null } | null;
  cuda: {
    built: boolean;
    architectures: string[];
    available: boolean;
    runtimeVersion: string | null;
    devices: { index: number; name: string; computeCapability: string; totalMemoryBytes: number }[];
  };
  cpuThreads: number;
  openslide: { version: string | null; library: string | null; error: string | null };
  sharp: { version: string; libvips: string };
  node: string;
}

export async function installationInfo(backend?: BackendName): Promise<InstallationInfo> {
  const choice = chooseBackend({ backend, fallback: true, warn: () => {} });
  const b = await choice.backend.info();
  const record = b.backend === 'native' ? readBuildRecord() : null;
  const versions = sharp.versions as { sharp: string; vips: string };
  return {
    version: VERSION,
    backend: b.backend,
    backendFallbackReason: choice.fallbackReason,
    enginePath: enginePath(),
    libtorch: b.libtorchVersion
      ? { version: b.libtorchVersion, source: record?.libtorch.source ?? null, root: record?.libtorch.root ?? null }
      : null,
    cuda: {
      built: b.cudaBuilt,
      architectures: b.cudaArchitectures,
      available: b.cudaAvailable,
      runtimeVersion: b.cudaRuntimeVersion,
      devices: b.devices,
    },
    cpuThreads: b.cpuThreads,
    openslide: openslideStatus(),
    sharp: { version: versions.sharp, libvips: versions.vips },
    node: process.version,
  };
}

export function formatInfo(i: InstallationInfo): string {
  const lines = [
    `g2l-native ${i.version}`,
    `  backend      ${i.backend}${i.backendFallbackReason ? ' (native engine unavailable, see below)' : ''}`,
    `  engine       ${i.enginePath}`,
    `  libtorch     ${i.libtorch ? `${i.libtorch.version}${i.libtorch.source ? ` (from ${i.libtorch.source}: ${i.libtorch.root})` : ''}` : 'not in use'}`,
    `  CUDA         ${i.cuda.built ? `built for sm_${i.cuda.architectures.join(', sm_')}` : 'not built (CPU engine)'}; ` +
      `${i.cuda.available ? `available, runtime ${i.cuda.runtimeVersion}` : 'no device available'}`,
    ...i.cuda.devices.map(
      (d) =>
        `    cuda:${d.index}     ${d.name}, compute capability ${d.computeCapability}, ${(d.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB`,
    ),
    `  CPU threads  ${i.cpuThreads}`,
    `  OpenSlide    ${i.openslide.version ? `${i.openslide.version} (${i.openslide.library})` : `absent (${i.openslide.error})`}`,
    `  sharp        ${i.sharp.version} (libvips ${i.sharp.libvips})`,
    `  Node.js      ${i.node}`,
  ];
  if (i.backendFallbackReason) lines.push('', i.backendFallbackReason);
  return lines.join('\n');
}

export const infoCommand: CommandModule<{ backend?: BackendName }, { backend?: BackendName; json: boolean }> = {
  command: 'info',
  describe: 'Show the version, backend, libtorch, CUDA devices, OpenSlide and sharp in use',
  builder: (y) => y.option('json', { type: 'boolean', default: false, describe: 'Print JSON' }) as never,
  handler: async (argv) => {
    const info = await installationInfo(argv.backend);
    process.stdout.write(argv.json ? `${JSON.stringify(info, null, 2)}\n` : `${formatInfo(info)}\n`);
  },
};
