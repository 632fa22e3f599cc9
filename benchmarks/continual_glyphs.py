"""Glyphs B50 + 10 steps of 5: every class-incremental method, several seeds, table and accuracy-per-step plot.

    OMP_NUM_THREADS=1 MPLBACKEND=Agg python benchmarks/continual_glyphs.py [--seeds 0 1 2] [--jobs 3] \\
        [--base-epochs 5] [--epochs 2] [--memory 500] \\
        [--out docs/benchmarks/continual_glyphs.json] [--plot docs/benchmarks/continual_glyphs.png]

Runs recipes/<method>_glyphs_b50_10steps.yaml (glyphs, 100 training and 50 test images per
class, class order seed 1993, the small CNN) through the CLI, one process per run and ``--jobs``
at a time, with ``seed_everything`` = the seed and shorter training than the recipes so that
21 runs fit a shared 2-core machine: ``--base-epochs`` for every method's base step,
``--epochs`` for the later steps of finetune, iCaRL and WA (joint: ``--joint-epochs``), and
``--memory`` exemplars for iCaRL and WA. WA runs on the same B50 scenario here (its recipe is
B0). Prints per-step mean accuracy, AIA mean and standard deviation over seeds, last accuracy
and forgetting, and writes every run's metrics.json into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPES = os.path.join(HERE, "..", "recipes")
sys.path.insert(0, HERE)
from continual_digits import seed_summary  # noqa: E402 - the seed summary of every continual table
METHODS = ("finetune", "ncm", "fetril", "acil", "icarl", "wa", "joint")


def config(method: str, seed: int, args: argparse.Namespace) -> dict:
    """The recipe's config with the benchmark's seed and training lengths."""
    import yaml

    name = "wa_glyphs_b0_10steps.yaml" if method == "wa" else f"{method}_glyphs_b50_10steps.yaml"
    with open(os.path.join(RECIPES, name)) as f:
        cfg = yaml.safe_load(f)
    if method == "wa":  # WA's recipe is B0 10 steps: its model on the others' B50 scenario
        with open(os.path.join(RECIPES, "finetune_glyphs_b50_10steps.yaml")) as f:
            cfg["data"] = yaml.safe_load(f)["data"]
    cfg["seed_everything"] = seed
    cfg["data"]["init_args"]["dataset"]["init_args"]["root"] = os.path.abspath(args.root)
    model = cfg["model"]["init_args"]
    model["base_epochs"] = args.base_epochs
    if method in ("finetune", "icarl", "wa"):
        model["epochs"] = args.epochs
    if method == "joint":
        model["epochs"] = args.joint_epochs
    if method in ("icarl", "wa"):
        model["memory_size"] = args.memory
    return cfg


def run(method: str, seed: int, args: argparse.Namespace) -> dict:
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "recipe.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config(method, seed, args), f)
        cmd = [sys.executable, "-m", "framework", "fit", "--config", path, "--trainer.logger=false",
               "--trainer.enable_checkpointing=false", "--trainer.enable_model_summary=false",
               f"--trainer.default_root_dir={tmp}"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            raise RuntimeError(f"{method} seed {seed} failed:\n{done.stderr[-3000:]}")
        with open(os.path.join(tmp, "metrics.json")) as f:
            metrics = json.load(f)
    return {**metrics, "method": method, "seed": seed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--base-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--joint-epochs", type=int, default=1)
    parser.add_argument("--memory", type=int, default=500)
    parser.add_argument("--root", default="data")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()

    import framework  # render the data once, before the parallel runs

    framework.build("data", "glyphs", root=args.root, n_train=100, n_test=50, seed=0).prepare_data()
    results: list[dict] = []
    tasks = [(m, s) for s in args.seeds for m in args.methods]
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(lambda t: run(t[0], t[1], args), tasks):
            results.append(row)
            print(f"{row['method']} seed {row['seed']}: AIA {row['average_incremental_accuracy']:.2f}", file=sys.stderr)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump({"args": vars(args), "runs": results}, f, indent=1)
    table(results, args.methods)
    if args.plot:
        plot(results, args.methods, args.plot)


def table(results: list[dict], methods) -> None:
    print("| method | AIA (mean ± sd over seeds) | last | forgetting | per-step accuracy (mean over seeds) |")
    print("|---|---|---|---|---|")
    for method in methods:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue
        m = seed_summary(rows)
        print(f"| {method} | {m['aia']:.2f} ± {m['aia_sd']:.2f} (n={len(rows)}) | {m['last']:.2f} | {m['forgetting']:.2f} | "
              f"{' '.join(f'{a:.1f}' for a in m['steps'])} |")  # fmt: skip


def plot(results: list[dict], methods, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
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
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
