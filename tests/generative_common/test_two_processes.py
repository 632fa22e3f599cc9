"""Two gloo CPU processes: `sample` and `GenerationMetrics` give what one process gives.

Both run in the same two worker processes (started once: importing Lightning dominates the
cost), launched the way torchrun would, with the rank in the environment.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from framework.callbacks import GenerationMetrics
from framework.cli import leave_process_group
from framework.generative.output import load_samples
from framework.models.classifier import Classifier
from framework.trainer import ClasszooTrainer

sys.path.insert(0, str(Path(__file__).parent))
from _toy_generator import ToyGenerator  # noqa: E402
from tests import _processes as processes

TRAINER_ARGS = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False)  # fmt: skip


def _model() -> ToyGenerator:
    torch.manual_seed(0)
    model = ToyGenerator()
    with torch.no_grad():
        # Class c near the level (c - 1) * 0.6 of the validation data, so the evaluator recognises most samples.
        model.means.copy_((torch.arange(3.0) - 1).view(3, 1, 1, 1) * 0.6 + 0.1 * torch.randn_like(model.means))
    return model


def _val_data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    y = torch.arange(18) % 3
    return TensorDataset(((y.float() - 1).view(-1, 1, 1, 1) * 0.6 + 0.2 * torch.randn(18, 1, 4, 4, generator=g)), y)


def _metrics_callback(evaluator: str) -> GenerationMetrics:
    return GenerationMetrics(feature_args={"checkpoint": evaluator}, num_per_class=10, seed=3)


def _worker(rank: int, port: int, out: str, evaluator: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")  # fmt: skip
    torch.set_num_threads(1)
    trainer = ClasszooTrainer(devices=2, strategy="ddp", **TRAINER_ARGS)
    trainer.sample(_model(), num_per_class=5, output=os.path.join(out, "two"), batch_size=2)
    # In shards of 4, sent to rank 0 every 2 batches; rank 0 has 8 batches of 1, rank 1 has 7.
    trainer.sample(_model(), num_per_class=5, output=os.path.join(out, "sharded"), batch_size=1, shard_size=4)
    trainer = L.Trainer(devices=2, strategy="ddp", callbacks=[_metrics_callback(evaluator)], **TRAINER_ARGS)
    result = trainer.validate(_model(), DataLoader(_val_data(), batch_size=4), verbose=False)
    if rank == 0:
        Path(out, "metrics.json").write_text(json.dumps(result[0]))
    leave_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    torch.manual_seed(0)
    data = _val_data()
    model = Classifier(num_classes=3, data_shape=(1, 4, 4), net="cnn", net_args={"channels": [8]})
    trainer = L.Trainer(max_epochs=15, **TRAINER_ARGS)
    trainer.fit(model, DataLoader(data, batch_size=6))
    path = tmp_path_factory.mktemp("evaluator") / "evaluator.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


# Longer than the suite's 300 s: the process timeout (300 s) fails first, with its own message.
@pytest.mark.timeout(360)
def test_two_processes_give_what_one_gives(tmp_path, evaluator):
    processes.spawn(_worker, (_free_port(), str(tmp_path), evaluator), nprocs=2, timeout=300)

    one = load_samples(ClasszooTrainer(devices=1, **TRAINER_ARGS).sample(
        _model(), num_per_class=5, output=str(tmp_path / "one"), batch_size=2))  # fmt: skip
    two = load_samples(tmp_path / "two")
    assert json.loads((tmp_path / "two" / "sample_config.json").read_text())["world_size"] == 2
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(one[0], two[0])
    sharded = load_samples(tmp_path / "sharded")
    assert len(list((tmp_path / "sharded").glob("samples-*-of-00004.npz"))) == 4
    np.testing.assert_array_equal(one[1], sharded[1])
    np.testing.assert_array_equal(one[0], sharded[0])

    trainer = L.Trainer(devices=1, callbacks=[_metrics_callback(evaluator)], **TRAINER_ARGS)
    single = trainer.validate(_model(), DataLoader(_val_data(), batch_size=4), verbose=False)[0]
    double = json.loads((tmp_path / "metrics.json").read_text())
    # Each rank saw half the real data and generated half the samples; the sums make them whole.
    assert double["gen/fd"] == pytest.approx(single["gen/fd"], rel=1e-4)
    assert double["gen/acc"] == pytest.approx(single["gen/acc"]) and single["gen/acc"] > 0.5
