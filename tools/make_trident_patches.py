#!/usr/bin/env python3
"""Writes TRIDENT-style patch coordinate files from a g2l-native tile manifest, with h5py, for the tests of
`g2l-native tile --coords-from` (test/slides/trident.test.ts runs it on synthetic slides it has just tiled).

Usage: .venv/bin/python tools/make_trident_patches.py <tile manifest folder> <TRIDENT job folder> [--mag 20]

For every slide of the manifest's slides.csv with status ok it writes <job>/patches/<slide>_patches.h5 as TRIDENT's
patching step does: a dataset `coords` (N, 2) int64 of level-0 (x, y) top-left corners, with the attributes
patch_size (pixels at the target magnification), patch_size_level0, target_magnification, level0_magnification,
overlap, name, level0_width, level0_height. The rows are the manifest's tiles in reverse order, so that a reader
that ignored the file and re-derived our grid would not pass by accident.

Pinned (tools/requirements.txt): h5py==3.16.0, numpy==2.4.6.
"""
import csv
import json
import os
import sys

import h5py
import numpy as np

assert h5py.__version__ == "3.16.0", h5py.__version__
assert np.__version__ == "2.4.6", np.__version__


def main():
    manifest, job = sys.argv[1], sys.argv[2]
    mag = float(sys.argv[sys.argv.index("--mag") + 1]) if "--mag" in sys.argv else 20.0
    with open(os.path.join(manifest, "tiling.json")) as f:
        tiling = json.load(f)
    os.makedirs(os.path.join(job, "patches"), exist_ok=True)
    with open(os.path.join(manifest, "slides.csv"), newline="") as f:
        slides = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    for s in slides:
        with open(os.path.join(manifest, "tiles", s["slide"] + ".csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        coords = np.array([[int(r["x"]), int(r["y"])] for r in rows][::-1], dtype=np.int64).reshape(-1, 2)
        mpp = float(s["mpp"])
        with h5py.File(os.path.join(job, "patches", s["slide"] + "_patches.h5"), "w") as h:
            d = h.create_dataset("coords", data=coords)
            d.attrs["patch_size"] = int(tiling["tileSizePx"])
            d.attrs["patch_size_level0"] = int(round(tiling["tileSizePx"] * tiling["mpp"] / mpp))
            d.attrs["target_magnification"] = int(mag)
            d.attrs["level0_magnification"] = int(round(10 / mpp))
            d.attrs["overlap"] = 0
            d.attrs["name"] = s["slide"]
            d.attrs["level0_width"] = int(s["width"])
            d.attrs["level0_height"] = int(s["height"])


if __name__ == "__main__":
    main()
