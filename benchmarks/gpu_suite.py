"""GPU readiness: every GPU check of the CIFAR recipes in one process, one JSON.

    python benchmarks/gpu_suite.py --out gpu_suite.json            # one GPU, within 8 minutes on an H200
    python benchmarks/gpu_suite.py --tiny --out tiny.json          # CPU, tiny nets, seconds (the test suite runs it)
    python benchmarks/gpu_suite.py --params-only [RECIPE.yaml ...]  # parameter counts of the recipes' nets (CPU)

Every model is built from its recipe through the project's CLI (``run_cli(..., run=False)``:
the recipe's model, its trainer settings such as precision and gradient clipping, and its
EMA callbacks; checkpointing, logging, sample grids and validation off; one device). Checks:

1. ``correctness``: each net (``song_unet``, ``dit``, ``unet``, the GAN's G and D, the
   continual backbone, the classifier backbone) in eval mode, with its weights perturbed by
   seeded noise (the nets zero or 1e-5-scale their output layers, which would make every
   output 0), on seeded inputs: output under bf16 autocast and under ``torch.compile``
   against fp32 eager (TF32 off), as the relative L2 error ``||y - y_fp32|| / ||y_fp32||``.
   Tolerances: :data:`TOLERANCES`.
2. ``train``: training images/s of each recipe at its per-device batch and precision on
   synthetic CIFAR-shaped batches (random images in [-1, 1], random labels), timed over
   real ``Trainer.fit`` steps after a warm-up, device synchronised; the last loss must be
   finite. The continual recipe times its backbone + head with its base step's optimizer
   and cross-entropy in a plain loop (its ``fit`` needs the class-incremental scenario).
3. ``sampling``: images/s of each generator's ``generate`` at a fixed NFE
   (:data:`RECIPES`' ``sample`` options: 35 NFE for diffusion and flow, 1 for the GAN; with
   ``--tiny`` 2 steps); the samples must be finite (an untrained
   net's need not lie in [-1, 1]: their range is recorded).
4. ``mfu``: DiT model-FLOPs utilisation of a bf16 training step: the FLOPs of one step
   (forward + backward of ``Diffusion.loss``) counted by ``torch.utils.flop_counter``
   (matmuls, convolutions, attention), divided by the measured step time and by the peak,
   ``--peak-tflops`` (default 989: NVIDIA's H200 SXM dense BF16 figure without sparsity).
5. ``agreement``: each generator's samples for the same seeds on the GPU (fp32, TF32 off,
   two batches of 2) and on the CPU (one batch of 4): max absolute difference. Without a
   GPU (``--tiny`` on CPU) both runs are on the CPU, which still checks that a sample does
   not depend on its batch.

The compile checks run after every other section, and only while the suite has run less
than ``--budget-s`` seconds (default 420, so that the whole suite fits in 8 minutes on one
GPU); a net left out gets ``compile_skipped`` in its row.

``--tiny`` swaps in tiny nets (:data:`TINY_NETS`), batch 2, 2 timed steps, and compiles only
the nets of the recipes named by ``--compile-nets`` (default in tiny mode: ``diffusion_dit``) with the ``aot_eager``
backend (inductor's C++ code generation takes minutes on a small CPU); on a GPU the
backend is inductor. The JSON holds the device, torch version, tolerances, peak, per-check
records, ``seconds`` per section and ``failures`` (checks over tolerance, non-finite losses
or samples, errors); the exit code is 1 if there is any.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# name: recipe, the nets to check for correctness (attribute path -> input kind), sampling options at a
# fixed NFE, and the same solver with fewer steps for the CPU-vs-GPU agreement.
RECIPES: dict[str, dict[str, Any]] = {
    "classifier": {"recipe": "classifier_cifar10_resnet18.yaml", "nets": {"backbone": "image"}},
    "diffusion_edm": {"recipe": "diffusion_cifar10_edm.yaml", "nets": {"net": "denoiser"},
                      "sample": {"sampler": "edm_heun", "steps": 18}, "agree": {"sampler": "edm_heun", "steps": 4}},
    "diffusion_vp": {"recipe": "diffusion_cifar10_vp.yaml", "nets": {},  # the same net class as diffusion_edm
                     "sample": {"sampler": "edm_heun", "steps": 18}, "agree": {"sampler": "edm_heun", "steps": 4}},
    "diffusion_dit": {"recipe": "diffusion_cifar10_dit.yaml", "nets": {"net": "denoiser"},
                      "sample": {"sampler": "edm_heun", "steps": 18}, "agree": {"sampler": "edm_heun", "steps": 4}},
    "flow": {"recipe": "flow_cifar10.yaml", "nets": {"net": "denoiser"},
             "sample": {"solver": "euler", "steps": 35}, "agree": {"solver": "euler", "steps": 8}},
    "gan": {"recipe": "adcgan_cifar10.yaml", "nets": {"generator": "latent", "discriminator": "image_label"},
            "sample": {}, "agree": {}},
    "continual": {"recipe": "wa_cifar100_b0_10steps.yaml", "nets": {"backbone": "image"}, "plain_loop": True},
}  # fmt: skip

# --tiny: small nets in place of the recipes' (by registry name; a net not listed keeps its arguments).
TINY_NETS: dict[str, dict[str, Any]] = {
    "song_unet": {"model_channels": 16, "channel_mult": [1, 1], "num_blocks": 1, "attn_resolutions": [16]},
    "unet": {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16], "num_heads": 1},
    "dit": {"hidden_size": 32, "depth": 2, "num_heads": 2, "patch_size": 4},
    "sn_resnet_generator": {"channels": 8, "latent_dim": 16},
    "sn_resnet_discriminator": {"channels": 8},
}  # the CIFAR ResNets take no width arguments: they run at their size (0.5M / 11M parameters)
TINY_STEPS = 2  # sampler / solver steps of sampling and agreement with --tiny

# Relative L2 error bounds against fp32 eager (correctness) and max |difference| of samples in [-1, 1]
# (agreement). bf16 keeps 8 significant bits (relative rounding 2^-9 per op, growing with depth);
# compiled fp32 only reorders arithmetic; the agreement bound covers a few sampler steps of fp32 on two
# devices. First estimates, to be checked against the first GPU run.
TOLERANCES = {"bf16": 5e-2, "compile": 1e-4, "cpu_vs_gpu": 2e-3}
H200_BF16_DENSE_TFLOPS = 989.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny nets, batch 2, 2 steps: a CPU run in seconds")
    parser.add_argument("--params-only", nargs="*", default=None, metavar="RECIPE",
                        help="print the parameter counts of the nets of these recipes/ files (none named: the "
                        "suite's recipes) and stop")  # fmt: skip
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--only", nargs="+", default=None, choices=list(RECIPES), help="a subset of the recipes")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default 30; --tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 10; --tiny 1)")
    parser.add_argument("--sample-batch", type=int, default=None, help="images per generate call (default 256; --tiny 2)")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS,
                        help="peak dense bf16 TFLOP/s of the device for the MFU (default: H200 SXM, 989)")  # fmt: skip
    parser.add_argument("--compile-nets", nargs="*", default=None,
                        help="recipes whose nets are checked under torch.compile (default: all; --tiny: diffusion_dit)")  # fmt: skip
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; --tiny aot_eager)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="compile checks (run last) start only while the suite has run less than this (default 420)")  # fmt: skip
    parser.add_argument("--out", default=None, help="write the JSON here (it is printed as well)")
    return parser.parse_args(argv)


# -- building the recipes' models through the CLI --------------------------------------------------------
def recipe_config(path: Path, device: str, tiny: bool, batch: int | None) -> dict[str, Any]:
    """The recipe's YAML as a dict, set up for one device and no side effects (files, validation, grids)."""
    import yaml

    config = yaml.safe_load(path.read_text())
    trainer = config.setdefault("trainer", {})
    keep = [c for c in trainer.get("callbacks") or [] if _is_weight_averaging(c)]
    trainer.update({"accelerator": "gpu" if device == "cuda" else "cpu", "devices": 1, "strategy": "auto",
                    "num_nodes": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                    "callbacks": keep, "max_steps": -1, "max_epochs": 1_000_000, "val_check_interval": None,
                    "check_val_every_n_epoch": None, "default_root_dir": tempfile.gettempdir()})  # fmt: skip
    trainer.pop("sync_batchnorm", None)
    if device != "cuda" and str(trainer.get("precision", "32")).startswith("16"):
        trainer["precision"] = "bf16-mixed"  # fp16 autocast is a GPU thing
    init = config["model"]["init_args"]
    if tiny:
        for key in ("net", "generator", "discriminator"):
            if isinstance(init.get(key), str) and init[key] in TINY_NETS:
                args = {**(init.get(f"{key}_args") or {}), **TINY_NETS[init[key]]}
                init[f"{key}_args"] = args
    data = config["data"].setdefault("init_args", {})
    if batch is not None:
        data["batch_size"] = batch
    config["torch_threads"] = None
    return config


