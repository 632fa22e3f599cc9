"""How one class-incremental step's cost grows with the number of classes, on synthetic features.

    OMP_NUM_THREADS=1 MPLBACKEND=Agg python benchmarks/continual_growth.py \\
        [--methods ...] [--classes 10 100 1000] [--per-class 500] [--dim 512] [--step-classes 10] \\
        [--tensor-peak] [--progress passes.log] [--out rows.json] [--plot rows.png]
    python benchmarks/continual_growth.py --merge A.json B.json ... [--plot all.png]   # one table, one figure

Each (method, C) runs in a fresh process, one thread: a step that brings ``step_classes`` new
classes (``per_class`` 512-d features each, Gaussian around random class means) when C classes
are seen in all. Reported: the CPU seconds of the step's work (``time.process_time``) and its
peak memory ``peak_mb``: the process's peak RSS (``ru_maxrss``, its whole life) minus the RSS once
the inputs exist. What that peak is made of, beside it (Linux): ``step_peak_mb``, the peak RSS
since the step began (``/proc/self/clear_refs`` resets it there, so the imports' and the inputs'
transients, a floor under ``peak_mb``, are not in it); the growth over the step, at its end, of
anonymous memory (data) and of mapped files (``file_mb``: the pages of torch's library code that
the step runs for the first time, the same for any number of classes); glibc's bytes in use and
free but kept (``mallinfo2``; a run under ``GLIBC_TUNABLES`` or ``MALLOC_*`` settings, a
diagnostic, records them in its rows as ``malloc_env`` and the tables name them); with
``--tensor-peak``, in another run of the step under torch's profiler, the peak of live CPU
tensor bytes allocated by the step (``tensor_peak_mb``: what the algorithm holds at once,
without the allocator's slack). The step's work, per method:

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
  After the step (outside its time and memory): the objective sum_c f_c, the accuracy on the
  training rows and on 50 held-out synthetic features per class (each class's mean plus
  0.5 x N(0, I), as the new classes' features are drawn); ``--progress FILE`` logs every pass.
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


def _status_mb() -> dict[str, float]:
    """VmRSS, VmHWM (peak RSS), RssAnon (data) and RssFile (mapped files: library code) in MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024  # kB
    return out


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM and ru_maxrss) to its RSS now (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_mb() -> tuple[float, float] | None:
    """glibc malloc's bytes in use and bytes free but kept (``mallinfo2``: heap and mmapped), in MB."""
    import ctypes

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    mallinfo2.restype = Info
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def one(method: str, classes: int, per_class: int, dim: int, step_classes: int, buffer_width: int, svm_problems: int | None, svm_batch_size: int, svm_max_iter: int = 100, svm_max_cg: int = 100, progress: str | None = None, tensor_peak: bool = False) -> dict:
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
    process_peak = _peak_mb()  # imports and inputs: the floor under peak_mb
    reset = _reset_peak()  # from here VmHWM is the step's own peak
    status, heap = _status_mb(), _malloc_mb()
    profiler = None
    if tensor_peak:  # live tensor bytes: the CPU allocator's running total, allocations made from here on
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
        profiler.start()
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
            if progress:
                _log_passes(data, progress, cpu, info)
            fitted = streamed_svm(data, 1.0, 1e-4, svm_batch_size, info, max_iter=svm_max_iter, max_cg=svm_max_cg)
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
    # The process's peak RSS (ru_maxrss over its life) minus the RSS once the inputs exist, as
    # every row has been measured; with reset, also the peak since the step began and what the
    # RSS is made of at the step's end.
    peak = max(0.0, max(process_peak, _peak_mb()) - base_rss)  # before any evaluation below
    if reset:
        end = _status_mb()
        extra.update(step_peak_mb=end["VmHWM"] - base_rss, anon_mb=end["RssAnon"] - status["RssAnon"], file_mb=end["RssFile"] - status["RssFile"])
    if heap is not None:
        now = _malloc_mb()
        extra.update(malloc_in_use_mb=now[0] - heap[0], malloc_free_mb=now[1] - heap[1])
    if profiler is not None:
        profiler.stop()
        extra["tensor_peak_mb"] = _tensor_peak(profiler) / 2**20
    if method == "fetril (svm, liblinear)" and extra["svm_problems_fitted"] < classes:
        extra["measured_seconds"] = seconds
        seconds *= classes / extra["svm_problems_fitted"]
    if method == "fetril (svm, newton)":  # outside the step's time and memory
        centres_all = torch.cat([old_means, centres])  # every class: its mean, spread 0.5 as the new ones
        extra.update(svm_evaluation(*fitted, data, centres_all, svm_batch_size, g))
    allocator = {k: v for k, v in os.environ.items() if k == "GLIBC_TUNABLES" or k.startswith("MALLOC_")}
    if allocator:  # a diagnostic run with glibc's malloc tuned: the rows say so
        extra["malloc_env"] = allocator
    return {"method": method, "classes": classes, "cpu_seconds": seconds, "peak_mb": peak, **extra}


def _tensor_peak(profiler) -> int:
    """The most CPU tensor bytes allocated while ``profiler`` ran and live at once: the allocator's
    running total at each allocation event, less its value before the first (blocks that an
    earlier profiling left in its table)."""
    events, nodes = [], list(profiler.profiler.kineto_results.experimental_event_tree())
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        if type(node.extra_fields).__name__ == "_ExtraFields_Allocation":
            events.append((node.start_time_ns, node.extra_fields.total_allocated, node.extra_fields.alloc_size))
    if not events:
        return 0
    events.sort()
    before = events[0][1] - events[0][2]
    return max(total for _, total, _ in events) - before


def _log_passes(data, path: str, cpu: float, info: dict) -> None:
    """Make ``data`` append a line (time, pass, CPU s since ``cpu``, the solver's ``info`` as of its
    last gradient check) to ``path`` whenever a pass begins."""
    read, passes = data.__getitems__, [0]

    def logged(indices):
        if int(indices[0]) == 0:
            passes[0] += 1
            state = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
            with open(path, "a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} pass {passes[0]} begins at {time.process_time() - cpu:.1f} CPU s {state}\n")
        return read(indices)

    data.__getitems__ = logged  # streamed_svm calls data.__getitems__: the instance's attribute


def svm_evaluation(classes, coef, intercept, data, centres, batch_size: int, g, test_per_class: int = 50) -> dict:
    """The fitted one-vs-rest SVM's objective sum_c f_c (liblinear's, C = 1, intercept scaling 1)
    and accuracy on its training rows (real and pseudo, L2-normalised), and its accuracy on held-out
    synthetic features of every class (``test_per_class`` draws around each class's mean, spread 0.5
    like the new classes' features): one pass each, batches of ``batch_size``."""
    import torch

    classes, coef, intercept = classes.long(), coef.float(), intercept.float()
    column = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long)
    column[classes] = torch.arange(len(classes))
    loss = torch.zeros(len(classes), dtype=torch.float64)
    right = 0
    for first in range(0, len(data), batch_size):
        x, y = data.__getitems__(torch.arange(first, min(first + batch_size, len(data))))
        m = torch.nn.functional.normalize(x, dim=1) @ coef.T + intercept
        sign = torch.where(column[y][:, None] == torch.arange(len(classes))[None], 1.0, -1.0)
        loss += (1 - sign * m).clamp_(min=0).pow_(2).sum(0).double()
        right += int((classes[m.argmax(1)] == y).sum())
    objective = 0.5 * (coef.double().pow(2).sum(1) + intercept.double().pow(2)) + loss
    test_right = test_rows = 0
    for part in torch.arange(len(centres)).split(max(1, batch_size // test_per_class)):
        y = part.repeat_interleave(test_per_class)
        x = torch.randn(len(y), centres.shape[1], generator=g).mul_(0.5).add_(centres[y])
        m = torch.nn.functional.normalize(x, dim=1) @ coef.T + intercept
        test_right += int((classes[m.argmax(1)] == y).sum())
        test_rows += len(y)
    return {"objective": float(objective.sum()), "train_accuracy": right / len(data), "test_accuracy": test_right / test_rows, "test_rows": test_rows}


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
    parser.add_argument("--tensor-peak", action="store_true", help="also run each step under torch's profiler (another process) for its live tensor peak")
    parser.add_argument("--progress", default=None, help="newton SVM: append a line per pass (time, CPU s) to this file")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "CLASSES"), help=argparse.SUPPRESS)
    parser.add_argument("--one-per-class", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, classes = args.one[0], int(args.one[1])
        per_class = args.one_per_class or args.per_class
        print(json.dumps(one(method, classes, per_class, args.dim, args.step_classes, args.buffer_width, args.svm_problems, args.svm_batch_size, args.svm_max_iter, args.svm_max_cg, args.progress, args.tensor_peak)))
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
                   "--svm-max-cg", str(args.svm_max_cg)] + (["--progress", args.progress] if args.progress else [])  # fmt: skip
            per_class = args.per_class
            if method == "fetril (svm, liblinear)" and classes > args.svm_full_up_to:
                cmd += ["--svm-problems", str(args.svm_problems or 5)]
                per_class = args.svm_per_class or per_class
            cmd += ["--one-per-class", str(per_class)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            row = json.loads(out.stdout.strip().splitlines()[-1])
            if args.tensor_peak:  # the profiler's own memory stays out of the RSS figures: its own run
                out = subprocess.run(cmd + ["--tensor-peak"], check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                row["tensor_peak_mb"] = json.loads(out.stdout.strip().splitlines()[-1])["tensor_peak_mb"]
            row["per_class"] = per_class
            rows.append(row)
            print(f"{method:16s} {classes:5d} classes: {row['cpu_seconds']:9.3f} CPU s, peak {row['peak_mb']:8.1f} MB", file=sys.stderr)
            if args.out:  # rewritten after every run: a long benchmark keeps what it measured
                with open(args.out, "w") as f:
                    json.dump({"args": {k: v for k, v in vars(args).items() if k not in ("one", "out", "plot", "progress")}, "rows": rows}, f, indent=1)
    table(rows)
    if args.plot:
        plot(rows, args.plot)


def _label(row: dict) -> str:
    """The row's method, with the glibc malloc settings of a diagnostic run."""
    env = row.get("malloc_env")
    return row["method"] + (" [" + " ".join(f"{k}={v}" for k, v in sorted(env.items())) + "]" if env else "")


def table(rows: list[dict]) -> None:
    print("| method | classes | samples / class | step CPU s | step peak MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        note = f" (extrapolated from {r['svm_problems_fitted']} of {r['classes']} problems)" if "measured_seconds" in r else ""
        if "passes" in r:
            stop = "" if r["converged"] else f", stopped by the iteration caps, not converged: gradient {r['relative_gradient']:.2g} x liblinear's threshold"
            note = f" ({r['passes']} passes, {r['newton_iterations']} Newton / {r['cg_iterations']} CG iterations{stop})"
        print(f"| {_label(r)} | {r['classes']} | {r['per_class']} | {r['cpu_seconds']:.3g}{note} | {r['peak_mb']:.1f} |")
    detail = [r for r in rows if "step_peak_mb" in r]
    if detail:  # what the peak is made of (rows measured with these fields)
        print()
        print("| method | classes | step peak MB | peak since the step began | anon at end | file at end | malloc in use at end | malloc free kept at end | live tensor peak |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in detail:
            tensors = f"{r['tensor_peak_mb']:.1f}" if "tensor_peak_mb" in r else "-"
            malloc = f"{r['malloc_in_use_mb']:.1f} | {r['malloc_free_mb']:.1f}" if "malloc_in_use_mb" in r else "- | -"
            print(f"| {_label(r)} | {r['classes']} | {r['peak_mb']:.1f} | {r['step_peak_mb']:.1f} | {r['anon_mb']:.1f} | {r['file_mb']:.1f} | {malloc} | {tensors} |")


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
        live = [(r["classes"], r["tensor_peak_mb"]) for r in mine if "tensor_peak_mb" in r]
        if live:  # the step's live tensors at their most (no allocator slack, no library code)
            ax_m.plot(*zip(*live), "s:", color=colour, label=f"{method}: live tensors")
    for ax, what in ((ax_t, "step CPU seconds"), (ax_m, "step peak memory (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("classes seen")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    if ax_m.get_legend_handles_labels()[0]:
        ax_m.legend(fontsize=8)
    fig.suptitle("one step of 10 new classes, synthetic 512-d features (1 thread, shared 2-core machine); hollow, dashed: a partial step (see the table)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
