"""Scheduled EMA: the decay schedules (EDM's half-life, the warm-up) and the callbacks in fits."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, WeightAveraging
from torch.utils.data import DataLoader, TensorDataset

from framework.callbacks import HalfLifeEMA, SampleGrid, WarmupEMA
from framework.cli import resolve_class_path
from framework.errors import ConfigError
from framework.generative.ema import halflife_decay, warmup_decay
from framework.generative.output import load_samples, sample_seeds
from framework.trainer import ClasszooTrainer

sys.path.insert(0, str(Path(__file__).parent))
from _toy_generator import ToyGenerator


# -- the schedules ------------------------------------------------------------------------------
def test_halflife_decay_is_edms_formula():
    # EDM CIFAR-10: batch 512, half-life 500 kimg, ramp-up 0.05.
    assert halflife_decay(0, 512) == 0.0  # the first update copies
    assert halflife_decay(1_000_000, 512) == pytest.approx(0.5 ** (512 / 50_000), rel=1e-12)  # ramping: 5% of 1 Mimg
    assert halflife_decay(20_000_000, 512) == pytest.approx(0.5 ** (512 / 500_000), rel=1e-12)
    assert halflife_decay(20_000_000, 512) == pytest.approx(0.9993, abs=1e-5)  # the constant the recipe used before
    assert halflife_decay(0, 512, rampup_ratio=None) == pytest.approx(0.5 ** (512 / 500_000), rel=1e-12)
    # Updating every 4 steps: one decay over 4 batches equals 4 single-batch decays.
    assert halflife_decay(20_000_000, 4 * 512) == pytest.approx(halflife_decay(20_000_000, 512) ** 4, rel=1e-12)
    with pytest.raises(ConfigError):
        halflife_decay(-1, 512)


def test_warmup_decay_is_tensorflows_and_score_sdes():
    assert warmup_decay(0.9999, 1) == pytest.approx(2 / 11)
    assert warmup_decay(0.9999, 100) == pytest.approx(101 / 110)
    assert warmup_decay(0.9999, 10**6) == 0.9999
    assert warmup_decay(0.9, 0) == 0.1
    with pytest.raises(ConfigError):
        warmup_decay(1.5, 3)


# -- the callbacks in a fit ---------------------------------------------------------------------
def _data(n: int = 30) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    return TensorDataset((y.float() - 1).view(-1, 1, 1, 1) * 0.6 + 0.2 * torch.randn(n, 1, 4, 4, generator=g), y)


def _trainer(**kw) -> ClasszooTrainer:
    args = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0}  # fmt: skip
    return ClasszooTrainer(**(args | kw))


class StepWeights(L.Callback):
    """The weights after every optimizer step."""

    def __init__(self):
        self.weights, self._step = [], 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self._step:
            self._step = trainer.global_step
            self.weights.append(pl_module.means.detach().clone())


# 30 images in batches of 8, 8, 8, 6; two batches per optimizer step: steps of 16 and 14 images.
# Images before each step: 0, 16, 30, 46.
CASES = {
    # Half-life 20 images, ramp-up 0.5: half-lives 0, min(20, 8), min(20, 15), min(20, 23).
    "halflife": (lambda: HalfLifeEMA(halflife_kimg=0.02, rampup_ratio=0.5), [0, 1, 2, 3],
                 [0.5 ** (14 / 8), 0.5 ** (16 / 15), 0.5 ** (14 / 20)]),
    # Every second step: the second update covers 30 images, half-life min(20, 15).
    "halflife_every_2": (lambda: HalfLifeEMA(halflife_kimg=0.02, rampup_ratio=0.5, update_every_n_steps=2), [0, 2],
                         [0.5 ** (30 / 15)]),
    # Warm-up (1 + t) / (10 + t) for t = 2, 3, 4 capped at 0.3.
    "warmup": (lambda: WarmupEMA(decay=0.3), [0, 1, 2, 3], [3 / 12, 0.3, 0.3]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_average_follows_the_schedule(case):
    make, updated_steps, decays = CASES[case]
    torch.manual_seed(0)
    model, ema, record = ToyGenerator(), make(), StepWeights()
    trainer = _trainer(max_epochs=2, accumulate_grad_batches=2, callbacks=[ema, record])
    trainer.fit(model, DataLoader(_data(), batch_size=8))
    assert trainer.global_step == 4 and ema.nimg == 60 and ema.num_updates == len(updated_steps)
    weights = [record.weights[k] for k in updated_steps]
    expected = weights[0]  # the first update copies
    for w, d in zip(weights[1:], decays):
        expected = d * expected + (1 - d) * w
    assert ema.decay == pytest.approx(decays[-1])
    torch.testing.assert_close(model.means.detach(), expected)  # on_train_end copies the average in
    assert not torch.allclose(expected, record.weights[-1], atol=1e-4)  # the test can tell


class Ramp(L.LightningModule):
    """A weight on a known trajectory: SGD with lr 1 on -<c, w> moves w from 0 by c per step, w_k = k c."""

    C = torch.tensor([1.0, -2.0])

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def training_step(self, batch, batch_idx):
        return -(self.w * self.C).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def _ema_of_ramp(decays: dict[int, float | None], steps: int) -> torch.Tensor:
    """The average of w_1 .. w_steps (w_k = k c) updated at the steps in ``decays``; None: the first update copies."""
    average = torch.zeros(2)  # before any update: the initial weights
    for k in range(1, steps + 1):
        if k in decays:
            d = decays[k]
            average = k * Ramp.C if d is None else d * average + (1 - d) * k * Ramp.C
    return average


# Batches of 8 images, one optimizer step each: 8 (k - 1) images trained on before step k.
RAMP_CASES = {
    # EDM's half-life, 20 images, ramped up as 0.5 x images so far: half-lives 4, 8, 12, 16, 20 before steps 2..6.
    "halflife": (lambda: HalfLifeEMA(halflife_kimg=0.02, rampup_ratio=0.5),
                 {1: None, **{k: 0.5 ** (8 / min(20, 0.5 * 8 * (k - 1))) for k in range(2, 7)}}),
    # Warm-up min(0.35, (1 + t) / (10 + t)) at update t = k: 3/12, 4/13, then capped at 0.35.
    "warmup": (lambda: WarmupEMA(decay=0.35), {1: None, 2: 3 / 12, 3: 4 / 13, 4: 0.35, 5: 0.35, 6: 0.35}),
    # Lightning's EMAWeightAveraging as the diffusion recipes use it, here from step index 2 (the 3rd step).
    "lightning_ema": (lambda: EMAWeightAveraging(decay=0.5, update_starting_at_step=2),
                      {3: None, 4: 0.5, 5: 0.5, 6: 0.5}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(RAMP_CASES))
def test_the_average_of_a_known_trajectory_is_the_hand_computed_one(case):
    """After 6 steps the average equals the schedule's average of w_k = k c; an EMA that never updates holds 0."""
    make, decays = RAMP_CASES[case]
    model, ema = Ramp(), make()
    seen = []

    class Averages(L.Callback):  # the average after every step (the EMA callback runs first)
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(ema._average_model.module.w.detach().clone())

    trainer = _trainer(max_epochs=1, callbacks=[ema, Averages()])
    trainer.fit(model, DataLoader(TensorDataset(torch.zeros(48, 1)), batch_size=8))
    assert trainer.global_step == 6
    for k in range(1, 7):
        torch.testing.assert_close(seen[k - 1], _ema_of_ramp(decays, k), rtol=1e-6, atol=1e-6)
    expected = _ema_of_ramp(decays, 6)
    torch.testing.assert_close(model.w.detach(), expected, rtol=1e-6, atol=1e-6)  # copied in at the end of fit
    assert not torch.allclose(expected, 6 * Ramp.C, atol=0.1) and not torch.allclose(expected, torch.zeros(2), atol=0.1)


