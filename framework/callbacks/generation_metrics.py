"""GenerationMetrics: Fréchet distance and evaluator accuracy of generated samples at validation end."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy

from framework.callbacks.common import generate_share, require_generator, run_before_weight_averaging
from framework.errors import ConfigError
from framework.generative.output import SampleRequests
from framework.metrics.generation import build_extractor, fid_metric, kid_metric
from registry import register


@register("callback", "generation_metrics")
class GenerationMetrics(L.Callback):
    """At the end of validation, generate samples of every class and log how good they are.

    Logs ``<prefix>fd``: the Fréchet distance between generated samples and the real
    validation data in the feature space of a registered extractor (the evaluator
    classifier's penultimate layer by default; ``inception`` gives the usual FID),
    ``<prefix>acc``: the extractor's classification accuracy on the generated samples
    against the labels they were generated for (extractors that classify, conditional
    models), and ``<prefix>kid`` when ``kid_subset_size`` is set.

    Real features come from the validation batches of the first validation epoch and are
    kept (real statistics do not change). Under DDP each rank generates its share of the
    samples and sees its share of the validation data; torchmetrics sums the statistics
    over ranks. Samples are generated with the validation weights (EMA under
    ``EMAWeightAveraging``) and seeded per sample index, so successive epochs use the same
    noise.

    Args:
        feature: Registry name of the feature extractor (``lightning list feature``).
        feature_args: Its arguments, e.g. ``{checkpoint: 'outputs/evaluator/lightning_logs/version_*/checkpoints/digits.ckpt'}`` (a pattern: the newest match).
        num_per_class: Generated samples per class.
        every_n_epochs: Epochs between evaluations.
        seed: Seed of the generated samples.
        batch_size: Samples generated at once on each device.
        options: Keyword arguments for the model's ``generate`` (sampler, steps, guidance, ...).
        kid_subset_size: Subset size of the kernel inception distance; None skips KID.
        prefix: Prefix of the logged names.
    """

    def __init__(
        self,
        feature: str = "classifier",
        feature_args: dict[str, Any] | None = None,
        num_per_class: int = 50,
        every_n_epochs: int = 1,
        seed: int = 0,
        batch_size: int = 256,
        options: dict[str, Any] | None = None,
        kid_subset_size: int | None = None,
        prefix: str = "gen/",
    ) -> None:
        if num_per_class < 1 or every_n_epochs < 1:
            raise ConfigError(
                f"GenerationMetrics needs num_per_class >= 1 and every_n_epochs >= 1, got {num_per_class}, {every_n_epochs}"
            )
        self.extractor = build_extractor(feature, **(feature_args or {}))
        self.num_per_class = num_per_class
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.batch_size = batch_size
        self.options = dict(options or {})
        self.prefix = prefix
        self.fid = fid_metric(self.extractor)
        self.kid = kid_metric(self.extractor, subset_size=kid_subset_size) if kid_subset_size else None
        self.accuracy: MulticlassAccuracy | None = None
        self._real_complete = False
        self._feeding_real = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_generator(pl_module, self)
        run_before_weight_averaging(trainer, self)
        num_classes = pl_module.num_classes
        if num_classes >= 2 and hasattr(self.extractor, "features_and_logits"):
            classes = getattr(self.extractor, "num_classes", None)
            if classes is not None and classes != num_classes:
                raise ConfigError(f"the evaluator knows {classes} classes but the model generates {num_classes}")
            self.accuracy = MulticlassAccuracy(num_classes, average="micro")

    def _metrics(self):
        return [m for m in (self.fid, self.kid, self.accuracy) if m is not None]

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for metric in self._metrics():
            metric.to(pl_module.device)
        self.extractor.to(pl_module.device)
        self._feeding_real = not self._real_complete and not trainer.sanity_checking

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._feeding_real or dataloader_idx != 0:
            return
        if not isinstance(batch, (tuple, list)) or not torch.is_tensor(batch[0]):
            raise ConfigError("GenerationMetrics needs validation batches of the form (images, labels)")
        with torch.inference_mode(False), torch.no_grad():
            real = batch[0].clone().float()
            self.fid.update(real, real=True)
            if self.kid is not None:
                self.kid.update(real, real=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self._feeding_real:
            self._real_complete, self._feeding_real = True, False
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        for name, value in self.compute(trainer, pl_module).items():
            # compute() already reduced over ranks: every rank holds the same value.
            pl_module.log(self.prefix + name, value, sync_dist=False)

    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Generate this rank's share, update the metrics and return their (all-rank) values."""
        # Outside inference mode throughout: metric states reset inside it could not be updated later.
        with torch.inference_mode(False), torch.no_grad():
            for metric in self._metrics():
                metric.reset()  # FID and KID keep their real statistics
            requests = SampleRequests(pl_module.num_classes, self.num_per_class)
            share = generate_share(
                pl_module, requests, self.seed, self.batch_size, self.options, trainer.global_rank, trainer.world_size
            )
            for labels, images in share:
                self.fid.update(images, real=False)
                if self.kid is not None:
                    self.kid.update(images, real=False)
                if self.accuracy is not None:
                    _, logits = self.extractor.features_and_logits(images)
                    self.accuracy.update(logits, labels)
            values = {"fd": float(self.fid.compute())}
            if self.kid is not None:
                values["kid"] = float(self.kid.compute()[0])
            if self.accuracy is not None:
                values["acc"] = float(self.accuracy.compute())
        return values
