#!/usr/bin/env python3
"""Writes the model fixtures of test/models: tiny ViTs of every family the engine supports, saved by timm and
transformers themselves in their hub layouts, with inputs and the outputs those libraries compute for them.

Pinned (tools/requirements.txt): torch 2.11.0, timm 1.0.29, transformers 5.17.0, safetensors 0.8.0, numpy 2.4.
Run:  .venv/bin/python tools/make_model_fixtures.py [--out test/fixtures/models]

Each model folder is written by the reference library (timm.models.save_for_hf, PreTrainedModel.save_pretrained)
and then loaded back by it (timm 'local-dir:', AutoModel.from_pretrained) to compute the expected embeddings, so
the fixtures also check that the folders are what those libraries read. Weights are random but not timm's tiny
init: every tensor gets O(1) activations and LayerScale gets values far from its 1e-5 init, so that a wrong
gate order, a missing scale or a misplaced register shows in the output.

Stored dtypes: timm_large_gelu in bfloat16 and hf_dinov2_gelu in float16 (references computed in float32 from the
stored values), the others in float32.

Cases (inputs shared by all models, stored raw in inputs/*.u8 with shapes in manifest.json):
  u8_224          uint8 (2,224,224,3), scaled and normalised with the model's mean/std
  u8_168_resized  uint8 (2,168,168,3) resized to 224 (bicubic, antialiased, on x in [0,255]) then normalised
  f32_224/168/280 float (2,3,H,W) = (u8 - 128) / 64 in float32 (exact), used as given: 168 and 280 px make the
                  models interpolate their position embeddings
Also: parameter counts of the real-size preset architectures (built by timm/transformers on the meta device).
"""
import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
import transformers
from timm.layers import SwiGLUPacked
from timm.models import save_for_hf
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

HOPT_MEAN, HOPT_STD = (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517)
HIBOU_MEAN, HIBOU_STD = (0.7068, 0.5755, 0.722), (0.195, 0.2316, 0.1816)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

