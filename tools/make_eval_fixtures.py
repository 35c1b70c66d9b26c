#!/usr/bin/env python3
"""Writes the evaluation test fixtures under test/fixtures/eval/ and the values the TypeScript code must reproduce.

Reference libraries (pinned in tools/requirements.txt): numpy==2.4.6, scikit-learn==1.9.0.
Run from the repository root:  .venv/bin/python tools/make_eval_fixtures.py

What it writes
- npy/*.npy: arrays saved by numpy itself (format 1.0 and 2.0 headers, several dtypes) plus malformed files
  (Fortran order, big-endian, complex dtype, truncated data) that the reader must refuse; npy/index.json lists them.
- multi/, multi_b/, binary/: feature-set folders (features.npy float32 + meta.csv). multi is 3 classes, 3 sites,
  24 slides with train/val/test splits by slide; multi_b describes the same samples (rows shuffled, other
  dimension) for CKA and row matching; binary is 2 classes, 3 sites, train/test.
- expected.json: scikit-learn and numpy reference values (kNN, logistic regression, metrics, CKA, robustness).

Every reference is computed in float64 from the float32 features as stored.
"""
import json
import warnings
import os

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.neighbors import KNeighborsClassifier

assert np.__version__ == "2.4.6", np.__version__
assert sklearn.__version__ == "1.9.0", sklearn.__version__

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "eval")
rng = np.random.default_rng(20261129)
T = 0.07  # DINOv2 kNN temperature


def write_set(name, feats, meta, columns):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "features.npy"), feats.astype(np.float32))
    with open(os.path.join(d, "meta.csv"), "w", newline="\n") as f:
        f.write(",".join(columns) + "\n")
        for row in meta:
            f.write(",".join(str(row[c]) for c in columns) + "\n")


# ---------------------------------------------------------------- npy files written by numpy
def npy_fixtures():
    d = os.path.join(OUT, "npy")
    os.makedirs(d, exist_ok=True)
    index = {}

    def save(name, arr, version=None):
        p = os.path.join(d, name)
        if version is None:
            np.save(p, arr)
        else:
            with open(p, "wb") as f:
                np.lib.format.write_array(f, arr, version=version)
        index[name] = {"dtype": str(arr.dtype), "shape": list(arr.shape),
                       "values": arr.ravel().tolist() if arr.dtype != np.int64 else [str(v) for v in arr.ravel()]}

    save("f32_2d.npy", rng.standard_normal((3, 5)).astype(np.float32))
    save("f64_1d.npy", rng.standard_normal(7))
    save("u8_3d.npy", rng.integers(0, 256, (2, 3, 4), dtype=np.uint8))
    save("i64_2d.npy", np.array([[-(2 ** 40), 5], [7, 2 ** 53 + 1]], dtype=np.int64))
    save("f32_v2.npy", rng.standard_normal((4, 2)).astype(np.float32), version=(2, 0))
    save("f32_empty.npy", np.zeros((0, 3), dtype=np.float32))
    bad = {}
    np.save(os.path.join(d, "bad_fortran.npy"), np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)))
    bad["bad_fortran.npy"] = "Fortran-order"
    np.save(os.path.join(d, "bad_bigendian.npy"), rng.standard_normal((2, 2)).astype(">f4"))
    bad["bad_bigendian.npy"] = "big-endian"
    np.save(os.path.join(d, "bad_complex.npy"), np.zeros(3, dtype=np.complex64))
    bad["bad_complex.npy"] = "unsupported dtype"
    p = os.path.join(d, "bad_truncated.npy")
    np.save(p, rng.standard_normal((10, 10)).astype(np.float32))
    with open(p, "rb") as f:
        blob = f.read()
    with open(p, "wb") as f:
        f.write(blob[:-17])
    bad["bad_truncated.npy"] = "truncated data"
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump({"good": index, "bad": bad}, f, indent=1)


