"""The baseline image/vector classifier, also the evaluator that scores generated samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

import registry
from framework.building import create
from framework.core import ClasszooModule
from framework.errors import ConfigError


def configure_optimizer(
    params, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None, interval: str = "epoch"
) -> Any:
    """Lightning's ``configure_optimizers`` return value for one optimizer and an optional scheduler."""
    opt = optimizer(params)
    if scheduler is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler(opt), "interval": interval}}


@registry.register("model", "classifier")
class Classifier(ClasszooModule):
    """Cross-entropy classifier: any registered backbone net plus a linear head.

    Subclasses change the objective by overriding :meth:`loss`; :meth:`features` returns
    the penultimate embedding (used by the evaluation metrics and by continual methods).

    Args:
        num_classes: Number of classes (linked from the DataModule by the CLI).
        data_shape: Shape of one input (linked from the DataModule by the CLI).
        net: Registry name of the backbone (``lightning list net``), e.g. ``cnn``, ``mlp``,
            ``timm/resnet18``.
        net_args: Keyword arguments of the backbone.
        label_smoothing: Cross-entropy label smoothing.
        optimizer: Optimizer factory (``class_path`` + ``init_args`` in YAML).
        scheduler: Optional learning-rate scheduler factory, stepped every epoch.
    """

    def __init__(
        self,
        num_classes: int = 10,
        data_shape: Sequence[int] = (1, 8, 8),
        net: str = "cnn",
        net_args: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = lambda p: torch.optim.AdamW(p, lr=2e-3, weight_decay=1e-4),
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, data_shape=data_shape)
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.save_hyperparameters()
        self.backbone = create("net", net, data_shape=self.data_shape, **(net_args or {}))
        self.head = nn.Linear(self.backbone.num_features, num_classes)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.label_smoothing = label_smoothing
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def features(self, x: Tensor) -> Tensor:
        """Penultimate embedding, (B, num_features)."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits, (B, num_classes)."""
        return self.head(self.features(x))

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The training objective; override to try another one."""
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, metric: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self(x)
        metric(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{stage}/acc", metric, prog_bar=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: tuple[Tensor, Tensor] | Tensor, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).argmax(dim=1)

    def configure_optimizers(self) -> Any:
        return configure_optimizer(self.parameters(), self.optimizer, self.scheduler)
