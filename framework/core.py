"""The base LightningModule of every registered model."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch


class ClasszooModule(L.LightningModule):
    """Base of the registered models: knows the number of classes and the data shape.

    The CLI links both from the DataModule (``data.num_classes``, ``data.data_shape``), so
    recipes never repeat them; in a notebook pass them yourself or keep the digits defaults.

    Args:
        num_classes: Number of classes of the data (0 for an unconditional generator).
        data_shape: Shape of one sample, ``(C, H, W)`` for images or ``(D,)`` for vectors.
    """

    # Constructor arguments that are not plain data (callables, modules) and so stay out of
    # ``hparams``: checkpoints must pickle without them.
    hparams_ignore: tuple[str, ...] = ("optimizer", "scheduler")

    def __init__(self, num_classes: int = 10, data_shape: Sequence[int] = (1, 8, 8)) -> None:
        super().__init__()
        if num_classes < 0:
            from framework.errors import ConfigError

            raise ConfigError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = int(num_classes)
        self.data_shape = tuple(int(s) for s in data_shape)

    def on_fit_start(self) -> None:
        # Adam's second moments of zero-initialised layers decay into subnormal floats, and
        # subnormal arithmetic is ~30x slower on x86 CPUs (measured on a digits U-Net: 15 ms
        # vs 430 ms per step). Flushing them to zero changes nothing above 1e-38.
        # Subclasses that override this hook call super().on_fit_start().
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)

    # -- exact resume -------------------------------------------------------------------------
    # Lightning checkpoints do not hold the random number generators, so a resumed run would
    # shuffle and drop out differently from an uninterrupted one. The states are saved with the
    # checkpoint and restored when the first training epoch after loading starts. (Our
    # DataModules' loaders shuffle by (seed, epoch) and seed workers from their own
    # generator, so the sanity check and the loaders never draw from these.)
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # plain types and tensors only: Lightning loads checkpoints with weights_only=True
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_states_to_restore = checkpoint.get("rng_states")

    def on_train_epoch_start(self) -> None:
        states = getattr(self, "_rng_states_to_restore", None)
        if states:
            torch.set_rng_state(states["torch"])
            if states["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])
            np.random.set_state(_numpy_state_from_plain(states["numpy"]))
            random.setstate(states["python"])
        self._rng_states_to_restore = None

    def save_hyperparameters(self, *args, **kwargs) -> None:  # noqa: D102 - same as Lightning's
        ignore = list(kwargs.pop("ignore", None) or []) + list(self.hparams_ignore)
        super().save_hyperparameters(*args, ignore=ignore, frame=kwargs.pop("frame", None) or _caller_frame(), **kwargs)


def _numpy_state_to_plain(state: tuple) -> list:
    name, key, pos, has_gauss, cached = state
    return [name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _numpy_state_from_plain(state: list) -> tuple:
    name, key, pos, has_gauss, cached = state
    return name, key.numpy().astype(np.uint32), pos, has_gauss, cached


def _caller_frame():
    import inspect

    # Lightning reads the constructor's arguments from the calling frame; skip our wrapper.
    return inspect.currentframe().f_back.f_back