# ---------------------------------------------------------------- references
def l2n(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def knn_refs(xtr, ytr, xte, yte, n_classes, ks):
    sims = l2n(xte) @ l2n(xtr).T
    order = np.argsort(-sims, axis=1, kind="stable")
    out = {}
    for k in ks:
        idx = order[:, :k]
        s = np.take_along_axis(sims, idx, axis=1)
        w = np.exp(s / T)
        scores = np.zeros((len(xte), n_classes))
        for c in range(n_classes):
            scores[:, c] = (w * (ytr[idx] == c)).sum(1)
        pred_w = scores.argmax(1)
        clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(xtr, ytr)
        pred_m = clf.predict(xte)
        out[f"k{k}"] = {
            "weighted": {"acc": accuracy_score(yte, pred_w), "bacc": balanced_accuracy_score(yte, pred_w),
                         "pred": pred_w.tolist()},
            "majority": {"acc": accuracy_score(yte, pred_m), "bacc": balanced_accuracy_score(yte, pred_m),
                         "pred": pred_m.tolist()},
        }
    out["top_idx"] = order[:, :max(ks)].tolist()
    out["top_sim"] = np.take_along_axis(sims, order[:, :max(ks)], axis=1).tolist()
    return out


def logistic_refs(xtr, ytr, xte, yte, n_classes, Cs):
    out = {}
    for C in Cs:
        # Binary problems: scikit-learn's binomial model (one vector w, penalty ‖w‖²/(2C)), with the same C.
        lr = LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(xtr, ytr)
        proba = lr.predict_proba(xte)
        pred = proba.argmax(1)
        auc = roc_auc_score(yte, proba[:, 1]) if n_classes == 2 else roc_auc_score(yte, proba, multi_class="ovr", average="macro")
        # The objective (sum of cross-entropies + 1/(2C)‖W‖²) at scikit-learn's solution; binary: the binomial
        # model's, sum of log(1 + exp(-ỹ (w·x + b))) + ‖w‖²/(2C).
        if n_classes == 2:
            z = xtr @ lr.coef_[0] + lr.intercept_[0]
            s = np.where(ytr == 1, 1.0, -1.0)
            obj = np.logaddexp(0, -s * z).sum() + (lr.coef_[0] ** 2).sum() / (2 * C)
        else:
            W, b = lr.coef_, lr.intercept_
            z = xtr @ W.T + b
            zmax = z.max(1, keepdims=True)
            lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(1))
            obj = (lse - z[np.arange(len(ytr)), ytr]).sum() + (W ** 2).sum() / (2 * C)
        out[f"C{C:g}"] = {"auc": auc, "acc": accuracy_score(yte, pred), "bacc": balanced_accuracy_score(yte, pred),
                          "f1": f1_score(yte, pred, average="weighted"), "proba": proba.tolist(),
                          "objective": obj}
    return out


def center_gram(g, unbiased=False):
    # Kornblith et al. 2019, google-research/representation_similarity (Demo.ipynb).
    g = g.copy()
    if unbiased:
        n = g.shape[0]
        np.fill_diagonal(g, 0)
        means = np.sum(g, 0) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        g -= means[:, None]
        g -= means[None, :]
        np.fill_diagonal(g, 0)
    else:
        means = np.mean(g, 0)
        means -= np.mean(means) / 2
        g -= means[:, None]
        g -= means[None, :]
    return g


def gram_cka(gx, gy, debiased=False):
    gx, gy = center_gram(gx, debiased), center_gram(gy, debiased)
    return float(gx.ravel().dot(gy.ravel()) / (np.linalg.norm(gx) * np.linalg.norm(gy)))


def rbf_gram(x):
    sq = np.sum(x * x, 1)
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d2, 0.0)
    return np.exp(-d2 / (2 * np.median(d2)))


