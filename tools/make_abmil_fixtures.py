#!/usr/bin/env python3
"""Writes test/fixtures/mil/abmil.json: a float64 PyTorch implementation of gated-attention MIL (Ilse et al. 2018, the
gated ABMIL of CLAM), written here for the test and independent of g2l-native's, on small random bags.

Reference library (pinned in tools/requirements.txt): torch==2.11.0.
Run from the repository root:  .venv/bin/python tools/make_abmil_fixtures.py

What it writes (every tensor as nested lists, float64):
- params: the initial parameters (torch.nn.Linear's default initialisation from a seeded generator).
- bags: 6 bags of 3 to 8 tiles of 8 features, offsets, labels (3 classes); val: 3 more bags.
- loss, grads: the mean cross-entropy over the 6 bags at the initial parameters and its gradient.
- logits: each bag's logits; proba: softmax of them.
- full_batch: 5 AdamW steps (torch.optim.AdamW, betas 0.9/0.999, eps 1e-8, weight decay 0.01) on the mean loss of
  all 6 bags, with learning rates lr (a cosine from 0.01 to 0 over the 5 steps): the parameters after them.
- plan: 8 epochs of one bag a step in the orders given, lr per step, weight decay 0.01, patience 2, validation loss
  after each epoch, training stopped when it has not improved for 2 epochs, the best epoch's parameters kept.
"""
import json
import math
import os

import torch
import torch.nn as nn

assert torch.__version__.startswith("2.11.0"), torch.__version__
torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "mil", "abmil.json")


class GatedAbmil(nn.Module):
    def __init__(self, d, l, a, k):
        super().__init__()
        self.fc = nn.Linear(d, l)
        self.attention_a = nn.Linear(l, a)
        self.attention_b = nn.Linear(l, a)
        self.attention_c = nn.Linear(a, 1)
        self.classifier = nn.Linear(l, k)

    def forward(self, x):  # one bag (N, D) -> logits (K)
        h = torch.relu(self.fc(x))
        s = self.attention_c(torch.tanh(self.attention_a(h)) * torch.sigmoid(self.attention_b(h))).squeeze(1)
        return self.classifier(torch.softmax(s, 0) @ h)


def mean_loss(model, x, offsets, labels, which):
    losses = [nn.functional.cross_entropy(model(x[offsets[b]:offsets[b + 1]]).unsqueeze(0), torch.tensor([labels[b]])) for b in which]
    return torch.stack(losses).mean()


def state(model):
    return {k: v.detach().tolist() for k, v in model.state_dict().items()}


def main():
    torch.manual_seed(7)
    d, l, a, k = 8, 6, 4, 3
    model = GatedAbmil(d, l, a, k)
    init = {kk: v.clone() for kk, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(3)

    def make_bags(count):
        sizes = [int(3 + torch.randint(0, 6, (1,), generator=g)) for _ in range(count)]
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        x = torch.randn(offsets[-1], d, generator=g)
        labels = [int(v) for v in torch.randint(0, k, (count,), generator=g)]
        return x, offsets, labels

    x, offsets, labels = make_bags(6)
    xv, offv, labv = make_bags(3)
    out = {"params": {kk: v.tolist() for kk, v in init.items()},
           "bags": {"features": x.tolist(), "offsets": offsets, "labels": labels},
           "val": {"features": xv.tolist(), "offsets": offv, "labels": labv}}
    loss = mean_loss(model, x, offsets, labels, range(6))
    loss.backward()
    out["loss"] = loss.item()
    out["grads"] = {n: p.grad.tolist() for n, p in model.named_parameters()}
    with torch.no_grad():
        logits = torch.stack([model(x[offsets[b]:offsets[b + 1]]) for b in range(6)])
    out["logits"] = logits.tolist()
    out["proba"] = torch.softmax(logits, 1).tolist()

    # Full batch: 5 AdamW steps on the mean loss of all bags.
    model.load_state_dict(init)
    lrs = [0.01 * 0.5 * (1 + math.cos(math.pi * s / 5)) for s in range(5)]
    opt = torch.optim.AdamW(model.parameters(), lr=lrs[0], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        mean_loss(model, x, offsets, labels, range(6)).backward()
        opt.step()
    out["full_batch"] = {"lr": lrs, "weight_decay": 0.01, "params": state(model)}

    # A plan of single-bag steps over 4 epochs with validation and patience 2.
    model.load_state_dict(init)
    orders = [[int(v) for v in torch.randperm(6, generator=g)] for _ in range(8)]
    steps = [[[b] for b in order] for order in orders]
    lrs = [0.2 * 0.5 * (1 + math.cos(math.pi * s / 48)) for s in range(48)]
    opt = torch.optim.AdamW(model.parameters(), lr=lrs[0], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    step, best, best_epoch, since, val_losses, train_losses = 0, math.inf, -1, 0, [], []
    best_state = None
    for e, epoch in enumerate(steps):
        total = 0.0
        for which in epoch:
            for group in opt.param_groups:
                group["lr"] = lrs[step]
            step += 1
            opt.zero_grad()
            loss = mean_loss(model, x, offsets, labels, which)
            loss.backward()
            opt.step()
            total += loss.item()
        train_losses.append(total / len(epoch))
        with torch.no_grad():
            v = mean_loss(model, xv, offv, labv, range(3)).item()
        val_losses.append(v)
        if v < best:
            best, best_epoch, since = v, e, 0
            best_state = {kk: t.clone() for kk, t in model.state_dict().items()}
        else:
            since += 1
            if since >= 2:
                break
    out["plan"] = {"epochs": steps, "lr": lrs, "weight_decay": 0.01, "patience": 2, "train_loss": train_losses,
                   "val_loss": val_losses, "best_epoch": best_epoch, "epochs_run": len(val_losses),
                   "params": {kk: v.tolist() for kk, v in best_state.items()}}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
