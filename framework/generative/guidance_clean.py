"""Guidance by a classifier trained on clean data, seen at the denoised estimate ``x0_hat``.

Two registered guidance rules (kind ``guidance``) that steer any trained generator, diffusion
or flow, with any trained classifier, without retraining either:

* ``elucd`` (alias ``clean_classifier``; Ma et al. 2023, "Elucidating the design space of
  classifier-guided diffusion generation"; reference: AlexMaOLS/EluCD, ``design_cond_fn`` in
  ``DDPM/scripts/classifier_sample.py`` and ``p_sample`` in ``guided_diffusion/gaussian_diffusion.py``).
  The gradient ``g = grad_{x0_hat} log[exp(tau1 f_y) / sum_j exp(tau2 f_j)]`` of the
  classifier's calibrated log-probability at the detached ``x0_hat``, clamped to the data range
  as the reference's ``clip_denoised`` (its ReLUs replaced by ``Softplus(beta)`` while guiding), added to the score of the state with the paper's
  time-dependent scale (:func:`elucd_schedule`, :func:`elucd_score_weight`).
* ``gfcg`` (Shenoy et al. 2024, "Gradient-free classifier guidance for diffusion model
  sampling", arXiv 2411.15393): classifier-free guidance whose reference is not the null class
  but the class the classifier, in inference mode, finds most likely at ``x0_hat`` besides the
  target, with a scale that adapts to the classifier's confidence (:func:`gfcg_reference`).

The generator fills :class:`~framework.generative.guidance.GuidanceInput`'s ``denoise``
(prediction -> ``x0_hat``), ``sigma`` (noise level of ``x_hat = x / hat_scale = x0 + sigma n``),
``hat_scale``, ``score_coef`` and ``clean_classifier`` (``x -> logits``): the same fields for
every diffusion formulation and every flow path. Equations in docs/guidance.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from framework.errors import ConfigError
from framework.generative.diffusion.formulations import VP
from framework.generative.guidance import Guidance, GuidanceInput, Predict, _broadcast
from registry import register

__all__ = [
    "CleanClassifierGuidance",
    "CountingClassifier",
    "GradientFreeClassifierGuidance",
    "calibrated_log_prob",
    "calibrated_log_prob_grad",
    "elucd_schedule",
    "elucd_score_weight",
    "gfcg_reference",
    "load_clean_classifier",
    "softplus_activations",
    "vp_time_of_sigma",
]

#: The linear VP schedule of DDPM (Ho et al. 2020; beta_1..T = 1e-4..0.02 over T = 1000 steps),
#: in continuous time (Song et al. 2021, beta 0.1 to 20: the ``vp`` formulation's defaults): the
#: schedule EluCD's reference guides on.
DDPM_VP = VP()


# -- EluCD's equations ------------------------------------------------------------------------
def calibrated_log_prob(logits: Tensor, labels: Tensor, tau1: float = 1.0, tau2: float = 0.5) -> Tensor:
    """``log[exp(tau1 f_y) / sum_j exp(tau2 f_j)] = tau1 f_y - logsumexp_j(tau2 f_j)`` per sample (EluCD's ``design_cond_fn``)."""
    logits = logits.float()
    return tau1 * logits.gather(1, labels.long().view(-1, 1)).squeeze(1) - torch.logsumexp(tau2 * logits, dim=1)


def calibrated_log_prob_grad(
    classifier: nn.Module, x0_hat: Tensor, labels: Tensor, tau1: float = 1.0, tau2: float = 0.5
) -> Tensor:
    """``grad_{x0_hat}`` of :func:`calibrated_log_prob` at the detached ``x0_hat`` (no graph through the generator)."""
    with torch.enable_grad(), torch.inference_mode(False):
        x_in = x0_hat.detach().clone().requires_grad_(True)
        selected = calibrated_log_prob(classifier(x_in), labels, tau1, tau2).sum()
        (grad,) = torch.autograd.grad(selected, x_in)
    return grad.to(x0_hat.dtype)


def vp_time_of_sigma(sigma: Tensor, beta_min: float = DDPM_VP.beta_min, beta_max: float = DDPM_VP.beta_max) -> Tensor:
    """The VP time ``tau`` in [0, 1] whose noise level is ``sigma``: ``1 + sigma^2 = exp(beta_min tau + (beta_max - beta_min) tau^2 / 2)``."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return VP(beta_min, beta_max).t_of_sigma(sigma).clamp(0.0, 1.0)


def elucd_schedule(sigma: Tensor, kappa: float = 0.3) -> Tensor:
    """EluCD's guidance weight relative to the step variance at noise level ``sigma``.

    The reference moves the DDPM mean by ``(Sigma_t + kappa sin(pi t / T) max_t Sigma_t) g``
    (``p_sample``, ``gamma_factor`` kappa = 0.3). With ``Sigma_t ~ beta(t) dt`` that is the
    score shifted by ``gamma g``, ``gamma = 1 + kappa sin(pi tau) beta_max / beta(tau)``, where
    ``tau`` is the VP time at which DDPM's linear schedule has noise level ``sigma``
    (:func:`vp_time_of_sigma`): the same weight at the same noise level for every formulation.
    """
    tau = vp_time_of_sigma(sigma)
    return 1 + kappa * torch.sin(math.pi * tau) * DDPM_VP.beta_max / DDPM_VP.beta(tau)


def elucd_score_weight(sigma: Tensor, kappa: float = 0.3) -> Tensor:
    """Weight ``lambda(sigma)`` of ``g`` in the score of ``x_hat``: ``gamma(sigma) / sqrt(1 + sigma^2)``.

    The reference adds ``gamma g`` to the score of DDPM's state ``x_t = sqrt(alpha_bar) x_hat``,
    ``alpha_bar = 1 / (1 + sigma^2)``; the score of ``x_hat`` is ``sqrt(alpha_bar)`` times it.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return elucd_schedule(sigma, kappa) / torch.sqrt(1 + sigma**2)


class _Softplus(nn.Softplus):
    """The Softplus put in place of a ReLU while guiding (remembers the module it replaced)."""

    def __init__(self, beta: float, replaced: nn.Module) -> None:
        super().__init__(beta=beta)
        self.replaced = [replaced]  # a list: not a submodule


@contextmanager
def softplus_activations(net: nn.Module, beta: float = 3.0) -> Iterator[int]:
    """Replace every ``nn.ReLU`` module of ``net`` by ``Softplus(beta)`` for the block, then restore them.

    EluCD's smooth classifier gradients (reference: ReLU -> Softplus(beta = 3) in the ResNet).
    Yields the number of replaced modules (ReLUs called as functions, ``F.relu``, stay). An
    infinite ``beta`` replaces nothing.
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    if math.isfinite(beta):
        for parent in list(net.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.ReLU:
                    setattr(parent, name, _Softplus(beta, child))
                    swapped.append((parent, name, child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


class CountingClassifier(nn.Module):
    """A classifier wrapper that counts its forward calls (``calls``), for the reported budget.

    Wraps a clean classifier (``x -> logits``) or a noise-aware one (``(x, noise_level) -> logits``):
    further arguments pass through unchanged.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier, self.calls = classifier, 0

    @property
    def num_classes(self) -> int | None:
        return getattr(self.classifier, "num_classes", None)

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        self.calls += 1
        p = next(self.classifier.parameters(), None)
        dtype = p.dtype if p is not None else x.dtype
        return self.classifier(x.to(dtype), *args)


def load_clean_classifier(path, num_classes: int, data_shape) -> nn.Module:
    """A registered classifier of clean data from its checkpoint, checked against the generator.

    ``num_classes`` 0 (an unconditional generator) accepts any class count; the input shape must
    be the generator's sample shape. A misfit is one :class:`ConfigError` line.
    """
    from framework.loading import load_trained
    from framework.models.classifier import Classifier

    return load_trained(
        path, None, role="clean_classifier", base=Classifier, num_classes=num_classes or None, data_shape=data_shape
    )


def _clean_input(inp: GuidanceInput, rule: str) -> tuple[nn.Module, Tensor]:
    if inp.clean_classifier is None:
        raise ConfigError(f"{rule} guidance needs a classifier of clean data (set the model's `clean_classifier`)")
    if inp.denoise is None or inp.sigma is None:
        raise ConfigError(f"{rule} guidance needs the denoised estimate and the noise level from the generator")
    classifier = inp.clean_classifier
    if isinstance(classifier, nn.Module):
        p = next(classifier.parameters(), None)
        if p is not None and p.device != inp.x.device:
            classifier.to(inp.x.device)
    return classifier, inp.sigma


@register("guidance", "elucd", aliases=("clean_classifier", "off_the_shelf"))
class CleanClassifierGuidance(Guidance):
    """Off-the-shelf classifier guidance (EluCD): calibrated gradient at ``x0_hat``, Softplus, sin schedule.

    ``score(x_hat) += scale * lambda(sigma) * g`` with ``g`` the gradient of the calibrated
    log-probability at the detached ``x0_hat`` (:func:`calibrated_log_prob_grad`) and
    ``lambda = (1 + kappa sin(pi tau) beta_max / beta(tau)) / sqrt(1 + sigma^2)``. With
    ``clip_denoised`` (the reference's default) ``x0_hat`` is first clamped to the data range,
    for the classifier and for the step (the guided prediction is the one whose ``x0_hat`` is
    the clamped one, plus the shift). With ``through_denoiser`` the gradient is instead taken
    w.r.t. the state through the generator's ``x0_hat(x)`` (chain rule, one backward pass
    through the net per evaluation): ``score(x_hat) += scale * gamma(sigma) * grad_{x_hat}
    log p(y | x0_hat(x_hat))``. Works on an unconditional generator too: the classifier alone
    carries the class.

    Args:
        scale: Classifier scale ``s`` (reference: 1).
        tau1: Temperature of the target logit (reference ``joint_temperature``: 1).
        tau2: Temperature of the normaliser (``joint_temperature * margin_temperature_discount``: 0.5).
        kappa: Weight of the sin schedule (reference ``gamma_factor``: 0.3; 0 is plain ``Sigma_t g``).
        softplus_beta: ReLU -> Softplus(beta) while guiding (reference: 3; ``inf`` keeps the ReLUs).
        unconditional: Guide the generator's null-class prediction (a generator trained with
            ``label_dropout: 1``, or the unconditional branch of a CFG-trained one) instead of
            its prediction for the target class.
        clip_denoised: Clamp ``x0_hat`` to the generator's data range (images: [-1, 1]; vector
            data has none: nothing is clamped) before the classifier sees it and before the step
            uses it, as the reference's ``p_mean_variance`` (``clip_denoised=True``) does; False:
            the unclamped ``x0_hat`` (this project's behaviour before session 5).
        through_denoiser: Differentiate ``log p(y | x0_hat(x))`` w.r.t. the state ``x`` through
            the generator (the chain rule ``J^T g``, ``J = d x0_hat / d x``; weight ``gamma``
            without the reference's ``1 / sqrt(1 + sigma^2)``, which converts a gradient at
            ``x0_hat`` into a score) instead of at the detached ``x0_hat`` (False, the reference).
            The clamp of ``clip_denoised`` then lies inside the graph (no gradient where it binds).
    """

    conditional = False

    def __init__(
        self,
        scale: float = 1.0,
        tau1: float = 1.0,
        tau2: float = 0.5,
        kappa: float = 0.3,
        softplus_beta: float = 3.0,
        unconditional: bool = False,
        clip_denoised: bool = True,
        through_denoiser: bool = False,
    ) -> None:
        if softplus_beta <= 0:
            raise ConfigError(f"softplus_beta must be > 0, got {softplus_beta}")
        self.scale, self.tau1, self.tau2, self.kappa = float(scale), float(tau1), float(tau2), float(kappa)
        self.softplus_beta, self.unconditional = float(softplus_beta), bool(unconditional)
        self.clip_denoised, self.through_denoiser = bool(clip_denoised), bool(through_denoiser)

    def clipped(self, prediction: Tensor, inp: GuidanceInput) -> tuple[Tensor, Tensor]:
        """``(prediction, x0_hat)`` with ``x0_hat`` clamped to ``inp.data_range`` (unchanged without clipping)."""
        x0_hat = inp.denoise(prediction)
        if not self.clip_denoised or inp.data_range is None:
            return prediction, x0_hat
        if inp.undenoise is None:
            raise ConfigError("elucd clip_denoised needs the generator's undenoise (x0_hat -> prediction)")
        x0_clip = x0_hat.clamp(*inp.data_range)
        # denoise is affine per sample: where nothing is clamped the difference is exactly 0
        return prediction + (inp.undenoise(x0_clip) - inp.undenoise(x0_hat)), x0_clip

    def correction(self, x0_hat: Tensor, inp: GuidanceInput) -> Tensor:
        """The term added to the prediction, from the classifier's gradient at ``x0_hat``."""
        classifier, sigma = _clean_input(inp, "elucd")
        with softplus_activations(classifier, self.softplus_beta):
            g = calibrated_log_prob_grad(classifier, x0_hat, inp.labels, self.tau1, self.tau2)
        weight = elucd_score_weight(sigma, self.kappa).to(g)
        shift = self.scale * _broadcast(weight, g) * g / _broadcast(inp.hat_scale, g)  # score of x
        return _broadcast(inp.score_coef, g) * shift

    def __call__(self, predict: Predict, inp: GuidanceInput) -> Tensor:
        labels = torch.full_like(inp.labels, inp.null_label) if self.unconditional else inp.labels
        if self.scale and self.through_denoiser:
            return self._through_denoiser(predict, labels, inp)
        out = predict(inp.x, labels)
        if not self.scale:
            return out
        _clean_input(inp, "elucd")
        out, x0_hat = self.clipped(out, inp)
        return out + self.correction(x0_hat, inp).to(out.dtype)

    def _through_denoiser(self, predict: Predict, labels: Tensor, inp: GuidanceInput) -> Tensor:
        """One net evaluation with its graph: the prediction and ``grad_x log p(y | x0_hat(x))``."""
        classifier, sigma = _clean_input(inp, "elucd")
        with torch.enable_grad(), torch.inference_mode(False):
            x = inp.x.detach().clone().requires_grad_(True)
            out = predict(x, labels)
            x0_hat = inp.denoise(out, x)
            if self.clip_denoised and inp.data_range is not None:
                x0_hat = x0_hat.clamp(*inp.data_range)
            with softplus_activations(classifier, self.softplus_beta):
                logp = calibrated_log_prob(classifier(x0_hat), inp.labels, self.tau1, self.tau2)
            (grad,) = torch.autograd.grad(logp.sum(), x)
        out = out.detach()
        if self.clip_denoised and inp.data_range is not None:
            out, _ = self.clipped(out, inp)
        weight = elucd_schedule(sigma, self.kappa).to(grad)
        shift = self.scale * _broadcast(weight, grad) * grad  # the score of the state x
        return out + (_broadcast(inp.score_coef, grad) * shift).to(out.dtype)


# -- GFCG ---------------------------------------------------------------------------------------
def gfcg_reference(logits: Tensor, labels: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """GFCG's reference class and scale from the classifier's logits at ``x0_hat``.

    ``c_ref = argmax_{j != y} p(j | x0_hat)`` (the class the sample is most easily mistaken
    for) and ``w = scale * p(c_ref) / (p(c_ref) + p(y))``: strong while the classifier confuses
    the two, vanishing once it is sure of ``y``. (The paper's exact scale rule could not be read
    here; this is our reading of its abstract and method summary: docs/guidance.md.)
    """
    probs = torch.softmax(logits.float(), dim=1)
    p_y = probs.gather(1, labels.long().view(-1, 1)).squeeze(1)
    others = probs.scatter(1, labels.long().view(-1, 1), -1.0)
    p_ref, ref = others.max(dim=1)
    return ref, scale * p_ref / (p_ref + p_y)


@register("guidance", "gfcg", aliases=("gradient_free",))
class GradientFreeClassifierGuidance(Guidance):
    """Gradient-free classifier guidance: ``cond + w_t (cond - pred(c_ref))``, ``c_ref``, ``w_t`` from the classifier.

    The classifier runs in inference mode (no gradients) on ``x0_hat`` of the conditional
    prediction; :func:`gfcg_reference` gives the reference class and the scale. Two net
    evaluations per step (the conditional and the reference prediction); needs a
    class-conditional generator.

    Args:
        scale: Largest guidance weight ``w`` (reached when the classifier cannot tell ``y`` from ``c_ref``).
    """

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def __call__(self, predict: Predict, inp: GuidanceInput) -> Tensor:
        cond = predict(inp.x, inp.labels)
        if not self.scale:
            return cond
        classifier, _ = _clean_input(inp, "gfcg")
        with torch.no_grad():
            ref, w = gfcg_reference(classifier(inp.denoise(cond)), inp.labels, self.scale)
        reference = predict(inp.x, ref)
        return cond + _broadcast(w.to(cond), cond) * (cond - reference)
