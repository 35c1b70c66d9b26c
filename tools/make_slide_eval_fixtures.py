#!/usr/bin/env python3
"""Writes the slide-level evaluation fixture under test/fixtures/slide-eval/ and scikit-learn's answers on it.

Reference libraries (pinned in tools/requirements.txt): numpy==2.4.6, scikit-learn==1.9.0, h5py==3.16.0.
Run from the repository root:  .venv/bin/python tools/make_slide_eval_fixtures.py

What it writes
- bags/<slide>.h5: per-slide tile features as `embed --slides` writes them (features (N, 16) float32, coords (N, 2)
  int64), 28 slides of 12 patients (two or three slides each), 4 to 19 tiles a slide, binary labels carried by a
  direction of the features plus noise, so that the task is learnable but not trivial.
- labels.csv: slide, label, patient, fold (3 folds by patient), site.
- labels-split.csv: slide, label, patient, split (train / test by patient).
- expected.json: for each fold of labels.csv and for the split of labels-split.csv, scikit-learn's
  LogisticRegression (C 1 and 0.1, binomial, tol 1e-12) fitted on the mean-pooled train slides and its test
  probabilities, AUC, balanced accuracy, accuracy and weighted F1. Pooling as g2l-native does it: the mean in float64
  stored as float32.
"""
import csv
import json
import os

import h5py
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

assert np.__version__ == "2.4.6", np.__version__
assert sklearn.__version__ == "1.9.0", sklearn.__version__
assert h5py.__version__ == "3.16.0", h5py.__version__

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "slide-eval")
CS = [1, 0.1]


def main():
    rng = np.random.default_rng(20)
    d = 16
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    os.makedirs(os.path.join(OUT, "bags"), exist_ok=True)
    rows = []
    for p in range(12):
        label = p % 2
        for s in range(2 + (p % 3 == 0)):
            name = f"P{p:02d}-S{s}"
            n = int(rng.integers(4, 20))
            feats = rng.standard_normal((n, d)) + (0.6 if label else -0.6) * direction + 0.4 * rng.standard_normal(d)
            with h5py.File(os.path.join(OUT, "bags", name + ".h5"), "w") as f:
                f.create_dataset("features", data=feats.astype(np.float32))
                f.create_dataset("coords", data=np.stack([np.arange(n) * 256, np.zeros(n)], 1).astype(np.int64))
            rows.append({"slide": name, "label": "mut" if label else "wt", "patient": f"P{p:02d}", "fold": p % 3,
                         "site": "AB"[p % 2 ^ (p // 6)], "split": "test" if p in (1, 4, 7, 10) else "train"})
    with open(os.path.join(OUT, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide", "label", "patient", "fold", "site"])
        for r in rows:
            w.writerow([r["slide"], r["label"], r["patient"], r["fold"], r["site"]])
    with open(os.path.join(OUT, "labels-split.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide", "label", "patient", "split"])
        for r in rows:
            w.writerow([r["slide"], r["label"], r["patient"], r["split"]])

    pooled = {}
    for r in rows:
        with h5py.File(os.path.join(OUT, "bags", r["slide"] + ".h5"), "r") as f:
            pooled[r["slide"]] = f["features"][:].astype(np.float64).mean(0).astype(np.float32)
    x = np.stack([pooled[r["slide"]] for r in rows]).astype(np.float64)
    y = np.array([1 if r["label"] == "mut" else 0 for r in rows])

    def fit(train, test):
        out = {}
        for C in CS:
            lr = LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(x[train], y[train])
            proba = lr.predict_proba(x[test])
            pred = proba.argmax(1)
            out[f"C{C:g}"] = {"proba": proba.tolist(), "auc": roc_auc_score(y[test], proba[:, 1]),
                              "bacc": balanced_accuracy_score(y[test], pred), "acc": accuracy_score(y[test], pred),
                              "f1": f1_score(y[test], pred, average="weighted"),
                              "test": [rows[i]["slide"] for i in test]}
        return out

    folds = np.array([r["fold"] for r in rows])
    expected = {"folds": [fit(np.where(folds != k)[0], np.where(folds == k)[0]) for k in range(3)]}
    split = np.array([r["split"] for r in rows])
    expected["split"] = fit(np.where(split == "train")[0], np.where(split == "test")[0])
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
