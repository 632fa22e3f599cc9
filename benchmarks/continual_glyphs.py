"""Glyphs B50 + 10 steps of 5: every class-incremental method, several seeds, table and accuracy-per-step plot.

    OMP_NUM_THREADS=1 MPLBACKEND=Agg python benchmarks/continual_glyphs.py [--seeds 0 1 2] [--jobs 2] \\
        [--base-epochs N] [--epochs N] [--joint-epochs N] [--memory N] [--n-train N] \\
        [--out docs/benchmarks/continual_glyphs.json] [--plot docs/benchmarks/continual_glyphs.png]

Runs recipes/<method>_glyphs_b50_10steps.yaml (glyphs, 100 training and 50 test images per
class, class order seed 1993, the small CNN, SGD lr 0.05, cosine per epoch on the base step
and over each later step's optimiser steps) through the CLI, one process per run and ``--jobs`` at a time, with ``seed_everything``
= the seed. Every length and the memory default to the recipes' own (10 base epochs; 6 per
later step for finetune, iCaRL and WA, 3 for joint; 2,000 exemplars): the options shorten or
change them; ``--n-train`` changes the training images per class of every run (the recipes'
100 are a CPU-sized cut of glyphs' 500, CIFAR-100's number).

The same base model for every method of a seed: one ``finetune`` run per seed trains the base
step (``--base-epochs``, the recipes' SGD and cosine schedule) with its later steps untrained,
and its checkpoint is every other method's ``base_checkpoint`` (``base_epochs: 0``). WA runs
with ``--wa-options`` (default: PyCIL's complete setting, ``PYCIL_WA``; ``{}`` gives the
official code's head) and shares the base when its head is the others' (a bias, no clipping);
with the official head (no bias, weights clipped to >= 0 from the first step) it trains its
own base step with the same net, epochs, optimizer and seed. Later steps:
``--epochs`` for finetune, iCaRL and WA, ``--joint-epochs`` for joint, ``--memory`` exemplars
for iCaRL and WA. WA runs on the
same B50 scenario here (its recipe is B0). Prints per-step mean accuracy, AIA mean and
standard deviation over seeds, last accuracy and forgetting, and writes every run's
metrics.json (plus the run's CPU seconds, ``cpu_seconds``) into ``--out`` after each run.
Runs go seed by seed; ``--resume`` skips the runs ``--out`` holds, ``--base-dir`` keeps the
base checkpoints for a later call.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPES = os.path.join(HERE, "..", "recipes")
sys.path.insert(0, HERE)
from continual_digits import seed_summary  # noqa: E402 - the seed summary of every continual table
METHODS = ("finetune", "ncm", "fetril", "acil", "icarl", "wa", "joint")
TRAINED_LATER = ("finetune", "icarl", "wa")  # the methods whose later steps train the net (joint aside)
# PyCIL models/wa.py as a whole: L2 gamma, no clamp, no clipping, a head bias, loss CE + 2 KD, the weight decay kept. The
# official code's clamp gamma <= 1 goes with its head re-created every step (main.py); classzoo's
# WA keeps the old rows (as PyCIL), so the official clamp without the re-creation mixes the two.
PYCIL_WA = {"norm": 2, "clamp_gamma": False, "clip_weights": False, "head_bias": True, "kd_weight": 2, "divide_weight_decay": False}


def config(method: str, seed: int, args: argparse.Namespace, base_checkpoint: str | None = None) -> dict:
    """The recipe's config with the benchmark's seed, training lengths and shared base model."""
    import yaml

    recipe = "finetune" if method == "base" else method
    name = "wa_glyphs_b0_10steps.yaml" if recipe == "wa" else f"{recipe}_glyphs_b50_10steps.yaml"
    with open(os.path.join(RECIPES, name)) as f:
        cfg = yaml.safe_load(f)
    if recipe == "wa":  # WA's recipe is B0 10 steps: its model on the others' B50 scenario and schedule
        with open(os.path.join(RECIPES, "finetune_glyphs_b50_10steps.yaml")) as f:
            b50 = yaml.safe_load(f)
        cfg["data"] = b50["data"]
        cfg["model"]["init_args"]["scheduler_interval"] = b50["model"]["init_args"]["scheduler_interval"]
    cfg["seed_everything"] = seed
    dataset = cfg["data"]["init_args"]["dataset"]["init_args"]
    dataset["root"] = os.path.abspath(args.root)
    if args.n_train is not None:
        dataset["n_train"] = args.n_train
    model = cfg["model"]["init_args"]
    overrides = {"base_epochs": args.base_epochs}  # None: the recipe's own value
    if recipe in TRAINED_LATER:
        overrides["epochs"] = args.epochs
    if method == "joint":
        overrides["epochs"] = args.joint_epochs
    if method in ("icarl", "wa"):
        overrides["memory_size"] = args.memory
    model.update({k: v for k, v in overrides.items() if v is not None})
    if method == "base":
        model["epochs"] = 0  # the base step only: the later steps are evaluated, not trained
    if method == "wa":
        model.update(json.loads(args.wa_options))
    if base_checkpoint:
        model["base_checkpoint"] = base_checkpoint
        model["base_epochs"] = 0
    return cfg


def run(method: str, seed: int, args: argparse.Namespace, workdir: str, base_checkpoint: str | None = None) -> dict:
    """One CLI run in its own process; its metrics.json, its CPU seconds (user + system of the process)."""
    import yaml

    tmp = os.path.join(workdir, f"{method}-{seed}")
    os.makedirs(tmp)
    path = os.path.join(tmp, "recipe.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config(method, seed, args, base_checkpoint), f)
    cmd = [sys.executable, "-m", "framework", "fit", "--config", path, "--trainer.logger=false",
           f"--trainer.enable_checkpointing={'true' if method == 'base' else 'false'}",
           "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp}"]  # fmt: skip
    with open(os.path.join(tmp, "log.txt"), "w") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        with open(os.path.join(tmp, "log.txt")) as log:
            raise RuntimeError(f"{method} seed {seed} failed:\n{log.read()[-3000:]}")
    with open(os.path.join(tmp, "metrics.json")) as f:
        metrics = json.load(f)
    metrics["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    if method == "base":
        (metrics["checkpoint"],) = glob.glob(os.path.join(tmp, "checkpoints", "*.ckpt"))
    return {**metrics, "method": method, "seed": seed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--base-epochs", type=int, default=None, help="base epochs (default: the recipes', 10)")
    parser.add_argument("--epochs", type=int, default=None, help="later-step epochs of finetune, iCaRL, WA (default: the recipes', 6)")
    parser.add_argument("--joint-epochs", type=int, default=None, help="joint's later-step epochs (default: its recipe's, 3)")
    parser.add_argument("--memory", type=int, default=None, help="iCaRL's and WA's exemplars (default: the recipes', 2,000)")
    parser.add_argument("--wa-options", default=json.dumps(PYCIL_WA), help="JSON of WA constructor options (default: PyCIL's; {}: the official code's)")
    parser.add_argument("--base-dir", default=None, help="keep (and reuse) each seed's base checkpoint here")
    parser.add_argument("--resume", action="store_true", help="skip the runs --out already holds")
    parser.add_argument("--root", default="data")
    parser.add_argument("--n-train", type=int, default=None, help="training images per class (default: the recipes', 100; glyphs' own and CIFAR-100's: 500)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--from-json", default=None, help="print the table (and plot) of a JSON this script wrote; run nothing")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        methods = saved["args"]["methods"]
        report(saved["runs"], methods)
        if args.plot:
            plot(saved["runs"], methods, args.plot)
        return

    import framework  # render the data once, before the parallel runs

    glyphs = config("finetune", 0, args)["data"]["init_args"]["dataset"]["init_args"]
    framework.build("data", "glyphs", **glyphs).prepare_data()
    results: list[dict] = []
    if args.resume and args.out and os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)["runs"]
    done = {(r["method"], r["seed"]) for r in results}
    lock = threading.Lock()

    def record(row: dict) -> None:
        with lock:
            results.append(row)
            aia = row["average_incremental_accuracy"]
            print(f"{row['method']} seed {row['seed']}: AIA {aia:.2f}, {row['cpu_seconds']:.0f} CPU s", file=sys.stderr, flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump({"args": vars(args), "runs": results}, f, indent=1)

    wa = config("wa", 0, args)["model"]["init_args"]
    wa_shares = wa.get("head_bias", False) and not wa.get("clip_weights", True)  # WA's own defaults: no bias, clipping
    own_base = {m for m in args.methods if m == "wa" and not wa_shares}
    with tempfile.TemporaryDirectory() as workdir, ThreadPoolExecutor(args.jobs) as pool:
        base_dir = args.base_dir or workdir
        os.makedirs(base_dir, exist_ok=True)

        def base_model(seed: int) -> str:
            """The seed's shared base checkpoint (trained here unless --base-dir holds it)."""
            base = config("base", seed, args)["model"]["init_args"]
            n_train = "" if args.n_train is None else f"-{args.n_train}train"  # the recipes' 100: the names earlier calls made
            path = os.path.join(base_dir, f"base-{seed}-{base['base_epochs']}epochs-{base.get('base_scheduler_interval', 'epoch')}{n_train}.ckpt")
            if not os.path.exists(path):
                row = run("base", seed, args, workdir)
                os.replace(row.pop("checkpoint"), path)
                if ("base", seed) not in done:
                    record(row)
            return path

        def method_run(method: str, seed: int, base) -> None:
            record(run(method, seed, args, workdir, None if method in own_base else base.result()))

        # Seed by seed, so that an interrupted benchmark leaves whole seeds (--resume finishes it):
        # a seed's base is submitted before its methods, which wait for it.
        futures = []
        for seed in args.seeds:
            todo = [m for m in args.methods if (m, seed) not in done]
            if not todo:
                continue
            base = pool.submit(base_model, seed) if set(todo) - own_base else None
            futures += [pool.submit(method_run, m, seed, base) for m in todo]
        for future in futures:
            future.result()
    report(results, args.methods)
    if args.plot:
        plot(results, args.methods, args.plot)


