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

Step 1b, optional: the exact-likelihood classifier (the registered model in ``mode: exact``:
Bayes' rule, uniform prior, over the generator's probability-flow ``log p(x | c)``) on a seeded
subset of the test split (``--images`` drawn without replacement by ``--seed``; all 360 with
``--images 360``), written to ``OUT/exact-NAME.npz``::

    python benchmarks/generative_classifier_digits.py exact --name flow --generator CKPT [--images 60]

Step 2: the tables (with scikit-learn's GaussianNB and LogisticRegression on raw pixels and,
given ``--classifier``, the discriminative ``classifier`` checkpoint), the bars, JSON and the
accuracy-vs-NFE PNG, all from the files of steps 1 and 1b::

    python benchmarks/generative_classifier_digits.py report [--classifier CKPT]

Shared against independent noise is compared where it discriminates, at few pairs: with n a
power of two, the P pairs of a run split into P // n disjoint blocks of n consecutive pairs that
are distributed exactly as the first n (pair k's level is ``frac(vdc(k) + shift)``, and a block
of ``vdc`` aligned at a multiple of n is the first n points shifted by a constant), so the mean
accuracy over the blocks estimates the accuracy of n pairs with the images held fixed; the
standard error is over blocks.

CPU seconds are process time (``time.process_time``), with the 1-minute load average before and
after each run; figures: docs/benchmarks/compositions.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "generative_classifier_digits"
FULL = (10, 20, 50, 100)
ADAPTIVE = (((10, 50), (3, 1)), ((20, 100), (3, 1)), ((10, 100), (2, 1)), ((20, 50), (2, 1)))
#: Pair counts of the shared-vs-independent comparison (powers of two: see the module docstring).
BLOCKS = (1, 2, 4, 8, 16)
DIFFUSION = ("edm", "vp", "subvp", "ve")


def _test_split(n_images: int | None):
    from framework.data.digits import DigitsDataModule

    dm = DigitsDataModule()
    dm.setup("fit")
    dm.setup("test")
    x, y = dm.test_dataset.x, dm.test_dataset.y
    return dm, (x[:n_images], y[:n_images]) if n_images else (x, y)


def _load() -> float:
    return os.getloadavg()[0]


def errors_command(args: argparse.Namespace) -> None:
    from framework.generative.generative_classifier import GenerativeClassifier

    torch.set_num_threads(args.threads)
    _, (x, y) = _test_split(args.n_images)
    clf = GenerativeClassifier(generator=args.generator, n_samples=[args.pairs], to_keep=[1], noise=args.noise,
                               calibrate=False, batch_rows=args.batch_rows)
    load_start, start, wall = _load(), time.process_time(), time.time()
    chunks = []
    for i in range(0, len(x), args.chunk):
        xb = x[i : i + args.chunk]
        levels, noise = clf._pairs(xb, clf.num_classes)
        candidates = torch.arange(clf.num_classes).expand(len(xb), clf.num_classes)
        with torch.no_grad():
            chunks.append(clf._errors_fn(xb, levels, noise)(candidates, 0, args.pairs))
        print(f"{i + len(xb)}/{len(x)} images, {time.process_time() - start:.0f} CPU s, load {_load():.1f}", flush=True)
    errors = torch.cat(chunks).numpy()
    cpu, load_end = time.process_time() - start, _load()
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
             generator=str(args.generator), noise=args.noise, threads=args.threads, load=[load_start, load_end])
    print(f"wrote {path}: {errors.shape}, {cpu:.0f} CPU s, load {load_start:.1f} -> {load_end:.1f}")


def exact_subset(n_total: int, images: int, seed: int) -> np.ndarray:
    """Sorted indices of ``images`` test images drawn without replacement by ``seed`` (all of them when images >= n_total)."""
    if images >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=images, replace=False))


def exact_command(args: argparse.Namespace) -> None:
    from framework.generative.generative_classifier import GenerativeClassifier

    torch.set_num_threads(args.threads)
    _, (x, y) = _test_split(None)
    index = exact_subset(len(x), args.images, args.seed)
    options = json.loads(args.options)
    clf = GenerativeClassifier(generator=args.generator, mode="exact", calibrate=False, likelihood_args=options)
    load_start, start, wall = _load(), time.process_time(), time.time()
    loglik, nfe = [], []
    for i in range(0, len(index), args.chunk):
        out = clf.score(x[torch.from_numpy(index[i : i + args.chunk])])
        loglik.append(out["log_likelihood"].numpy())
        nfe.append(out["nfe"].numpy())
        print(f"{min(i + args.chunk, len(index))}/{len(index)} images, {time.process_time() - start:.0f} CPU s, "
              f"load {_load():.1f}", flush=True)
    cpu, load_end = time.process_time() - start, _load()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"exact-{args.name}.npz"
    np.savez(path, log_likelihood=np.concatenate(loglik), nfe=np.concatenate(nfe), index=index,
             labels=y.numpy()[index], cpu_seconds=cpu, wall_seconds=time.time() - wall, generator=str(args.generator),
             options=json.dumps(options), seed=args.seed, threads=args.threads, load=[load_start, load_end])
    acc = float((np.concatenate(loglik).argmax(1) == y.numpy()[index]).mean())
    print(f"wrote {path}: {len(index)} images, top-1 {100 * acc:.2f}%, {cpu:.0f} CPU s, load {load_start:.1f} -> {load_end:.1f}")


