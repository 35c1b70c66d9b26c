#!/usr/bin/env python3
"""Checks that a student exported by g2l-native (distill or demo) loads unchanged in the reference library and
computes what the engine computes.

  check_student_export.py <student folder> <images.npy uint8 (N,H,W,3)> <engine_features.npy float32 (N,D)>

Loads the folder with transformers' AutoModel (Hugging Face layout) or timm.create_model (timm hub layout), feeds the
images normalised with the folder's own mean/std, and compares the embeddings (HF pooler_output, timm pre-logits
class token) with the engine's to 1e-4 relative to their scale. Prints one JSON line; exits 1 on a mismatch.
Run with the pinned reference libraries: .venv/bin/python tools/check_student_export.py ...
"""
import json
import os
import sys

import numpy as np
import torch


def load(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    if "model_type" in cfg:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(folder)
        pre = os.path.join(folder, "preprocessor_config.json")
        p = json.load(open(pre)) if os.path.exists(pre) else {}
        mean, std = p.get("image_mean", [0.485, 0.456, 0.406]), p.get("image_std", [0.229, 0.224, 0.225])
        return "transformers", type(model).__name__, model, mean, std, lambda m, x: m(pixel_values=x).pooler_output
    import timm

    model = timm.create_model(
        cfg["architecture"],
        pretrained=True,
        pretrained_cfg_overlay={"file": os.path.join(folder, "model.safetensors")},
        num_classes=cfg.get("num_classes", 0),
        **cfg.get("model_args", {}),
    )
    pc = cfg.get("pretrained_cfg", {})
    return "timm", cfg["architecture"], model, pc.get("mean"), pc.get("std"), lambda m, x: m.forward_head(m.forward_features(x), pre_logits=True)


def main():
    folder, images_file, features_file = sys.argv[1:4]
    library, name, model, mean, std, embed = load(folder)
    model.eval()
    images = np.load(images_file)
    expected = np.load(features_file).astype(np.float64)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        got = embed(model, x).double().numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(got - expected).max()) / scale if got.shape == expected.shape else float("inf")
    ok = diff <= 1e-4
    print(json.dumps({"library": library, "model": name, "shape": list(got.shape), "maxRelDiff": diff, "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
