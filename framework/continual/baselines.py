"""Baselines: ``finetune`` (lower bound), ``joint`` (upper bound) and ``ncm`` (nearest class mean)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from framework.continual.base import ContinualModule
from framework.continual.functional import nme_scores, normalized_class_means
from framework.continual.scenario import IncrementalScenario
from registry import register


@register("model", "finetune")
class Finetune(ContinualModule):
    """Fine-tuning, the lower bound: every step trains the whole net on its new classes only.

    With ``memory_size > 0`` it becomes plain exemplar replay (herding selection).
    Arguments: those of :class:`~framework.continual.base.ContinualModule`.
    """


@register("model", "joint")
class Joint(ContinualModule):
    """Joint training, the upper bound: each step trains on all the data of the classes seen so far.

    Training continues from the previous step's weights. In a few-shot scenario this is an
    oracle: it uses every training sample of the novel classes, not only the shots.

    Arguments: those of :class:`~framework.continual.base.ContinualModule`.
    """

    def train_data(self, scenario: IncrementalScenario) -> Dataset:
        labels = scenario.labels("train")
        return scenario.subset("train", torch.nonzero(labels < self.seen).flatten())


@register("model", "ncm")
class NCM(ContinualModule):
    """Nearest class mean on a frozen extractor (iCaRL's NME classifier without exemplars).

    The backbone is trained with cross-entropy on the base step (``base_epochs: 0`` keeps a
    pretrained one, e.g. ``open_clip``, untouched), then frozen; every class is represented by
    the mean of its L2-normalised training features and a sample goes to the nearest mean
    (PyCIL's NME). Later steps are training-free.

    Arguments: those of :class:`~framework.continual.base.ContinualModule`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register_buffer("means", torch.zeros(self.num_classes, self.num_features))

    def step_epochs(self, step: int) -> int:
        return self.base_epochs if step == 0 else 0

    def on_step_start(self, step: int) -> None:
        if step > 0 or self.base_epochs == 0:
            self.freeze_backbone()

    def on_step_end(self, step: int) -> None:
        self.freeze_backbone()
        start, end = self.scenario.step_range(step)
        features, labels = self.train_features(self.scenario.train_indices(step))
        self.means[start:end] = normalized_class_means(features, labels, range(start, end)).to(self.means)
        super().on_step_end(step)

    def classify_features(self, features: Tensor) -> Tensor:
        return nme_scores(features, self.means)
