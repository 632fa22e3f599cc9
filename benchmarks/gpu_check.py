"""GPU correctness and throughput of the CIFAR recipes (run on a machine with a CUDA GPU).

    python benchmarks/gpu_check.py [--steps 60] [--out gpu.jsonl]

For each recipe: the model is built exactly as the recipe says (through the CLI, without its
callbacks and logger), trained for ``--steps`` batches of random 32x32 images in fp32 and in
bf16-mixed (and with torch.compile for the classifier and the EDM U-Net), and the throughput
after a warm-up is printed, with the loss checked finite. For the generators, sampling speed
on the GPU is measured, and a few samples are generated on the GPU and on the CPU from the
same weights and seeds to check that seeding per sample index gives the same images on any
device. Prints one JSON object per measurement.

Status: written for the first session lent a GPU and not yet run on one (the build step was
dry-run on CPU for every recipe); its figures belong in docs/benchmarks.md once measured.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = {
    "classifier": "classifier_cifar10_resnet18.yaml",
    "diffusion_edm": "diffusion_cifar10_edm.yaml",
    "diffusion_dit": "diffusion_cifar10_dit.yaml",
    "flow": "flow_cifar10.yaml",
    "adcgan": "adcgan_cifar10.yaml",
}
COMPILE = {"classifier", "diffusion_edm"}


class StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.timed, self.last_loss = warmup, None, 0, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        torch.cuda.synchronize()
        if batch_idx + 1 == self.warmup:
            self.start = time.perf_counter()
        elif batch_idx + 1 > self.warmup:
            self.timed += 1
        loss = outputs["loss"] if isinstance(outputs, dict) and "loss" in outputs else outputs
        if isinstance(loss, torch.Tensor):
            self.last_loss = float(loss.detach().float())


def build(recipe: str, precision: str, steps: int):
    from framework.cli import run_cli

    args = [
        "--config", os.path.join(REPO, "recipes", recipe),
        "--trainer.accelerator=gpu", "--trainer.devices=1", f"--trainer.precision={precision}",
        f"--trainer.max_steps={steps}", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.limit_val_batches=0", "--trainer.callbacks=[]", "--trainer.max_epochs=1000",
    ]
    return run_cli(args, run=False)


def random_loader(cli, n_batches: int) -> DataLoader:
    dm = cli.datamodule
    batch = dm.batch_size
    shape = tuple(dm.data_shape)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch * n_batches, *shape, generator=g) * 2 - 1)
    y = torch.randint(0, dm.num_classes, (batch * n_batches,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True)


def train_throughput(name: str, recipe: str, precision: str, steps: int, compile_model: bool) -> dict:
    cli = build(recipe, precision, steps)
    model = torch.compile(cli.model) if compile_model else cli.model
    timer = StepTimer(warmup=max(5, steps // 4))
    trainer = L.Trainer(accelerator="gpu", devices=1, precision=precision, max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[timer])
    loader = random_loader(cli, n_batches=steps + 2)
    trainer.fit(model, train_dataloaders=loader)
    elapsed = time.perf_counter() - timer.start
    batch = cli.datamodule.batch_size
    return {"what": "train", "model": name, "precision": precision, "compile": compile_model,
            "batch": batch, "batches_per_s": round(timer.timed / elapsed, 2),
            "images_per_s": round(timer.timed * batch / elapsed, 1),
            "last_loss_finite": timer.last_loss is None or bool(torch.isfinite(torch.tensor(timer.last_loss))),
            "max_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "cli_model": cli.model}


def sampling_checks(name: str, model) -> list[dict]:
    from framework.generative.base import GenerativeModule

    if not isinstance(model, GenerativeModule):
        return []
    out = []
    model = model.cuda().eval()
    labels = torch.arange(100, device="cuda") % max(model.num_classes, 1)
    seeds = torch.arange(100)
    with torch.no_grad():
        model.generate(labels[:4], seeds[:4])  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        images = model.generate(labels, seeds)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        out.append({"what": "sample", "model": name, "n": 100, "seconds": round(seconds, 2),
                    "finite": bool(torch.isfinite(images).all()),
                    "in_range": bool(images.min() >= -1.001 and images.max() <= 1.001)})
        gpu = model.generate(labels[:4], seeds[:4]).float().cpu()
        cpu = model.cpu().generate(labels[:4].cpu(), seeds[:4]).float()
    out.append({"what": "same_seed_cpu_vs_gpu", "model": name, "max_abs_diff": float((gpu - cpu).abs().max())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--only", nargs="*", default=list(RECIPES))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sink = open(args.out, "a") if args.out else None
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    def emit(record: dict) -> None:
        record.pop("cli_model", None)
        line = json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, **record})
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()

    for name in args.only:
        recipe = RECIPES[name]
        try:
            for precision in ("32-true", "bf16-mixed"):
                record = train_throughput(name, recipe, precision, args.steps, compile_model=False)
                model = record["cli_model"]
                emit(record)
            if name in COMPILE:
                emit(train_throughput(name, recipe, "bf16-mixed", args.steps, compile_model=True))
            for record in sampling_checks(name, model):
                emit(record)
        except Exception as err:  # keep going: one failure should not hide the other figures
            emit({"what": "error", "model": name, "error": f"{type(err).__name__}: {err}"[:500]})


if __name__ == "__main__":
    main()
