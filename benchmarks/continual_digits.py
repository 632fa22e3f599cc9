"""Digits class-incremental table for every continual method (the digits recipes' settings).

    OMP_NUM_THREADS=1 python benchmarks/continual_digits.py [--seeds 0 1 2] [--methods acil icarl] [--out results.json]

Runs each recipes/<method>_digits.yaml (in-process, same arguments as the CLI) for each seed and
prints per-step accuracy, average incremental accuracy (AIA), last accuracy and forgetting, then
per method the means over seeds of the old- and new-class accuracy per step, for the few-shot runs
the base / novel accuracy and their harmonic mean per session, and WA's gammas of every run.
finetune, joint, ncm, fetril, wa, acil and icarl use the class-incremental scenario (4 base
classes, then 3 steps of 2); teen and its finetune/joint bounds use the few-shot one (4 base, 3 x 2-way 5-shot).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPES = os.path.join(HERE, "..", "recipes")
RUNS = [
    ("finetune", "finetune_digits.yaml"),
    ("joint", "joint_digits.yaml"),
    ("ncm", "ncm_digits.yaml"),
    ("fetril", "fetril_digits.yaml"),
    ("fetril (linear, PyCIL)", "fetril_digits.yaml", {"classifier": "linear", "distance": "cosine"}),
    ("wa", "wa_digits.yaml"),
    ("wa (PyCIL options)", "wa_digits.yaml", {"norm": 2.0, "clamp_gamma": False, "clip_weights": False, "head_bias": True, "divide_weight_decay": False}),
    ("acil", "acil_digits.yaml"),
    ("icarl", "icarl_digits.yaml"),
    ("finetune (few-shot)", "finetune_digits_fewshot.yaml"),
    ("joint (few-shot)", "joint_digits.yaml", {}, "teen_digits.yaml"),
    ("teen (few-shot)", "teen_digits.yaml"),
]


def run(recipe: str, seed: int, model_overrides: dict, data_recipe: str | None) -> dict:
    from framework.cli import run_cli

    with open(os.path.join(RECIPES, recipe)) as f:
        config = yaml.safe_load(f)
    config["seed_everything"] = seed
    config["model"]["init_args"].update(model_overrides)
    if data_recipe:
        with open(os.path.join(RECIPES, data_recipe)) as f:
            config["data"] = yaml.safe_load(f)["data"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "r.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        start, cpu_start = time.perf_counter(), time.process_time()
        run_cli(["fit", "--config", path, "--trainer.logger=false", "--trainer.enable_checkpointing=false",
                       "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp}"])
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        with open(os.path.join(tmp, "metrics.json")) as f:
            metrics = json.load(f)
    metrics["wall_seconds"], metrics["cpu_seconds"] = seconds, cpu_seconds
    return metrics


def _mean(rows: list[dict], key: str) -> float:
    return statistics.mean(r[key] for r in rows)


def seed_summary(rows: list[dict]) -> dict:
    """One method's runs over seeds: mean per-step accuracy, AIA with its sd, last accuracy, forgetting."""
    aia = [r["average_incremental_accuracy"] for r in rows]
    return {
        "steps": [statistics.mean(r["accuracy"][s] for r in rows) for s in range(len(rows[0]["accuracy"]))],
        "aia": statistics.mean(aia),
        "aia_sd": statistics.stdev(aia) if len(aia) > 1 else 0.0,
        "last": _mean(rows, "last_accuracy"),
        "forgetting": _mean(rows, "forgetting"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=None, help="only these rows (their printed names)")
    parser.add_argument("--out", default=None, help="write every run's metrics.json here (one JSON list)")
    args = parser.parse_args()
    names = [entry[0] for entry in RUNS]
    unknown = sorted(set(args.methods or []) - set(names))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {names}")
    runs = [entry for entry in RUNS if args.methods is None or entry[0] in args.methods]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    results = []
    for entry in runs:
        label, recipe = entry[0], entry[1]
        overrides = entry[2] if len(entry) > 2 else {}
        data_recipe = entry[3] if len(entry) > 3 else None
        for seed in args.seeds:
            metrics = run(recipe, seed, overrides, data_recipe)
            results.append({**metrics, "method": label, "seed": seed})
            print(f"{label} seed {seed}: AIA {metrics['average_incremental_accuracy']:.2f}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    print("| method | per-step accuracy (%) | AIA | last | forgetting | wall (s) |")
    print("|---|---|---|---|---|---|")
    for entry in runs:
        rows = [r for r in results if r["method"] == entry[0]]
        m = seed_summary(rows)
        print(
            f"| {entry[0]} | {' / '.join(f'{a:.1f}' for a in m['steps'])} | {m['aia']:.2f} ± {m['aia_sd']:.2f}"
            f" | {m['last']:.2f} | {m['forgetting']:.2f} | {_mean(rows, 'wall_seconds'):.1f} |"
        )
    print()
    print("Other figures (means over seeds; steps 1.. after the base step):")
    for entry in runs:
        rows = [r for r in results if r["method"] == entry[0]]
        parts = [f"{key} {_per_step(rows, key)}" for key in DETAIL_KEYS if key in rows[0]]
        print(f"* {entry[0]}: " + "; ".join(parts))
        if "cnn_average_incremental_accuracy" in rows[0]:
            cnn = [statistics.mean(r["cnn_accuracy"][s] for r in rows) for s in range(len(rows[0]["cnn_accuracy"]))]
            print(f"  CNN head beside the NME: AIA {_mean(rows, 'cnn_average_incremental_accuracy'):.2f}, "
                  f"per step {' / '.join(f'{a:.1f}' for a in cnn)}")
        if "unaligned_accuracy" in rows[0]:  # WA's model of each step before its gamma
            before = [statistics.mean(r["unaligned_accuracy"][s] for r in rows) for s in range(len(rows[0]["unaligned_accuracy"]))]
            print(f"  before aligning: AIA {_mean(rows, 'unaligned_average_incremental_accuracy'):.2f}, per step "
                  f"{' / '.join(f'{a:.1f}' for a in before)}; new_accuracy {_per_step(rows, 'unaligned_new_accuracy')}")  # fmt: skip
        if "gammas" in rows[0]:
            print(f"  gammas: " + "; ".join(f"seed {r['seed']}: " + ", ".join(f"{g:.3f}" for g in r["gammas"]) for r in rows))


DETAIL_KEYS = ["old_accuracy", "new_accuracy", "base_accuracy", "novel_accuracy", "harmonic_mean"]


def _per_step(rows: list[dict], key: str) -> str:
    """Mean over seeds of a per-step metric from step 1 on (step 0 has no old / novel classes)."""
    steps = range(1, len(rows[0][key]))
    return " / ".join(f"{statistics.mean(r[key][s] for r in rows):.1f}" for s in steps)


if __name__ == "__main__":
    main()
