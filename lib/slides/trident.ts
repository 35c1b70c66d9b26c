// TRIDENT's patch coordinates (`<slide>_patches.h5`, as its patching step writes them) as tiles of a manifest, so
// `g2l-native tile --coords-from <folder>` reuses a lab's segmentation instead of ours. The file holds `coords` (N, 2)
// int64, the level-0 (x, y) of each patch's top-left corner, with attributes patch_size (pixels at the target
// magnification) and patch_size_level0 (its footprint in level-0 pixels), target_magnification and others.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { hdf5, isHdf5File } from '../io/hdf5.js';

export interface TridentCoords {
  file: string;
  /** Level-0 x, y of each patch. */
  coords: [number, number][];
  patchSize: number | null;
  patchSizeLevel0: number | null;
  targetMagnification: number | null;
}

/** Where TRIDENT keeps a slide's coordinates under `folder`: the folder itself or its patches/ subfolder. */
export function tridentCoordsFile(folder: string, slide: string): string | null {
  for (const f of [path.join(folder, `${slide}_patches.h5`), path.join(folder, 'patches', `${slide}_patches.h5`)])
    if (existsSync(f)) return f;
  return null;
}

/** Reads a `<slide>_patches.h5`; a file that is not one gets an error naming it and what is missing. */
export async function readTridentCoords(file: string): Promise<TridentCoords> {
  if (!isHdf5File(file))
    throw new Error(`${file} is not a readable HDF5 file (no HDF5 signature): write it again with TRIDENT`);
  const h5 = await hdf5();
  let f: InstanceType<typeof h5.File>;
  try {
    f = new h5.File(file, 'r');
  } catch (e) {
    throw new Error(`${file} is not a readable HDF5 file (${(e as Error).message})`);
  }
  try {
    const ds = f.get('coords');
    if (!ds || !(ds instanceof h5.Dataset))
      throw new Error(`${file} has no 'coords' dataset: not a TRIDENT patch file`);
    const shape = ds.shape ?? [];
    if (shape.length !== 2 || shape[1] !== 2)
      throw new Error(`${file}: coords has shape (${shape.join(', ')}), expected (N, 2)`);
    const raw = ds.value as ArrayLike<number | bigint>;
    const coords: [number, number][] = [];
    for (let i = 0; i < shape[0]; i++) coords.push([Number(raw[2 * i]), Number(raw[2 * i + 1])]);
    const attr = (name: string): number | null => {
      const a = ds.attrs[name];
      if (!a) return null;
      const v = Number(a.value as number | bigint);
      return Number.isFinite(v) ? v : null;
    };
    return {
      file,
      coords,
      patchSize: attr('patch_size'),
      patchSizeLevel0: attr('patch_size_level0'),
      targetMagnification: attr('target_magnification'),
    };
  } finally {
    f.close();
  }
}
