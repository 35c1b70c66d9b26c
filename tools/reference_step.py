#!/usr/bin/env python3
"""The PyTorch reference step the benchmarks time the engine against: G2L's distillation step and embedding, written
the way a PyTorch user would, with timm and transformers loading the same model folders the engine loads.

Pinned (tools/requirements-dev.txt): torch 2.11.0, torchvision 0.26.0, timm 1.0.29, transformers 5.17.0, safetensors.
Run:  .venv/bin/python tools/reference_step.py --teacher DIR --student DIR [--batch 8] [--steps 5] [--warmup 1]
      [--threads 2] [--embed-batch 8] [--mode both|distill|embed]
      Served (benchmarks/run.mjs interleaves it with the engine):  ... --serve
      reads one request a line on stdin (distill, distill-noaug, embed, quit), runs it once and answers one JSON line
      {"op", "s"} with the seconds it took; the first line out is {"ready": true, "torch", "threads", ...}.
      GPU host:  python3 tools/reference_step.py --gpu --teacher DIR --student DIR --batch 128 [--compile]
      Loss curve against the engine (benchmarks/gpu.mjs):  ... --tiles-npy POOL.npy --no-augment
      --projector STATE_DIR/state.safetensors --steps 200 --warmup 0 --losses-out FILE.json
Prints one JSON line last: {"distill_img_s", "embed_img_s", "step_times_s", "peak_memory_gib", ...}.

The step (docs/method.md, "Constants"; native/engine/train/distiller.cpp):
  tiles uint8 (B,256,256,3) -> random crop 224 and flips per sample, each model's normalisation
  -> teacher forward without grad (fp32 on the CPU; fp16 on CUDA)                       zt (B,Dt)
  -> student forward (fp32 on the CPU; bf16 autocast over fp32 weights on CUDA)        zs (B,Ds)
  -> projector Linear(Ds -> Dt) + log-sum loss: log sum |BN(zs W^T + b) - BN(zt)|^4, BatchNorm1d without affine,
     eps 1e-4, batch statistics
  -> backward -> AdamW (betas 0.9/0.999, eps 1e-8; fused on CUDA) with lr 1e-4 and weight decay 0.05 on cosine
     schedules, no decay on biases, norms, LayerScale, tokens and position embeddings.
The augmentation is the engine's recipe (native/engine/train/augment.cpp, docs/method.md) written with torchvision v2
transforms, per tile as a Dataset does: RandomCrop 224, horizontal and vertical flips (p 0.5), ColorJitter(0.15,
0.15, 0.1, 0.05) with p 0.5, GaussianBlur(9, sigma 0.1-2.0) with p 0.1, on float32 in [0, 1]; then each model's
normalisation. --no-augment: centre crop only (the engine with augment.enabled false: the compute-only step).
"""
import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------------------------
# Models: the folders the engine reads, loaded by the reference libraries
# ---------------------------------------------------------------------------------------------------------------
def load_model(folder: Path, device, dtype):
    """(model, embed(x) -> (B,D), mean, std) for a timm hub folder or a transformers folder."""
    cfg = json.loads((folder / 'config.json').read_text())
    if 'architecture' in cfg:
        import timm
        from safetensors.torch import load_file
        args = dict(cfg.get('model_args', {}))
        # The engine records SwiGLU by name (UNI2-h's card passes the classes in code): map names to timm classes.
        if args.get('mlp_layer') in ('swiglu_packed', 'SwiGLUPacked'):
            from timm.layers import SwiGLUPacked
            args['mlp_layer'] = SwiGLUPacked
        elif args.get('mlp_layer') in ('mlp', 'Mlp'):
            from timm.layers import Mlp
            args['mlp_layer'] = Mlp
        if args.get('act_layer') in ('silu', 'swish'):
            args['act_layer'] = torch.nn.SiLU
        elif args.get('act_layer') == 'gelu':
            args['act_layer'] = torch.nn.GELU
        args.pop('num_classes', None)
        model = timm.create_model(cfg['architecture'], pretrained=False, num_classes=cfg.get('num_classes', 0), **args)
        model.load_state_dict(load_file(str(folder / 'model.safetensors')), strict=True)
        pcfg = cfg.get('pretrained_cfg', {})
        mean, std = pcfg.get('mean', (0.485, 0.456, 0.406)), pcfg.get('std', (0.229, 0.224, 0.225))
        embed = model
    else:
        import transformers
        model = transformers.AutoModel.from_pretrained(folder, attn_implementation='sdpa', dtype=torch.float32)
        pre = folder / 'preprocessor_config.json'
        p = json.loads(pre.read_text()) if pre.exists() else {}
        mean, std = p.get('image_mean', (0.485, 0.456, 0.406)), p.get('image_std', (0.229, 0.224, 0.225))
        embed = lambda x: model(pixel_values=x).pooler_output  # noqa: E731
    model.to(device=device, dtype=dtype)
    return model, embed, torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1)


