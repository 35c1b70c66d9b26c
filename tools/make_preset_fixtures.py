#!/usr/bin/env python3
"""Writes the preset fixtures of test/models/presets.test.ts: for each TRIDENT-named preset of a family the model
fixtures do not cover, a tiny random model of the same family (the same architecture, timm kwargs and pooling as
TRIDENT's encoder, small dims) saved by timm, with the embeddings TRIDENT's forward computes; and the real-size
parameter counts and output widths (built by timm on the meta device).

Pinned (tools/requirements-dev.txt): torch 2.11.0, timm 1.0.29, transformers 5.17.0, numpy 2.4.
Run:  .venv/bin/python tools/make_preset_fixtures.py [--out test/fixtures/presets]

Source of every constant: mahmoodlab/TRIDENT trident/patch_encoder_models/load.py (commit 5f53f476), the
timm_kwargs, Normalize and forward of UNIInferenceEncoder (uni_v1), Virchow2InferenceEncoder (virchow2),
HOptimus1InferenceEncoder (hoptimus1), GigaPathInferenceEncoder (gigapath), Phikonv2InferenceEncoder (phikon_v2); and
its later load.py's H0MiniInferenceEncoder with the model card bioptimus/H0-mini (h0-mini).
Inputs: the model fixtures' images (test/fixtures/models/inputs), checked byte for byte.
"""
import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import timm
import torch
import transformers
from transformers import Dinov2Config, Dinov2Model
from timm.layers import SwiGLUPacked
from timm.models import save_for_hf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_model_fixtures import HOPT_MEAN, HOPT_STD, IMAGENET_MEAN, IMAGENET_STD, TINY, float_input, make_inputs, normalised, randomize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SWIGLU = dict(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU)

# preset -> (architecture, hub model_args (TRIDENT's timm_kwargs less the code-only ones), code kwargs, mean, std,
#            pooling of TRIDENT's forward)
PRESETS = {
    'uni_v1': ('vit_large_patch16_224', dict(img_size=224, patch_size=16, init_values=1e-5, dynamic_img_size=True), {},
               IMAGENET_MEAN, IMAGENET_STD, 'cls'),
    'virchow2': ('vit_huge_patch14_224', dict(img_size=224, init_values=1e-5, reg_tokens=4, mlp_ratio=5.3375, global_pool='',
                                             dynamic_img_size=True), SWIGLU, IMAGENET_MEAN, IMAGENET_STD, 'cls+mean'),
    'hoptimus1': ('vit_giant_patch14_reg4_dinov2', dict(img_size=224, init_values=1e-5, global_pool='token', dynamic_img_size=False), {},
                  HOPT_MEAN, HOPT_STD, 'cls'),
    'gigapath': ('vit_giant_patch14_dinov2', dict(img_size=224, in_chans=3, patch_size=16, embed_dim=1536, depth=40, num_heads=24,
                                                 mlp_ratio=5.33334), {}, IMAGENET_MEAN, IMAGENET_STD, 'cls'),
    # H0MiniInferenceEncoder (TRIDENT's later load.py) and the model card bioptimus/H0-mini: SwiGLUPacked + SiLU in
    # code, every token out (global_pool ''), the H-optimus normalisation, the class token by default.
    'h0-mini': ('vit_base_patch14_reg4_dinov2', dict(img_size=224, init_values=1e-5, global_pool='', dynamic_img_size=True), SWIGLU,
                HOPT_MEAN, HOPT_STD, 'cls'),
}

# transformers presets: preset -> (the Dinov2Config of the real model, mean, std, pooling of TRIDENT's forward).
# Phikonv2InferenceEncoder: AutoModel of owkin/phikon-v2 (Dinov2Model, ViT-L/16), ImageNet Normalize,
# last_hidden_state[:, 0].
HF_PRESETS = {
    'phikon_v2': (dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, use_swiglu_ffn=False, image_size=224,
                       patch_size=16, layer_norm_eps=1e-6, layerscale_value=1e-5), IMAGENET_MEAN, IMAGENET_STD, 'cls'),
}


def cases(embed, inputs, mean, std) -> dict:
    """uint8 224 px, uint8 168 px resized to 224, float 224 px (168 px float input is not a multiple of patch 16)."""
    with torch.no_grad():
        out = {'u8_224': embed(normalised(inputs[224], mean, std, 224)),
               'u8_168_resized': embed(normalised(inputs[168], mean, std, 224)),
               'f32_224': embed(float_input(inputs[224]))}
    return {k: v.to(torch.float64).tolist() for k, v in out.items()}


