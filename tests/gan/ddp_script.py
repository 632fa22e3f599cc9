"""Run by tests/gan/test_ddp.py: a few adcgan steps under DDP (2 CPU processes, gloo).

Lightning's DDP launcher starts this script again for rank 1. Each rank saves its final
state and a batch of training fakes to OUTDIR/rank<r>.pt.
"""

import sys

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from framework.cli import leave_process_group
from framework.generative.gan import ADCGAN


def main(outdir: str, strategy: str) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0)
    x = torch.rand(32, 1, 8, 8) * 2 - 1
    y = torch.arange(32) % 3
    model = ADCGAN(
        num_classes=3, n_dis=2, ema_start=1, ema_decay=0.5,
        generator_args={"channels": 4, "latent_dim": 8}, discriminator_args={"channels": 4},
    )
    trainer = L.Trainer(
        strategy=strategy, devices=2, accelerator="cpu", max_steps=9, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=4))
    z, labels = model._fake_batch(8, stream=0, counter=0)
    torch.save({"state": model.state_dict(), "z": z, "labels": labels, "global_step": trainer.global_step},
               f"{outdir}/rank{trainer.global_rank}.pt")
    leave_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "ddp_find_unused_parameters_true")
