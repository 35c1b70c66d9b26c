#!/usr/bin/env python3
"""Writes the reference numbers that test/distill/*.test.ts hold the engine and the pure-JS backend against.

- test/fixtures/loss/*.json: the log-sum loss (Miles & Mikolajczyk, AAAI 2024) written the unfused way, with
  torch.nn.functional.batch_norm in training mode, and its gradients by float64 autograd, for several shapes,
  alphas, reductions and BN settings.
- test/fixtures/distill/adamw-*.json: torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, no decay on biases, norms,
  LayerScale and tokens) driven by torch's own schedulers (LinearLR warm-up then CosineAnnealingLR) for the
  learning rate, the same cosine for the weight decay, and torch.nn.utils.clip_grad_norm_.

Run with the pinned torch: .venv/bin/python tools/make_loss_fixtures.py
"""
import json
import math
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log_sum_loss(zs, zt, W, b, alpha, reduction, eps, teacher_bn):
    p = zs @ W.T + b
    fs = torch.nn.functional.batch_norm(p, None, None, training=True, eps=eps)
    ft = torch.nn.functional.batch_norm(zt, None, None, training=True, eps=eps) if teacher_bn else zt
    powers = (fs - ft).abs().pow(alpha)
    if reduction == "batch":
        return powers.sum().log()
    return powers.sum(dim=1).log().mean()


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def loss_case(name, b, ds, dt, alpha, reduction, eps=1e-4, teacher_bn=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(b, ds, generator=g, dtype=torch.float64, requires_grad=True)
    # Teacher features with a non-zero mean and scale, as real embeddings have.
    zt = (torch.randn(b, dt, generator=g, dtype=torch.float64) * 1.7 + 0.3).requires_grad_(False)
    W = (torch.randn(dt, ds, generator=g, dtype=torch.float64) / math.sqrt(ds)).requires_grad_(True)
    bias = (torch.randn(dt, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    loss = log_sum_loss(zs, zt, W, bias, alpha, reduction, eps, teacher_bn)
    loss.backward()
    return {
        "name": name,
        "options": {"alpha": alpha, "reduction": reduction, "bnEps": eps, "teacherBn": teacher_bn},
        "zs": {"shape": [b, ds], "data": flat(zs)},
        "zt": {"shape": [b, dt], "data": flat(zt)},
        "W": {"shape": [dt, ds], "data": flat(W)},
        "b": {"shape": [dt], "data": flat(bias)},
        "loss": float(loss.item()),
        "grads": {"zs": flat(zs.grad), "W": flat(W.grad), "b": flat(bias.grad)},
    }


LOSS_CASES = [
    dict(name="batch-alpha4", b=8, ds=6, dt=5, alpha=4.0, reduction="batch", seed=1),
    dict(name="sample-alpha4", b=8, ds=6, dt=5, alpha=4.0, reduction="sample", seed=2),
    dict(name="batch-alpha2-wide", b=5, ds=3, dt=7, alpha=2.0, reduction="batch", seed=3),
    dict(name="sample-alpha3-no-teacher-bn", b=6, ds=4, dt=4, alpha=3.0, reduction="sample", teacher_bn=False, seed=4),
    dict(name="batch-alpha1.5-eps1e-3", b=7, ds=5, dt=3, alpha=1.5, reduction="batch", eps=1e-3, seed=5),
    dict(name="batch-alpha4-b2", b=2, ds=3, dt=3, alpha=4.0, reduction="batch", seed=6),
]

# Checkpoint keys of the timm and HF layouts plus the projector; which decay is decided by the engine from these.
PARAMS = [
    ("cls_token", [1, 1, 3], False),
    ("pos_embed", [1, 4, 3], False),
    ("blocks.0.norm1.weight", [3], False),
    ("blocks.0.attn.qkv.weight", [9, 3], True),
    ("blocks.0.attn.qkv.bias", [9], False),
    ("blocks.0.ls1.gamma", [3], False),
    ("encoder.layer.0.layer_scale1.lambda1", [3], False),
    ("embeddings.register_tokens", [1, 2, 3], False),
    ("encoder.layer.0.mlp.weights_in.weight", [4, 3], True),
    ("projector.weight", [5, 3], True),
    ("projector.bias", [5], False),
]


def cosine(start, end, k, k_max):
    if k_max <= 0:
        return start
    k = min(k, k_max)
    return end + (start - end) * (1 + math.cos(math.pi * k / k_max)) / 2


def adamw_case(name, steps, lr, final_lr, wd, final_wd, warmup, clip, seed):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(*shape, generator=g).requires_grad_(True) for _, shape, _ in PARAMS]
    initial = [flat(p) for p in params]
    decay = [p for p, (_, _, d) in zip(params, PARAMS) if d]
    no_decay = [p for p, (_, _, d) in zip(params, PARAMS) if not d]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.999), eps=1e-8)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps - warmup, eta_min=final_lr)
    if warmup > 0:
        lin = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [lin, cos], milestones=[warmup])
    else:
        sched = cos
    grads, after, lrs, wds, norms = [], [], [], [], []
    for s in range(steps):
        step_grads = [torch.randn(p.shape, generator=g) * 0.5 for p in params]
        for p, gr in zip(params, step_grads):
            p.grad = gr.clone()
        grads.append([flat(gr) for gr in step_grads])
        step_wd = cosine(wd, final_wd, s, steps)
        opt.param_groups[0]["weight_decay"] = step_wd
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        lrs.append(opt.param_groups[0]["lr"])
        wds.append(step_wd)
        norms.append(float(norm))
        opt.step()
        sched.step()
        after.append([flat(p) for p in params])
    return {
        "name": name,
        "config": {"lr": lr, "finalLr": final_lr, "weightDecay": wd, "finalWeightDecay": final_wd,
                   "warmupSteps": warmup, "totalSteps": steps, "clipGradNorm": clip},
        "names": [n for n, _, _ in PARAMS],
        "shapes": [s for _, s, _ in PARAMS],
        "decay": [d for _, _, d in PARAMS],
        "initial": initial,
        "grads": grads,
        "after": after,
        "lr": lrs,
        "weightDecay": wds,
        "gradNorm": norms,
    }


ADAMW_CASES = [
    dict(name="cosine", steps=12, lr=1e-2, final_lr=0.0, wd=0.05, final_wd=0.0, warmup=0, clip=0.0, seed=10),
    dict(name="warmup-clip", steps=12, lr=3e-2, final_lr=1e-3, wd=0.3, final_wd=0.01, warmup=3, clip=0.5, seed=11),
]


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


def main():
    torch.set_default_dtype(torch.float32)
    for case in LOSS_CASES:
        write(os.path.join(ROOT, "test/fixtures/loss", case["name"] + ".json"), loss_case(**case))
    for case in ADAMW_CASES:
        write(os.path.join(ROOT, "test/fixtures/distill", "adamw-" + case["name"] + ".json"), adamw_case(**case))
    print(f"wrote {len(LOSS_CASES)} loss and {len(ADAMW_CASES)} AdamW fixtures (torch {torch.__version__})")


if __name__ == "__main__":
    main()
