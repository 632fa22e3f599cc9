"""What the generation callbacks share: running before weight averaging, generating a share of requests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor

from framework.errors import ConfigError
from framework.generative.output import SampleRequests, sample_seeds


def require_generator(pl_module: L.LightningModule, callback: L.Callback) -> None:
    """ConfigError unless ``pl_module`` can ``generate`` (a GenerativeModule)."""
    from framework.generative.base import GenerativeModule

    if not isinstance(pl_module, GenerativeModule):
        raise ConfigError(f"{type(callback).__name__} needs a generative model, got {type(pl_module).__name__}")


def run_before_weight_averaging(trainer: L.Trainer, callback: L.Callback) -> None:
    """Put ``callback`` ahead of any weight-averaging callback in ``trainer.callbacks``.

    Lightning's ``WeightAveraging`` swaps the averaged (EMA) weights in at
    ``on_validation_epoch_start`` and out again at ``on_validation_epoch_end``, calling the
    callbacks in list order; a callback that generates at ``on_validation_epoch_end`` must
    come first to see the averaged weights. A new list is assigned (not an in-place
    edit) because Lightning may be iterating over the old one when this is called.
    """
    callbacks = list(trainer.callbacks)
    averaging = [i for i, c in enumerate(callbacks) if isinstance(c, WeightAveraging)]
    if not averaging or callback not in callbacks or callbacks.index(callback) < averaging[0]:
        return
    callbacks.remove(callback)
    callbacks.insert(averaging[0], callback)
    trainer.callbacks = callbacks


def generate_share(
    pl_module: L.LightningModule,
    requests: SampleRequests,
    seed: int,
    batch_size: int,
    options: dict[str, Any],
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(labels, images)`` batches of this rank's share of ``requests``, seeded per sample index.

    Runs outside inference mode (classifier guidance differentiates) and without autograd.
    """
    device = pl_module.device
    with torch.inference_mode(False), torch.no_grad():
        for index, labels in requests.batches(batch_size, rank, world_size):
            labels = labels.to(device)
            images = pl_module.generate(labels, sample_seeds(index, seed), **options)
            yield labels, images.detach().float().clamp(-1, 1)