def simulate(errors: np.ndarray, n_samples, to_keep) -> np.ndarray:
    """Predictions of the adaptive schedule from per-pair errors (B, C, P), as ``adaptive_classify`` computes them."""
    from framework.generative import classify

    e = torch.from_numpy(errors).double()

    def fn(candidates, start, stop):
        return e.gather(1, candidates[..., None].expand(-1, -1, e.shape[2]))[..., start:stop]

    return classify.adaptive_classify(fn, len(e), e.shape[1], n_samples, to_keep).predictions.numpy()


def block_accuracies(errors: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Top-1 of the full evaluation on each of the P // n disjoint blocks of n consecutive pairs (errors (B, C, P))."""
    blocks = errors.shape[2] // n
    if blocks < 1:
        raise ValueError(f"{errors.shape[2]} pairs hold no block of {n}")
    e = errors[:, :, : blocks * n].reshape(errors.shape[0], errors.shape[1], blocks, n).mean(3)
    return (e.argmin(1) == labels[:, None]).mean(0)


def noise_comparison(shared: np.ndarray, independent: np.ndarray, labels: np.ndarray, sizes=BLOCKS) -> list[dict]:
    """Shared against independent noise at each pair count n: block-mean top-1 of each, their difference, s.e. over blocks."""
    rows = []
    for n in sizes:
        blocks = min(shared.shape[2], independent.shape[2]) // n
        if blocks < 2:
            continue
        a = block_accuracies(shared[:, :, : blocks * n], labels, n)
        b = block_accuracies(independent[:, :, : blocks * n], labels, n)
        d = a - b
        rows.append({"n_pairs": n, "blocks": blocks, "shared": float(a.mean()), "shared_se": float(a.std(ddof=1) / np.sqrt(blocks)),
                     "independent": float(b.mean()), "independent_se": float(b.std(ddof=1) / np.sqrt(blocks)),
                     "difference": float(d.mean()), "difference_se": float(d.std(ddof=1) / np.sqrt(blocks))})
    return rows


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
    t = time.process_time()
    with torch.no_grad():
        pred = model(dm.test_dataset.x).argmax(1)
    return {"method": f"discriminative classifier ({Path(path).name})", "images": len(pred),
            "accuracy": float((pred == dm.test_dataset.y).double().mean()), "nfe": None,
            "cpu_seconds": time.process_time() - t}


def _pct(a: float) -> str:
    return f"{100 * a:.2f}%"


def report_command(args: argparse.Namespace) -> None:
    from framework.generative import classify

    torch.set_num_threads(args.threads)
    dm, _ = _test_split(None)
    rows: list[dict] = []
    runs: list[dict] = []
    curves: dict[str, list[tuple[float, float, str]]] = {}
    matrices: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for path in sorted(OUT.glob("errors-*.npz")):
        data = np.load(path)
        errors, labels, noise = data["errors"], data["labels"], str(data["noise"])
        name = path.stem.split("-")[1]
        matrices[name, noise] = errors, labels
        pairs = errors.shape[2]
        load = data["load"].tolist() if "load" in data else None
        runs.append({"file": path.name, "generator": str(data["generator"]), "noise": noise, "images": len(labels),
                     "pairs": pairs, "threads": int(data["threads"]), "cpu_seconds": float(data["cpu_seconds"]),
                     "load": load})
        key = f"{name} ({noise} noise)"
        for n in FULL:
            if n <= pairs:
                pred = errors[:, :, :n].mean(2).argmin(1)
                acc = float((pred == labels).mean())
                rows.append({"method": f"{name} generative, full", "generator": name, "noise": noise, "n_samples": [n],
                             "to_keep": [1], "images": len(labels), "accuracy": acc, "nfe": 10 * n})
                curves.setdefault(key, []).append((10 * n, acc, "full"))
        for ns, tk in ADAPTIVE:
            if ns[-1] <= pairs:
                acc = float((simulate(errors, ns, tk) == labels).mean())
                nfe = classify.adaptive_nfe(10, ns, tk)
                rows.append({"method": f"{name} generative, adaptive", "generator": name, "noise": noise, "n_samples": list(ns),
                             "to_keep": list(tk), "images": len(labels), "accuracy": acc, "nfe": nfe})
                curves.setdefault(key, []).append((nfe, acc, "adaptive"))
    exact_rows = []
    for path in sorted(OUT.glob("exact-*.npz")):
        data = np.load(path)
        name, index, labels = path.stem.split("-", 1)[1], data["index"], data["labels"]
        acc = float((data["log_likelihood"].argmax(1) == labels).mean())
        exact_rows.append({"method": f"{name} exact likelihood (Bayes, uniform prior)", "generator": name,
                           "options": json.loads(str(data["options"])), "images": len(index), "subset_seed": int(data["seed"]),
                           "accuracy": acc, "nfe": float(data["nfe"].mean()), "cpu_seconds": float(data["cpu_seconds"]),
                           "threads": int(data["threads"]), "load": data["load"].tolist()})
        curves.setdefault(f"{name} exact likelihood, {len(index)} images (NFE: forward calls)", []).append((float(data["nfe"].mean()), acc, "exact"))
        for (gen, noise), (errors, all_labels) in sorted(matrices.items()):
            if len(all_labels) > index.max() and noise == "shared" and errors.shape[2] >= FULL[-1]:
                pred = errors[index, :, : FULL[-1]].mean(2).argmin(1)
                exact_rows.append({"method": f"{gen} generative, full, same subset", "generator": gen, "noise": noise,
                                   "n_samples": [FULL[-1]], "images": len(index), "subset_seed": int(data["seed"]),
                                   "accuracy": float((pred == all_labels[index]).mean()), "nfe": 10 * FULL[-1]})
    baselines = _sklearn_rows(dm)
    if args.classifier:
        baselines.append(_classifier_row(args.classifier, dm))
    comparisons = {}
    for name in sorted({g for g, _ in matrices}):
        if (name, "shared") in matrices and (name, "independent") in matrices:
            (s, ls), (i, li) = matrices[name, "shared"], matrices[name, "independent"]
            if np.array_equal(ls, li):
                comparisons[name] = noise_comparison(s, i, ls)
    bars = _bars(rows, comparisons)

    print("| classifier | noise | pairs (n_samples / to_keep) | NFE / image | images | top-1 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        pairs = "/".join(map(str, r["n_samples"])) if len(r["n_samples"]) == 1 else f"{r['n_samples']} / {r['to_keep']}"
        print(f"| {r['method']} | {r['noise']} | {pairs} | {r['nfe']} | {r['images']} | {_pct(r['accuracy'])} |")
    for r in exact_rows:
        extra = f"{r['options']}, seed {r['subset_seed']}" if "options" in r else f"{r['n_samples'][0]}, seed {r['subset_seed']}"
        print(f"| {r['method']} | {r.get('noise', '-')} | {extra} | {r['nfe']:.0f} | {r['images']} | {_pct(r['accuracy'])} |")
    for r in baselines:
        print(f"| {r['method']} | - | - | - | {r['images']} | {_pct(r['accuracy'])} |")
    print("\n| errors run | generator | images | pairs | threads | CPU s | load before -> after |\n|---|---|---|---|---|---|---|")
    for r in runs:
        load = f"{r['load'][0]:.1f} -> {r['load'][1]:.1f}" if r["load"] else "-"
        print(f"| {r['file']} | {r['generator']} | {r['images']} | {r['pairs']} | {r['threads']} | {r['cpu_seconds']:.0f} | {load} |")
    for r in exact_rows:
        if "options" in r:
            print(f"| exact-{r['generator']}.npz | {r['options']} | {r['images']} | - | {r['threads']} | {r['cpu_seconds']:.0f} "
                  f"| {r['load'][0]:.1f} -> {r['load'][1]:.1f} |")
    if comparisons:
        print("\n| generator | pairs n | blocks | shared top-1 | independent top-1 | shared - independent |\n|---|---|---|---|---|---|")
        for name, comp in comparisons.items():
            for c in comp:
                print(f"| {name} | {c['n_pairs']} | {c['blocks']} | {_pct(c['shared'])} +- {100 * c['shared_se']:.2f} "
                      f"| {_pct(c['independent'])} +- {100 * c['independent_se']:.2f} "
                      f"| {100 * c['difference']:+.2f} +- {100 * c['difference_se']:.2f} points |")
    print()
    for b in bars:
        print(f"bar: {b['bar']}: {b['status']} ({b['detail']})")
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"rows": rows, "exact": exact_rows, "baselines": baselines, "runs": runs,
              "shared_vs_independent": comparisons, "bars": bars}
    (OUT / "report.json").write_text(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    if curves:
        _plot(curves, Path(args.png))


def _bars(rows: list[dict], comparisons: dict[str, list[dict]]) -> list[dict]:
    """The issue's three bars, each ``met`` / ``not met`` / ``not measured`` with the figures behind it."""
    bars = []
    diffusion = [r for r in rows if r["generator"] in DIFFUSION and r["noise"] == "shared" and r["method"].endswith("full")
                 and r["n_samples"] == [FULL[-1]]]
    bars.append({"bar": "diffusion classifier >= 95% top-1 (full, 100 shared pairs)",
                 "status": ("met" if all(r["accuracy"] >= 0.95 for r in diffusion) else "not met") if diffusion else "not measured",
                 "detail": ", ".join(f"{r['generator']} {_pct(r['accuracy'])} on {r['images']}" for r in diffusion)})
    details, ok = [], []
    for r in rows:
        if not r["method"].endswith("adaptive"):
            continue
        full = next((f for f in rows if f["generator"] == r["generator"] and f["noise"] == r["noise"]
                     and f["n_samples"] == [r["n_samples"][-1]]), None)
        if full is not None and r["nfe"] <= 0.5 * full["nfe"]:
            good = r["accuracy"] >= full["accuracy"] - 0.01
            if r["noise"] == "shared":  # the method's pairs; independent noise is the ablation, listed beside
                ok.append(good)
            details.append(f"{r['generator']} {r['noise']} {r['n_samples']}/{r['to_keep']}: {_pct(r['accuracy'])} at {r['nfe']} "
                           f"vs full {_pct(full['accuracy'])} at {full['nfe']}{'' if good else ' (below)'}"
                           f"{'' if r['noise'] == 'shared' else ' [not in the bar]'}")
    bars.append({"bar": "adaptive within 1 point of full at <= 50% of its NFE (shared noise, the method's pairs)",
                 "status": ("met" if all(ok) else f"not met in {ok.count(False)} of {len(ok)}") if ok else "not measured",
                 "detail": "; ".join(details)})
    details, ok = [], []
    for name, comp in comparisons.items():
        for c in comp:
            ok.append(c["difference"] >= -2 * c["difference_se"])
            details.append(f"{name} n={c['n_pairs']}: {100 * c['difference']:+.2f} +- {100 * c['difference_se']:.2f}")
    for name in sorted({r["generator"] for r in rows}):
        for n in FULL:
            s = [r for r in rows if r["generator"] == name and r["noise"] == "shared" and r["n_samples"] == [n]]
            i = [r for r in rows if r["generator"] == name and r["noise"] == "independent" and r["n_samples"] == [n]]
            if s and i:
                ok.append(s[0]["accuracy"] >= i[0]["accuracy"])
                details.append(f"{name} first {n}: {_pct(s[0]['accuracy'])} vs {_pct(i[0]['accuracy'])}")
    bars.append({"bar": "shared noise >= independent noise (block means: not below by more than 2 s.e.; prefixes 10-100: >=)",
                 "status": ("met" if all(ok) else f"not met in {ok.count(False)} of {len(ok)}") if ok else "not measured",
                 "detail": "; ".join(details)})
    return bars


def _plot(curves: dict[str, list[tuple[float, float, str]]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (key, points) in enumerate(curves.items()):
        color = f"C{i}"
        for kind, marker in (("full", "o"), ("adaptive", "s"), ("exact", "*")):
            pts = sorted((n, a) for n, a, k in points if k == kind)
            if pts:
                style = ("--" if "independent" in key else "-") if kind == "full" else "none"
                ax.plot(*zip(*pts), marker=marker, color=color, label=f"{key}, {kind}", linestyle=style,
                        markersize=9 if kind == "exact" else 5)
    ax.set_xscale("log")
    ax.set_xlabel("generator NFE per image")
    ax.set_ylabel("top-1 accuracy (digits test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
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
    x = sub.add_parser("exact")
    x.add_argument("--name", required=True)
    x.add_argument("--generator", required=True)
    x.add_argument("--images", type=int, default=60, help="test images, drawn without replacement by --seed (360: all)")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--options", default='{"divergence": "exact", "solver": "midpoint", "steps": 8}',
                   help="the generator's log_likelihood options (JSON)")
    x.add_argument("--chunk", type=int, default=10)
    x.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("report")
    r.add_argument("--classifier", default=None)
    r.add_argument("--png", default=str(ROOT / "docs" / "benchmarks" / "generative_classifier_digits.png"))
    r.add_argument("--json", default=str(ROOT / "docs" / "benchmarks" / "generative_classifier_digits.json"))
    r.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    {"errors": errors_command, "exact": exact_command, "report": report_command}[args.command](args)


if __name__ == "__main__":
    main()
