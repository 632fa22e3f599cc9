"""Under DDP each rank draws its own random numbers, and a resumed run draws what an uninterrupted one does.

Two gloo CPU processes, started once (importing Lightning dominates the cost), launched the
way torchrun would, with the rank in the environment.
"""

from __future__ import annotations

import os
import socket

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from framework.cli import leave_process_group
from framework.core import ClasszooModule
from framework.trainer import ClasszooTrainer
import pytest

from tests import _processes as processes


class NoisyLinear(ClasszooModule):
    """Each training step draws a number from torch's global generator and records it."""

    def __init__(self) -> None:
        super().__init__(num_classes=2, data_shape=(3,))
        self.layer = torch.nn.Linear(3, 1)
        self.draws: list[float] = []

    def training_step(self, batch, batch_idx):
        x, _ = batch
        noise = torch.rand(1)
        self.draws.append(float(noise))
        return (self.layer(x) * noise).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(out: str, max_epochs: int, ckpt_path: str | None = None) -> NoisyLinear:
    L.seed_everything(0, verbose=False)
    model = NoisyLinear()
    data = TensorDataset(torch.linspace(-1, 1, 24).view(8, 3), torch.zeros(8, dtype=torch.long))
    trainer = ClasszooTrainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=max_epochs, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=out,
    )  # fmt: skip
    # A loader with its own generator, as our DataModules' loaders: iterating a loader without
    # one draws its worker seed from torch's global generator, at an epoch boundary.
    loader = DataLoader(data, batch_size=2, generator=torch.Generator().manual_seed(0))
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    if max_epochs == 1:
        trainer.save_checkpoint(os.path.join(out, "epoch1.ckpt"))  # every rank takes part; rank 0 writes
    return model


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")  # fmt: skip
    torch.set_num_threads(1)
    whole = _fit(out, max_epochs=3)
    _fit(out, max_epochs=1)
    resumed = _fit(out, max_epochs=3, ckpt_path=os.path.join(out, "epoch1.ckpt"))
    torch.save(
        {"whole": whole.draws, "resumed": resumed.draws, "weight": resumed.layer.weight.detach(),
         "whole_weight": whole.layer.weight.detach()},
        os.path.join(out, f"rank{rank}.pt"),
    )  # fmt: skip
    leave_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Longer than the suite's 300 s: the process timeout (300 s) fails first, with its own message.
@pytest.mark.timeout(360)
def test_ranks_draw_apart_and_resume_exactly(tmp_path):
    processes.spawn(_worker, (_free_port(), str(tmp_path)), nprocs=2, timeout=300)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # 8 samples, 2 per batch, 2 ranks: 2 steps per epoch on each rank.
    assert len(r0["whole"]) == len(r1["whole"]) == 6
    assert all(a != b for a, b in zip(r0["whole"], r1["whole"])), "the ranks drew the same numbers"
    # Resumed after epoch 1: epochs 2 and 3 draw what the uninterrupted run drew, on each rank.
    assert r0["resumed"] == r0["whole"][2:] and r1["resumed"] == r1["whole"][2:]
    torch.testing.assert_close(r0["weight"], r0["whole_weight"], rtol=0, atol=0)
    torch.testing.assert_close(r0["weight"], r1["weight"], rtol=0, atol=0)  # DDP kept the replicas equal
