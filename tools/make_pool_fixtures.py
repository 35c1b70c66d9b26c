#!/usr/bin/env python3
"""Writes the pooling fixtures of test/models/pool.test.ts: tiny timm and transformers ViTs, saved by their own
libraries, and the embeddings each pooling gives as those libraries (and the conventions built on them) compute it.

Pinned (tools/requirements.txt): torch 2.11.0, timm 1.0.29, transformers 5.17.0, safetensors 0.8.0, numpy 2.4.
Run:  .venv/bin/python tools/make_pool_fixtures.py [--out test/fixtures/pool]

Poolings (the engine's ModelSpec::pool):
  cls       the class token after the final norm (timm global_pool 'token'; transformers pooler_output)
  mean      the mean of the patch tokens, class and register tokens excluded (timm global_pool 'avg':
            global_pool_nlc drops num_prefix_tokens), then fc_norm where timm has one (use_fc_norm)
  cls+mean  concat(cls, mean) after the final norm (Virchow2's card, TRIDENT, eva): 2*D
Models:
  timm_reg4_tokens   vit_small_patch14_reg4_dinov2, global_pool '' (every token, as Virchow2's config): the three
                     poolings from timm's own pool() on the normalised tokens; cls+mean = cat(cls, avg)
  timm_avg_fc_norm   vit_base_patch16_224 family with global_pool 'avg' (fc_norm by timm's default): model(x) is
                     fc_norm(mean); cls over it is timm's forward_head with pool_type 'token' (fc_norm(x[:, 0]))
  timm_avg_no_fc_norm  the registers family with global_pool 'avg' and fc_norm False: final norm, then mean
  hf_reg_swiglu      Dinov2WithRegisters: cls = pooler_output, mean = last_hidden_state[:, 1 + registers:].mean(1)
  hf_dinov2_gelu     Dinov2 (no registers): the same with 1 prefix token
Inputs: the model fixtures' images (test/fixtures/models/inputs, regenerated here and checked byte for byte).
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
from timm.models import save_for_hf
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_model_fixtures import IMAGENET_MEAN, IMAGENET_STD, HIBOU_MEAN, HIBOU_STD, TINY, float_input, make_inputs, normalised, randomize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cases(embed, inputs, mean, std) -> dict:
    with torch.no_grad():
        out = {'u8_224': embed(normalised(inputs[224], mean, std, 224)),
               'f32_224': embed(float_input(inputs[224])),
               'f32_168': embed(float_input(inputs[168]))}
    return {k: v.to(torch.float64).tolist() for k, v in out.items()}


def timm_folder(out: Path, name: str, arch: str, model_args: dict, mean, std, seed: int):
    folder = out / name
    model = timm.create_model(arch, pretrained=False, num_classes=0, **model_args,
                              pretrained_cfg_overlay=dict(mean=mean, std=std, input_size=(3, 224, 224), num_classes=0))
    randomize(model, seed)
    save_for_hf(model, folder, model_args=model_args, safe_serialization=True)
    ref = timm.create_model(f'local-dir:{folder}', pretrained=True, dynamic_img_size=True).eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    return ref


def timm_entry(arch, ref, mean, std, expected, default_pool):
    return {'layout': 'timm', 'architecture': arch, 'width': ref.embed_dim, 'prefixTokens': ref.num_prefix_tokens,
            'fcNorm': not isinstance(ref.fc_norm, torch.nn.Identity), 'defaultPool': default_pool,
            'mean': list(mean), 'std': list(std), 'expected': expected}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=str(ROOT / 'test' / 'fixtures' / 'pool'))
    out = Path(ap.parse_args().out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # The model fixtures' inputs, regenerated from their seed and checked against the committed files.
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / 'inputs').mkdir()
        torch.manual_seed(0)
        inputs = make_inputs(Path(tmp))
        for s in (224, 168):
            committed = (ROOT / 'test' / 'fixtures' / 'models' / 'inputs' / f'images_{s}.u8').read_bytes()
            assert committed == inputs[s].numpy().tobytes(), f'images_{s}.u8 differs from test/fixtures/models/inputs'

    models = {}
    # Every token out (global_pool ''): the three poolings from timm's own pool() on the normalised tokens.
    arch = 'vit_small_patch14_reg4_dinov2'
    ref = timm_folder(out, 'timm_reg4_tokens', arch, dict(img_size=224, init_values=1e-5, global_pool='', **TINY),
                      IMAGENET_MEAN, IMAGENET_STD, 21)
    cls = lambda x: ref.pool(ref(x), pool_type='token')
    avg = lambda x: ref.pool(ref(x), pool_type='avg')
    models['timm_reg4_tokens'] = timm_entry(arch, ref, IMAGENET_MEAN, IMAGENET_STD, {
        'cls': cases(cls, inputs, IMAGENET_MEAN, IMAGENET_STD),
        'mean': cases(avg, inputs, IMAGENET_MEAN, IMAGENET_STD),
        'cls+mean': cases(lambda x: torch.cat([cls(x), avg(x)], 1), inputs, IMAGENET_MEAN, IMAGENET_STD)}, None)

    # global_pool 'avg' with timm's default fc_norm: forward_head pools, then fc_norm.
    arch = 'vit_base_patch16_224'
    ref = timm_folder(out, 'timm_avg_fc_norm', arch, dict(img_size=224, patch_size=14, global_pool='avg', **TINY),
                      IMAGENET_MEAN, IMAGENET_STD, 22)
    assert not isinstance(ref.fc_norm, torch.nn.Identity) and isinstance(ref.norm, torch.nn.Identity)
    head = lambda pool: (lambda x: ref.fc_norm(ref.pool(ref.forward_features(x), pool_type=pool)))
    models['timm_avg_fc_norm'] = timm_entry(arch, ref, IMAGENET_MEAN, IMAGENET_STD, {
        'mean': cases(lambda x: ref(x), inputs, IMAGENET_MEAN, IMAGENET_STD),
        'cls': cases(head('token'), inputs, IMAGENET_MEAN, IMAGENET_STD)}, 'mean')

    # global_pool 'avg' with fc_norm False: the final norm on the tokens, then the mean (registers excluded).
    arch = 'vit_small_patch14_reg4_dinov2'
    ref = timm_folder(out, 'timm_avg_no_fc_norm', arch,
                      dict(img_size=224, init_values=1e-5, global_pool='avg', fc_norm=False, **TINY), HIBOU_MEAN, HIBOU_STD, 23)
    assert isinstance(ref.fc_norm, torch.nn.Identity)
    models['timm_avg_no_fc_norm'] = timm_entry(arch, ref, HIBOU_MEAN, HIBOU_STD, {
        'mean': cases(lambda x: ref(x), inputs, HIBOU_MEAN, HIBOU_STD)}, 'mean')

    # transformers: pooler_output is the class token; the mean reads the patch tokens of last_hidden_state.
    for name, cfg_cls, model_cls, extra, seed in [
            ('hf_reg_swiglu', Dinov2WithRegistersConfig, Dinov2WithRegistersModel, dict(use_swiglu_ffn=True, num_register_tokens=4), 24),
            ('hf_dinov2_gelu', Dinov2Config, Dinov2Model, dict(use_swiglu_ffn=False), 25)]:
        config = cfg_cls(hidden_size=TINY['embed_dim'], num_hidden_layers=TINY['depth'], num_attention_heads=TINY['num_heads'],
                         patch_size=14, image_size=224, layer_norm_eps=1e-6, layerscale_value=0.7, **extra)
        model = model_cls(config).eval()
        randomize(model, seed)
        folder = out / name
        model.save_pretrained(folder)
        BitImageProcessor(do_resize=True, size={'shortest_edge': 224}, do_center_crop=True, crop_size={'height': 224, 'width': 224},
                          image_mean=list(HIBOU_MEAN), image_std=list(HIBOU_STD), do_convert_rgb=True).save_pretrained(folder)
        ref = transformers.AutoModel.from_pretrained(folder, attn_implementation='eager', dtype=torch.float32).eval()
        prefix = 1 + getattr(config, 'num_register_tokens', 0)
        cls = lambda x, ref=ref: ref(pixel_values=x).pooler_output
        avg = lambda x, ref=ref, prefix=prefix: ref(pixel_values=x).last_hidden_state[:, prefix:].mean(1)
        models[name] = {'layout': 'hf', 'modelType': config.model_type, 'width': config.hidden_size, 'prefixTokens': prefix,
                        'fcNorm': False, 'defaultPool': 'cls', 'mean': list(HIBOU_MEAN), 'std': list(HIBOU_STD), 'expected': {
                            'cls': cases(cls, inputs, HIBOU_MEAN, HIBOU_STD),
                            'mean': cases(avg, inputs, HIBOU_MEAN, HIBOU_STD),
                            'cls+mean': cases(lambda x, cls=cls, avg=avg: torch.cat([cls(x), avg(x)], 1), inputs, HIBOU_MEAN, HIBOU_STD)}}

    manifest = {
        'generator': 'tools/make_pool_fixtures.py',
        'versions': {'torch': torch.__version__, 'timm': timm.__version__, 'transformers': transformers.__version__, 'numpy': np.__version__},
        'inputs': {'images_224': '../models/inputs/images_224.u8', 'images_168': '../models/inputs/images_168.u8'},
        'cases': {'u8_224': ['images_224', 'uint8'], 'f32_224': ['images_224', 'float32'], 'f32_168': ['images_168', 'float32']},
        'models': models,
    }
    (out / 'manifest.json').write_text(json.dumps(manifest, indent=1))
    total = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())
    print(f'wrote {out} ({total / 1e6:.2f} MB)')


if __name__ == '__main__':
    main()
