"""Expected outputs of the tile augmentation, written from torchvision's own kernels.

For fixed tiles and fixed per-sample parameters (the columns of native/engine/include/g2l/augment.h), applies
torchvision.transforms.v2.functional on float32 images in [0, 1] in the engine's order:
    crop -> horizontal_flip -> vertical_flip -> ColorJitter ops in the sample's order -> gaussian_blur
and writes test/fixtures/augment/<case>.json (shapes, params, config) with <case>.bin.gz: the uint8 tiles followed
by the expected images as uint16 (round(x * 65535), quantisation error <= 7.7e-6, far under the 1e-3 tolerance).

Pinned: torch 2.11.0, torchvision 0.26.0 (/work/main/.venv).  Run: .venv/bin/python tools/make_augment_fixtures.py
"""
import gzip
import json
import math
import pathlib

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as F

OUT = pathlib.Path(__file__).resolve().parent.parent / "test" / "fixtures" / "augment"
COLS = 15  # crop x, crop y, hflip, vflip, jitter, brightness, contrast, saturation, hue, order x4, blur, sigma
BLUR_KERNEL = 9


def tissue_like_tiles(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Pink/purple blobs on near-white with noise, plus exact grays and saturated primaries (hue edge cases)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    tiles = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        img = np.full((h, w, 3), 235.0) + rng.normal(0, 4, (h, w, 3))
        for _ in range(6):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.15, 0.5) * min(h, w)
            colour = np.array([rng.uniform(120, 220), rng.uniform(40, 140), rng.uniform(120, 210)])
            m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
            img = img * (1 - m) + colour * m
        img += rng.normal(0, 10, (h, w, 3))
        img = np.clip(np.rint(img), 0, 255)
        # a strip of exact grays, primaries and black/white: maxc == minc and channel ties in rgb_to_hsv
        strip = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255),
                 (255, 255, 0), (0, 255, 255), (255, 0, 255), (200, 200, 50), (50, 200, 200), (10, 10, 250)]
        for j, c in enumerate(strip):
            img[h // 2, (j * 3) % w: (j * 3) % w + 3] = c
        tiles[i] = img.astype(np.uint8)
    return tiles


def reference(tile_u8: np.ndarray, p: np.ndarray, crop: int) -> torch.Tensor:
    x = torch.from_numpy(tile_u8).permute(2, 0, 1).to(torch.float32) / 255.0  # (3,H,W) in [0,1]
    x = F.crop(x, top=int(p[1]), left=int(p[0]), height=crop, width=crop)
    if p[2]:
        x = F.horizontal_flip(x)
    if p[3]:
        x = F.vertical_flip(x)
    if p[4]:  # torchvision ColorJitter.transform: fn_idx order, factors as drawn
        for fn in p[9:13].astype(int):
            if fn == 0:
                x = F.adjust_brightness(x, float(p[5]))
            elif fn == 1:
                x = F.adjust_contrast(x, float(p[6]))
            elif fn == 2:
                x = F.adjust_saturation(x, float(p[7]))
            else:
                x = F.adjust_hue(x, float(p[8]))
    if p[13]:
        x = F.gaussian_blur(x, kernel_size=[BLUR_KERNEL, BLUR_KERNEL], sigma=[float(p[14]), float(p[14])])
    return x


def row(cx, cy, hflip=0, vflip=0, jitter=0, b=1.0, c=1.0, s=1.0, h=0.0, order=(0, 1, 2, 3), blur=0, sigma=0.0):
    return [cx, cy, hflip, vflip, jitter, b, c, s, h, *order, blur, sigma]


def small_case(rng):
    th, tw, crop = 44, 52, 32
    rows = [
        row(0, 0),
        row(tw - crop, th - crop),
        row(3, 7, hflip=1),
        row(5, 2, vflip=1),
        row(11, 9, hflip=1, vflip=1),
        row(4, 4, jitter=1, b=1.15, order=(0, 1, 2, 3)),
        row(4, 4, jitter=1, b=0.85, order=(0, 1, 2, 3)),
        row(6, 1, jitter=1, c=1.15, order=(1, 0, 2, 3)),
        row(6, 1, jitter=1, c=0.85, order=(1, 0, 2, 3)),
        row(2, 8, jitter=1, s=1.1, order=(2, 0, 1, 3)),
        row(2, 8, jitter=1, s=0.9, order=(2, 0, 1, 3)),
        row(9, 3, jitter=1, h=0.05, order=(3, 0, 1, 2)),
        row(9, 3, jitter=1, h=-0.05, order=(3, 0, 1, 2)),
        row(1, 1, blur=1, sigma=0.1),
        row(1, 1, blur=1, sigma=2.0),
        row(7, 5, hflip=1, jitter=1, b=1.1, c=0.9, s=1.05, h=0.03, order=(3, 2, 1, 0), blur=1, sigma=1.3),
    ]
    # random rows over the whole parameter space, every order among them
    for _ in range(8):
        order = tuple(int(v) for v in rng.permutation(4))
        rows.append(row(int(rng.integers(0, tw - crop + 1)), int(rng.integers(0, th - crop + 1)),
                        int(rng.random() < 0.5), int(rng.random() < 0.5), 1,
                        rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15), rng.uniform(0.9, 1.1), rng.uniform(-0.05, 0.05),
                        order, int(rng.random() < 0.5), rng.uniform(0.1, 2.0)))
    return th, tw, crop, rows


def full_case(rng):
    th, tw, crop = 256, 256, 224
    rows = [
        row(17, 5, hflip=1, vflip=0, jitter=1, b=1.12, c=0.88, s=1.07, h=-0.04, order=(1, 3, 0, 2), blur=1, sigma=1.7),
        row(32, 0, hflip=0, vflip=1, jitter=1, b=0.9, c=1.14, s=0.93, h=0.045, order=(2, 1, 3, 0), blur=0, sigma=0.5),
    ]
    return th, tw, crop, rows


def write_case(name, th, tw, crop, rows, rng):
    params = np.asarray(rows, np.float32)
    assert params.shape[1] == COLS
    tiles = tissue_like_tiles(rng, len(rows), th, tw)
    expected = torch.stack([reference(tiles[i], params[i], crop) for i in range(len(rows))]).numpy()
    assert expected.min() >= 0 and expected.max() <= 1
    q = np.rint(expected.astype(np.float64) * 65535).astype("<u2")
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f"{name}.bin.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(tiles.tobytes())
        f.write(q.tobytes())
    meta = {
        "generator": "tools/make_augment_fixtures.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "tiles": {"shape": list(tiles.shape), "dtype": "uint8"},
        "expected": {"shape": list(expected.shape), "dtype": "uint16", "scale": 65535},
        "config": {"crop": crop, "blurKernel": BLUR_KERNEL},
        "params": params.tolist(),
    }
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: {len(rows)} samples, tiles {th}x{tw}, crop {crop}")


def main():
    torch.set_num_threads(1)
    rng = np.random.default_rng(20261129)
    write_case("small", *small_case(rng), rng)
    write_case("full", *full_case(rng), rng)


if __name__ == "__main__":
    main()
