"""The continual steps' learning-rate schedule: per epoch (default) or per optimiser step."""

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from framework.continual.scenario import ClassIncremental
from framework.data.digits import DigitsDataModule
from framework.errors import ConfigError
from registry import create

LR = 0.1
NET = {"net": "cnn", "net_args": {"channels": [8], "dropout": 0.0}}


class RecordLR(Callback):
    """The learning rate each batch trains with, and (step, step_epoch) of that batch."""

    def __init__(self):
        self.rows = []  # (step, step_epoch, lr)
        self.step_end_lr = {}  # step -> the scheduler's lr after the step's last optimiser step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.rows.append((module.step, module.step_epoch, trainer.optimizers[0].param_groups[0]["lr"]))

    def on_train_epoch_end(self, trainer, module):
        # Before the module's own epoch-end hook moves to the next step (callbacks run first).
        if module.step_epoch + 1 == module.step_epochs(module.step) and trainer.lr_scheduler_configs:
            self.step_end_lr[module.step] = trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0]


def run(root, callbacks=(), ckpt_path=None, **kwargs):
    L.seed_everything(0)
    model = create("model", "finetune", num_classes=10, data_shape=(1, 8, 8), base_epochs=2, epochs=2, **NET,
                   base_optimizer=lambda p: torch.optim.SGD(p, lr=LR), optimizer=lambda p: torch.optim.SGD(p, lr=LR),
                   **kwargs)  # fmt: skip
    data = ClassIncremental(DigitsDataModule(), base_classes=4, increment=3, seed=1993, batch_size=64)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=bool(ckpt_path is None and callbacks),
                        callbacks=list(callbacks), enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(root))  # fmt: skip
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model, data


def cosine(t, periods):
    return LR * (1 + math.cos(math.pi * t / periods)) / 2


def test_step_interval_anneals_over_each_steps_batches(tmp_path):
    record = RecordLR()
    model, data = run(tmp_path, callbacks=[record], base_scheduler_interval="step", scheduler_interval="step")
    assert model.done
    for step in range(data.num_steps):
        lrs = [lr for s, _, lr in record.rows if s == step]
        # batches per epoch of this step, counted independently from the step's training indices
        batches = math.ceil(len(data.train_indices(step)) / 64)
        assert len(lrs) == 2 * batches
        expected = [cosine(t, 2 * batches) for t in range(2 * batches)]
        assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
        assert lrs[-1] < 0.02 * LR  # the last batch of the step trains at ~0
        assert record.step_end_lr[step] == pytest.approx(0.0, abs=1e-12)
    # the steps differ in size (4 base classes, then 3, 3): each gets its own T_max
    assert len({math.ceil(len(data.train_indices(s)) / 64) for s in range(data.num_steps)}) > 1


@pytest.mark.parametrize("later", ["epoch", "step"])
def test_epoch_interval_is_the_default_and_steps_once_per_epoch(tmp_path, later):
    """The default on every step; with ``scheduler_interval: step`` alone, on the base step."""
    record = RecordLR()
    model, data = run(tmp_path, callbacks=[record], **({"scheduler_interval": "step"} if later == "step" else {}))
    assert model.base_scheduler_interval == "epoch" and model.scheduler_interval == later
    for step in range(data.num_steps if later == "epoch" else 1):
        for epoch in range(2):
            lrs = [lr for s, e, lr in record.rows if (s, e) == (step, epoch)]
            assert lrs and lrs == pytest.approx([cosine(epoch, 2)] * len(lrs))  # one lr per epoch: 0.1 then 0.05


def test_step_interval_resumes_mid_step_on_the_same_schedule(tmp_path):
    record = RecordLR()
    ckpts = ModelCheckpoint(dirpath=tmp_path / "ck", filename="{epoch}", every_n_epochs=1, save_top_k=-1)
    full, _ = run(tmp_path / "full", callbacks=[record, ckpts], scheduler_interval="step")
    assert full.done and len({lr for s, _, lr in record.rows if s == 1}) > 2  # later steps anneal per batch
    # epoch index 2 is the first epoch of step 1 (2 base epochs): resume in the middle of step 1
    again = RecordLR()
    model, _ = run(tmp_path / "again", callbacks=[again], ckpt_path=tmp_path / "ck" / "epoch=2.ckpt",
                   scheduler_interval="step")  # fmt: skip
    assert model.done and again.rows[0][:2] == (1, 1)
    tail = [row for row in record.rows if row[:2] >= (1, 1)]
    assert [r[:2] for r in again.rows] == [r[:2] for r in tail]
    assert [r[2] for r in again.rows] == pytest.approx([r[2] for r in tail], rel=1e-9)
    assert again.rows[-1][2] < 0.02 * LR


def test_bad_interval_is_a_config_error():
    for name in ("base_scheduler_interval", "scheduler_interval"):
        with pytest.raises(ConfigError, match=name):
            create("model", "finetune", num_classes=10, data_shape=(1, 8, 8), **{name: "batch"}, **NET)
