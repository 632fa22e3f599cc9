"""Digits flow matching: evaluator accuracy and Fréchet ratio against NFE, with and without reflow.

1. trains ``recipes/flow_digits.yaml`` (the 1-rectified flow; the wall time is the CPU cost);
2. trains ``recipes/reflow_digits.yaml`` on pairs the first model generates (2-rectified flow);
3. for each model, generates ``--per-class`` samples per class with Euler at 1, 2, 4, 8, 20
   NFE, midpoint and Heun at 20 NFE (10 steps) and adaptive dopri5, and scores them with
   ``benchmarks/eval_generated.py`` (evaluator accuracy; Fréchet distance to the test split
   over the real train/test distance).

    OMP_NUM_THREADS=1 python benchmarks/flow_digits.py --out docs/benchmarks/flow_digits.json

``--skip-train`` reuses the checkpoints of an earlier run in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_generated import digits_bits_per_dim, ensure_evaluator, evaluate_samples  # noqa: E402

RECIPE = "recipes/flow_digits.yaml"
SETTINGS = [
    ("euler", 1), ("euler", 2), ("euler", 4), ("euler", 8), ("euler", 20), ("midpoint", 10), ("heun", 10), ("dopri5", None),
]  # fmt: skip


def fit(recipe: str, work: Path) -> tuple[Path, dict]:
    """Run ``lightning fit`` on a recipe inside ``work``; its checkpoint and the time it took.

    The digits recipes write ``lightning_logs/version_N/checkpoints/<name>.ckpt`` under the
    working directory (and reflow_digits reads the newest teacher there), so both runs share
    ``work``; a recipe that names no checkpoint file (``flow_digits_fast``) leaves Lightning's
    ``epoch=...ckpt`` there, and the newest checkpoint is taken.
    CPU seconds: user + system time of the training process (1 thread).
    """
    name = Path(recipe).stem
    command = [sys.executable, "-m", "framework", "fit", "--config", str(ROOT / recipe),
               "--trainer.enable_progress_bar=false"]  # fmt: skip
    print("$", " ".join(command), f"(in {work})", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=work, env={**os.environ, "OMP_NUM_THREADS": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cost = {
        "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
        "threads": 1,
        "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
    }
    print(name, "training cost", json.dumps(cost), flush=True)
    return _newest_checkpoint(work, name), cost


def _newest_checkpoint(work: Path, name: str) -> Path:
    from framework.errors import ConfigError
    from framework.loading import resolve_checkpoint

    logs = work / "lightning_logs" / "version_*" / "checkpoints"
    try:
        return Path(resolve_checkpoint(logs / f"{name}.ckpt"))
    except ConfigError:  # a recipe that names no checkpoint file: Lightning's epoch=...-step=....ckpt
        return Path(resolve_checkpoint(logs / "*.ckpt"))


def curve(checkpoint: Path, evaluator: Path, per_class: int, guidance_scale: float | None) -> list[dict]:
    """Scores of ``checkpoint``'s samples at every (solver, steps) of SETTINGS."""
    from framework.generative.flow.reflow import load_flow

    torch.set_num_threads(1)
    model = load_flow(str(checkpoint))
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    seeds = torch.arange(len(labels))
    guidance = {"guidance": "cfg", "guidance_scale": guidance_scale} if guidance_scale not in (None, 1.0) else {}
    rows = []
    for solver, steps in SETTINGS:
        start = time.perf_counter()
        images, nfes = [], []
        for i in range(0, len(labels), 500):
            images.append(model.generate(labels[i : i + 500], seeds[i : i + 500], solver=solver, steps=steps, **guidance))
            nfes.append(model.last_nfe)  # dopri5's varies from batch to batch: report the mean
        images = torch.cat(images).clamp(-1, 1)
        seconds = time.perf_counter() - start
        scores = evaluate_samples((images.numpy(), labels.numpy()), evaluator, verbose=False)
        row = {"solver": solver, "steps": steps, "nfe": round(sum(nfes) / len(nfes), 1), "accuracy": round(scores["accuracy"], 4),
               "fd_ratio": round(scores["fd_ratio"], 3), "fd_test": round(scores["fd_test"], 4),
               "fd_real": round(scores["fd_real"], 4), "nn_ratio": round(scores["nn_ratio"], 3),
               "near_copy_fraction": round(scores["near_copy_fraction"], 4), "sample_s": round(seconds, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def score_bits_per_dim(checkpoint: Path, count: int) -> dict:
    """Bits/dim of ``count`` dequantised test digits (17 levels) by the change of variables (Hutchinson, dopri5)."""
    from framework.generative.flow.reflow import load_flow

    model = load_flow(str(checkpoint))
    return digits_bits_per_dim(model, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / "outputs" / "flow_digits_bench"))
    parser.add_argument("--per-class", type=int, default=100, help="generated samples per class")
    parser.add_argument("--guidance-scale", type=float, default=None, help="cfg scale at sampling (1: none)")
    parser.add_argument("--skip-train", action="store_true", help="reuse the checkpoints in --workdir")
    parser.add_argument("--no-reflow", action="store_true")
    parser.add_argument("--recipe", default=RECIPE,
                        help="the flow recipe to train (e.g. recipes/flow_digits_fast.yaml); reflow follows flow_digits only")
    parser.add_argument("--nll-count", type=int, default=200, help="test digits scored in bits/dim (0: skip)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(args.workdir)
    evaluator = ensure_evaluator()

    result: dict = {"args": vars(args), "torch_threads": 1}
    if args.recipe != RECIPE:
        args.no_reflow = True  # recipes/reflow_digits.yaml distils flow_digits.yaml's checkpoint
    if args.skip_train:
        teacher = _newest_checkpoint(work, Path(args.recipe).stem)
    else:
        teacher, result["flow_train"] = fit(args.recipe, work)
    result["flow"] = curve(teacher, evaluator, args.per_class, args.guidance_scale)
    if args.nll_count:
        result["flow_bpd"] = score_bits_per_dim(teacher, args.nll_count)
        print("bits/dim", json.dumps(result["flow_bpd"]), flush=True)
    if not args.no_reflow:
        if args.skip_train:
            student = _newest_checkpoint(work, "reflow_digits")
        else:
            # Includes generating the teacher's pairs (work/reflow_pairs.npz is regenerated for a new teacher).
            student, result["reflow_train"] = fit("recipes/reflow_digits.yaml", work)
        result["reflow"] = curve(student, evaluator, args.per_class, args.guidance_scale)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