def robustness_refs(x, y, site, slide, ks):
    sims = l2n(x) @ l2n(x).T
    sims[slide[:, None] == slide[None, :]] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")
    out = {}
    for k in ks:
        idx = order[:, :k]
        same_class = y[idx] == y[:, None]
        same_site = site[idx] == site[:, None]
        SO = int((same_class & ~same_site).sum())
        OS = int((~same_class & same_site).sum())
        SS = int((same_class & same_site).sum())
        OO = int((~same_class & ~same_site).sum())
        out[f"k{k}"] = {"ratio": SO / OS, "bounded": SO / (SO + OS), "SO": SO, "OS": OS, "SS": SS, "OO": OO}
    return out


def metric_refs():
    # Predictions with ties in the scores and a class that is predicted but absent from y_true.
    n = 60
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, 4, n))
    scores = np.round(rng.random((n, 3)), 1) + 1e-3
    proba = scores / scores.sum(1, keepdims=True)
    yb = rng.integers(0, 2, n)
    sb = np.round(rng.random(n), 1)
    return {
        "y": y.tolist(), "pred": pred.tolist(), "n_classes": 4, "proba": proba.tolist(),
        "acc": accuracy_score(y, pred), "bacc": balanced_accuracy_score(y, pred),
        "f1": f1_score(y, pred, average="weighted"),
        "auc_ovr": roc_auc_score(y, proba, multi_class="ovr", average="macro"),
        "y_binary": yb.tolist(), "score_binary": sb.tolist(), "auc_binary": roc_auc_score(yb, sb),
    }


def make_multi():
    n_sites, slides_per_site, tiles, dim, n_classes = 3, 9, 15, 32, 3
    class_mu = rng.standard_normal((n_classes, dim)) * 0.45
    site_mu = rng.standard_normal((n_sites, dim)) * 0.7
    feats, meta = [], []
    slide_no = 0
    for s in range(n_sites):
        for j in range(slides_per_site):
            c = (j + s) % n_classes
            split = "train" if j < 5 else ("val" if j == 5 else "test")
            slide_mu = rng.standard_normal(dim) * 0.3
            for t in range(tiles):
                feats.append(class_mu[c] + site_mu[s] + slide_mu + rng.standard_normal(dim))
                meta.append({"id": f"s{s}_sl{slide_no}_t{t}", "label": ["tumour", "stroma", "necrosis"][c],
                             "split": split, "site": f"site{s}", "slide": f"slide{slide_no}",
                             "patient": f"p{slide_no // 2}"})
            slide_no += 1
    return np.asarray(feats, dtype=np.float32), meta


def make_binary():
    n, dim = 200, 16
    mu = rng.standard_normal((2, dim)) * 0.35
    site_mu = rng.standard_normal((3, dim)) * 0.5
    feats, meta = [], []
    for i in range(n):
        c = int(rng.random() < 0.4)
        s = int(rng.integers(0, 3))
        slide = f"b{s}_{int(rng.integers(0, 6))}"
        feats.append(mu[c] + site_mu[s] + rng.standard_normal(dim))
        meta.append({"id": f"x{i:03d}", "label": ["benign", "malignant"][c], "split": "train" if i % 4 else "test",
                     "site": f"site{s}", "slide": slide, "patient": slide})
    return np.asarray(feats, dtype=np.float32), meta


def evaluate(feats, meta, ks, Cs, rks):
    classes = sorted({m["label"] for m in meta})
    y = np.array([classes.index(m["label"]) for m in meta])
    split = np.array([m["split"] for m in meta])
    x = feats.astype(np.float64)
    tr, te = split == "train", split == "test"
    site = np.array([m["site"] for m in meta])
    slide = np.array([m["slide"] for m in meta])
    return {
        "classes": classes,
        "knn": knn_refs(x[tr], y[tr], x[te], y[te], len(classes), ks),
        "linear": logistic_refs(x[tr], y[tr], x[te], y[te], len(classes), Cs),
        "robustness_test": robustness_refs(x[te], y[te], site[te], slide[te], rks),
        "robustness_all": robustness_refs(x, y, site, slide, rks),
    }


