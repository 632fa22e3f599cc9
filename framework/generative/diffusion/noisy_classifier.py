"""``noisy_classifier``: a classifier of noisy samples ``x0 + sigma n`` for classifier guidance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

import registry
from framework.errors import ConfigError
from framework.models.classifier import Classifier

__all__ = ["FlowTimeClassifier", "NoisyClassifier"]


@registry.register("model", "noisy_classifier")
class NoisyClassifier(Classifier):
    """A registered classifier trained on noised inputs, ``p(y | x0 + sigma n, sigma)``.

    The noise level enters as EDM's input scaling ``x / sqrt(sigma^2 + sigma_data^2)`` and
    one extra input channel (or feature) holding ``ln(sigma) / 4``, so any registered backbone
    becomes noise-aware. ``sigma`` is drawn log-uniformly from ``[sigma_min, sigma_max]`` in
    training (the range the samplers visit). ``forward(x, sigma)`` takes the diffusion
    samplers' unscaled state ``x_hat = x0 + sigma n``; ``sigma`` None means clean inputs.

    Args:
        num_classes: Number of classes (linked from the data).
        data_shape: Shape of one clean sample (linked from the data).
        net: Registry name of the backbone (``cnn``, ``mlp``, ...).
        net_args: Keyword arguments of the backbone.
        label_smoothing: Cross-entropy label smoothing.
        sigma_min: Smallest training noise level (also used for "clean").
        sigma_max: Largest training noise level.
        sigma_data: Data std of the input scaling (EDM's 0.5).
        optimizer: Optimizer factory.
        scheduler: Optional learning-rate scheduler factory, stepped every epoch.
    """

    def __init__(
        self,
        num_classes: int = 10,
        data_shape: Sequence[int] = (1, 8, 8),
        net: str = "cnn",
        net_args: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        optimizer: OptimizerCallable = lambda p: torch.optim.AdamW(p, lr=2e-3, weight_decay=1e-4),
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if not 0 < sigma_min < sigma_max or sigma_data <= 0:
            raise ConfigError("noisy_classifier needs 0 < sigma_min < sigma_max and sigma_data > 0")
        shape = tuple(int(s) for s in data_shape)
        # One extra channel (images) or feature (vectors) carries the noise level.
        augmented = (shape[0] + 1, *shape[1:])
        super().__init__(num_classes, augmented, net, net_args, label_smoothing, optimizer, scheduler)
        self.save_hyperparameters()  # this class's arguments, not the augmented shape
        self.data_shape = shape
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)

    def _inputs(self, x: Tensor, sigma: Tensor | float | None) -> Tensor:
        dtype = self.head.weight.dtype
        x = x.to(dtype)
        sigma = torch.as_tensor(self.sigma_min if sigma is None else sigma, dtype=dtype, device=x.device)
        sigma = sigma.expand(x.shape[0]).reshape(-1, *([1] * (x.ndim - 1)))
        scaled = x / (sigma**2 + self.sigma_data**2).sqrt()
        level = (sigma.log() / 4).expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([scaled, level], dim=1)

    def features(self, x: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        """Penultimate embedding of ``x`` at noise level ``sigma`` (None: clean)."""
        return self.backbone(self._inputs(x, sigma))

    def forward(self, x: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        """Logits of ``x_hat = x0 + sigma n`` (B, num_classes)."""
        return self.head(self.features(x, sigma))

    def draw_sigmas(self, n: int, device: torch.device) -> Tensor:
        """Log-uniform training noise levels."""
        u = torch.rand(n, device=device)
        return (math.log(self.sigma_min) + u * (math.log(self.sigma_max) - math.log(self.sigma_min))).exp()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        sigma = self.draw_sigmas(len(x), x.device)
        logits = self(x + sigma.view(-1, *([1] * (x.ndim - 1))) * torch.randn_like(x), sigma)
        loss = self.loss(logits, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, metric) -> None:
        x, y = batch
        # Accuracy on clean inputs (the headline), loss on fixed noisy ones (comparable per epoch).
        logits = self(x)
        metric(logits, y)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            sigma = self.draw_sigmas(len(x), x.device)
            noisy = x + sigma.view(-1, *([1] * (x.ndim - 1))) * torch.randn_like(x)
        self.log(f"{stage}/loss", F.cross_entropy(self(noisy, sigma), y), sync_dist=True)
        self.log(f"{stage}/acc", metric, prog_bar=True)


class FlowTimeClassifier(nn.Module):
    """A :class:`NoisyClassifier` seen from a straight flow ``x_t = t x1 + (1 - t) x0`` (noise x0).

    ``forward(x_t, t)`` rescales to ``x_hat = x_t / t`` at ``sigma = (1 - t) / t``, so classifier
    guidance can differentiate w.r.t. ``x_t`` directly (t near 0 is clamped to ``t_min``).
    """

    def __init__(self, classifier: NoisyClassifier, t_min: float = 1e-3) -> None:
        super().__init__()
        self.classifier, self.t_min = classifier, t_min

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device).clamp(self.t_min, 1.0).expand(x_t.shape[0])
        scale = t.reshape(-1, *([1] * (x_t.ndim - 1)))
        sigma = ((1 - t) / t).clamp_min(self.classifier.sigma_min)
        return self.classifier(x_t / scale, sigma)