def _is_weight_averaging(callback: Any) -> bool:
    path = callback.get("class_path", "") if isinstance(callback, dict) else str(callback)
    return "ema" in path.lower() or "WeightAveraging" in path


def build(name: str, device: str, tiny: bool, batch: int | None = None) -> Any:
    """The CLI object (model, datamodule, trainer) of a suite recipe, nothing run."""
    return build_recipe(ROOT / "recipes" / RECIPES[name]["recipe"], device, tiny, batch)


def build_recipe(recipe: Path, device: str, tiny: bool, batch: int | None = None) -> Any:
    """The CLI object of any recipe file, built through ``run_cli`` for one device, nothing run."""
    import yaml

    from framework.cli import run_cli

    config = recipe_config(recipe, device, tiny, batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / recipe.name
        path.write_text(yaml.safe_dump(config))
        return run_cli(["--config", str(path)], run=False, save_config_callback=None)


def submodule(model: Any, path: str) -> Any:
    for part in path.split("."):
        model = getattr(model, part)
    return model


def batch_size_of(cli: Any) -> int:
    return int(cli.datamodule.batch_size)


def data_shape_of(cli: Any) -> tuple[int, ...]:
    return tuple(cli.model.data_shape)


# -- 1. correctness ---------------------------------------------------------------------------------
def _flat(out: Any) -> Any:
    import dataclasses

    import torch

    if isinstance(out, torch.Tensor):
        return out.float().flatten()
    if dataclasses.is_dataclass(out):
        out = [getattr(out, f.name) for f in dataclasses.fields(out)]
    if isinstance(out, dict):
        out = list(out.values())
    return torch.cat([_flat(o) for o in out if o is not None])


def net_inputs(kind: str, net: Any, model: Any, batch: int, device: str) -> tuple:
    import torch

    g = torch.Generator().manual_seed(0)
    shape, classes = tuple(model.data_shape), max(int(model.num_classes), 1)
    labels = torch.randint(0, classes, (batch,), generator=g).to(device)
    image = (torch.rand(batch, *shape, generator=g) * 2 - 1).to(device)
    if kind == "denoiser":
        return image, torch.rand(batch, generator=g).to(device), labels
    if kind == "latent":
        return torch.randn(batch, net.latent_dim, generator=g).to(device), labels
    if kind == "image_label":
        return image, labels
    return (image,)


def perturbed(net: Any, device: str) -> Any:
    """An eval-mode fp32 copy of ``net`` with seeded N(0, 0.02^2) noise added to every parameter."""
    import torch

    net = copy.deepcopy(net).float().to(device).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g).to(device))
    return net