def main():
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    os.makedirs(OUT, exist_ok=True)
    npy_fixtures()
    cols = ["id", "label", "split", "site", "slide", "patient"]
    expected = {"metrics": metric_refs()}
    ks, Cs, rks = [1, 5, 10, 20], [0.01, 1], [3, 5, 10, 20]

    xm, mm = make_multi()
    write_set("multi", xm, mm, cols)
    expected["multi"] = evaluate(xm, mm, ks, Cs, rks)

    # Foundation-model features have large means and norms: the same probe on shifted, scaled features (float32,
    # as a model would write them). scikit-learn's L-BFGS on these raw values stops at its evaluation limit
    # (~13k iterations) short of the optimum, so its objective is only an upper bound; the converged reference is
    # scikit-learn on the exactly equivalent problem in x = (xs - 150) / 50 with C * 50² (the unpenalised
    # intercept absorbs the shift, W = W' / 50), mapped back to the raw parametrisation.
    classes = expected["multi"]["classes"]
    y = np.array([classes.index(m["label"]) for m in mm])
    tr = np.array([m["split"] == "train" for m in mm])
    te = np.array([m["split"] == "test" for m in mm])
    scale, shift = 50.0, 150.0
    xs = (xm.astype(np.float64) * scale + shift).astype(np.float32).astype(np.float64)

    def raw_objective(W, b):
        z = xs[tr] @ W.T + b
        zmax = z.max(1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(1))
        return float((lse - z[np.arange(tr.sum()), y[tr]]).sum() + (W ** 2).sum() / 2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = LogisticRegression(C=1, tol=1e-12, max_iter=100000).fit(xs[tr], y[tr])
    eq = LogisticRegression(C=scale ** 2, tol=1e-12, max_iter=100000).fit((xs[tr] - shift) / scale, y[tr])
    W = eq.coef_ / scale
    b = eq.intercept_ - eq.coef_.sum(1) * shift / scale
    expected["multi"]["linear_shifted_C1"] = {
        "scale": scale, "shift": shift, "sklearn_raw_n_iter": int(raw.n_iter_[0]),
        "sklearn_raw_objective": raw_objective(raw.coef_, raw.intercept_),
        "objective": raw_objective(W, b), "proba": eq.predict_proba((xs[te] - shift) / scale).tolist(),
    }

    xb, mb = make_binary()
    write_set("binary", xb, mb, cols)
    expected["binary"] = evaluate(xb, mb, ks, Cs + [100], rks)

    # A second "model" over the same samples: a nonlinear map to 24 dimensions, rows shuffled.
    proj = rng.standard_normal((xm.shape[1], 24)) / np.sqrt(xm.shape[1])
    xb2 = (np.tanh(xm.astype(np.float64) @ proj) + 0.1 * rng.standard_normal((len(xm), 24))).astype(np.float32)
    perm = rng.permutation(len(xm))
    write_set("multi_b", xb2[perm], [mm[i] for i in perm], ["id", "label", "split", "site", "slide"])
    a, b = xm.astype(np.float64), xb2.astype(np.float64)
    expected["cka_multi_multi_b"] = {
        "linear": gram_cka(a @ a.T, b @ b.T),
        "linear_debiased": gram_cka(a @ a.T, b @ b.T, debiased=True),
        "rbf": gram_cka(rbf_gram(a), rbf_gram(b)),
    }
    # numpy's default (linear) percentile, used for bootstrap intervals.
    vals = np.random.default_rng(7).random(37)
    expected["percentile"] = {"values": vals.tolist(), "p2_5": float(np.percentile(vals, 2.5)),
                              "p97_5": float(np.percentile(vals, 97.5)), "p50": float(np.percentile(vals, 50))}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