def trident_embed(model, pool):
    def embed(x):
        out = model(x)
        if pool == 'cls':
            return out if out.dim() == 2 else out[:, 0]
        return torch.cat([out[:, 0], out[:, model.num_prefix_tokens:].mean(1)], -1)  # Virchow2: output[:, 5:]
    return embed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=str(ROOT / 'test' / 'fixtures' / 'presets'))
    out = Path(ap.parse_args().out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / 'inputs').mkdir()
        torch.manual_seed(0)
        inputs = make_inputs(Path(tmp))
        for s in (224, 168):
            committed = (ROOT / 'test' / 'fixtures' / 'models' / 'inputs' / f'images_{s}.u8').read_bytes()
            assert committed == inputs[s].numpy().tobytes(), f'images_{s}.u8 differs from test/fixtures/models/inputs'

    models = {}
    for seed, (preset, (arch, args, code, mean, std, pool)) in enumerate(PRESETS.items(), start=31):
        with torch.device('meta'):
            full = timm.create_model(arch, pretrained=False, num_classes=0, **args, **code)
        tiny_args = {**args, **TINY}
        model = timm.create_model(arch, pretrained=False, num_classes=0, **tiny_args, **code,
                                  pretrained_cfg_overlay=dict(mean=mean, std=std, input_size=(3, 224, 224), num_classes=0))
        randomize(model, seed)
        folder = out / preset
        save_for_hf(model, folder, model_args=tiny_args, safe_serialization=True)
        ref = timm.create_model(f'local-dir:{folder}', pretrained=True, **{**code, 'dynamic_img_size': True}).eval()
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
        models[preset] = {
            'architecture': arch, 'pool': pool, 'width': TINY['embed_dim'],
            'dims': TINY['embed_dim'] * (2 if pool == 'cls+mean' else 1),
            'parameters': sum(p.numel() for p in model.parameters()),
            'fullParameters': sum(p.numel() for p in full.parameters()),
            'fullDims': full.embed_dim * (2 if pool == 'cls+mean' else 1),
            'mean': list(mean), 'std': list(std),
            'expected': cases(trident_embed(ref, pool), inputs, mean, std),
        }
    for seed, (preset, (config, mean, std, pool)) in enumerate(HF_PRESETS.items(), start=61):
        with torch.device('meta'):
            full = Dinov2Model(Dinov2Config(**config))
        g = torch.Generator().manual_seed(seed)
        tiny = Dinov2Config(**{**config, 'hidden_size': TINY['embed_dim'], 'num_hidden_layers': TINY['depth'],
                               'num_attention_heads': TINY['num_heads'],
                               'layerscale_value': float(torch.rand(1, generator=g)) * 0.5 + 0.5})
        model = Dinov2Model(tiny)
        randomize(model, seed)
        folder = out / preset
        model.save_pretrained(folder, safe_serialization=True)
        ref = Dinov2Model.from_pretrained(folder).eval()
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
        models[preset] = {
            'architecture': 'transformers Dinov2Model', 'pool': pool, 'width': TINY['embed_dim'], 'dims': TINY['embed_dim'],
            'parameters': sum(p.numel() for p in model.parameters()),
            'fullParameters': sum(p.numel() for p in full.parameters()),
            'fullDims': config['hidden_size'],
            'mean': list(mean), 'std': list(std),
            'expected': cases(lambda x: ref(pixel_values=x).last_hidden_state[:, 0], inputs, mean, std),
        }
    manifest = {
        'generator': 'tools/make_preset_fixtures.py',
        'versions': {'torch': torch.__version__, 'timm': timm.__version__, 'transformers': transformers.__version__, 'numpy': np.__version__},
        'inputs': {'images_224': '../models/inputs/images_224.u8', 'images_168': '../models/inputs/images_168.u8'},
        'cases': {'u8_224': ['images_224', 'uint8'], 'u8_168_resized': ['images_168', 'uint8'], 'f32_224': ['images_224', 'float32']},
        'models': models,
    }
    (out / 'manifest.json').write_text(json.dumps(manifest, indent=1))
    total = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())
    print(f'wrote {out} ({total / 1e6:.2f} MB)')


if __name__ == '__main__':
    main()