def report(results: list[dict], methods) -> None:
    """The table, the bar's checks and the per-method details."""
    table(results, ["base", *methods])
    print()
    bar(results)
    print()
    details(results, methods)


GROUP = ("fetril", "wa", "icarl", "acil")


def bar(results: list[dict]) -> None:
    """Issue 12's bar: finetune < ncm < each of fetril, wa, icarl, acil < joint on every seed, and
    each of those gaps (between mean AIAs) larger than the seed spread (sd) of both methods."""
    aia = {}
    for r in results:
        aia.setdefault(r["method"], {})[r["seed"]] = r["average_incremental_accuracy"]
    needed = ("finetune", "ncm", *GROUP, "joint")
    if any(m not in aia for m in needed):
        print("bar: not every method ran")
        return
    seeds = sorted(set.intersection(*(set(aia[m]) for m in needed)))
    pairs = [("finetune", "ncm"), *[("ncm", m) for m in GROUP], *[(m, "joint") for m in GROUP]]
    print(f"bar checks on seeds {seeds} (AIA; gap = difference of the means, sd = over seeds):")
    met = True
    for lo, hi in pairs:
        every = all(aia[lo][s] < aia[hi][s] for s in seeds)
        gap = statistics.mean(aia[hi][s] for s in seeds) - statistics.mean(aia[lo][s] for s in seeds)
        spread = max(statistics.stdev([aia[m][s] for s in seeds]) if len(seeds) > 1 else 0.0 for m in (lo, hi))
        ok = every and gap > spread
        met &= ok
        print(f"  {lo} < {hi}: on every seed {'yes' if every else 'NO'}; gap {gap:.2f} vs largest sd {spread:.2f}: {'ok' if ok else 'NOT MET'}")
    print(f"bar {'MET' if met else 'NOT MET'}")


