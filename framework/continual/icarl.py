"""iCaRL (Rebuffi et al., CVPR 2017): distillation, herding exemplars and the nearest-mean-of-exemplars classifier."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.continual.base import DistillingModule
from framework.continual.features import extract_features
from framework.continual.functional import nme_scores, normalized_class_means
from registry import register


class _Flipped(nn.Module):
    """A net applied to horizontally flipped inputs (iCaRL's flipped exemplars for the class means)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flip(-1))


@register("model", "icarl")
class ICaRL(DistillingModule):
    """iCaRL as in PyCIL (``models/icarl.py``): CE + KD, herding exemplars, NME classification.

    Each step trains the whole net on its new classes plus the exemplar memory with
    cross-entropy over the seen classes plus knowledge distillation (temperature T, PyCIL's
    ``_KD_loss``: -sum softmax(old/T) log softmax(new/T), batch mean) against the previous
    step's model on the old classes' logits. After the step, herding chooses the new classes'
    exemplars (``memory_size`` in total, or ``memory_per_class``; old classes keep their first
    m), and every seen class gets a prototype: the normalised mean of its exemplars'
    L2-normalised features (with ``flip_means``, the paper's variant, each exemplar counts
    twice: as it is and horizontally flipped). Evaluation is nearest-mean-of-exemplars; the
    CNN head's accuracy on the same samples is in metrics.json as ``cnn_accuracy`` (per step)
    and ``cnn_average_incremental_accuracy``.

    The original paper trains with per-class sigmoid (binary cross-entropy) targets; PyCIL,
    whose defaults these are, uses softmax CE + KD. PyCIL's CIFAR-100 schedule: base 200
    epochs SGD lr 0.1 (milestones 60, 120, 170, x0.1, wd 5e-4), later steps 170 epochs lr 0.1
    (milestones 80, 120, wd 2e-4), batch 128, resnet32, 2,000 exemplars.

    Args:
        memory_size: Total exemplar budget (PyCIL: 2,000 on CIFAR-100).
        temperature: Distillation temperature T (PyCIL: 2).
        flip_means: Average each exemplar's feature with its horizontally flipped image's
            (the paper) for the class means; off by default (PyCIL). Leave off for data whose
            classes a flip changes (glyphs).
        **kwargs: The arguments of :class:`~framework.continual.base.ContinualModule`.
    """

    def __init__(self, memory_size: int = 2000, temperature: float = 2.0, flip_means: bool = False, **kwargs: Any) -> None:
        super().__init__(memory_size=memory_size, temperature=temperature, **kwargs)
        self.flip_means = flip_means
        self.register_buffer("means", torch.zeros(self.num_classes, self.num_features))
        self.cnn_correct: list[int] = []
        self.cnn_total: list[int] = []

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        ce, kd = self.ce_and_kd(x, y)
        return ce if kd is None else ce + kd

    def on_step_end(self, step: int) -> None:
        super().on_step_end(step)  # herding
        self.update_means()
        self.keep_previous_model()

    @torch.no_grad()
    def update_means(self) -> None:
        """Prototypes of every seen class from its exemplars (all its data when there is no memory)."""
        seen = self.seen
        if self.memory:
            indices = torch.cat([self.memory[c] for c in sorted(self.memory)])
        else:  # no budget: the step's own data (NCM on the current representation)
            indices = self.scenario.train_indices(self.step)
        clean = self.scenario.subset("train", indices, augment=False)
        loader = self.scenario.loader(clean, train=False)
        features, labels = extract_features(self.backbone, loader, self.device)
        if self.flip_means:
            flipped, _ = extract_features(_Flipped(self.backbone), loader, self.device)
            features, labels = torch.cat([F.normalize(features, dim=1), F.normalize(flipped, dim=1)]), labels.repeat(2)
        classes = sorted(set(labels.tolist()) & set(range(seen)))
        self.means[classes] = normalized_class_means(features, labels, classes).to(self.means)

    def classify_features(self, features: Tensor) -> Tensor:
        return nme_scores(features, self.means)

    def _record(self, step: int, seconds: float, cpu_seconds: float | None = None) -> None:
        scenario = self.scenario
        indices = scenario.eval_indices(step)
        labels = scenario.labels(scenario.eval_split)[indices]
        features, _ = self.features_of(scenario.eval_split, indices)
        with torch.no_grad():
            preds = self.head(features.to(self.device))[:, : scenario.seen_classes(step)].argmax(1).cpu()
        self.cnn_correct.append(int((preds == labels).sum()))
        self.cnn_total.append(len(labels))
        super()._record(step, seconds, cpu_seconds)

    def method_metrics(self) -> dict[str, Any]:
        accuracy = [100.0 * c / t if t else float("nan") for c, t in zip(self.cnn_correct, self.cnn_total)]
        return {
            "cnn_accuracy": accuracy,
            "cnn_average_incremental_accuracy": sum(accuracy) / len(accuracy) if accuracy else float("nan"),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["icarl"] = {"cnn_correct": self.cnn_correct, "cnn_total": self.cnn_total}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("icarl", {})
        self.cnn_correct, self.cnn_total = state.get("cnn_correct", []), state.get("cnn_total", [])