TINY = dict(embed_dim=32, depth=2, num_heads=2)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """O(1) activations everywhere; LayerScale in [0.2, 1.0]; norms near 1 with non-zero bias."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(('gamma', 'lambda1')):
                p.copy_(torch.rand(p.shape, generator=g) * 0.8 + 0.2)
            elif 'norm' in name and name.endswith('weight'):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith('bias'):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2 and ('weight' in name):
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:  # class/register/mask tokens, position embeddings
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


def make_inputs(out: Path) -> dict:
    g = torch.Generator().manual_seed(1234)
    inputs = {}
    for size in (224, 168, 280):
        # Smooth colour fields plus noise: looks like an image to a resize, exercises every byte value.
        yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing='ij')
        imgs = []
        for b in range(2):
            phase = torch.rand(3, generator=g) * 6.28
            base = torch.stack([torch.sin(6 * xx + 4 * yy * (c + 1) + phase[c]) for c in range(3)], -1)
            noise = torch.randn(size, size, 3, generator=g) * 0.35
            imgs.append(((base + noise) * 0.5 + 0.5).clamp(0, 1) * 255)
        u8 = torch.stack(imgs).round().to(torch.uint8).contiguous()  # (2,H,W,3)
        name = f'images_{size}.u8'
        (out / 'inputs' / name).write_bytes(u8.numpy().tobytes())
        inputs[size] = u8
    return inputs


def float_input(u8: torch.Tensor) -> torch.Tensor:
    """(N,H,W,3) uint8 -> (N,3,H,W) float32 (u8 - 128) / 64: exact in float32, so JS can rebuild it bit for bit."""
    return ((u8.permute(0, 3, 1, 2).to(torch.float32) - 128.0) / 64.0).contiguous()


def normalised(u8: torch.Tensor, mean, std, size: int) -> torch.Tensor:
    x = u8.permute(0, 3, 1, 2).to(torch.float32)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode='bicubic', align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x / 255.0 - m) / s


def cases(embed, inputs, mean, std, size=224) -> dict:
    out = {}
    with torch.no_grad():
        out['u8_224'] = embed(normalised(inputs[224], mean, std, size))
        out['u8_168_resized'] = embed(normalised(inputs[168], mean, std, size))
        for s in (224, 168, 280):
            out[f'f32_{s}'] = embed(float_input(inputs[s]))
    return {k: v.to(torch.float64).tolist() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------------------------------------------
def timm_model(out: Path, name: str, arch: str, model_args: dict, code_kwargs: dict, mean, std, seed: int, inputs,
               store_dtype=torch.float32):
    folder = out / name
    model = timm.create_model(
        arch, pretrained=False, num_classes=0, **model_args, **code_kwargs,
        pretrained_cfg_overlay=dict(mean=mean, std=std, input_size=(3, 224, 224), num_classes=0))
    randomize(model, seed)
    model.to(store_dtype)
    # model_args are what the hub config carries; code_kwargs are what the official usage passes in code (UNI2-h).
    save_for_hf(model, folder, model_args=model_args, safe_serialization=True)
    # Reference: timm reads the folder back; dynamic_img_size lets it run 168 and 280 px as the engine does.
    ref = timm.create_model(f'local-dir:{folder}', pretrained=True, dynamic_img_size=True, **code_kwargs).eval()
    assert all(torch.equal(a.float(), b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    cfg = json.loads((folder / 'config.json').read_text())
    return {
        'layout': 'timm', 'architecture': arch, 'storedDtype': str(store_dtype).removeprefix('torch.'), 'embedDim': model.num_features, 'inputSize': 224,
        'parameters': sum(p.numel() for p in model.parameters()),
        'mean': list(cfg['pretrained_cfg']['mean']), 'std': list(cfg['pretrained_cfg']['std']),
        'expected': cases(lambda x: ref(x), inputs, mean, std),
    }


# ---------------------------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------------------------
def hf_model(out: Path, name: str, config, cls, mean, std, seed: int, inputs, shard: str | None = None,
             store_dtype=torch.float32):
    folder = out / name
    model = cls(config).eval()
    randomize(model, seed)
    model.to(store_dtype)
    kwargs = dict(safe_serialization=True) if 'safe_serialization' in cls.save_pretrained.__code__.co_varnames else {}
    if shard:
        kwargs['max_shard_size'] = shard
    model.save_pretrained(folder, **kwargs)
    BitImageProcessor(do_resize=True, size={'shortest_edge': 224}, do_center_crop=True, crop_size={'height': 224, 'width': 224},
                      image_mean=list(mean), image_std=list(std), do_convert_rgb=True).save_pretrained(folder)
    # The reference computes in float32 whatever the stored dtype (the engine's CPU path does the same).
    ref = transformers.AutoModel.from_pretrained(folder, attn_implementation='eager', dtype=torch.float32).eval()
    assert type(ref) is cls
    return {
        'layout': 'hf', 'modelType': config.model_type, 'storedDtype': str(store_dtype).removeprefix('torch.'), 'embedDim': config.hidden_size, 'inputSize': 224,
        'parameters': sum(p.numel() for p in model.parameters()),
        'mean': list(mean), 'std': list(std), 'sharded': bool(shard),
        'expected': cases(lambda x: ref(pixel_values=x).pooler_output, inputs, mean, std),
    }


def hf_config(cls, swiglu: bool, seed: int, **extra):
    g = torch.Generator().manual_seed(seed)
    return cls(hidden_size=TINY['embed_dim'], num_hidden_layers=TINY['depth'], num_attention_heads=TINY['num_heads'],
               patch_size=14, image_size=224, use_swiglu_ffn=swiglu, layer_norm_eps=1e-6,
               layerscale_value=float(torch.rand(1, generator=g)) * 0.5 + 0.5, **extra)


# ---------------------------------------------------------------------------------------------------------------
# Real-size parameter counts of the presets, built by the reference libraries on the meta device
# ---------------------------------------------------------------------------------------------------------------
def preset_parameters() -> dict:
    counts = {}
    with torch.device('meta'):
        m = timm.create_model('vit_giant_patch14_reg4_dinov2', pretrained=False, num_classes=0, img_size=224, init_values=1e-5)
        counts['h-optimus-0'] = sum(p.numel() for p in m.parameters())
        m = timm.create_model('vit_giant_patch14_224', pretrained=False, img_size=224, patch_size=14, depth=24, num_heads=24,
                              init_values=1e-5, embed_dim=1536, mlp_ratio=2.66667 * 2, num_classes=0, no_embed_class=True,
                              mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU, reg_tokens=8, dynamic_img_size=True)
        counts['uni2-h'] = sum(p.numel() for p in m.parameters())
        for preset, (dim, depth, heads) in {'hibou-l': (1024, 24, 16), 'hibou-b': (768, 12, 12)}.items():
            cfg = Dinov2WithRegistersConfig(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, mlp_ratio=4,
                                            use_swiglu_ffn=True, num_register_tokens=4, image_size=224, patch_size=14)
            counts[preset] = sum(p.numel() for p in Dinov2WithRegistersModel(cfg).parameters())
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=str(Path(__file__).resolve().parent.parent / 'test' / 'fixtures' / 'models'))
    out = Path(ap.parse_args().out)
    if out.exists():
        shutil.rmtree(out)
    (out / 'inputs').mkdir(parents=True)
    torch.manual_seed(0)
    inputs = make_inputs(out)

    models = {}
    # H-optimus-0's family: packed SwiGLU, LayerScale, 4 registers, no_embed_class; registry defaults + model_args.
    models['timm_giant_reg4_swiglu'] = timm_model(
        out, 'timm_giant_reg4_swiglu', 'vit_giant_patch14_reg4_dinov2',
        dict(img_size=224, init_values=1e-5, **TINY), {}, HOPT_MEAN, HOPT_STD, 1, inputs)
    # Plain ViT-L/16 family with patch 14: GELU MLP, class position, no registers, no LayerScale; stored in bf16.
    models['timm_large_gelu'] = timm_model(
        out, 'timm_large_gelu', 'vit_large_patch16_224', dict(img_size=224, patch_size=14, **TINY), {},
        IMAGENET_MEAN, IMAGENET_STD, 2, inputs, store_dtype=torch.bfloat16)
    # UNI2-h's family: its hub config lacks the SwiGLU layer and activation (passed in code), hence the preset.
    models['timm_uni2h_like'] = timm_model(
        out, 'timm_uni2h_like', 'vit_giant_patch14_224',
        dict(img_size=224, patch_size=14, init_values=1e-5, mlp_ratio=2.66667 * 2, no_embed_class=True, reg_tokens=8,
             dynamic_img_size=True, **TINY),
        dict(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU), IMAGENET_MEAN, IMAGENET_STD, 3, inputs)
    models['timm_uni2h_like']['preset'] = 'uni2-h'

    models['hf_dinov2_gelu'] = hf_model(out, 'hf_dinov2_gelu', hf_config(Dinov2Config, False, 4), Dinov2Model,
                                        IMAGENET_MEAN, IMAGENET_STD, 4, inputs, store_dtype=torch.float16)
    models['hf_dinov2_swiglu'] = hf_model(out, 'hf_dinov2_swiglu', hf_config(Dinov2Config, True, 5), Dinov2Model,
                                          HIBOU_MEAN, HIBOU_STD, 5, inputs)
    models['hf_dinov2_reg_gelu'] = hf_model(
        out, 'hf_dinov2_reg_gelu', hf_config(Dinov2WithRegistersConfig, False, 6, num_register_tokens=4),
        Dinov2WithRegistersModel, IMAGENET_MEAN, IMAGENET_STD, 6, inputs)
    # Hibou's family (registers + SwiGLU), saved in shards to exercise model.safetensors.index.json.
    models['hf_dinov2_reg_swiglu'] = hf_model(
        out, 'hf_dinov2_reg_swiglu', hf_config(Dinov2WithRegistersConfig, True, 7, num_register_tokens=4),
        Dinov2WithRegistersModel, HIBOU_MEAN, HIBOU_STD, 7, inputs, shard='100KB')

    manifest = {
        'generator': 'tools/make_model_fixtures.py',
        'versions': {'torch': torch.__version__, 'timm': timm.__version__, 'transformers': transformers.__version__,
                     'numpy': np.__version__},
        'inputs': {f'images_{s}': {'file': f'inputs/images_{s}.u8', 'dtype': 'uint8', 'shape': list(t.shape)}
                   for s, t in inputs.items()},
        'floatInput': '(u8 - 128) / 64 as float32, permuted to (N,3,H,W)',
        'cases': {'u8_224': ['images_224', 'uint8'], 'u8_168_resized': ['images_168', 'uint8'],
                  'f32_224': ['images_224', 'float32'], 'f32_168': ['images_168', 'float32'],
                  'f32_280': ['images_280', 'float32']},
        'presetParameters': preset_parameters(),
        'models': models,
    }
    (out / 'manifest.json').write_text(json.dumps(manifest, indent=1))
    total = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())
    print(f'wrote {out} ({total / 1e6:.2f} MB)')


if __name__ == '__main__':
    main()
