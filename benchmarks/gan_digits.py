"""ADC-GAN against AC-GAN, TAC-GAN and the projection discriminator on 8x8 digits, side by side.

    OMP_NUM_THREADS=1 python benchmarks/gan_digits.py [--methods adc ac tac projection] [--seeds 0 1 2] [--max_steps 3000]

Each method runs ``recipes/adcgan_digits.yaml`` through the CLI with only
``model.init_args.conditioning`` changed (same seed, nets, optimiser and number of steps), in
its own folder ``outputs/gan_digits/<method>/seed<s>``; then ``lightning sample`` draws 100 samples per
class from the EMA generator, and ``benchmarks/eval_generated.py`` scores them with the
evaluator classifier (accuracy and Fréchet distance in its feature space, against the real
train/test distance). It also reports the discriminator's own accuracy as a classifier of the
real digits test split (ADC: real-class logits 2k; AC/TAC: the AC head; projection: none).

Prints a Markdown table and writes ``outputs/gan_digits/results.json``. Training time is
reported both as wall-clock and as this process's CPU time (user + system). The recipe's
ModelCheckpoint saves after validation, so ``max_steps`` should end an epoch on a validation
epoch (3000 steps = 100 epochs of 20 batches with n_dis 2).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_generated import ensure_evaluator, evaluate_samples


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def discriminator_test_accuracy(checkpoint: Path) -> float | None:
    """Top-1 accuracy of the trained discriminator's classifier on the real digits test split."""
    import framework
    from framework.generative.gan import ADCGAN, DiscriminatorClassifier
    from framework.loading import load_trained

    gan = load_trained(checkpoint, base=ADCGAN, role="digits GAN")
    if not gan.discriminator.has_classifier:
        return None
    classifier = DiscriminatorClassifier(gan).eval()
    data = framework.build("data", "digits")
    data.setup("test")
    correct = total = 0
    with torch.no_grad():
        for x, y in data.test_dataloader():
            correct += (classifier(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def run_method(method: str, seed: int, out: Path, max_steps: int, recipe: Path, evaluator: Path, extra: list[str]) -> dict:
    from framework.cli import main as cli

    out.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(out)  # the recipe's ModelCheckpoint writes lightning_logs/version_N/checkpoints/adcgan_digits.ckpt here
    try:
        args = ["fit", "--config", str(recipe), f"--model.init_args.conditioning={method}", f"--seed_everything={seed}",
                f"--trainer.max_steps={max_steps}", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false", *extra]  # fmt: skip
        wall, cpu = time.perf_counter(), _cpu_seconds()
        if cli(args) != 0:
            raise RuntimeError(f"training {method} failed")
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        from framework.loading import resolve_checkpoint

        ckpt = resolve_checkpoint(out / "lightning_logs" / "version_*" / "checkpoints" / "adcgan_digits.ckpt")  # this run's
        if cli(["sample", "--config", str(recipe), "--ckpt_path", str(ckpt), "--num_per_class", "100",
                "--output", str(out / "samples"), f"--model.init_args.conditioning={method}"]) != 0:  # fmt: skip
            raise RuntimeError(f"sampling {method} failed")
    finally:
        os.chdir(cwd)
    scores = evaluate_samples(out / "samples", evaluator, verbose=False)
    return {
        "method": method,
        "seed": seed,
        "train_wall_s": wall,
        "train_cpu_s": cpu,
        "evaluator_accuracy": scores["accuracy"],
        "fd_test": scores["fd_test"],
        "fd_real": scores["fd_real"],
        "fd_ratio": scores["fd_ratio"],
        "d_test_accuracy": discriminator_test_accuracy(ckpt),
        "evaluator_real_accuracy": scores["real_accuracy"],
    }


def table(rows: list[dict]) -> str:
    """Mean and (min-max) over the seeds of each method, as a Markdown table."""
    lines = ["| method | seeds | evaluator acc. on samples | FD (test) | FD ratio (/ real train-test) | D acc. on real test | mean train CPU s (wall s) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip

    def cell(values: list[float], scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        values = [scale * v for v in values]
        mean = sum(values) / len(values)
        spread = f" ({min(values):.{digits}f}-{max(values):.{digits}f})" if len(values) > 1 else ""
        return f"{mean:.{digits}f}{unit}{spread}"

    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        d_acc = [r["d_test_accuracy"] for r in rs if r["d_test_accuracy"] is not None]
        lines.append(
            f"| {method} | {len(rs)} | {cell([r['evaluator_accuracy'] for r in rs], 100, 1, '%')} | "
            f"{cell([r['fd_test'] for r in rs], 1, 3)} | {cell([r['fd_ratio'] for r in rs], 1, 2)} | "
            f"{cell(d_acc, 100, 1, '%') if d_acc else 'n/a (no classifier)'} | "
            f"{sum(r['train_cpu_s'] for r in rs) / len(rs):.0f} ({sum(r['train_wall_s'] for r in rs) / len(rs):.0f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["adc", "ac", "tac", "projection"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seed_everything values; each method runs once per seed")
    parser.add_argument("--max_steps", type=int, default=3000, help="optimizer steps (D + G) per method")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "adcgan_digits.yaml"))
    parser.add_argument("--output", default=str(ROOT / "outputs" / "gan_digits"))
    parser.add_argument("--extra", nargs="*", default=[], help="further CLI overrides for fit, e.g. --trainer.check_val_every_n_epoch=1")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    evaluator = ensure_evaluator()
    rows = []
    for seed in args.seeds:
        for method in args.methods:
            out = Path(args.output) / method.replace("+", "_") / f"seed{seed}"
            rows.append(run_method(method, seed, out, args.max_steps, Path(args.recipe), evaluator, args.extra))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    print(f"fd_real (real train vs test) = {rows[0]['fd_real']:.3f}; evaluator on real test = "
          f"{100 * rows[0]['evaluator_real_accuracy']:.1f}%; torch threads = {torch.get_num_threads()}")  # fmt: skip
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "results.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
