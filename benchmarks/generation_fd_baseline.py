"""Reference levels for the digits quality bars: Fréchet distances between *real* sets of various sizes.

    python benchmarks/generation_fd_baseline.py [--evaluator 'outputs/evaluator/lightning_logs/version_*/checkpoints/digits.ckpt'] [--repeats 5]

The issues' bar is ``fd_test / fd_real`` (generated vs test over train vs test, in the
evaluator's feature space; see eval_generated.py). A Fréchet distance estimated from n
samples is biased upwards by roughly tr(S)/n-sized terms, so a generator that reproduced
the training distribution exactly would score the figure that real training images of the
same count score. This prints that figure for several counts (random training subsets,
mean and std over repeats), the validation split as 'samples', and uniform noise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_generated import ensure_evaluator, evaluate_samples  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluator", default=None)
    parser.add_argument("--sizes", default="179,360,500,1000,1258")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    evaluator = args.evaluator or ensure_evaluator()

    import framework

    data = framework.build("data", "digits")
    data.setup("fit")
    data.setup("test")
    train, val = data.train_dataset, data.val_dataset
    rows = []

    def score(name: str, x: torch.Tensor, y: torch.Tensor) -> dict:
        r = evaluate_samples((x.numpy(), y.numpy()), evaluator, data, verbose=False)
        return {"set": name, "n": len(y), **{k: r[k] for k in ("accuracy", "fd_test", "fd_real", "fd_ratio")}}

    for n in [int(s) for s in args.sizes.split(",")]:
        g = torch.Generator().manual_seed(n)
        results = []
        for _ in range(args.repeats if n < len(train) else 1):
            idx = torch.randperm(len(train), generator=g)[:n]
            results.append(score(f"train subset {n}", train.x[idx], train.y[idx]))
        ratios = torch.tensor([r["fd_ratio"] for r in results])
        rows.append(results[0] | {"fd_ratio": ratios.mean().item(), "fd_ratio_std": ratios.std().item() if len(ratios) > 1 else 0.0,
                                  "fd_test": sum(r["fd_test"] for r in results) / len(results)})  # fmt: skip
    rows.append(score("validation split", val.x, val.y) | {"fd_ratio_std": 0.0})
    g = torch.Generator().manual_seed(0)
    rows.append(
        score("uniform noise 1000", torch.rand(1000, 1, 8, 8, generator=g) * 2 - 1, torch.arange(1000) // 100)
        | {"fd_ratio_std": 0.0}
    )

    print(f"fd_real (train {len(train)} vs test {len(data.test_dataset)}) = {rows[0]['fd_real']:.4f}")
    print(f"{'set':<22}{'n':>6}{'accuracy':>10}{'fd_test':>10}{'fd_ratio':>10}{'± std':>8}")
    for r in rows:
        print(
            f"{r['set']:<22}{r['n']:>6}{r['accuracy']:>10.4f}{r['fd_test']:>10.4f}{r['fd_ratio']:>10.2f}{r['fd_ratio_std']:>8.2f}"
        )
    return rows


if __name__ == "__main__":
    main()