def relative_error(y: Any, reference: Any) -> float:
    import torch

    y, reference = _flat(y), _flat(reference)
    return float(torch.linalg.vector_norm(y - reference) / torch.linalg.vector_norm(reference).clamp_min(1e-30))


def correctness(name: str, cli: Any, device: str, batch: int, pending: list | None = None) -> list[dict]:
    """bf16 rows of the recipe's nets; each (row, net, inputs, reference) is appended to ``pending`` for :func:`compile_check`."""
    import torch

    rows = []
    for path, kind in RECIPES[name]["nets"].items():
        net = perturbed(submodule(cli.model, path), device)
        inputs = net_inputs(kind, net, cli.model, batch, device)
        with torch.no_grad():
            reference = net(*inputs)
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                bf16 = net(*inputs)
        row = {"recipe": name, "net": path, "class": type(net).__name__, "batch": batch,
               "reference_norm": float(torch.linalg.vector_norm(_flat(reference))),
               "bf16_relative_error": relative_error(bf16, reference), "bf16_tolerance": TOLERANCES["bf16"]}  # fmt: skip
        rows.append(row)
        if pending is not None:
            pending.append((row, net, inputs, reference))
    return rows


def compile_check(row: dict, net: Any, inputs: tuple, reference: Any, backend: str) -> None:
    """Adds the torch.compile figures to a correctness row: the compiled fp32 net against fp32 eager."""
    import torch

    start = time.perf_counter()
    with torch.no_grad():
        out = torch.compile(net, backend=backend)(*inputs)
    row.update({"compile_backend": backend, "compile_relative_error": relative_error(out, reference),
                "compile_tolerance": TOLERANCES["compile"], "compile_seconds": time.perf_counter() - start})  # fmt: skip


