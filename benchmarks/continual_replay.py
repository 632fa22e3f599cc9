"""Generative replay on the digits protocol beside finetune, WA, FeTrIL and joint, and Avalanche's GenerativeReplay.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/continual_replay.py [--seeds 0 1 2] [--out results.json]

Every row runs a digits recipe (recipes/<method>_digits.yaml: 4 base classes, then 3 steps of 2,
class order from seed 1993, the same small CNN) for each seed through the CLI's code path and
reads its metrics.json: per-step accuracy, average incremental accuracy (AIA), last accuracy,
forgetting, and the CPU seconds of every step (``step_cpu_seconds``: training and step-end
work, the generator's training and the replay sampling included; evaluation excluded).

Where avalanche-lib imports (``pip install classzoo[avalanche]``; use a separate environment if
it must not touch yours), the same script also runs Avalanche's ``GenerativeReplay`` strategy on
the same split (the scenario's remapped labels, so the same class order), the same solver net
(our registered ``cnn`` + a linear head), the same solver optimizer, epochs and batch size, with
Avalanche's own default generator (its ``MlpVAE`` with ``nhid=2``, Adam lr 0.01, wd 1e-4, as in
``GenerativeReplay.__init__``, sized for 8x8 inputs) and its replay rule (the old solver labels
the samples; ``increasing_replay_size=True`` appends batch x experience-index replayed rows).
Its inputs are mapped to [0, 1] (the VAE's decoder ends in a sigmoid). It is scored exactly as
ours: per-sample top-1 on the test images of the seen classes, argmax over the seen classes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from continual_digits import run, seed_summary  # noqa: E402 - the recipe runner and table of the digits benchmark

RUNS = [
    ("finetune", "finetune_digits.yaml"),
    ("joint", "joint_digits.yaml"),
    ("fetril (SVM, paper defaults)", "fetril_digits.yaml"),
    ("wa (official-code defaults, 200 exemplars)", "wa_digits.yaml"),
    ("generative_replay (flow, 20 NFE)", "generative_replay_digits.yaml"),
    ("generative_replay (flow, labels by the old solver)", "generative_replay_digits.yaml", {"replay_labels": "solver"}),
    ("generative_replay (diffusion, EDM Heun 19 NFE)", "generative_replay_diffusion_digits.yaml"),
    ("generative_replay (adcgan, 1 NFE)", "generative_replay_adcgan_digits.yaml"),
]


def run_avalanche(seed: int, epochs: int = 15, generator_epochs: int = 30, batch_size: int = 64) -> dict:
    """Avalanche's GenerativeReplay on our digits split and solver net; metrics as metrics.json's."""
    import warnings

    warnings.filterwarnings("ignore")
    import lightning as L
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
    from avalanche.models import VAE_loss
    from avalanche.models.generator import MlpVAE
    from avalanche.training.plugins import EvaluationPlugin, GenerativeReplayPlugin, LRSchedulerPlugin
    from avalanche.training.supervised import GenerativeReplay, VAETraining
    from torch import nn

    import registry
    from framework.continual import metrics as cl_metrics
    from framework.continual.scenario import ClassIncremental
    from framework.data.digits import DigitsDataModule

    class Tensors(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.x, self.y, self.targets = x, y, y.tolist()

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x[i], int(self.y[i])

    L.seed_everything(seed)
    scenario = ClassIncremental(DigitsDataModule(), base_classes=4, increment=2, seed=1993, batch_size=batch_size)
    scenario.prepare_data()
    scenario.setup()

    def split(name):
        data = scenario.subset(name, torch.arange(len(scenario.labels(name))), augment=False)
        return Tensors((data.x + 1) / 2, data.y)  # [-1, 1] -> [0, 1]: the VAE decodes through a sigmoid

    train, test = split("train"), split("test")
    bench = class_incremental_benchmark(
        {"train": train, "test": test}, class_order=list(range(10)), num_classes_per_exp=scenario.step_sizes
    )
    backbone = registry.create("net", "cnn", data_shape=(1, 8, 8), channels=[32, 64])
    solver = nn.Sequential(backbone, nn.Linear(backbone.num_features, 10))
    optimizer = torch.optim.SGD(solver.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    quiet = EvaluationPlugin(loggers=[])
    vae = MlpVAE((1, 8, 8), nhid=2, device="cpu")
    vae_optimizer = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=0.01, weight_decay=1e-4)
    generator_strategy = VAETraining(
        model=vae, optimizer=vae_optimizer, criterion=VAE_loss, train_mb_size=batch_size,
        train_epochs=generator_epochs, eval_mb_size=256, device="cpu",
        plugins=[GenerativeReplayPlugin(increasing_replay_size=True)], evaluator=EvaluationPlugin(loggers=[]),
    )
    schedule = LRSchedulerPlugin(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs), reset_lr=True,
                                 reset_scheduler=True)
    strategy = GenerativeReplay(
        model=solver, optimizer=optimizer, train_mb_size=batch_size, train_epochs=epochs, eval_mb_size=256,
        device="cpu", generator_strategy=generator_strategy, increasing_replay_size=True, plugins=[schedule],
        evaluator=quiet,
    )
    task = scenario.class_step()
    correct, total, cpu = [], [], []
    for step, experience in enumerate(bench.train_stream):
        clock = time.process_time()
        strategy.train(experience)
        cpu.append(time.process_time() - clock)
        seen = scenario.seen_classes(step)
        keep = test.y < seen
        solver.eval()
        with torch.no_grad():
            preds = solver(test.x[keep])[:, :seen].argmax(1)
        labels = test.y[keep]
        hits = preds == labels
        correct.append([int(hits[task[labels] == t].sum()) for t in range(scenario.num_steps)])
        total.append([int((task[labels] == t).sum()) for t in range(scenario.num_steps)])
    results = cl_metrics.summarize(correct, total)
    return cl_metrics.to_json({**results, "step_cpu_seconds": cpu})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=None, help="write every run's metrics here (one JSON list)")
    parser.add_argument("--only", nargs="*", default=None, help="run only the rows whose label starts with one of these")
    parser.add_argument("--table", nargs="+", default=None, help="print the table of saved --out files, run nothing")
    args = parser.parse_args()
    if args.table:
        results, done = [], set()
        for path in args.table:  # a (method, seed) found in several files counts once, from the first
            with open(path) as f:
                for r in json.load(f):
                    if (r["method"], r["seed"]) not in done:
                        done.add((r["method"], r["seed"]))
                        results.append(r)
        print_table(list(dict.fromkeys(r["method"] for r in results)), results)
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    runs = [(e[0], lambda seed, e=e: run(e[1], seed, e[2] if len(e) > 2 else {}, None)) for e in RUNS]
    try:
        import avalanche  # noqa: F401

        runs.append(("Avalanche GenerativeReplay (MlpVAE, old-solver labels)", run_avalanche))
    except ImportError as err:
        print(f"avalanche-lib is not importable here ({err}): its row is left out", file=sys.stderr)
    if args.only:
        runs = [r for r in runs if r[0].startswith(tuple(args.only))]
    results = []
    for label, fn in runs:
        for seed in args.seeds:
            metrics = fn(seed)
            results.append({**metrics, "method": label, "seed": seed})
            print(f"{label} seed {seed}: AIA {metrics['average_incremental_accuracy']:.2f}", file=sys.stderr)
            if args.out:  # after every run: a stopped benchmark keeps what it measured
                with open(args.out, "w") as f:
                    json.dump(results, f, indent=1)
    print_table([label for label, _ in runs], results)


def print_table(labels: list[str], results: list[dict]) -> None:
    """Mean over the seeds of each row; AIA ± its standard deviation over seeds."""
    print("| method | seeds | per-step accuracy (%) | AIA | last | forgetting | CPU s per step (0 / 1 / 2 / 3) |")
    print("|---|---|---|---|---|---|---|")
    for label in labels:
        rows = [r for r in results if r["method"] == label]
        if not rows:
            continue
        m = seed_summary(rows)
        cpu = [statistics.mean(r["step_cpu_seconds"][s] for r in rows) for s in range(len(m["steps"]))]
        print(
            f"| {label} | {len(rows)} | {' / '.join(f'{a:.1f}' for a in m['steps'])} | {m['aia']:.2f} ± {m['aia_sd']:.2f}"
            f" | {m['last']:.2f} | {m['forgetting']:.2f} | {' / '.join(f'{c:.1f}' for c in cpu)} |"
        )


if __name__ == "__main__":
    main()
