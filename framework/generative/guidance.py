"""Guidance rules for class-conditional generators: classifier-free, classifier, and both.

A guidance rule turns a conditional prediction function into a guided one. It is shared by
the diffusion and flow-matching generators, which call it the same way::

    from framework.generative.guidance import GuidanceInput, build_guidance

    guide = build_guidance("cfg", scale=2.0)             # or an already built Guidance
    out = guide(predict, GuidanceInput(x=x, labels=y, null_label=num_classes))

``predict(x, labels) -> Tensor`` is the model's prediction (denoised image, noise, velocity:
any quantity that is affine in the score of the noisy data) at the current noise level;
``labels`` may contain ``null_label`` ("no class"). Rules:

* ``cfg`` (Ho & Salimans 2022): ``uncond + w * (cond - uncond)``. **Convention**: ``w = 1``
  is the plain conditional model, ``w = 0`` the unconditional one (diffusers'
  ``guidance_scale``); the paper's ``w_paper`` is ``w - 1``.
* ``classifier`` (Dhariwal & Nichol 2021, guided-diffusion's ``condition_score``): adds
  ``scale * score_coef * grad_x log p(y | x, noise)`` of a noise-aware classifier, where the
  caller's ``score_coef`` converts a score into the prediction's units (``sigma**2`` for a
  denoiser D in sigma space, ``-sigma`` for an eps prediction, the velocity's score
  coefficient for a flow).
* ``cfg+classifier``: classifier-free guidance, then the classifier term on top.

**NFE** (DESIGN.md: generator network evaluations per sample, guidance branches included) is
counted from the calls a rule actually makes, never declared by the rule: the caller wraps
its ``predict`` with :class:`NetCalls` (``predict = calls.counting(predict, batch_size)``), and
a call on ``k * B`` rows for a batch of ``B`` counts ``k``. So ``cfg`` at ``w = 1`` (one call)
costs 1 and at other ``w`` (one batched call on both branches) 2, and a new rule that makes
particles, candidates or extra passes is counted right without doing anything. Classifier
calls are not net calls and are not counted here.

The classifier is called as ``classifier(classifier_x, noise_level) -> logits``; the
gradient is taken with respect to ``classifier_x`` (default: ``x``), so a caller whose
classifier sees a rescaled state passes that state (built from ``x`` inside the graph or
detached: the gradient is always w.r.t. ``classifier_x`` itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from framework.errors import ConfigError
from registry import REGISTRY, register

__all__ = [
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "CombinedGuidance",
    "Guidance",
    "GuidanceInput",
    "NetCalls",
    "NoGuidance",
    "build_guidance",
    "classifier_log_prob_grad",
]

Predict = Callable[[Tensor, Tensor], Tensor]


@dataclass
class GuidanceInput:
    """What a guidance rule needs besides the prediction function.

    Args:
        x: Current state, shape (B, ...).
        labels: Target classes (B,), int64.
        null_label: The label index that means "no class" (the model's ``num_classes``).
        classifier: Noise-aware classifier ``(x, noise_level) -> logits`` (classifier guidance).
        noise_level: (B,) noise level as the classifier takes it (e.g. sigma).
        classifier_x: The classifier's input, if it is not ``x`` (e.g. ``x / scale``).
        score_coef: Scalar or (B,) tensor: d(prediction) / d(score w.r.t. ``classifier_x``).
        clean_classifier: Classifier of clean data ``x0 -> logits`` (``elucd``, ``gfcg``).
        denoise: ``(prediction, x=x) -> x0_hat``, the denoised estimate of the state from the
            prediction at ``x`` (the identity for a denoiser; a flow's velocity converts); the
            optional state argument lets a rule differentiate through it.
        sigma: (B,) noise level of ``x_hat = x / hat_scale = x0 + sigma n``.
        hat_scale: Scalar or (B,): the state is ``hat_scale * x_hat`` (flow: ``a_t``).
        undenoise: ``x0_hat -> prediction`` at ``x``, the inverse of ``denoise`` (both affine).
        data_range: ``(low, high)`` of the data (images: ``(-1, 1)``), or None (vector data).
    """

    x: Tensor
    labels: Tensor
    null_label: int
    classifier: nn.Module | Callable[[Tensor, Tensor], Tensor] | None = None
    noise_level: Tensor | None = None
    classifier_x: Tensor | None = None
    score_coef: Tensor | float = 1.0
    clean_classifier: nn.Module | Callable[[Tensor], Tensor] | None = None
    denoise: Callable[[Tensor], Tensor] | None = None
    sigma: Tensor | None = None
    hat_scale: Tensor | float = 1.0
    undenoise: Callable[[Tensor], Tensor] | None = None
    data_range: tuple[float, float] | None = None


class NetCalls:
    """Counts generator network evaluations per sample (NFE) through a wrapped ``predict``.

    ``counting(predict, batch_size)`` returns ``predict`` that adds ``rows / batch_size`` to
    :attr:`count` at every call (rounded up): a batched two-branch call counts 2.
    """

    def __init__(self) -> None:
        self.count = 0

    def counting(self, predict: Callable[..., Tensor], batch_size: int) -> Callable[..., Tensor]:
        def counted(x: Tensor, *args: Any) -> Tensor:
            self.count += -(-len(x) // max(batch_size, 1))
            return predict(x, *args)

        return counted


class Guidance:
    """Base class: ``guidance(predict, inp) -> guided prediction``. The base rule is none.

    Rules call ``predict`` as often as they need; the NFE comes from those calls (:class:`NetCalls`).
    """

    #: Whether the rule needs a class-conditional generator (False: the classifier carries the class).
    conditional: bool = True

    def __call__(self, predict: Predict, inp: GuidanceInput) -> Tensor:
        return predict(inp.x, inp.labels)


@register("guidance", "none")
class NoGuidance(Guidance):
    """No guidance: the plain conditional prediction."""

    conditional = False


@register("guidance", "cfg", aliases=("classifier_free",))
class ClassifierFreeGuidance(Guidance):
    """Classifier-free guidance ``uncond + scale * (cond - uncond)`` (scale 1 = conditional).

    Args:
        scale: Guidance weight ``w``; 1 is the conditional model, 0 the unconditional one.
    """

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def __call__(self, predict: Predict, inp: GuidanceInput) -> Tensor:
        if self.scale == 1.0:
            return predict(inp.x, inp.labels)
        null = torch.full_like(inp.labels, inp.null_label)
        if self.scale == 0.0:
            return predict(inp.x, null)
        # One batched call for both branches: half the Python overhead of two calls.
        both = predict(torch.cat([inp.x, inp.x]), torch.cat([inp.labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + self.scale * (cond - uncond)


def classifier_log_prob_grad(
    classifier: nn.Module | Callable[[Tensor, Tensor], Tensor], x: Tensor, noise_level: Tensor, labels: Tensor
) -> Tensor:
    """``grad_x log p(labels | x, noise_level)`` of a classifier returning logits, per sample."""
    with torch.enable_grad(), torch.inference_mode(False):
        x_in = x.detach().clone().requires_grad_(True)
        logits = classifier(x_in, noise_level.detach() if isinstance(noise_level, Tensor) else noise_level)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        # Samples are independent, so the gradient of the sum is every sample's own gradient.
        selected = log_probs.gather(1, labels.long().view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(selected, x_in)
    return grad.to(x.dtype)


def _broadcast(coef: Tensor | float, like: Tensor) -> Tensor | float:
    if isinstance(coef, Tensor) and coef.ndim == 1:
        return coef.view(-1, *([1] * (like.ndim - 1)))
    return coef


@register("guidance", "classifier")
class ClassifierGuidance(Guidance):
    """Classifier guidance: ``prediction + scale * score_coef * grad log p(y | x_t)``.

    Args:
        scale: Classifier scale ``s`` (guided-diffusion's ``classifier_scale``).
    """

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def correction(self, inp: GuidanceInput) -> Tensor:
        """The term added to the prediction."""
        if inp.classifier is None:
            raise ConfigError("classifier guidance needs a noise-aware classifier (set the model's `guidance_classifier`)")
        if inp.noise_level is None:
            raise ConfigError("classifier guidance needs the noise level the classifier takes")
        cx = inp.x if inp.classifier_x is None else inp.classifier_x
        grad = classifier_log_prob_grad(inp.classifier, cx, inp.noise_level, inp.labels)
        return self.scale * _broadcast(inp.score_coef, grad) * grad

    def __call__(self, predict: Predict, inp: GuidanceInput) -> Tensor:
        out = predict(inp.x, inp.labels)
        return out + self.correction(inp).to(out.dtype) if self.scale else out


@register("guidance", "cfg+classifier", aliases=("cfg_classifier", "combined"))
class CombinedGuidance(Guidance):
    """Classifier-free guidance (weight ``scale``) plus classifier guidance (``classifier_scale``).

    Args:
        scale: Classifier-free guidance weight (1 = conditional).
        classifier_scale: Classifier guidance scale.
    """

    def __init__(self, scale: float = 1.0, classifier_scale: float = 1.0) -> None:
        self.cfg = ClassifierFreeGuidance(scale)
        self.classifier = ClassifierGuidance(classifier_scale)

    def __call__(self, predict: Predict, inp: GuidanceInput) -> Tensor:
        out = self.cfg(predict, inp)
        return out + self.classifier.correction(inp).to(out.dtype) if self.classifier.scale else out


def build_guidance(guidance: str | Guidance | None, scale: float | None = None, **kwargs: Any) -> Guidance:
    """A :class:`Guidance` from a registry name (``None`` means none) or an instance.

    Args:
        guidance: Registry name (``cfg``, ``classifier``, ``cfg+classifier``, ``none``) or instance.
        scale: The rule's main scale (``cfg``: w; ``classifier``: s); ``None`` keeps its default.
        **kwargs: Further constructor arguments (``classifier_scale`` for the combination).
    """
    if guidance is None:
        return NoGuidance()
    if isinstance(guidance, Guidance):
        return guidance
    cls = REGISTRY.get("guidance", str(guidance))
    if scale is not None:
        kwargs["scale"] = scale
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"guidance {guidance!r}: {err}") from None
