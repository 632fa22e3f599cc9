"""ACIL (Zhuang et al., NeurIPS 2022) and its generalized form G-ACIL: analytic, exemplar-free class-incremental learning."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.continual.analytic import ACTIVATIONS, buffer_features, check_gamma, random_buffer_weight, rls_init, rls_update
from framework.continual.base import ContinualModule
from framework.errors import ConfigError
from registry import register


@register("model", "acil", aliases=("gacil",))
class ACIL(ContinualModule):
    """ACIL: backprop on the base step, then a frozen extractor and a recursively fitted ridge classifier.

    Base step: the backbone and a linear head are trained with cross-entropy (the official
    code, ZHUANGHP/Analytic-continual-learning: SGD, label smoothing 0.05). Then the backbone
    is frozen, its features are expanded by a fixed random buffer phi = act(W_r f) (``buffer_width``,
    ``activation``, ``buffer_seed``) and the classifier W (buffer_width x num_classes, float64)
    is fitted by recursive least squares on one-hot targets, batch by batch
    (:func:`framework.continual.analytic.rls_update`), first on the base data ("re-align", as
    the official code) and then on each step's data. After any step W equals the joint ridge
    regression (Phi^T Phi + gamma I)^-1 Phi^T Y on all the data seen so far, without storing
    any of it. Features are those of un-augmented images (as the official code).

    G-ACIL is the same learner in the generalized setting, where a step may also bring more
    samples of classes already seen (``gacil`` is an alias; the setting is the scenario's
    ``revisit`` option of ``class_incremental``, docs/continual.md).

    Args:
        gamma: Ridge regularisation (official: 0.1 for CIFAR-100 and ImageNet).
        buffer_width: Width of the random buffer layer (official: 8192 CIFAR-100, 16384 ImageNet).
        activation: Activation of the buffer: ``relu`` (official), ``tanh``, ``sigmoid``, ``identity``.
        buffer_seed: Seed of the buffer's random weight.
        analytic_batch_size: Samples per recursive update (official ``IL_batch_size``: 4096);
            the result does not depend on it, only the time and memory.
        label_smoothing: Label smoothing of the base step's cross-entropy (official: 0.05).
        **kwargs: The arguments of :class:`~framework.continual.base.ContinualModule`.
    """

    def __init__(
        self,
        gamma: float = 0.1,
        buffer_width: int = 8192,
        activation: str = "relu",
        buffer_seed: int = 0,
        analytic_batch_size: int = 4096,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_gamma(gamma)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"acil activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if analytic_batch_size < 1:
            raise ConfigError(f"acil analytic_batch_size must be >= 1, got {analytic_batch_size}")
        if self.memory_size or self.memory_per_class:
            raise ConfigError("acil is exemplar-free: memory_size and memory_per_class must be 0")
        self.gamma, self.activation, self.analytic_batch_size = float(gamma), activation, analytic_batch_size
        self.label_smoothing = label_smoothing
        self.register_buffer("buffer_weight", random_buffer_weight(self.num_features, buffer_width, buffer_seed))
        R, W = rls_init(buffer_width, self.num_classes, self.gamma)
        self.register_buffer("R", R)  # (Phi^T Phi + gamma I)^-1 of the data seen so far
        self.register_buffer("W", W)  # the ridge classifier, float64

    def step_epochs(self, step: int) -> int:
        return self.base_epochs if step == 0 else 0

    def on_step_start(self, step: int) -> None:
        if step > 0 or self.base_epochs == 0:
            self.freeze_backbone()

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(self(x)[:, : self.seen], y, label_smoothing=self.label_smoothing)

    def on_step_end(self, step: int) -> None:
        self.freeze_backbone()
        features, labels = self.train_features(self.scenario.train_indices(step))
        self.fit_analytic(features, labels)
        super().on_step_end(step)

    @torch.no_grad()
    def fit_analytic(self, features: Tensor, labels: Tensor) -> None:
        """Recursive ridge updates of (R, W) on backbone features, ``analytic_batch_size`` at a time."""
        R, W = self.R, self.W
        for start in range(0, len(labels), self.analytic_batch_size):
            f = features[start : start + self.analytic_batch_size].to(self.buffer_weight.device)
            y = labels[start : start + self.analytic_batch_size].to(self.buffer_weight.device)
            phi = buffer_features(f, self.buffer_weight, self.activation)
            R, W = rls_update(R, W, phi, F.one_hot(y, self.num_classes).double(), self.gamma)
        self.R.copy_(R)
        self.W.copy_(W)

    def classify_features(self, features: Tensor) -> Tensor:
        if self.feature_cache is None:  # base step not finished: the trained linear head
            return self.head(features)
        return (buffer_features(features, self.buffer_weight, self.activation) @ self.W).float()
