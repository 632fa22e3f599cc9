"""The base LightningModule of every registered model."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L


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

    def save_hyperparameters(self, *args, **kwargs) -> None:  # noqa: D102 - same as Lightning's
        ignore = list(kwargs.pop("ignore", None) or []) + list(self.hparams_ignore)
        super().save_hyperparameters(*args, ignore=ignore, frame=kwargs.pop("frame", None) or _caller_frame(), **kwargs)


def _caller_frame():
    import inspect

    # Lightning reads the constructor's arguments from the calling frame; skip our wrapper.
    return inspect.currentframe().f_back.f_back
