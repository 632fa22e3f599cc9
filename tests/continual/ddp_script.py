"""Run by tests/continual/test_ddp.py: a WA digits protocol under DDP (2 CPU processes, gloo).

Lightning's DDP launcher starts this script again for rank 1. Each rank saves its protocol
state to OUTDIR/rank<r>.pt.
"""

import sys

import lightning as L
import torch

from framework.cli import leave_process_group
from framework.continual.scenario import ClassIncremental
from framework.continual.wa import WA
from framework.data.digits import DigitsDataModule


def main(outdir: str) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0)
    model = WA(num_classes=10, data_shape=(1, 8, 8), net="cnn", net_args={"channels": [8, 16]},
               base_epochs=2, epochs=1, memory_size=40)
    data = ClassIncremental(DigitsDataModule(), base_classes=4, increment=2, batch_size=64)
    trainer = L.Trainer(strategy="ddp", devices=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=outdir)
    trainer.fit(model, datamodule=data)
    torch.save({"correct": model.correct, "memory": {c: ix for c, ix in model.memory.items()},
                "head": model.head.weight.detach(), "epochs": trainer.current_epoch, "done": model.done,
                "gammas": model.gammas}, f"{outdir}/rank{trainer.global_rank}.pt")
    leave_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
