"""Training speed of the CIFAR ADC-GAN recipe (reference nets and settings) on random 32x32 images.

    python benchmarks/gan_cifar_throughput.py [--recipe recipes/adcgan_cifar10.yaml] [--g_iterations 200] [--accelerator auto]

Builds the model exactly as the recipe's ``model`` section says (BigGAN-style SN-ResNets, ch 64,
batch 50, n_dis 4), trains it for ``--g_iterations`` generator iterations on random images (no
dataset needed) and prints G iterations per second after a warm-up, and the projected time of
the reference's 250k iterations. Sampling speed (EMA G, eval mode) is printed too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]


class _Timer(L.Callback):
    """Wall time of the D steps after ``warmup`` of them (synchronising the device)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.steps = warmup, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if batch_idx + 1 == self.warmup:
            self.start = time.perf_counter()
        elif batch_idx + 1 > self.warmup:
            self.steps += 1


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "adcgan_cifar10.yaml"))
    parser.add_argument("--g_iterations", type=int, default=200)
    parser.add_argument("--warmup_g_iterations", type=int, default=10)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args(argv)

    import registry
    from framework.generative.gan import ADCGAN

    config = yaml.safe_load(Path(args.recipe).read_text())
    model_args = dict(config["model"]["init_args"])
    model_args.pop("generator_optimizer", None)
    model_args.pop("discriminator_optimizer", None)  # the module's defaults are the recipe's Adam(2e-4, (0, 0.999))
    data_args = config["data"]["init_args"]
    num_classes = registry.get("data", config["data"]["class_path"]).num_classes
    model = ADCGAN(num_classes=num_classes, data_shape=(3, 32, 32), **model_args)
    batch, n_dis = int(data_args["batch_size"]), model.n_dis
    warmup = args.warmup_g_iterations * n_dis
    d_steps = warmup + args.g_iterations * n_dis
    x = torch.rand(d_steps * batch, 3, 32, 32) * 2 - 1
    y = torch.randint(0, num_classes, (d_steps * batch,))
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=1, precision=args.precision, max_steps=d_steps + d_steps // n_dis,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], limit_val_batches=0,
    )
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=batch, drop_last=True))
    seconds = time.perf_counter() - timer.start
    g_per_s = timer.steps / n_dis / seconds
    model.eval()
    labels = torch.arange(500, device=model.device) % num_classes
    model.generate(labels[:50], range(50))
    start = time.perf_counter()
    model.generate(labels, range(500))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    sample_s = time.perf_counter() - start
    result = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "g_iterations_per_s": g_per_s,
        "hours_for_250k_g_iterations": 250_000 / g_per_s / 3600,
        "samples_per_s": 500 / sample_s,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }
    for k, v in result.items():
        print(f"{k:>28}  {v:.3f}" if isinstance(v, float) else f"{k:>28}  {v}")
    return result


if __name__ == "__main__":
    main()
