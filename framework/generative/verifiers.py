"""Verifiers: scores of denoised samples that inference-time search maximises (registry kind ``verifier``).

A verifier is called as ``verifier(x0_hat, labels) -> (B,) scores`` (higher is better) on the
*denoised estimate* of a state, never on the noisy state itself (Ma et al. 2025, "Inference-time
scaling for diffusion models beyond scaling denoising steps"). Write your own by
subclassing :class:`Verifier` and registering it::

    from framework.generative.verifiers import Verifier
    from registry import register

    @register("verifier", "brightness")
    class Brightness(Verifier):
        def score(self, x0_hat, labels):
            return x0_hat.flatten(1).mean(1)

then ``lightning sample ... --options '{"search": "random", "verifier": "brightness"}'``. A
verifier is built with the generator's steering classifier as ``classifier`` (None if there is
none); ``evaluations`` counts the samples it scored (reported apart from the generator's NFE).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from typing import Any

import torch
from torch import Tensor, nn

from framework.errors import ConfigError
from registry import REGISTRY, register

__all__ = ["ClassifierVerifier", "Verifier", "build_verifier"]


class Verifier(ABC):
    """Base class: ``verifier(x0_hat, labels) -> (B,)`` scores, higher is better; counts the samples scored.

    Args:
        classifier: The generator's steering classifier (``clean_classifier``), if any.
    """

    def __init__(self, classifier: nn.Module | None = None) -> None:
        self.classifier, self.evaluations = classifier, 0

    @abstractmethod
    def score(self, x0_hat: Tensor, labels: Tensor) -> Tensor:
        """The (B,) scores of ``x0_hat`` for ``labels``, higher is better."""

    @torch.no_grad()
    def __call__(self, x0_hat: Tensor, labels: Tensor) -> Tensor:
        self.evaluations += x0_hat.shape[0]
        scores = self.score(x0_hat, labels).float().reshape(-1)
        if scores.shape[0] != x0_hat.shape[0]:
            raise ConfigError(f"verifier {type(self).__name__} gave {scores.shape[0]} scores for {x0_hat.shape[0]} samples")
        return torch.nan_to_num(scores, nan=-float("inf"))


@register("verifier", "classifier", aliases=("class_log_prob",))
class ClassifierVerifier(Verifier):
    """``log p(y | x0_hat)`` of a registered classifier of clean data (the generator's ``clean_classifier``).

    Args:
        classifier: The classifier ``x -> logits``.
    """

    def __init__(self, classifier: nn.Module | None = None) -> None:
        if classifier is None:
            raise ConfigError("the classifier verifier needs a classifier (set the model's `clean_classifier`)")
        super().__init__(classifier)

    def score(self, x0_hat: Tensor, labels: Tensor) -> Tensor:
        p = next(self.classifier.parameters(), None)
        if p is not None and p.device != x0_hat.device:
            self.classifier.to(x0_hat.device)
        logits = self.classifier(x0_hat)
        if logits.shape[1] <= int(labels.max()):
            raise ConfigError(f"the verifier's classifier has {logits.shape[1]} classes; label {int(labels.max())} asked")
        return torch.log_softmax(logits.float(), dim=1).gather(1, labels.long().view(-1, 1)).squeeze(1)


def build_verifier(verifier: str | Verifier, classifier: nn.Module | None = None, **kwargs: Any) -> Verifier:
    """A :class:`Verifier` from a registry name (built with ``classifier`` and ``kwargs``) or an instance."""
    if isinstance(verifier, Verifier):
        return verifier
    cls = REGISTRY.get("verifier", str(verifier))
    try:
        return cls(classifier=classifier, **kwargs)
    except TypeError as err:
        raise ConfigError(f"verifier {verifier!r}: {err}") from None
