"""WA (Zhao et al., CVPR 2020): distillation, exemplar replay and weight aligning of the classifier."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from framework.continual import metrics as cl_metrics
from framework.continual.base import DistillingModule
from framework.continual.functional import weight_align_gamma
from framework.errors import ConfigError
from registry import register


@register("model", "wa")
class WA(DistillingModule):
    """Maintaining discrimination and fairness: CE + KD with exemplars, then weight aligning.

    Each later step minimises (1 - l) CE + l KD with l = old / seen classes, KD at temperature
    T against the previous model's logits on the old classes; the data is the new classes
    plus an exemplar memory chosen by herding (``memory_size`` in total, or
    ``memory_per_class``). After each later step the new classes' rows are scaled by
    gamma = mean ||w_old|| / mean ||w_new||.

    Defaults follow the official code (bwbwzhao/Weight-Aligning): L1 row norms, gamma capped
    at 1, no head bias, head weights clipped to >= 0 after every optimiser step, the weight
    decay divided by (step + 1). PyCIL's choices are options: ``norm: 2, clamp_gamma: false,
    clip_weights: false, head_bias: true, kd_weight: 2, divide_weight_decay: false`` (PyCIL's
    loss is CE + 2 KD, whatever the step sizes). The KD weight
    old/seen equals the official t/(t+1) for equal steps and stays right for uneven ones; with
    a large base (B50 + steps of 5) it leaves CE 1/11 of the loss.

    As the official code tests the model before and after aligning, metrics.json holds both:
    the accuracies of the module's figures are after aligning, ``unaligned_accuracy`` (and its
    old / new classes and average) before it, on the same samples.

    Args:
        memory_size: Total exemplar budget (2,000 for CIFAR-100: 20 per class at the end).
        temperature: Distillation temperature T.
        norm: p of the row norms in gamma (official 1, PyCIL 2).
        clamp_gamma: Cap gamma at 1 (official code).
        clip_weights: Clip the head weights to >= 0 after every optimiser step (official code).
        head_bias: Whether the head has a bias (official: no; PyCIL: yes; never aligned).
        kd_weight: None: the paper's (1 - l) CE + l KD with l = old / seen classes; a number w:
            CE + w KD (PyCIL: 2).
        reinit_head: Start every later step from a freshly initialised head over all seen
            classes, as the official ``main.py`` does (its copy of the old rows is commented
            out): the old rows are relearned from the exemplars and KD, like the new ones.
            False (PyCIL, and the default) keeps the old rows and initialises the new ones.
        divide_weight_decay: Divide the step's optimiser weight decay by (step + 1), as the
            official ``learn()`` does (its learning rate stays); PyCIL keeps it.
        **kwargs: The arguments of :class:`~framework.continual.base.ContinualModule`.
    """

    def __init__(
        self,
        memory_size: int = 2000,
        temperature: float = 2.0,
        norm: float = 1.0,
        clamp_gamma: bool = True,
        clip_weights: bool = True,
        head_bias: bool = False,
        kd_weight: float | None = None,
        reinit_head: bool = False,
        divide_weight_decay: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(memory_size=memory_size, head_bias=head_bias, temperature=temperature, **kwargs)
        if kd_weight is not None and kd_weight < 0:
            raise ConfigError(f"wa kd_weight must be >= 0 (or null for old / seen), got {kd_weight}")
        self.norm, self.kd_weight = norm, kd_weight
        self.clamp_gamma, self.clip_weights = clamp_gamma, clip_weights
        self.reinit_head, self.divide_weight_decay = bool(reinit_head), bool(divide_weight_decay)
        self.gammas: list[float] = []
        # Per incremental step, the eval counts before aligning (the base step is never aligned:
        # its counts are the recorded ones).
        self.unaligned_correct: list[list[int]] = []
        self.unaligned_total: list[list[int]] = []

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        ce, kd = self.ce_and_kd(x, y)
        if kd is None:
            return ce
        if self.kd_weight is not None:
            return ce + self.kd_weight * kd
        ratio = self.known / self.seen
        return (1 - ratio) * ce + ratio * kd

    def reset_rows(self, start: int, end: int) -> None:
        super().reset_rows(0 if self.reinit_head else start, end)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.clip_weights:
            with torch.no_grad():
                self.head.weight.clamp_(min=0)

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        if self.divide_weight_decay and config is not None:
            optimizer = config["optimizer"] if isinstance(config, dict) else config
            for group in optimizer.param_groups:
                if "weight_decay" in group:  # every torch optimizer has it; a user's may not
                    group["weight_decay"] /= self.step + 1
        return config

    def on_step_end(self, step: int) -> None:
        if step > 0:
            correct, total = self.eval_counts(step)
            self.unaligned_correct.append(correct)
            self.unaligned_total.append(total)
            self.align_weights(self.known, self.seen)
        super().on_step_end(step)  # herding uses the aligned model's features (same features)
        self.keep_previous_model()

    def method_metrics(self) -> dict[str, Any]:
        unaligned = cl_metrics.summarize(self.correct[:1] + self.unaligned_correct, self.total[:1] + self.unaligned_total)
        return {
            "gammas": list(self.gammas),  # one per incremental step, in step order
            **{f"unaligned_{key}": unaligned[key] for key in ("accuracy", "old_accuracy", "new_accuracy", "average_incremental_accuracy")},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["continual"]
        state["gammas"] = list(self.gammas)
        state["unaligned"] = {"correct": self.unaligned_correct, "total": self.unaligned_total}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["continual"]
        self.gammas = list(state.get("gammas", []))
        unaligned = state.get("unaligned", {"correct": [], "total": []})
        self.unaligned_correct, self.unaligned_total = unaligned["correct"], unaligned["total"]

    @torch.no_grad()
    def align_weights(self, known: int, seen: int) -> float:
        """Scale the new classes' head rows by gamma (bias untouched, as in both references)."""
        weight = self.head.weight
        gamma = weight_align_gamma(weight[:seen], known, self.norm, self.clamp_gamma)
        weight[known:seen] *= gamma
        self.gammas.append(float(gamma))
        return float(gamma)
