#!/usr/bin/env python3
"""Writes the pytorch_model.bin fixtures of test/models/bin.test.ts from model fixtures of
tools/make_model_fixtures.py (run that first): the same weights as their model.safetensors, saved by torch.save.

Pinned (tools/requirements.txt): torch 2.11.0, safetensors 0.8.0.
Run:  .venv/bin/python tools/make_bin_fixtures.py [--out test/fixtures/bin]

  timm_bin           timm_giant_reg4_swiglu's config.json + torch.save(state_dict) as pytorch_model.bin
  hf_bin_sharded     hf_dinov2_reg_swiglu's files + its state dict in 3 torch.save shards listed by
                     pytorch_model.bin.index.json ({"metadata": {"total_size"}, "weight_map"}), as transformers
                     shards .bin checkpoints; its preprocessor_config.json
  evil_global        timm_bin's weights plus, under one more key, an object whose __reduce__ returns
                     (os.system, ('touch <marker>',)), pickled as the global posix.system: torch.load would run the
                     command; the readers must refuse it, naming the global, before anything runs
  evil_stack_global  the same pickled with protocol 4, where the global is named by STACK_GLOBAL from the stack
The marker is written into the folder the test runs in (EVIL_MARKER below): its absence after the test is what
"nothing executed" means.
"""
import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / 'test' / 'fixtures' / 'models'
EVIL_MARKER = 'g2l-bin-fixture-was-executed'


class RunsACommand:
    """What a malicious checkpoint holds: unpickling it calls os.system."""

    def __reduce__(self):
        return (os.system, (f'touch {EVIL_MARKER}',))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=str(ROOT / 'test' / 'fixtures' / 'bin'))
    out = Path(ap.parse_args().out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    timm_sd = load_file(MODELS / 'timm_giant_reg4_swiglu' / 'model.safetensors')
    (out / 'timm_bin').mkdir()
    shutil.copy(MODELS / 'timm_giant_reg4_swiglu' / 'config.json', out / 'timm_bin' / 'config.json')
    torch.save(timm_sd, out / 'timm_bin' / 'pytorch_model.bin')

    hf = MODELS / 'hf_dinov2_reg_swiglu'
    index = json.loads((hf / 'model.safetensors.index.json').read_text())
    hf_sd = {}
    for shard in sorted(set(index['weight_map'].values())):
        hf_sd.update(load_file(hf / shard))
    (out / 'hf_bin_sharded').mkdir()
    for f in ('config.json', 'preprocessor_config.json'):
        shutil.copy(hf / f, out / 'hf_bin_sharded' / f)
    keys = list(hf_sd)
    parts = [keys[i::3] for i in range(3)]
    weight_map = {}
    for i, part in enumerate(parts):
        name = f'pytorch_model-{i + 1:05d}-of-00003.bin'
        torch.save({k: hf_sd[k] for k in part}, out / 'hf_bin_sharded' / name)
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in hf_sd.values())
    (out / 'hf_bin_sharded' / 'pytorch_model.bin.index.json').write_text(
        json.dumps({'metadata': {'total_size': total}, 'weight_map': dict(sorted(weight_map.items()))}, indent=2))

    for name, protocol in (('evil_global', 2), ('evil_stack_global', 4)):
        (out / name).mkdir()
        shutil.copy(MODELS / 'timm_giant_reg4_swiglu' / 'config.json', out / name / 'config.json')
        torch.save({**timm_sd, 'payload': RunsACommand()}, out / name / 'pytorch_model.bin', pickle_protocol=protocol)
    total = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())
    print(f'wrote {out} ({total / 1e6:.2f} MB)')


if __name__ == '__main__':
    main()
