"""How one class-incremental step's cost grows with the number of classes, on synthetic features.

    OMP_NUM_THREADS=1 MPLBACKEND=Agg python benchmarks/continual_growth.py \\
        [--methods ...] [--classes 10 100 1000] [--per-class 500] [--dim 512] [--step-classes 10] \\
        [--out rows.json] [--plot rows.png]
    python benchmarks/continual_growth.py --merge A.json B.json ... [--plot all.png]   # one table, one figure

Each (method, C) runs in a fresh process, one thread: a step that brings ``step_classes`` new
classes (``per_class`` 512-d features each, Gaussian around random class means) when C classes
are seen in all. Reported: the CPU seconds of the step's work (``time.process_time``) and its
peak memory (peak RSS minus the RSS once the inputs exist). The step's work, per method:

* ``fetril (linear)``: class means, nearest new class, the pseudo-features of the C - new old
  classes made batch by batch (``TranslatedFeatures``) and served by the loader the DataModules
  hand Lightning (``framework.data.base.make_loader``: shuffled, batches of 256), one epoch of
  SGD (lr 0.05, momentum 0.9, wd 5e-4) on a C-way linear head (PyCIL trains 50 such epochs).
* ``fetril (svm, liblinear)``: the same training set materialised (liblinear needs the whole
  design matrix), L2-normalised, one-vs-rest ``LinearSVC(dual=False)`` (liblinear's primal
  trust-region Newton solver, the official code's choice, C = 1, tol 1e-4). With
  ``--svm-problems k`` only k of the C binary problems are fitted and the step's time is
  extrapolated (x C / k); the memory is measured.
* ``fetril (svm, newton)``: the same objective by ``FeTrIL(svm_solver="newton")``
  (``framework.continual.linear_svm``): all C problems at once over batches of
  ``--svm-batch-size`` pseudo-features made on the fly, C = 1, tol 1e-4 (liblinear's criterion).
* ``acil``: the random buffer (``--buffer-width``, 2048 by default; the official 8192 makes R
  512 MB) and the recursive ridge update on the step's data, batches of 4096.
* ``ncm``: the new classes' normalised means.
* ``wa (aligning)``: WA's gamma over the C x 512 head and the scaling of the new rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("fetril (linear)", "fetril (svm, liblinear)", "fetril (svm, newton)", "acil", "ncm", "wa (aligning)")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def one(method: str, classes: int, per_class: int, dim: int, step_classes: int, buffer_width: int, svm_problems: int | None, svm_batch_size: int, svm_max_iter: int = 100, svm_max_cg: int = 100) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    from framework.continual.analytic import buffer_features, random_buffer_weight, rls_init, rls_update
    from framework.continual.fetril import TranslatedFeatures, streamed_svm
    from framework.continual.functional import class_means, nearest_new_class, normalized_class_means, weight_align_gamma
    from framework.data.base import make_loader

    from sklearn.svm import LinearSVC

    warm = torch.nn.Linear(4, 3)  # autograd's and the allocator's first-use costs stay out of the measurement
    F.cross_entropy(warm(torch.randn(2, 4)), torch.tensor([0, 1])).backward()
    g = torch.Generator().manual_seed(0)
    new = min(step_classes, classes)
    start = classes - new
    labels = torch.arange(start, classes).repeat_interleave(per_class)
    centres = torch.randn(new, dim, generator=g)
    features = torch.randn(new * per_class, dim, generator=g).mul_(0.5).add_(centres.repeat_interleave(per_class, 0))
    old_means = torch.randn(start, dim, generator=g)
    head = torch.randn(classes, dim, generator=g).abs_()
    base_rss = _rss_mb()
    cpu = time.process_time()
    extra: dict = {}
    if method.startswith("fetril"):
        new_means = class_means(features, labels, range(start, classes))
        nearest = nearest_new_class(old_means, new_means)
        data = TranslatedFeatures(features, labels, new_means, old_means, nearest, start)
        if method == "fetril (linear)":
            linear = torch.nn.Linear(dim, classes)
            opt = torch.optim.SGD(linear.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
            for x, y in make_loader(data, 256, train=True, seed=0):
                loss = F.cross_entropy(linear(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        elif method == "fetril (svm, newton)":
            info: dict = {}
            streamed_svm(data, 1.0, 1e-4, svm_batch_size, info, max_iter=svm_max_iter, max_cg=svm_max_cg)
            extra = {**info, "rows": len(data), "svm_batch_size": svm_batch_size, "svm_max_iter": svm_max_iter, "svm_max_cg": svm_max_cg}
        else:
            x, y = data.__getitems__(torch.arange(len(data)))
            x = F.normalize(x, dim=1).numpy()
            y = y.numpy()
            k = classes if svm_problems is None else min(svm_problems, classes)
            if k == classes:
                LinearSVC(dual=False, C=1.0, tol=1e-4).fit(x, y)
            else:  # k of the one-vs-rest problems (the same binary problems the multi-class fit solves)
                for c in range(k):
                    LinearSVC(dual=False, C=1.0, tol=1e-4).fit(x, (y == c).astype(int))
            extra = {"svm_problems_fitted": k, "rows": int(len(y))}
    elif method == "acil":
        weight = random_buffer_weight(dim, buffer_width, seed=0)
        R, W = rls_init(buffer_width, classes, 0.1)
        for part in torch.arange(len(labels)).split(4096):
            phi = buffer_features(features[part], weight, "relu")
            R, W = rls_update(R, W, phi, F.one_hot(labels[part], classes).double(), 0.1)
        extra = {"buffer_width": buffer_width}
    elif method == "ncm":
        normalized_class_means(features, labels, range(start, classes))
    elif method == "wa (aligning)":
        if start:
            gamma = weight_align_gamma(head, start, 1.0, True)
            head[start:] *= gamma
    seconds = time.process_time() - cpu
    if method == "fetril (svm, liblinear)" and extra["svm_problems_fitted"] < classes:
        extra["measured_seconds"] = seconds
        seconds *= classes / extra["svm_problems_fitted"]
    return {"method": method, "classes": classes, "cpu_seconds": seconds,
            "peak_mb": max(0.0, _peak_mb() - base_rss), **extra}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--step-classes", type=int, default=10)
    parser.add_argument("--buffer-width", type=int, default=2048)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--svm-problems", type=int, default=None, help="fit only this many one-vs-rest problems (extrapolate)")
    parser.add_argument("--svm-full-up-to", type=int, default=100, help="fit every SVM problem up to this many classes")
    parser.add_argument("--svm-batch-size", type=int, default=4096, help="rows per batch of the newton SVM's passes")
    parser.add_argument("--svm-max-iter", type=int, default=100, help="Newton iterations at most (newton SVM)")
    parser.add_argument("--svm-max-cg", type=int, default=100, help="CG iterations per Newton step at most (newton SVM)")
    parser.add_argument("--merge", nargs="+", default=None, help="print one table (and --plot one figure) from these JSON files")
    parser.add_argument("--svm-per-class", type=int, default=None, help="samples per class of the SVM beyond --svm-full-up-to")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "CLASSES"), help=argparse.SUPPRESS)
    parser.add_argument("--one-per-class", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, classes = args.one[0], int(args.one[1])
        per_class = args.one_per_class or args.per_class
        print(json.dumps(one(method, classes, per_class, args.dim, args.step_classes, args.buffer_width, args.svm_problems, args.svm_batch_size, args.svm_max_iter, args.svm_max_cg)))
        return
    if args.merge:
        rows = [r for path in args.merge for r in json.load(open(path))["rows"]]
        table(rows)
        if args.plot:
            plot(rows, args.plot)
        return
    rows = []
    for method in args.methods:
        for classes in args.classes:
            cmd = [sys.executable, os.path.abspath(__file__), "--one", method, str(classes), "--dim", str(args.dim),
                   "--step-classes", str(args.step_classes), "--buffer-width", str(args.buffer_width),
                   "--svm-batch-size", str(args.svm_batch_size), "--svm-max-iter", str(args.svm_max_iter),
                   "--svm-max-cg", str(args.svm_max_cg)]  # fmt: skip
            per_class = args.per_class
            if method == "fetril (svm, liblinear)" and classes > args.svm_full_up_to:
                cmd += ["--svm-problems", str(args.svm_problems or 5)]
                per_class = args.svm_per_class or per_class
            cmd += ["--one-per-class", str(per_class)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["per_class"] = per_class
            rows.append(row)
            print(f"{method:16s} {classes:5d} classes: {row['cpu_seconds']:9.3f} CPU s, peak {row['peak_mb']:8.1f} MB", file=sys.stderr)
            if args.out:  # rewritten after every run: a long benchmark keeps what it measured
                with open(args.out, "w") as f:
                    json.dump({"args": {k: v for k, v in vars(args).items() if k not in ("one", "out", "plot")}, "rows": rows}, f, indent=1)
    table(rows)
    if args.plot:
        plot(rows, args.plot)


def table(rows: list[dict]) -> None:
    print("| method | classes | samples / class | step CPU s | step peak MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        note = f" (extrapolated from {r['svm_problems_fitted']} of {r['classes']} problems)" if "measured_seconds" in r else ""
        if "passes" in r:
            stop = "" if r["converged"] else f", stopped by the iteration caps, not converged: gradient {r['relative_gradient']:.2g} x liblinear's threshold"
            note = f" ({r['passes']} passes, {r['newton_iterations']} Newton / {r['cg_iterations']} CG iterations{stop})"
        print(f"| {r['method']} | {r['classes']} | {r['per_class']} | {r['cpu_seconds']:.3g}{note} | {r['peak_mb']:.1f} |")


def plot(rows: list[dict], path: str) -> None:
    """Log-log step CPU seconds and peak memory against classes, one line per method; a hollow
    marker is a point that is not a whole measured step (extrapolated, or stopped by a cap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["classes"])
        colour = f"C{k}"
        partial = ["measured_seconds" in r or r.get("converged") is False for r in mine]
        for ax, key, floor in ((ax_t, "cpu_seconds", 1e-5), (ax_m, "peak_mb", 0.1)):
            cs, vs = [r["classes"] for r in mine], [max(r[key], floor) for r in mine]
            full = [(c, v) for c, v, p in zip(cs, vs, partial) if not p]
            ax.plot(*zip(*full), "o-", color=colour, label=method if ax is ax_t else None) if full else None
            for i, (c, v) in enumerate(zip(cs, vs)):
                if partial[i]:  # dashed from the previous point, hollow marker
                    if i:
                        ax.plot([cs[i - 1], c], [vs[i - 1], v], "--", color=colour)
                    ax.plot([c], [v], "o", color=colour, markerfacecolor="none")
    for ax, what in ((ax_t, "step CPU seconds"), (ax_m, "step peak memory (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("classes seen")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle("one step of 10 new classes, synthetic 512-d features (1 thread, shared 2-core machine); hollow, dashed: a partial step (see the table)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
