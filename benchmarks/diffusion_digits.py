"""Digits diffusion: a time-boxed CPU training, then evaluator accuracy and Fréchet ratio per sampler.

1. trains ``recipes/diffusion_digits.yaml`` for at most ``--max-time`` (default 5 minutes) with
   ``--threads`` torch threads (the checkpoint holds the EMA weights);
2. generates ``--per-class`` samples per class with each sampler of SAMPLERS (EDM Heun 18
   steps = 35 NFE, DPM-Solver++(2M), DDIM, ...) and scores them with
   ``benchmarks/eval_generated.py`` (evaluator accuracy; Fréchet distance to the test split
   over the real train/test distance);
3. optionally (``--nll-count``) bits/dim of test digits through the probability-flow ODE;
4. measures the framework's overhead: seconds per training step of ``lightning``'s loop
   against a plain PyTorch loop over the same net, optimiser and batches, in one process.

    python benchmarks/diffusion_digits.py --out docs/benchmarks/diffusion_digits.json

``--skip-train`` reuses the last checkpoint in ``--workdir``.
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

from eval_generated import digits_bits_per_dim, ensure_evaluator, evaluate_samples

RECIPE = "recipes/diffusion_digits.yaml"
# (sampler, steps, options): NFE = 2 steps - 1 for edm_heun, steps for the one-evaluation samplers.
SAMPLERS = [
    ("edm_heun", 18, {}),
    ("dpmpp_2m", 10, {}),
    ("ddim", 25, {}),
    ("euler_maruyama", 100, {}),
    ("edm_heun", 18, {"guidance": "cfg", "guidance_scale": 2.0}),
]
# With --classifier-guidance: a noise-aware classifier (recipes/noisy_classifier_digits.yaml) guides EDM Heun.
CLASSIFIER_GUIDED = [("edm_heun", 18, {"guidance": "classifier", "guidance_scale": s}) for s in (1.0, 3.0)]


def fit(root: Path, max_time: str | None, threads: int, *overrides: str, recipe: str = RECIPE) -> tuple[Path, dict]:
    """Run ``lightning fit`` on a recipe; the last checkpoint and the cost (wall and CPU seconds, load).

    ``max_time`` None keeps the recipe's own stopping rule (``max_steps`` / ``max_epochs``).
    CPU seconds are user + system time of the training process (``getrusage`` of children):
    with one thread, the figure that does not grow when other jobs share the cores.
    """
    limit = [f"--trainer.max_time={max_time}"] if max_time else []
    command = [sys.executable, "-m", "framework", "fit", "--config", str(ROOT / recipe),
               f"--trainer.default_root_dir={root}", *limit, *overrides]  # fmt: skip
    print("$", " ".join(command), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cost = {"wall_s": round(time.perf_counter() - start, 1),
            "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
            "threads": threads, "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}  # fmt: skip
    print("training cost", json.dumps(cost), flush=True)
    return max(root.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime), cost


def score_samplers(
    checkpoint: Path, evaluator: Path, per_class: int, guidance_scale: float | None,
    settings: list = SAMPLERS, guidance_classifier: Path | None = None,
) -> list[dict]:
    """Evaluator scores of the checkpoint's samples for every (sampler, steps, options) of ``settings``."""
    from framework.generative.diffusion import Diffusion
    from framework.generative.diffusion.model import load_noisy_classifier
    from framework.loading import load_trained

    model = load_trained(checkpoint, base=Diffusion, role="digits diffusion model")
    if guidance_classifier is not None:
        model.guidance_classifier = load_noisy_classifier(str(guidance_classifier))
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    seeds = torch.arange(len(labels))
    guidance = {"guidance": "cfg", "guidance_scale": guidance_scale} if guidance_scale not in (None, 1.0) else {}
    rows = []
    for sampler, steps, options in settings:
        options = {**guidance, **options}
        start = time.perf_counter()
        images = []
        for i in range(0, len(labels), 500):
            images.append(model.generate(labels[i : i + 500], seeds[i : i + 500], sampler=sampler, steps=steps, **options))
        images = torch.cat(images).clamp(-1, 1)
        seconds = time.perf_counter() - start
        scores = evaluate_samples((images.numpy(), labels.numpy()), evaluator, verbose=False)
        row = {"sampler": sampler, "steps": steps, "nfe": model.last_nfe, **options,
               "accuracy": round(scores["accuracy"], 4), "fd_ratio": round(scores["fd_ratio"], 3),
               "fd_test": round(scores["fd_test"], 4), "fd_real": round(scores["fd_real"], 4),
               "nn_ratio": round(scores["nn_ratio"], 3), "near_copy_fraction": round(scores["near_copy_fraction"], 4),
               "sample_s": round(seconds, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def score_bits_per_dim(checkpoint: Path, count: int) -> dict:
    """Bits/dim of ``count`` dequantised test digits (17 levels) through the PF-ODE (Hutchinson, dopri5)."""
    from framework.generative.diffusion import Diffusion
    from framework.loading import load_trained

    model = load_trained(checkpoint, base=Diffusion, role="digits diffusion model")
    return digits_bits_per_dim(model, count)


def overhead(steps: int = 40, warmup: int = 5, repeats: int = 2) -> dict:
    """Seconds per training step: Lightning's fit loop vs a plain PyTorch loop (same net, batches, Adam).

    The two alternate ``repeats`` times (A B A B) so that a change of machine load hits both.
    """
    import lightning as L
    import yaml

    import framework
    from framework.generative.diffusion import Diffusion

    init = yaml.safe_load((ROOT / RECIPE).read_text())["model"]["init_args"]
    net, net_args, lr = init["net"], init["net_args"], init["optimizer"]["init_args"]["lr"]
    data = framework.build("data", "digits", batch_size=128)
    data.setup("fit")

    def plain_loop() -> float:
        torch.manual_seed(0)
        model = Diffusion(net=net, net_args=net_args)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        done = 0
        while done < warmup + steps:
            for x, y in data.train_dataloader():
                if done == warmup:
                    start = time.perf_counter()
                if done == warmup + steps:
                    break
                loss = model.loss(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
        return (time.perf_counter() - start) / steps

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == warmup and not hasattr(self, "start"):
                self.start = time.perf_counter()

        def on_train_end(self, trainer, module):
            self.per_step = (time.perf_counter() - self.start) / steps

    def lightning_loop() -> float:
        torch.manual_seed(0)
        model = Diffusion(net=net, net_args=net_args, optimizer=lambda p: torch.optim.Adam(p, lr=lr))
        timer = StepTimer()
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_steps=warmup + steps, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
        )
        trainer.fit(model, data)
        return timer.per_step

    plain, lightning = [], []
    for _ in range(repeats):
        plain.append(plain_loop())
        lightning.append(lightning_loop())
    return {"plain_s_per_step": [round(v, 4) for v in plain], "lightning_s_per_step": [round(v, 4) for v in lightning],
            "ratio": round(sum(lightning) / sum(plain), 3), "steps": steps, "batch_size": 128}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / "outputs" / "diffusion_digits_bench"))
    parser.add_argument("--recipe", default=RECIPE, help="the diffusion recipe to train (e.g. recipes/diffusion_digits_fast.yaml)")
    parser.add_argument("--max-time", default="00:00:05:00",
                        help="training time box (DD:HH:MM:SS); 'none': the recipe's own max_steps / max_epochs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training run")
    parser.add_argument("--per-class", type=int, default=100, help="generated samples per class")
    parser.add_argument("--guidance-scale", type=float, default=None, help="cfg scale at sampling (1: none)")
    parser.add_argument("--skip-train", action="store_true", help="reuse the last checkpoint in --workdir")
    parser.add_argument("--nll-count", type=int, default=0, help="test digits scored in bits/dim (0: skip)")
    parser.add_argument("--no-overhead", action="store_true")
    parser.add_argument("--overhead-only", action="store_true", help="only time Lightning vs plain steps (--threads threads)")
    parser.add_argument("--classifier-guidance", action="store_true", help="train a noisy_classifier (3 min box) and guide with it")
    parser.add_argument("--out", default=None)
    parser.add_argument("overrides", nargs="*", help="extra `lightning fit` arguments")
    args = parser.parse_args()
    work = Path(args.workdir)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as Diffusion.on_fit_start does for training

    result: dict = {"args": vars(args), "machine": os.uname().nodename, "torch_threads": args.threads,
                    "load_average_at_start": os.getloadavg()}  # fmt: skip
    if args.overhead_only:
        print("overhead", json.dumps({**overhead(), "torch_threads": args.threads}), flush=True)
        return
    evaluator = ensure_evaluator()
    if args.skip_train:
        ckpt = max(work.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    else:
        max_time = None if args.max_time.lower() == "none" else args.max_time
        ckpt, result["train"] = fit(work, max_time, args.threads, *args.overrides, recipe=args.recipe)
        result["train_s"] = result["train"]["wall_s"]
    from framework.loading import read_checkpoint

    result["checkpoint_global_step"] = read_checkpoint(ckpt)["global_step"]
    result["samplers"] = score_samplers(ckpt, evaluator, args.per_class, args.guidance_scale)
    if args.classifier_guidance:
        clf_root = work / "noisy_classifier"
        if args.skip_train and list(clf_root.rglob("*.ckpt")):
            clf = max(clf_root.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        else:
            clf, cost = fit(
                clf_root, "00:00:03:00", args.threads, "--trainer.enable_progress_bar=false",
                recipe="recipes/noisy_classifier_digits.yaml",
            )
            result["classifier_train_s"] = cost["wall_s"]
        result["classifier_guided"] = score_samplers(
            ckpt, evaluator, args.per_class, None, CLASSIFIER_GUIDED, guidance_classifier=clf
        )
    if args.nll_count:
        result["bpd"] = score_bits_per_dim(ckpt, args.nll_count)
        print("bits/dim", json.dumps(result["bpd"]), flush=True)
    if not args.no_overhead:
        result["overhead"] = overhead()
        print("overhead", json.dumps(result["overhead"]), flush=True)
    result["load_average_at_end"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