def details(results: list[dict], methods) -> None:
    """Per method, means over seeds for steps 1..10: old- and new-class accuracy; iCaRL's CNN head; WA's gammas."""

    def per_step(rows: list[dict], key: str, start: int = 1) -> str:
        return " ".join(f"{statistics.mean(r[key][s] for r in rows):.1f}" for s in range(start, len(rows[0][key])))

    print("Details (means over seeds; steps 1..10):")
    for method in methods:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue
        seeds = ", ".join(f"{r['seed']}: {r['average_incremental_accuracy']:.2f}" for r in sorted(rows, key=lambda r: r["seed"]))
        print(f"* {method}: AIA per seed {seeds}")
        print(f"  old-class accuracy {per_step(rows, 'old_accuracy')}; new-class accuracy {per_step(rows, 'new_accuracy')}")
        if "cnn_accuracy" in rows[0]:
            print(f"  CNN head beside the NME: AIA {statistics.mean(r['cnn_average_incremental_accuracy'] for r in rows):.2f}, "
                  f"per step {per_step(rows, 'cnn_accuracy', 0)}")  # fmt: skip
        if "unaligned_accuracy" in rows[0]:  # the same model before each step's gamma
            print(f"  before aligning: AIA {statistics.mean(r['unaligned_average_incremental_accuracy'] for r in rows):.2f}, "
                  f"per step {per_step(rows, 'unaligned_accuracy', 0)}; old-class {per_step(rows, 'unaligned_old_accuracy')}; "
                  f"new-class {per_step(rows, 'unaligned_new_accuracy')}")  # fmt: skip
        if "gammas" in rows[0]:
            print("  gammas: " + "; ".join(f"seed {r['seed']}: " + " ".join(f"{g:.3f}" for g in r["gammas"]) for r in rows))


def table(results: list[dict], methods) -> None:
    print("| method | AIA (mean ± sd over seeds) | last | forgetting | per-step accuracy (mean over seeds) | CPU s per run |")
    print("|---|---|---|---|---|---|")
    for method in methods:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue
        m = seed_summary(rows)
        print(f"| {method} | {m['aia']:.2f} ± {m['aia_sd']:.2f} (n={len(rows)}) | {m['last']:.2f} | {m['forgetting']:.2f} | "
              f"{' '.join(f'{a:.1f}' for a in m['steps'])} | {statistics.mean(r['cpu_seconds'] for r in rows):.0f} |")  # fmt: skip


def plot(results: list[dict], methods, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for method in methods:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue
        classes = [50 + 5 * s for s in range(len(rows[0]["accuracy"]))]
        mean = [statistics.mean(r["accuracy"][s] for r in rows) for s in range(len(classes))]
        sd = [statistics.stdev([r["accuracy"][s] for r in rows]) if len(rows) > 1 else 0.0 for s in range(len(classes))]
        ax.errorbar(classes, mean, yerr=sd, marker="o", ms=3, capsize=2, label=f"{method} (n={len(rows)})")
    ax.set_xlabel("classes seen")
    ax.set_ylabel("accuracy on the seen classes (%)")
    ax.set_title("glyphs B50 + 10 x 5 (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