def takes_weight_decay(name: str, p: torch.Tensor) -> bool:
    """native/engine/train/optim.cpp takes_weight_decay."""
    if p.dim() <= 1:
        return False
    return not any(k in name for k in ('bias', 'norm', 'token', 'pos_embed', 'position_embeddings', 'ls1.', 'ls2.',
                                       'layer_scale', 'gamma', 'lambda1'))


def cosine(start, end, k, k_max):
    return start if k_max <= 0 else end + (start - end) * (1 + math.cos(math.pi * min(k, k_max) / k_max)) / 2


def round_tf32(x):
    """float32 -> the nearest value with TF32's 10-bit mantissa (ties away from zero), gradient passed straight
    through: what TF32 tensor cores read, for --tf32 on the CPU."""
    bits = x.detach().contiguous().view(torch.int32)
    rounded = ((bits + (1 << 12)) & ~((1 << 13) - 1)).view(torch.float32)
    return x + (rounded - x.detach())


EMULATE_TF32 = False


def log_sum_loss(zs, zt, W, b, alpha=4.0, eps=1e-4):
    if EMULATE_TF32:
        zs, W = round_tf32(zs), round_tf32(W)
    fs = F.batch_norm(zs @ W.t() + b, None, None, training=True, eps=eps)
    ft = F.batch_norm(zt, None, None, training=True, eps=eps)
    return torch.log((fs - ft).abs().pow(alpha).sum())


def centre_crop(tiles, crop):
    """uint8 (B,H,W,3) -> float (B,3,crop,crop) in [0,1]: torchvision CenterCrop, as the engine without augmentation."""
    _, H, W, _ = tiles.shape
    oy, ox = int(round((H - crop) / 2)), int(round((W - crop) / 2))
    return tiles[:, oy:oy + crop, ox:ox + crop].permute(0, 3, 1, 2).float().div_(255)


def make_augment(crop):
    """G2L's augmentation (the engine's AugmentConfig defaults) as a PyTorch user writes it: one tile (3,H,W) uint8
    -> (3,crop,crop) float32 in [0,1]. torchvision draws from torch's global generator."""
    from torchvision.transforms import v2
    return v2.Compose([
        v2.RandomCrop(crop),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomVerticalFlip(p=0.5),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomApply([v2.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.1, hue=0.05)], p=0.5),
        v2.RandomApply([v2.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))], p=0.1),
    ])


def augment(tiles, transform):
    """uint8 (B,H,W,3) -> float (B,3,crop,crop) in [0,1]: the transform per tile, stacked (a DataLoader's collate)."""
    return torch.stack([transform(t) for t in tiles.permute(0, 3, 1, 2)])


