"""Glyphs: the papers' other CIFAR-100-shaped protocols, at the recipes' own settings, several seeds.

    OMP_NUM_THREADS=1 MPLBACKEND=Agg python benchmarks/continual_glyphs_protocols.py [--seeds 0 1 2] \\
        [--protocols fetril_b50_5 fetril_b40_20 wa_b0_10 teen_b60_8x5w5s] \\
        [--model-args JSON] [--out docs/benchmarks/continual_glyphs_protocols.json] [--plot docs/benchmarks/continual_glyphs_protocols.png]
    python benchmarks/continual_glyphs_protocols.py --from-json docs/benchmarks/continual_glyphs_protocols.json [--plot ...]

Runs each protocol's recipe unchanged but for ``seed_everything`` (in-process, the CLI's
arguments; the recipes read the glyphs cache under ``data/`` of the working directory):
FeTrIL B50 + 5 x 10 and B40 + 20 x 3 (``fetril_glyphs_b50_5steps.yaml``,
``fetril_glyphs_b40_20steps.yaml``), WA B0 + 10 x 10 (``wa_glyphs_b0_10steps.yaml``) and TEEN
B60 + 8 sessions of 5-way 5-shot (``teen_glyphs_fscil.yaml``). B50 + 10 x 5 with every method
is benchmarks/continual_glyphs.py. Prints one table per protocol (per-step accuracy, AIA mean
and sd over seeds, last accuracy, forgetting, CPU seconds per run; TEEN also base / novel
accuracy and their harmonic mean per session) and draws accuracy against the classes seen,
one panel per protocol. ``--resume`` skips the runs ``--out`` holds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from continual_digits import RECIPES, run, seed_summary  # noqa: E402 - one runner and one summary for every continual table

PROTOCOLS = {
    "fetril_b50_5": ("FeTrIL B50 + 5 x 10", "fetril_glyphs_b50_5steps.yaml"),
    "fetril_b40_20": ("FeTrIL B40 + 20 x 3", "fetril_glyphs_b40_20steps.yaml"),
    "wa_b0_10": ("WA B0 + 10 x 10", "wa_glyphs_b0_10steps.yaml"),
    "teen_b60_8x5w5s": ("TEEN B60 + 8 x 5-way 5-shot", "teen_glyphs_fscil.yaml"),
}


def classes_seen(recipe: str, steps: int) -> list[int]:
    """The number of classes seen after each step, from the recipe's scenario."""
    with open(os.path.join(RECIPES, recipe)) as f:
        data = yaml.safe_load(f)["data"]["init_args"]
    increment = data.get("increment", data.get("ways"))
    first = data["base_classes"] or increment  # B0: the first step brings one increment
    return [first + increment * s for s in range(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--model-args", default="{}", help="JSON merged into every recipe's model init_args")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--resume", action="store_true", help="skip the runs --out already holds")
    parser.add_argument("--from-json", default=None, help="print the tables (and plot) of a JSON this script wrote; run nothing")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)["runs"]
    else:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        results = []
        if args.resume and args.out and os.path.exists(args.out):
            with open(args.out) as f:
                results = json.load(f)["runs"]
        done = {(r["protocol"], r["seed"]) for r in results}
        for key in args.protocols:
            for seed in args.seeds:
                if (key, seed) in done:
                    continue
                metrics = run(PROTOCOLS[key][1], seed, json.loads(args.model_args), None)
                results.append({**metrics, "protocol": key, "seed": seed})
                print(f"{key} seed {seed}: AIA {metrics['average_incremental_accuracy']:.2f}, "
                      f"{metrics['cpu_seconds']:.0f} CPU s", file=sys.stderr, flush=True)  # fmt: skip
                if args.out:
                    with open(args.out, "w") as f:
                        json.dump({"args": vars(args), "runs": results}, f, indent=1)
    report(results)
    if args.plot:
        plot(results, args.plot)


def report(results: list[dict]) -> None:
    for key, (title, recipe) in PROTOCOLS.items():
        rows = sorted((r for r in results if r["protocol"] == key), key=lambda r: r["seed"])
        if not rows:
            continue
        m = seed_summary(rows)
        seeds = ", ".join(f"{r['seed']}: {r['average_incremental_accuracy']:.2f}" for r in rows)
        print(f"### {title} (recipes/{recipe}; n={len(rows)} seeds)\n")
        print(f"AIA {m['aia']:.2f} ± {m['aia_sd']:.2f} (per seed {seeds}), last {m['last']:.2f}, "
              f"forgetting {m['forgetting']:.2f}, {statistics.mean(r['cpu_seconds'] for r in rows):.0f} CPU s per run\n")  # fmt: skip
        if "gammas" in rows[0]:
            print("WA's gamma per step: " + "; ".join(f"seed {r['seed']}: " + " ".join(f"{g:.3f}" for g in r["gammas"]) for r in rows) + "\n")
        keys = ["accuracy", "old_accuracy", "new_accuracy"]
        if "unaligned_accuracy" in rows[0]:  # WA: the same model before each step's gamma
            unaligned = statistics.mean(r["unaligned_average_incremental_accuracy"] for r in rows)
            print(f"Before aligning: AIA {unaligned:.2f} (the unaligned_* columns)\n")
            keys += ["unaligned_accuracy", "unaligned_old_accuracy", "unaligned_new_accuracy"]
        if "harmonic_mean" in rows[0]:
            keys += ["base_accuracy", "novel_accuracy", "harmonic_mean"]
        classes = classes_seen(recipe, len(rows[0]["accuracy"]))
        print("| step | classes | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 2) + "|")
        for s, c in enumerate(classes):
            cells = []
            for k in keys:
                values = [r[k][s] for r in rows if r[k][s] is not None]
                cells.append(f"{statistics.mean(values):.1f}" if values else "")
            print(f"| {s} | {c} | " + " | ".join(cells) + " |")
        print()


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in PROTOCOLS if any(r["protocol"] == k for r in results)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        title, recipe = PROTOCOLS[key]
        rows = [r for r in results if r["protocol"] == key]
        classes = classes_seen(recipe, len(rows[0]["accuracy"]))
        for metric in ("accuracy", "harmonic_mean"):
            if metric not in rows[0]:
                continue
            steps = [s for s in range(len(classes)) if all(r[metric][s] is not None for r in rows)]
            mean = [statistics.mean(r[metric][s] for r in rows) for s in steps]
            sd = [statistics.stdev([r[metric][s] for r in rows]) if len(rows) > 1 else 0.0 for s in steps]
            label = "seen classes" if metric == "accuracy" else "harmonic mean (base, novel)"
            ax.errorbar([classes[s] for s in steps], mean, yerr=sd, marker="o", ms=3, capsize=2, label=label)
        ax.set_title(f"{title} (n={len(rows)})", fontsize=9)
        ax.set_xlabel("classes seen")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%), mean ± sd over seeds")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