# -- 2. training throughput ---------------------------------------------------------------------------
def synthetic_loader(cli: Any, batch: int, batches: int = 8) -> Any:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    n = batch * batches
    x = torch.rand(n, *data_shape_of(cli), generator=g) * 2 - 1
    y = torch.randint(0, max(int(cli.model.num_classes), 1), (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True)


class _StepClock:
    """Times ``steps`` training batches after ``warmup``, synchronising the device; then stops the fit."""

    def __init__(self, warmup: int, steps: int, device: str) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.seen, self.start, self.seconds, self.loss, self.global_steps = 0, None, None, None, None
        self.counters: dict[str, int] = {}

    def sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def batch_end(self, trainer: Any, loss: Any) -> None:
        import torch

        self.seen += 1
        if isinstance(loss, dict):
            loss = loss.get("loss")
        if loss is None and trainer is not None:  # manual optimisation (the GAN) logs its losses instead
            logged = [v for k, v in trainer.callback_metrics.items() if "loss" in k and v.numel() == 1]
            loss = torch.stack([v.detach().float().cpu() for v in logged]).sum() if logged else None
        if isinstance(loss, torch.Tensor):
            self.loss = float(loss.detach().float())
        if self.seen == self.warmup:
            self.sync()
            self.start, self._step0 = time.perf_counter(), trainer.global_step if trainer else 0
            self._counters0 = _step_counters(trainer)
        elif self.seen == self.warmup + self.steps:
            self.sync()
            self.seconds = time.perf_counter() - self.start
            self.global_steps = (trainer.global_step if trainer else self.steps) - self._step0
            self.counters = {k: v - self._counters0[k] for k, v in _step_counters(trainer).items()}
            if trainer is not None:
                trainer.should_stop = True


def _step_counters(trainer: Any) -> dict[str, int]:
    """The module's scalar ``*_steps`` buffers (the GAN's ``generator_steps``, ``discriminator_steps``)."""
    if trainer is None:
        return {}
    buffers = trainer.lightning_module.named_buffers(recurse=False)
    return {k: int(v) for k, v in buffers if k.endswith("_steps") and v.numel() == 1}


def _callback(clock: _StepClock) -> Any:
    import lightning as L

    class StepClockCallback(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            clock.batch_end(trainer, outputs)

    return StepClockCallback()


def train_throughput(name: str, cli: Any, device: str, warmup: int, steps: int) -> dict:
    import torch

    batch = batch_size_of(cli)
    clock = _StepClock(warmup, steps, device)
    loader = synthetic_loader(cli, batch)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if RECIPES[name].get("plain_loop"):
        _plain_loop(cli.model, loader, clock, device, str(cli.trainer.precision))
    else:
        cli.trainer.callbacks.append(_callback(clock))
        cli.trainer.fit(cli.model, train_dataloaders=loader)
    if clock.seconds is None:
        raise RuntimeError(f"training stopped after {clock.seen} of {warmup + steps} batches")
    row = {"recipe": name, "precision": str(cli.trainer.precision), "batch": batch, "timed_steps": steps,
           "images_per_s": steps * batch / clock.seconds, "seconds_per_step": clock.seconds / steps,
           "optimizer_steps_per_s": clock.global_steps / clock.seconds,
           "last_loss": clock.loss, "loss_finite": clock.loss is not None and math.isfinite(clock.loss),
           **{f"{k}_per_s": v / clock.seconds for k, v in clock.counters.items()}}  # fmt: skip
    max_steps = RECIPES[name].get("max_steps") or _recipe_max_steps(name)
    if max_steps and max_steps > 0 and clock.global_steps:
        # The recipe's max_steps at this rate: its devices run in parallel at the per-device batch
        # timed here (data parallel), communication not counted.
        row["projected_hours_for_recipe_max_steps"] = max_steps / row["optimizer_steps_per_s"] / 3600
    if device == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def _recipe_max_steps(name: str) -> int | None:
    import yaml

    config = yaml.safe_load((ROOT / "recipes" / RECIPES[name]["recipe"]).read_text())
    return (config.get("trainer") or {}).get("max_steps")


def _plain_loop(model: Any, loader: Any, clock: _StepClock, device: str, precision: str) -> None:
    """Backbone + head with the recipe's base-step optimizer and cross-entropy, for ``warmup + steps`` batches."""
    import torch
    import torch.nn.functional as F

    model = model.to(device).train()
    make = getattr(model, "base_optimizer", None) or model.optimizer
    optimizer = make(model.parameters())
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    while clock.seconds is None:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clock.batch_end(None, loss)
            if clock.seconds is not None:
                break


# -- 3. sampling throughput, 5. agreement ----------------------------------------------------------------
def _generate(model: Any, labels: Any, seeds: Any, options: dict, chunk: int | None = None) -> Any:
    import torch

    if chunk is None:
        return model.generate(labels, seeds, **options)
    return torch.cat([model.generate(labels[i : i + chunk], seeds[i : i + chunk], **options) for i in range(0, len(seeds), chunk)])


def _tiny(options: dict) -> dict:
    return {**options, "steps": TINY_STEPS} if "steps" in options else options


def sampling(name: str, model: Any, device: str, batch: int, tiny: bool = False) -> dict:
    import torch

    model = model.to(device).eval()
    classes = max(int(model.num_classes), 1)
    labels, seeds = torch.arange(batch) % classes, torch.arange(batch)
    options = _tiny(RECIPES[name]["agree"]) if tiny else RECIPES[name]["sample"]
    clock = _StepClock(0, 0, device)
    with torch.no_grad():
        _generate(model, labels[:2], seeds[:2], options)  # warm-up
        clock.sync()
        start = time.perf_counter()
        images = _generate(model, labels, seeds, options)
        clock.sync()
        seconds = time.perf_counter() - start
    nfe = int(getattr(model, "last_nfe", 0) or 1)  # the GAN's generator runs once per sample
    return {"recipe": name, "options": options, "nfe": nfe, "batch": batch, "seconds": seconds,
            "images_per_s": batch / seconds, "net_evaluations_per_s": batch * nfe / seconds,
            "finite": bool(torch.isfinite(images).all()),
            "min": float(images.min()), "max": float(images.max())}  # fmt: skip


def agreement(name: str, model: Any, device: str, tiny: bool = False) -> dict:
    """Same seeds on ``device`` (two batches of 2, fp32) and on the CPU (one batch of 4)."""
    import torch

    options = _tiny(RECIPES[name]["agree"]) if tiny else RECIPES[name]["agree"]
    classes = max(int(model.num_classes), 1)
    labels, seeds = torch.arange(4) % classes, torch.arange(100, 104)
    model = model.float().eval()
    with torch.no_grad():
        here = _generate(model.to(device), labels, seeds, options, chunk=2).float().cpu()
        cpu = _generate(model.cpu(), labels, seeds, options).float()
    diff = float((here - cpu).abs().max())
    return {"recipe": name, "options": options, "devices": [device, "cpu"], "samples": 4, "max_abs_diff": diff,
            "tolerance": TOLERANCES["cpu_vs_gpu"], "finite": bool(torch.isfinite(here).all() and torch.isfinite(cpu).all())}  # fmt: skip


# -- 4. DiT model-FLOPs utilisation ---------------------------------------------------------------------
def dit_mfu(cli: Any, device: str, warmup: int, steps: int, peak_tflops: float) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = cli.model.to(device).train()
    batch = batch_size_of(cli)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, *data_shape_of(cli), generator=g) * 2 - 1).to(device)
    y = torch.randint(0, int(model.num_classes), (batch,), generator=g).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> Any:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model.loss(x, y)
        loss.backward()
    flops = counter.get_total_flops()
    optimizer.zero_grad(set_to_none=True)
    clock = _StepClock(warmup, steps, device)
    while clock.seconds is None:
        clock.batch_end(None, step())
    step_s = clock.seconds / steps
    achieved = flops / step_s
    return {"recipe": "diffusion_dit", "batch": batch, "precision": "bf16 autocast",
            "params": sum(p.numel() for p in model.net.parameters()), "flops_per_step": flops,
            "seconds_per_step": step_s, "achieved_tflops": achieved / 1e12, "peak_tflops": peak_tflops,
            "mfu": achieved / (peak_tflops * 1e12), "last_loss": clock.loss,
            "loss_finite": clock.loss is not None and math.isfinite(clock.loss)}  # fmt: skip