# ---------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------
def timed(fn, warmup, runs, cuda):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def serve(ops, info, cuda):
    """Answers request lines on stdin until quit or end of input: one JSON line per request on stdout."""
    print(json.dumps({'ready': True, **info}), flush=True)
    for line in sys.stdin:
        op = line.strip()
        if op in ('', 'quit'):
            break
        if op not in ops:
            print(json.dumps({'op': op, 'error': f'unknown request {op!r}: one of {", ".join(ops)} or quit'}), flush=True)
            continue
        print(json.dumps({'op': op, 's': timed(ops[op], 0, 1, cuda)[0]}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--teacher', required=True)
    ap.add_argument('--student', required=True)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--embed-batch', type=int, default=8)
    ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--tile', type=int, default=256)
    ap.add_argument('--crop', type=int, default=224)
    ap.add_argument('--threads', type=int, default=0, help='intra-op CPU threads (0: torch default)')
    ap.add_argument('--gpu', action='store_true', help='CUDA: teacher fp16, student bf16 autocast, fused AdamW')
    ap.add_argument('--compile', action='store_true', help='torch.compile both models (default mode)')
    ap.add_argument('--mode', choices=('both', 'distill', 'embed'), default='both')
    ap.add_argument('--serve', action='store_true', help='time one operation per request line on stdin (see above)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--no-augment', action='store_true', help='centre crop only (the engine with augment.enabled false)')
    ap.add_argument('--tiles-npy', help='uint8 (P,B,H,W,3): step k trains on batch k mod P (overrides --batch, --tile)')
    ap.add_argument('--projector', help="an engine checkpoint's state.safetensors: start from its projector weights")
    ap.add_argument('--losses-out', help='write every step\'s loss (warm-up included) to this JSON file')
    ap.add_argument('--profile', help='write a torch.profiler table of one distill step to this file')
    ap.add_argument('--tf32', action='store_true', help='TF32 for float32 products on CUDA (the engine does not use '
                    'it); on the CPU the projector\'s inputs are rounded to TF32 instead (emulation, forward only)')
    a = ap.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device('cuda' if a.gpu else 'cpu')
    if a.gpu:
        # float32 products (the projector; the models run in fp16/bf16) in full float32 like the engine, unless --tf32:
        # with random weights the BatchNorm'd features are tiny input-dependent parts of large values, where TF32's
        # 10-bit mantissa changes the training curve (2026-11-29 GPU run, benchmarks/gpu-notes.md).
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
        torch.backends.cudnn.allow_tf32 = a.tf32
    else:
        global EMULATE_TF32
        EMULATE_TF32 = a.tf32
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    teacher, t_embed, t_mean, t_std = load_model(Path(a.teacher), device, torch.float16 if a.gpu else torch.float32)
    student, s_embed, s_mean, s_std = load_model(Path(a.student), device, torch.float32)
    teacher.eval().requires_grad_(False)
    student.train()
    if a.compile:
        t_embed, s_embed = torch.compile(t_embed), torch.compile(s_embed)
    ds = student.config.hidden_size if hasattr(student, 'config') else student.num_features
    dt = teacher.config.hidden_size if hasattr(teacher, 'config') else teacher.num_features
    proj = torch.nn.Linear(ds, dt).to(device)
    if a.projector:
        from safetensors.torch import load_file  # a checkpoint is read with safetensors alone, no pickle

        state = load_file(a.projector)
        with torch.no_grad():
            proj.weight.copy_(state['projector.weight'])
            proj.bias.copy_(state['projector.bias'])

    named = [(f'student/{n}', p) for n, p in student.named_parameters() if p.requires_grad]
    named += [('projector.weight', proj.weight), ('projector.bias', proj.bias)]
    groups = [{'params': [p for n, p in named if takes_weight_decay(n, p)], 'weight_decay': 0.05},
              {'params': [p for n, p in named if not takes_weight_decay(n, p)], 'weight_decay': 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, **({'fused': True} if a.gpu else {'foreach': True}))
    total = a.warmup + a.steps
    state = {'step': 0}

    if a.tiles_npy:
        import numpy as np
        pool = torch.from_numpy(np.load(a.tiles_npy)).to(device)  # (P,B,H,W,3)
        a.batch = pool.shape[1]
    else:
        pool = torch.randint(0, 256, (1, a.batch, a.tile, a.tile, 3), generator=gen, dtype=torch.uint8).to(device)
    losses = []

    transform = None  # built on the first augmented step: --no-augment runs need no torchvision

    def distill_step(augmented=not a.no_augment):
        nonlocal transform
        k = state['step']
        lr, wd = cosine(1e-4, 0.0, k, total), cosine(0.05, 0.0, k, total)
        opt.param_groups[0].update(lr=lr, weight_decay=wd)
        opt.param_groups[1].update(lr=lr)
        tiles = pool[k % pool.shape[0]]
        if augmented and transform is None:
            transform = make_augment(a.crop)
        x = augment(tiles, transform) if augmented else centre_crop(tiles, a.crop)
        with torch.no_grad():
            zt = t_embed(((x - t_mean) / t_std).to(torch.float16 if a.gpu else torch.float32))
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=a.gpu):
            zs = s_embed((x - s_mean) / s_std)
        loss = log_sum_loss(zs.float(), zt.float(), proj.weight, proj.bias)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        state['step'] = k + 1
        state['loss'] = loss.detach()
        losses.append(state['loss'])  # read after the timed steps: no host synchronisation inside a step

    images = torch.randint(0, 256, (a.embed_batch, a.crop, a.crop, 3), generator=gen, dtype=torch.uint8).to(device)

    def embed_batch():
        with torch.no_grad():
            x = images.permute(0, 3, 1, 2).float().div_(255)
            return t_embed(((x - t_mean) / t_std).to(torch.float16 if a.gpu else torch.float32)).float()

    out = {'torch': torch.__version__, 'device': str(device), 'threads': torch.get_num_threads(), 'batch': a.batch,
           'embed_batch': a.embed_batch, 'compile': a.compile, 'python': platform.python_version()}
    if a.gpu:
        out['gpu'] = torch.cuda.get_device_name(0)
    if a.serve:
        serve({'distill': lambda: distill_step(True), 'distill-noaug': lambda: distill_step(False),
               'embed': embed_batch}, out, a.gpu)
        return
    if a.mode in ('both', 'distill'):
        times = timed(distill_step, a.warmup, a.steps, a.gpu)
        out['step_times_s'] = times
        out['distill_img_s'] = a.batch / statistics.median(times)
        out['final_loss'] = float(state['loss'])
        if not math.isfinite(out['final_loss']):
            sys.exit('reference step: the loss is not finite')
        if a.gpu:
            out['peak_memory_gib'] = torch.cuda.max_memory_allocated() / 2**30
        if a.losses_out:
            Path(a.losses_out).write_text(json.dumps([float(v) for v in losses]))
        if a.profile:
            from torch.profiler import ProfilerActivity, profile
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.gpu else [])
            with profile(activities=acts) as prof:
                distill_step()
                if a.gpu:
                    torch.cuda.synchronize()
            key = 'cuda_time_total' if a.gpu else 'cpu_time_total'
            Path(a.profile).write_text(prof.key_averages().table(sort_by=key, row_limit=40))
    if a.mode in ('both', 'embed'):
        teacher.eval()
        times = timed(embed_batch, a.warmup, a.steps, a.gpu)
        out['embed_times_s'] = times
        out['embed_img_s'] = a.embed_batch / statistics.median(times)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
