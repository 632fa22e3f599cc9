"""Sanity check of the BigGAN-style SN-ResNets (the CIFAR nets, shrunk): ADC-GAN on 16x16 digits.

    OMP_NUM_THREADS=1 python benchmarks/gan_digits_resnet16.py [--max_steps 3000] [--channels 8]

The CIFAR recipes cannot run here, so this trains ``sn_resnet_generator`` /
``sn_resnet_discriminator`` (``channels`` 8 instead of 64) with the digits recipe's optimiser
and schedule on digits resized to 16 px, then scores 1,000 EMA samples with the 8x8
evaluator after 2x2 average pooling. The pooling pipeline itself moves images away from the
8x8 data, so the Fréchet ratio of the real 16 px training images pooled the same way is
printed as this pipeline's floor; only the accuracies are comparable with the 8x8 benchmark.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_generated import ensure_evaluator, evaluate_samples


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max_steps", type=int, default=3000)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import framework
    from framework.generative.gan import ADCGAN

    torch.set_num_threads(1)
    evaluator = ensure_evaluator()
    L.seed_everything(args.seed)
    data = framework.build("data", "digits", image_size=16, batch_size=64)

    def adam(params):
        return torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999))

    model = ADCGAN(
        num_classes=10, data_shape=(1, 16, 16), n_dis=2, ema_start=300, ema_decay=0.99,
        generator="sn_resnet_generator", generator_args={"channels": args.channels, "latent_dim": 32},
        discriminator="sn_resnet_discriminator", discriminator_args={"channels": args.channels},
        generator_optimizer=adam, discriminator_optimizer=adam,
    )  # fmt: skip
    trainer = L.Trainer(max_steps=args.max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, check_val_every_n_epoch=10_000)  # fmt: skip
    cpu, wall = time.process_time(), time.perf_counter()
    trainer.fit(model, data)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall

    labels = torch.arange(10).repeat_interleave(100)
    samples = F.avg_pool2d(model.generate(labels, torch.arange(1000)), 2)
    scores = evaluate_samples((samples.numpy(), labels.numpy()), evaluator, verbose=False)
    data.setup("fit")
    real = data.train_dataset.x  # 16 px training images, no augmentation
    floor = evaluate_samples((F.avg_pool2d(real, 2).numpy(), data.train_dataset.y.numpy()), evaluator, verbose=False)
    data.setup("test")
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in data.test_dataloader():
            correct += (model.discriminator.class_logits(x).argmax(1) == y).sum().item()
            total += len(y)
    result = {
        "train_cpu_s": cpu, "train_wall_s": wall, "evaluator_accuracy": scores["accuracy"],
        "fd_ratio": scores["fd_ratio"], "fd_ratio_of_real_16px_pooled": floor["fd_ratio"],
        "d_test_accuracy": correct / total,
        "generator_parameters": sum(p.numel() for p in model.generator.parameters()),
        "discriminator_parameters": sum(p.numel() for p in model.discriminator.parameters()),
    }  # fmt: skip
    for k, v in result.items():
        print(f"{k:>30}  {v:.3f}" if isinstance(v, float) else f"{k:>30}  {v}")
    return result


if __name__ == "__main__":
    main()
