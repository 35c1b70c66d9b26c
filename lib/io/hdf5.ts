// HDF5 through h5wasm (NIST's WebAssembly build of the HDF5 C library, reading and writing the host's files): real
// HDF5 files that h5py reads, with no native library to build or ship. Used for TRIDENT-style feature files
// (lib/data/extract.ts) and TRIDENT's patch coordinates (lib/slides/trident.ts); both are a few MB a slide.
import { closeSync, openSync, readSync } from 'node:fs';
import h5wasm from 'h5wasm/node';

const SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * Whether `file` starts an HDF5 superblock at offset 0 or at 512, 1024, 2048... (after a user block), as the HDF5
 * format specifies. h5wasm opens anything without complaint, so readers check this first.
 */
export function isHdf5File(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return false;
  }
  try {
    const head = Buffer.alloc(8);
    for (let offset = 0; offset <= 1 << 30; offset = offset === 0 ? 512 : offset * 2) {
      if (readSync(fd, head, 0, 8, offset) < 8) return false;
      if (head.equals(SIGNATURE)) return true;
    }
    return false;
  } catch {
    return false; // not readable as a file (a folder in its place)
  } finally {
    closeSync(fd);
  }
}

let ready: Promise<unknown> | null = null;

/** h5wasm, its WebAssembly module loaded once. */
export async function hdf5(): Promise<typeof h5wasm> {
  ready ??= h5wasm.ready;
  await ready;
  return h5wasm;
}