# -- parameter counts -------------------------------------------------------------------------------
NET_ATTRIBUTES = ("net", "backbone", "generator", "discriminator")


def parameter_counts(recipes: list[str]) -> list[dict]:
    """Parameters of each net of each recipe (``recipes/<file>`` names), built on the CPU at full size."""
    rows = []
    for recipe in recipes:
        cli = build_recipe(ROOT / "recipes" / recipe, "cpu", tiny=False)
        for path in NET_ATTRIBUTES:
            net = getattr(cli.model, path, None)
            if net is None:
                continue
            count = sum(p.numel() for p in net.parameters())
            rows.append({"recipe": recipe, "net": path, "class": type(net).__name__, "params": count})
            print(f"{recipe:<36} {path:<14} {type(net).__name__:<24} {count:>12,} ({count / 1e6:.2f}M)", flush=True)
    return rows


# -- the suite ---------------------------------------------------------------------------------------
def run_suite(args: argparse.Namespace) -> dict:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny
    warmup = args.warmup if args.warmup is not None else (1 if tiny else 10)
    steps = args.steps if args.steps is not None else (2 if tiny else 30)
    sample_batch = args.sample_batch or (2 if tiny else 256)
    backend = args.compile_backend or ("aot_eager" if tiny or device != "cuda" else "inductor")
    compile_names = args.compile_nets if args.compile_nets is not None else (["diffusion_dit"] if tiny else list(RECIPES))
    names = args.only or list(RECIPES)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 references are fp32
    torch.backends.cudnn.allow_tf32 = False
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "tiny": tiny,
        "tolerances": TOLERANCES, "peak_tflops": args.peak_tflops,
        "correctness": [], "train": [], "sampling": [], "agreement": [], "mfu": None,
        "seconds": {}, "failures": [],
    }  # fmt: skip
    batch = 2 if tiny else None
    pending: list = []  # correctness rows waiting for their compile check
    started = time.perf_counter()

    def section(key: str, name: str, fn, *a) -> Any:
        start = time.perf_counter()
        try:
            return fn(*a)
        except Exception as err:  # one failure must not hide the other figures
            result["failures"].append(f"{key} {name}: {type(err).__name__}: {err}"[:500])
            return None
        finally:
            result["seconds"][f"{key}/{name}"] = time.perf_counter() - start

    for name in names:
        cli = section("build", name, build, name, device, tiny, batch)
        if cli is None:
            continue
        rows = section("correctness", name, correctness, name, cli, device, 2 if tiny else 8,
                       pending if name in compile_names else None)  # fmt: skip
        result["correctness"] += rows or []
        if name == "diffusion_dit":
            mfu_cli = section("build", "diffusion_dit_mfu", build, name, device, tiny, batch)
            if mfu_cli is not None:
                result["mfu"] = section("mfu", name, dit_mfu, mfu_cli, device, warmup, steps, args.peak_tflops)
        row = section("train", name, train_throughput, name, cli, device, warmup, steps)
        if row:
            result["train"].append(row)
        if "sample" in RECIPES[name]:
            row = section("sampling", name, sampling, name, cli.model, device, sample_batch, tiny)
            if row:
                result["sampling"].append(row)
            row = section("agreement", name, agreement, name, cli.model, device, tiny)
            if row:
                result["agreement"].append(row)
        del cli
        if device == "cuda":
            torch.cuda.empty_cache()
    # Compiling is the slowest part (inductor: tens of seconds per net), so it runs last, while
    # the time budget lasts; a net left out is marked, not failed.
    for row, net, inputs, reference in pending:
        if time.perf_counter() - started > args.budget_s:
            row["compile_skipped"] = f"time budget of {args.budget_s:.0f} s spent"
            continue
        section("compile", f"{row['recipe']}/{row['net']}", compile_check, row, net, inputs, reference, backend)
    result["failures"] += check(result)
    result["seconds"]["total"] = sum(result["seconds"].values())
    return result