def test_validation_grids_checkpoints_sampling_and_resume_use_the_average(tmp_path):
    """What relies on EMAWeightAveraging works with the subclass; resuming continues the schedule."""

    class RecordingGrid(SampleGrid):
        def make_grid(self, trainer, pl_module):
            self.seen = pl_module.means.detach().clone()
            return super().make_grid(trainer, pl_module)

    def run(max_epochs, ckpt_path=None):
        torch.manual_seed(0)
        model, ema = ToyGenerator(), HalfLifeEMA(halflife_kimg=0.02, rampup_ratio=0.5)
        grid = RecordingGrid(every_n_epochs=1, num_per_class=2)
        ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
        trainer = _trainer(max_epochs=max_epochs, callbacks=[ema, grid, ckpt], enable_checkpointing=True,
                           limit_val_batches=1, default_root_dir=tmp_path)  # fmt: skip
        data = DataLoader(_data(), batch_size=8)
        trainer.fit(model, data, DataLoader(_data(6), batch_size=6), ckpt_path=ckpt_path)
        return model, ema, grid, ckpt, trainer

    _, ema, grid, ckpt, trainer = run(2)
    assert isinstance(ema, WeightAveraging)
    assert trainer.callbacks.index(grid) < trainer.callbacks.index(ema)  # the grid runs before EMA swaps out
    average = ema._average_model.module.means.detach().clone()
    torch.testing.assert_close(grid.seen, average)  # the last grid saw the average
    saved = torch.load(ckpt.last_model_path, weights_only=False)
    torch.testing.assert_close(saved["state_dict"]["means"], average)
    assert not torch.allclose(saved["current_model_state"]["means"], average, atol=1e-4)
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("HalfLifeEMA"))
    assert state["nimg"] == 60 and state["num_updates"] == 8

    # Sampling from the checkpoint uses the average, with or without the callback in the trainer.
    labels = torch.arange(6) // 2
    with torch.no_grad():
        expected = ToyGenerator().requires_grad_(False)
        expected.means.copy_(average)
        expected = expected.generate(labels, sample_seeds(torch.arange(6), 0)).numpy()
    for callbacks, out in (([HalfLifeEMA()], "a"), ([], "b")):
        sampler = _trainer(callbacks=callbacks)
        path = sampler.sample(ToyGenerator(), ckpt_path=ckpt.last_model_path, num_per_class=2, output=str(tmp_path / out))
        np.testing.assert_allclose(load_samples(path)[0], expected, atol=1e-6)

    # Resuming for a third epoch gives what three epochs in one go give.
    resumed = run(3, ckpt_path=ckpt.last_model_path)
    straight = run(3)
    assert resumed[1].nimg == straight[1].nimg == 90 and resumed[1].num_updates == 12
    torch.testing.assert_close(resumed[0].means, straight[0].means)


def test_names_and_bad_input():
    assert resolve_class_path("halflife_ema", None) == "framework.callbacks.ema.HalfLifeEMA"
    assert resolve_class_path("edm_ema", None) == "framework.callbacks.ema.HalfLifeEMA"
    assert resolve_class_path("warmup_ema", None) == "framework.callbacks.ema.WarmupEMA"
    for bad in (lambda: HalfLifeEMA(halflife_kimg=0), lambda: HalfLifeEMA(rampup_ratio=-1),
                lambda: WarmupEMA(decay=1.0), lambda: WarmupEMA(update_every_n_steps=0)):  # fmt: skip
        with pytest.raises(ConfigError):
            bad()
    assert math.isclose(HalfLifeEMA().decay_for(20_000_000, 512, 5), 0.5 ** (512 / 500_000))
