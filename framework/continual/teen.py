"""TEEN (Wang et al., NeurIPS 2023): training-free prototype calibration for few-shot class-incremental learning."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from framework.continual.base import ContinualModule
from framework.continual.functional import calibrate_prototypes, class_means
from registry import register


class CosineHead(nn.Module):
    """Cosine classifier without bias: logits = temperature * cos(feature, row)."""

    def __init__(self, in_features: int, out_features: int, temperature: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's initialisation, as TEEN's fc
        self.temperature = temperature

    def forward(self, features: Tensor) -> Tensor:
        return self.temperature * F.normalize(features, dim=-1) @ F.normalize(self.weight, dim=-1).T


@register("model", "teen")
class TEEN(ContinualModule):
    """TEEN: a cosine classifier trained on the base session, then training-free sessions.

    Base session: cross-entropy on ``temperature`` * cos logits; at its end the base rows are
    replaced by the base classes' mean training features and the backbone is frozen. Each
    few-shot session sets the new rows to the mean of their K shots and calibrates them
    against the base prototypes: p <- (1 - alpha) p_hat + alpha normalize(sum_b softmax_b(tau
    cos(p, p_b)) p_b_hat). Defaults are the paper's and the official code's (wangkiw/TEEN):
    temperature 16 (CIFAR; 32 for miniImageNet and CUB), tau 16, alpha 0.5 (the official
    CIFAR-100 script uses 0.1), SGD with Nesterov momentum 0.9 and weight decay 5e-4. Unlike
    the official code, the base model is the last one, not the best on test data.

    Args:
        temperature: Scale of the cosine logits.
        tau: Softmax temperature of the calibration weights (``softmax_t``).
        alpha: Calibration strength (``shift_weight``).
        base_optimizer: Optimizer of the base session.
        **kwargs: The arguments of :class:`~framework.continual.base.ContinualModule`.
    """

    def __init__(
        self,
        temperature: float = 16.0,
        tau: float = 16.0,
        alpha: float = 0.5,
        base_optimizer: OptimizerCallable = lambda p: torch.optim.SGD(
            p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
        ),
        **kwargs: Any,
    ) -> None:
        self.temperature = temperature
        super().__init__(base_optimizer=base_optimizer, **kwargs)
        self.tau, self.alpha = tau, alpha

    def build_head(self, bias: bool) -> nn.Module:
        return CosineHead(self.num_features, self.num_classes, self.temperature)

    def step_epochs(self, step: int) -> int:
        return self.base_epochs if step == 0 else 0

    def on_step_start(self, step: int) -> None:
        if step == 0:
            if self.base_epochs == 0:
                self.freeze_backbone()
            return
        self.freeze_backbone()
        start, end = self.scenario.step_range(step)
        base = self.scenario.seen_classes(0)
        features, labels = self.train_features(self.scenario.train_indices(step))
        prototypes = class_means(features, labels, range(start, end))
        with torch.no_grad():
            calibrated = calibrate_prototypes(prototypes.to(self.head.weight), self.head.weight[:base], self.tau, self.alpha)
            self.head.weight[start:end] = calibrated

    def on_step_end(self, step: int) -> None:
        if step == 0:
            self.freeze_backbone()
            features, labels = self.train_features(self.scenario.train_indices(0))
            with torch.no_grad():
                self.head.weight[: self.seen] = class_means(features, labels, range(self.seen)).to(self.head.weight)
        super().on_step_end(step)
