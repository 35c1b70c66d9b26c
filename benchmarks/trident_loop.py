#!/usr/bin/env python3
"""The TRIDENT-style PyTorch loop that benchmarks/extract.mjs compares `g2l-native embed --slides` with: for every slide
of a g2l-native tile manifest, OpenSlide read_region of each tile -> RGB -> the model's eval transform (resize to the
model's input, to tensor, normalise) -> batches through the same model (timm, the same weights) -> features per slide.
It prints one JSON line: tiles, seconds, tiles per second.

Usage: .venv/bin/python benchmarks/trident_loop.py <manifest> <model folder (timm hub layout)> <batch> <threads>
Pinned (tools/requirements.txt): torch==2.11.0, timm==1.0.29, openslide-python==1.4.7 (over openslide-bin 4.0.1.2).
"""
import csv
import json
import os
import sys
import time

import openslide
import safetensors.torch
import timm
import torch
from torchvision.transforms import v2 as T


def main():
    manifest, model_dir, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=0, **cfg.get("model_args", {}))
    model.load_state_dict(safetensors.torch.load_file(os.path.join(model_dir, "model.safetensors")), strict=False)
    model.eval()
    size = cfg["pretrained_cfg"]["input_size"][-1]
    transform = T.Compose([
        T.ToImage(), T.Resize(size, antialias=True), T.ToDtype(torch.float32, scale=True),
        T.Normalize(cfg["pretrained_cfg"]["mean"], cfg["pretrained_cfg"]["std"]),
    ])
    with open(os.path.join(manifest, "slides.csv"), newline="") as f:
        slides = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    tiles = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for s in slides:
            with open(os.path.join(manifest, "tiles", s["slide"] + ".csv"), newline="") as f:
                rows = list(csv.DictReader(f))
            wsi = openslide.OpenSlide(s["path"])
            feats = []
            for i in range(0, len(rows), batch):
                imgs = [transform(wsi.read_region((int(r["x"]), int(r["y"])), int(r["level"]),
                                                  (int(r["read_size"]), int(r["read_size"]))).convert("RGB"))
                        for r in rows[i:i + batch]]
                feats.append(model(torch.stack(imgs)))
            torch.cat(feats)
            wsi.close()
            tiles += len(rows)
    seconds = time.perf_counter() - start
    print(json.dumps({"tiles": tiles, "seconds": seconds, "tilesPerSecond": tiles / seconds}))


if __name__ == "__main__":
    main()
