#!/usr/bin/env python3
"""Writes test/fixtures/models/drop.json: what timm and transformers compute in TRAINING mode for the model
fixtures of tools/make_model_fixtures.py (run that first; this script only reads its folders and inputs) with
dropout / drop-path rates at which the masks are not random, so that the engine and the js backend can be held to
the reference libraries "under the same masks" (test/models/drop.test.ts, test/js-backend/drop.test.ts).

Pinned (tools/requirements.txt): torch 2.11.0, timm 1.0.29, transformers 5.17.0.
Run:  .venv/bin/python tools/make_drop_fixtures.py [--fixtures test/fixtures/models]

Rates of 1 make every mask deterministic: nn.Dropout(p=1) zeroes its input, timm's DropPath at 1 zeroes its branch
(bernoulli(0), no division); timm's drop path schedule linspace(0, rate, depth) with rate 1 and depth 2 is [0, 1]:
block 0 always kept, block 1's two branches always dropped. Each case sets ONE rate to 1 (the others 0) so that a
misplaced dropout shows: each zeroes a different part of the network.

The models run in float32 (as the reference embeddings of the model fixtures), on the f32_224 input ((u8 - 128) /
64, two images), with the rate passed the way a user's config.json passes it (timm create_model kwargs =
model_args; transformers config attributes). Attention: the references use timm's unfused path (fused_attn False)
and transformers' eager attention, which apply nn.Dropout to the softmax probabilities as the engine does, rather
than F.scaled_dot_product_attention(dropout_p=...), whose mask is drawn inside the kernel.

transformers' Dinov2DropPath at drop_path_rate exactly 1 returns NaN (hidden.div(0) * 0); the reference for
dropPath uses drop_path_rate = 1 - 1e-7 instead, where floor(rand + keep) is 0 unless rand > 1 - 1e-7 (checked: every
draw of the fixed seed below is under it, so every branch is dropped and the output is finite). The engine and the js
backend run it at rate 1 (their drop path zeroes the branch at keep 0, as timm's does).
"""
import argparse
import json
from pathlib import Path

import numpy as np
import timm
import torch
import transformers

TIMM_CASES = {  # run-config key -> timm create_model kwarg
    'dropPath': 'drop_path_rate',
    'attnDrop': 'attn_drop_rate',
    'projDrop': 'proj_drop_rate',
    'posDrop': 'pos_drop_rate',
    'headDrop': 'drop_rate',
}
HF_CASES = {  # run-config key -> transformers config attribute
    'dropPath': 'drop_path_rate',
    'attnDrop': 'attention_probs_dropout_prob',
    'hiddenDrop': 'hidden_dropout_prob',
}
TIMM_MODELS = ['timm_large_gelu', 'timm_giant_reg4_swiglu']
HF_MODELS = ['hf_dinov2_gelu', 'hf_dinov2_reg_swiglu']


def float_input(fixtures: Path, manifest: dict) -> torch.Tensor:
    spec = manifest['inputs']['images_224']
    u8 = np.frombuffer((fixtures / spec['file']).read_bytes(), dtype=np.uint8).reshape(spec['shape'])
    x = torch.from_numpy(u8.copy()).permute(0, 3, 1, 2).to(torch.float32)
    return ((x - 128.0) / 64.0).contiguous()


def timm_run(folder: Path, kwarg: str, x: torch.Tensor) -> list:
    model = timm.create_model(f'local-dir:{folder}', pretrained=True, **{kwarg: 1.0}).float()
    for block in model.blocks:
        block.attn.fused_attn = False  # nn.Dropout on the probabilities (see the docstring)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        z = model(x)
    assert torch.isfinite(z).all()
    return z.tolist()


def hf_run(folder: Path, attr: str, x: torch.Tensor) -> list:
    rate = 1.0 - 1e-7 if attr == 'drop_path_rate' else 1.0
    model = transformers.AutoModel.from_pretrained(folder, attn_implementation='eager', dtype=torch.float32,
                                                   **{attr: rate})
    model.train()
    torch.manual_seed(0)
    if attr == 'drop_path_rate':
        # Every draw of this seed must be under 1 - keep, so that every branch is dropped (see the docstring).
        draws = []
        for layer in model.encoder.layer:
            layer.drop_path.register_forward_hook(lambda m, i, o: draws.append(bool(torch.all(o == 0))))
    with torch.no_grad():
        z = model(pixel_values=x).pooler_output
    assert torch.isfinite(z).all()
    if attr == 'drop_path_rate':
        assert len(draws) == 2 * len(model.encoder.layer) and all(draws), draws
    return z.tolist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--fixtures', default='test/fixtures/models')
    fixtures = Path(ap.parse_args().fixtures)
    manifest = json.loads((fixtures / 'manifest.json').read_text())
    x = float_input(fixtures, manifest)
    out = {
        'versions': {'torch': torch.__version__, 'timm': timm.__version__, 'transformers': transformers.__version__},
        'input': 'f32_224',
        'note': 'train-mode outputs (2,D) with one rate at 1 (transformers dropPath: 1 - 1e-7), the others 0',
        'models': {},
    }
    for name in TIMM_MODELS:
        out['models'][name] = {key: timm_run(fixtures / name, kwarg, x) for key, kwarg in TIMM_CASES.items()}
    for name in HF_MODELS:
        out['models'][name] = {key: hf_run(fixtures / name, attr, x) for key, attr in HF_CASES.items()}
    (fixtures / 'drop.json').write_text(json.dumps(out, indent=1) + '\n')
    print(f'wrote {fixtures / "drop.json"}')


if __name__ == '__main__':
    main()
