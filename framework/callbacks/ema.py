"""Lightning's ``EMAWeightAveraging`` with a scheduled decay: EDM's half-life, or a warm-up.

Both are ``EMAWeightAveraging`` subclasses, so everything built around Lightning's EMA keeps
working: validation and the generation callbacks see the averaged weights, checkpoints hold
them as ``state_dict`` (the live weights under ``current_model_state``), ``lightning sample``
and ``load_from_checkpoint`` use them, and resuming restores the average. Only the decay of
each update changes; the schedules are the pure functions of :mod:`framework.generative.ema`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
from lightning.pytorch.utilities.data import extract_batch_size
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

from framework.errors import ConfigError
from framework.generative.ema import halflife_decay, warmup_decay
from registry import register

__all__ = ["HalfLifeEMA", "ScheduledEMA", "WarmupEMA"]


class ScheduledEMA(EMAWeightAveraging, ABC):
    """``EMAWeightAveraging`` whose decay is recomputed before every update by :meth:`decay_for`.

    It counts the images trained on from the batches it sees: the local batch size times the
    number of devices, summed over the micro-batches of an optimizer step (gradient
    accumulation), so the global batch comes from the run itself. The counts are part of the
    callback's checkpoint state. Updates follow optimizer steps only (no epoch-end updates).

    Args:
        device: Where the averaged model lives (default: the model's device).
        use_buffers: Average the buffers too (Lightning's default), else copy them.
        update_every_n_steps: Update after every n-th optimizer step.
        update_starting_at_step: First optimizer step (0-based) that updates the average.
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
    ) -> None:
        if update_every_n_steps < 1:
            raise ConfigError(f"update_every_n_steps must be >= 1, got {update_every_n_steps}")
        # EMAWeightAveraging.__init__ bakes one fixed decay into an avg_fn; the decay here changes
        # with every update, so the WeightAveraging base gets this class's multi_avg_fn instead
        # and the step options EMAWeightAveraging.should_update reads are set here.
        WeightAveraging.__init__(self, device=device, use_buffers=use_buffers, multi_avg_fn=self._average)
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = None
        #: Images trained on (all devices) in completed optimizer steps.
        self.nimg = 0
        #: Updates of the average so far (the first one copies the weights).
        self.num_updates = 0
        #: The decay of the latest update.
        self.decay = 0.0
        self._next_decay = 0.0
        self._nimg_at_update = 0
        self._pending_nimg = 0
        self._counted_step = 0
        self._updating = False

    @abstractmethod
    def decay_for(self, nimg: int, step_nimg: int, num_updates: int) -> float:
        """Decay of the next update.

        Args:
            nimg: Images trained on before the optimizer step that triggers the update.
            step_nimg: Images trained on since the previous update.
            num_updates: Index of this update, from 1.
        """

    @torch.no_grad()
    def _average(self, averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor | int) -> None:
        get_ema_multi_avg_fn(self._next_decay)(averaged, current, num_averaged)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        due = step_idx is not None and super().should_update(step_idx=step_idx)
        self._updating = due
        return due

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._counted_step = trainer.global_step
        self._pending_nimg = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._pending_nimg += extract_batch_size(batch) * trainer.world_size
        if trainer.global_step == self._counted_step:
            return  # gradients still accumulating: no optimizer step ended with this batch
        self._counted_step = trainer.global_step
        step_nimg, self._pending_nimg = self._pending_nimg, 0
        self._next_decay = self.decay_for(self.nimg, self.nimg + step_nimg - self._nimg_at_update, self.num_updates + 1)
        self._updating = False
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.nimg += step_nimg
        if self._updating:
            self.num_updates += 1
            self._nimg_at_update = self.nimg
            self.decay = self._next_decay if self.num_updates > 1 else 0.0  # the first update copies

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "nimg": self.nimg,
            "num_updates": self.num_updates,
            "nimg_at_update": self._nimg_at_update,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.nimg = int(state_dict.get("nimg", 0))
        self.num_updates = int(state_dict.get("num_updates", 0))
        self._nimg_at_update = int(state_dict.get("nimg_at_update", self.nimg))


@register("callback", "halflife_ema", aliases=("edm_ema",))
class HalfLifeEMA(ScheduledEMA):
    """EMA with EDM's half-life in images and its ramp-up (Karras et al. 2022; ``training_loop.py``).

    ``decay = 0.5 ** (images since the last update / halflife)`` with
    ``halflife = min(halflife_kimg * 1000, rampup_ratio * images trained on)``: early in
    training the average forgets quickly, later it spans ``halflife_kimg`` thousand images
    whatever the batch size. EDM CIFAR-10: 500 kimg (``--ema=0.5`` Mimg), ratio 0.05.

    Args:
        halflife_kimg: Half-life of the average in thousands of training images.
        rampup_ratio: The half-life is at most this fraction of the images trained on so far;
            None for none (then the average starts from the weights after the first step).
        device: Where the averaged model lives (default: the model's device).
        use_buffers: Average the buffers too (Lightning's default), else copy them.
        update_every_n_steps: Update after every n-th optimizer step (the decay covers the
            images of all of them).
        update_starting_at_step: First optimizer step (0-based) that updates the average.
    """

    def __init__(
        self,
        halflife_kimg: float = 500.0,
        rampup_ratio: float | None = 0.05,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
    ) -> None:
        if halflife_kimg <= 0 or (rampup_ratio is not None and rampup_ratio <= 0):
            raise ConfigError(f"halflife_kimg and rampup_ratio must be > 0, got {halflife_kimg}, {rampup_ratio}")
        super().__init__(device, use_buffers, update_every_n_steps, update_starting_at_step)
        self.halflife_kimg, self.rampup_ratio = float(halflife_kimg), rampup_ratio

    def decay_for(self, nimg: int, step_nimg: int, num_updates: int) -> float:
        return halflife_decay(nimg, step_nimg, self.halflife_kimg, self.rampup_ratio)


@register("callback", "warmup_ema")
class WarmupEMA(ScheduledEMA):
    """EMA with a constant decay warmed up as ``min(decay, (1 + t) / (10 + t))`` at update ``t``.

    TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` and score_sde_pytorch's
    ``ExponentialMovingAverage`` (its CIFAR-10 runs: decay 0.9999). Lightning's
    ``EMAWeightAveraging`` has no warm-up: a decay close to 1 there keeps the initial weights
    for about ``1 / (1 - decay)`` steps, so short runs need a decay picked for their length.
    The first update copies the weights (as every ``EMAWeightAveraging``).

    Args:
        decay: The decay once warmed up (reached after ``(10 decay - 1) / (1 - decay)`` updates).
        device: Where the averaged model lives (default: the model's device).
        use_buffers: Average the buffers too (Lightning's default), else copy them.
        update_every_n_steps: Update after every n-th optimizer step.
        update_starting_at_step: First optimizer step (0-based) that updates the average.
    """

    def __init__(
        self,
        decay: float = 0.999,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"decay must be in [0, 1), got {decay}")
        super().__init__(device, use_buffers, update_every_n_steps, update_starting_at_step)
        self.target_decay = float(decay)

    def decay_for(self, nimg: int, step_nimg: int, num_updates: int) -> float:
        return warmup_decay(self.target_decay, num_updates)
