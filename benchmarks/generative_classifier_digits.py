"""Generative classifiers on the digits test split: accuracy against (level, noise) pairs, full and adaptive, shared and independent noise.

Step 1, once per (generator, noise mode): the per-pair conditional errors of every test image
under every class, written to ``OUT/errors-NAME-NOISE.npz``::

    python benchmarks/generative_classifier_digits.py errors --name edm --generator CKPT [--noise shared] \
        [--pairs 100] [--n-images 360]

It runs the registered ``generative_classifier``'s own pair drawing and error function once
with ``n_samples: [pairs]`` (all classes on all pairs). Every full evaluation with n <= pairs and
every adaptive schedule is then read off the same matrix: the adaptive evaluation uses the first
n_1 pairs, then the first n_2, ... of exactly this draw, so the result equals running the model
with that schedule (``--check`` runs the model's adaptive evaluation on the first images and
asserts it), and its NFE is ``adaptive_nfe`` (the count the model's net-call hook reports).

Step 2: the table (with scikit-learn's GaussianNB and LogisticRegression on raw pixels and,
given ``--classifier``, the discriminative ``classifier`` checkpoint), JSON and accuracy-vs-NFE PNG::

    python benchmarks/generative_classifier_digits.py report [--classifier CKPT] [--exact NAME=CKPT]

CPU seconds are process time (``time.process_time``); figures: docs/benchmarks/compositions.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "generative_classifier_digits"
FULL = (10, 20, 50, 100)
ADAPTIVE = (((10, 50), (3, 1)), ((20, 100), (3, 1)), ((10, 100), (2, 1)), ((20, 50), (2, 1)))


def _test_split(n_images: int | None):
    from framework.data.digits import DigitsDataModule

    dm = DigitsDataModule()
    dm.setup("fit")
    dm.setup("test")
    x, y = dm.test_dataset.x, dm.test_dataset.y
    return dm, (x[:n_images], y[:n_images]) if n_images else (x, y)


def errors_command(args: argparse.Namespace) -> None:
    from framework.generative.generative_classifier import GenerativeClassifier

    torch.set_num_threads(args.threads)
    _, (x, y) = _test_split(args.n_images)
    clf = GenerativeClassifier(generator=args.generator, n_samples=[args.pairs], to_keep=[1], noise=args.noise,
                               calibrate=False, batch_rows=args.batch_rows)
    start, wall = time.process_time(), time.time()
    chunks = []
    for i in range(0, len(x), args.chunk):
        xb = x[i : i + args.chunk]
        levels, noise = clf._pairs(xb, clf.num_classes)
        candidates = torch.arange(clf.num_classes).expand(len(xb), clf.num_classes)
        with torch.no_grad():
            chunks.append(clf._errors_fn(xb, levels, noise)(candidates, 0, args.pairs))
        print(f"{i + len(xb)}/{len(x)} images, {time.process_time() - start:.0f} CPU s", flush=True)
    errors = torch.cat(chunks).numpy()
    cpu = time.process_time() - start
    if args.check:
        from framework.generative import classify

        for (ns, tk) in ADAPTIVE[:2]:
            model = GenerativeClassifier(generator=args.generator, n_samples=list(ns), to_keep=list(tk), noise=args.noise,
                                         calibrate=False, batch_rows=args.batch_rows)
            out = model.score(x[: args.check])
            simulated = simulate(errors[: args.check], ns, tk)
            assert np.array_equal(out["predictions"].numpy(), simulated), (ns, tk)
            assert float(out["nfe"][0]) == classify.adaptive_nfe(10, ns, tk)
        print(f"check: the model's adaptive runs equal the simulated ones on {args.check} images")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"errors-{args.name}-{args.noise}.npz"
    np.savez(path, errors=errors, labels=y.numpy(), cpu_seconds=cpu, wall_seconds=time.time() - wall,
             generator=str(args.generator), noise=args.noise, threads=args.threads)
    print(f"wrote {path}: {errors.shape}, {cpu:.0f} CPU s")


def simulate(errors: np.ndarray, n_samples, to_keep) -> np.ndarray:
    """Predictions of the adaptive schedule from per-pair errors (B, C, P), as ``adaptive_classify`` computes them."""
    from framework.generative import classify

    e = torch.from_numpy(errors).double()

    def fn(candidates, start, stop):
        return e.gather(1, candidates[..., None].expand(-1, -1, e.shape[2]))[..., start:stop]

    return classify.adaptive_classify(fn, len(e), e.shape[1], n_samples, to_keep).predictions.numpy()


def _sklearn_rows(dm) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB

    xtr, ytr = dm.train_dataset.x.flatten(1).numpy(), dm.train_dataset.y.numpy()
    xte, yte = dm.test_dataset.x.flatten(1).numpy(), dm.test_dataset.y.numpy()
    rows = []
    for name, est in (("GaussianNB (raw pixels)", GaussianNB()), ("LogisticRegression (raw pixels)", LogisticRegression(max_iter=5000))):
        t = time.process_time()
        est.fit(xtr, ytr)
        rows.append({"method": name, "images": len(yte), "accuracy": float((est.predict(xte) == yte).mean()),
                     "nfe": None, "cpu_seconds": time.process_time() - t})
    return rows


def _classifier_row(path: str, dm) -> dict:
    from framework.loading import load_trained

    model = load_trained(path, "classifier", role="classifier", num_classes=10)
    with torch.no_grad():
        pred = model(dm.test_dataset.x).argmax(1)
    return {"method": f"discriminative classifier ({Path(path).name})", "images": len(pred),
            "accuracy": float((pred == dm.test_dataset.y).double().mean()), "nfe": None, "cpu_seconds": None}


def _exact_row(spec: str, n: int, options: dict) -> dict:
    from framework.generative.generative_classifier import GenerativeClassifier

    name, path = spec.split("=", 1)
    _, (x, y) = _test_split(n)
    clf = GenerativeClassifier(generator=path, mode="exact", calibrate=False, likelihood_args=options)
    t = time.process_time()
    out = clf.score(x)
    return {"method": f"{name} exact likelihood (Bayes, uniform prior; {options})", "images": len(y),
            "accuracy": float((out["predictions"] == y).double().mean()), "nfe": float(out["nfe"][0]),
            "cpu_seconds": time.process_time() - t}


def report_command(args: argparse.Namespace) -> None:
    from framework.generative import classify

    torch.set_num_threads(args.threads)
    dm, _ = _test_split(None)
    rows: list[dict] = []
    curves: dict[str, list[tuple[float, float, str]]] = {}
    for path in sorted(OUT.glob("errors-*.npz")):
        data = np.load(path)
        errors, labels, noise = data["errors"], data["labels"], str(data["noise"])
        name = path.stem.split("-")[1]
        pairs = errors.shape[2]
        key = f"{name} ({noise} noise)"
        for n in FULL:
            if n <= pairs:
                pred = errors[:, :, :n].mean(2).argmin(1)
                acc = float((pred == labels).mean())
                rows.append({"method": f"{name} generative, full", "noise": noise, "n_samples": [n], "to_keep": [1],
                             "images": len(labels), "accuracy": acc, "nfe": 10 * n})
                curves.setdefault(key, []).append((10 * n, acc, "full"))
        for ns, tk in ADAPTIVE:
            if ns[-1] <= pairs:
                acc = float((simulate(errors, ns, tk) == labels).mean())
                rows.append({"method": f"{name} generative, adaptive", "noise": noise, "n_samples": list(ns), "to_keep": list(tk),
                             "images": len(labels), "accuracy": acc, "nfe": classify.adaptive_nfe(10, ns, tk)})
                curves.setdefault(key, []).append((classify.adaptive_nfe(10, ns, tk), acc, "adaptive"))
        rows[-1]["errors_cpu_seconds"] = float(data["cpu_seconds"])
    rows += _sklearn_rows(dm)
    if args.classifier:
        rows.append(_classifier_row(args.classifier, dm))
    for spec in args.exact or []:
        rows.append(_exact_row(spec, args.exact_images, json.loads(args.exact_options)))
    for r in rows:
        extra = f" n_samples {r['n_samples']} to_keep {r['to_keep']} noise {r['noise']}" if "n_samples" in r else ""
        nfe = f"{r['nfe']:.0f}" if r.get("nfe") else "-"
        print(f"{r['method']:<48} {extra:<48} images {r['images']:>4}  top-1 {100 * r['accuracy']:6.2f}%  NFE/image {nfe}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.json").write_text(json.dumps(rows, indent=1))
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for key, points in curves.items():
            for kind, marker in (("full", "o"), ("adaptive", "s")):
                pts = sorted((n, a) for n, a, k in points if k == kind)
                if pts:
                    ax.plot(*zip(*pts), marker=marker, label=f"{key}, {kind}", linestyle="-" if kind == "full" else "none")
        ax.set_xscale("log")
        ax.set_xlabel("generator NFE per image")
        ax.set_ylabel("top-1 accuracy (digits test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        png = Path(args.png)
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=120)
        print(f"wrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("errors")
    e.add_argument("--name", required=True)
    e.add_argument("--generator", required=True)
    e.add_argument("--noise", default="shared", choices=("shared", "independent"))
    e.add_argument("--pairs", type=int, default=100)
    e.add_argument("--n-images", type=int, default=None)
    e.add_argument("--chunk", type=int, default=20)
    e.add_argument("--batch-rows", type=int, default=4000)
    e.add_argument("--check", type=int, default=0, help="check the model's adaptive runs on this many images")
    e.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("report")
    r.add_argument("--classifier", default=None)
    r.add_argument("--exact", action="append", help="NAME=CKPT of a generator for the exact-likelihood row")
    r.add_argument("--exact-images", type=int, default=30)
    r.add_argument("--exact-options", default='{"divergence": "exact", "solver": "midpoint", "steps": 8}')
    r.add_argument("--png", default=str(ROOT / "docs" / "benchmarks" / "generative_classifier_digits.png"))
    r.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    errors_command(args) if args.command == "errors" else report_command(args)


if __name__ == "__main__":
    main()
