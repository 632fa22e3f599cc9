"""SampleGrid: a picture of generated samples (one row per class) every N epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from framework.callbacks.common import generate_share, require_generator, run_before_weight_averaging
from framework.errors import ConfigError
from framework.generative.output import SampleRequests, render_samples
from framework.io import write_atomic
from registry import register


@register("callback", "sample_grid")
class SampleGrid(L.Callback):
    """Every ``every_n_epochs`` epochs, generate ``num_per_class`` samples of each class and save a grid.

    The grid (one row per class; a scatter plot for 2-D vector data) is written to
    ``<log_dir>/samples/epoch=<epoch>.png`` and, when a TensorBoard logger is attached,
    logged as the image ``samples``. It is made at the end of validation, with the weights
    validation uses (the EMA weights under ``EMAWeightAveraging``), or at the end of the
    training epoch when the run has no validation. The seed is fixed, so successive grids
    show the same noise and differ only by training. Only rank 0 generates.

    Args:
        every_n_epochs: Epochs between grids (the last epoch always gets one).
        num_per_class: Samples per class (columns).
        seed: Seed of the samples (as ``lightning sample --seed``).
        batch_size: Samples generated at once.
        options: Keyword arguments for the model's ``generate`` (sampler, steps, guidance, ...).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_per_class: int = 8,
        seed: int = 0,
        batch_size: int = 256,
        options: dict[str, Any] | None = None,
    ) -> None:
        if every_n_epochs < 1 or num_per_class < 1:
            raise ConfigError(
                f"SampleGrid needs every_n_epochs >= 1 and num_per_class >= 1, got {every_n_epochs}, {num_per_class}"
            )
        self.every_n_epochs = every_n_epochs
        self.num_per_class = num_per_class
        self.seed = seed
        self.batch_size = batch_size
        self.options = dict(options or {})
        self.paths: list[Path] = []
        self._last_epoch_done = -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_generator(pl_module, self)
        run_before_weight_averaging(trainer, self)

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        return (
            not trainer.sanity_checking
            and epoch != self._last_epoch_done
            and ((epoch + 1) % self.every_n_epochs == 0 or last)
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._due(trainer):
            self.make_grid(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation (if any) ran before this hook in this epoch and already made the grid.
        if self._due(trainer):
            self.make_grid(trainer, pl_module)

    def make_grid(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path | None:
        """Generate, save and log the grid of the current epoch (rank 0); return its path."""
        epoch = trainer.current_epoch
        self._last_epoch_done = epoch
        if trainer.global_rank != 0:
            return None
        requests = SampleRequests(pl_module.num_classes, self.num_per_class)
        was_training = pl_module.training
        pl_module.eval()
        try:
            parts = list(generate_share(pl_module, requests, self.seed, self.batch_size, self.options))
        finally:
            pl_module.train(was_training)
        labels = torch.cat([p[0] for p in parts]).cpu()
        images = torch.cat([p[1] for p in parts]).cpu()
        picture = render_samples(images, labels, requests.num_rows, columns=self.num_per_class)
        if picture is None:
            return None
        path = Path(trainer.log_dir or trainer.default_root_dir) / "samples" / f"epoch={epoch:04d}.png"
        write_atomic(path, lambda f: picture.save(f, format="PNG"))
        self.paths.append(path)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):  # TensorBoard's SummaryWriter
                experiment.add_image(
                    "samples", np.asarray(picture.convert("RGB")), trainer.global_step, dataformats="HWC"
                )
        return path