def check(result: dict) -> list[str]:
    """The checks over tolerance or not finite."""
    bad = []
    for row in result["correctness"]:
        if not row["reference_norm"] > 0:  # an all-zero output would make any comparison pass
            bad.append(f"correctness {row['recipe']} {row['net']}: the fp32 output is zero")
        for key in ("bf16", "compile"):
            err = row.get(f"{key}_relative_error")
            if err is not None and not err <= row[f"{key}_tolerance"]:
                bad.append(f"correctness {row['recipe']} {row['net']}: {key} relative error {err:.3g} > {row[f'{key}_tolerance']}")
    for row in result["train"] + ([result["mfu"]] if result["mfu"] else []):
        if not row["loss_finite"]:
            bad.append(f"train {row['recipe']}: last loss {row['last_loss']}")
    for row in result["sampling"]:
        if not row["finite"]:
            bad.append(f"sampling {row['recipe']}: samples not finite")
    for row in result["agreement"]:
        if not (row["finite"] and row["max_abs_diff"] <= row["tolerance"]):
            bad.append(f"agreement {row['recipe']}: max |diff| {row['max_abs_diff']:.3g} > {row['tolerance']}")
    return bad


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    sys.path.insert(0, str(ROOT))
    if args.params_only is not None:
        names = args.only or list(RECIPES)
        parameter_counts(args.params_only or [RECIPES[n]["recipe"] for n in names])
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or pass --tiny / --device cpu", file=sys.stderr)
        return 2
    result = run_suite(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        from framework.io import write_atomic

        write_atomic(args.out, text)
    for failure in result["failures"]:
        print("FAILED:", failure, file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
