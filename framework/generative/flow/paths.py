"""Probability paths of conditional flow matching (registered as kind ``"path"``).

A path takes a source sample ``x0`` (noise, or another distribution), a data sample ``x1``
and a time ``t`` in [0, 1], optionally re-pairs the minibatch (:meth:`ProbabilityPath.couple`:
optimal transport), and gives the point ``x_t = mean_t(x0, x1) + std_t * eps`` and the
conditional velocity ``u_t`` that a network regresses (Lipman et al. 2023; Tong et al. 2024).
Time runs from the source (t = 0) to the data (t = 1), torchcfm's and flow_matching's
convention. Pure torch/NumPy/POT; no Lightning.

==============  =====================================  ===================================
name            x_t                                    u_t
==============  =====================================  ===================================
``cfm``         t x1 + (1 - t) x0 + sigma eps           x1 - x0
``ot_cfm``      as cfm, (x0, x1) from the minibatch OT plan
``class_ot_cfm`` as ot_cfm, OT solved within each class (labels stay with their x1)
``target_cfm``  t x1 + (1 - (1 - sigma) t) x0           (x1 - (1 - sigma) x_t) / (1 - (1 - sigma) t)
``vp_path``     cos(pi t/2) x0 + sin(pi t/2) x1 + sigma eps   pi/2 (cos(pi t/2) x1 - sin(pi t/2) x0)
``sb_cfm``      t x1 + (1 - t) x0 + sigma sqrt(t(1-t)) eps, entropic OT plan (reg 2 sigma^2)
==============  =====================================  ===================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from framework.errors import ConfigError
from registry import REGISTRY, register

__all__ = [
    "ClassOTCFM",
    "CFM",
    "OTCFM",
    "PathSample",
    "ProbabilityPath",
    "SchrodingerBridgeCFM",
    "TargetCFM",
    "VPPath",
    "build_path",
    "denoised_from_velocity",
    "path_noise_level",
    "velocity_from_denoised",
    "ot_plan",
    "sample_plan",
    "quantile_times",
    "sample_times",
    "TIME_SAMPLINGS",
]

TIME_SAMPLINGS = ("uniform", "logit_normal")


def _pad(t: Tensor | float, like: Tensor) -> Tensor | float:
    """(B,) times shaped (B, 1, ..., 1) to broadcast against ``like``."""
    return t.reshape(-1, *([1] * (like.ndim - 1))) if isinstance(t, Tensor) else t


@dataclass
class PathSample:
    """One training draw from a path.

    Attributes:
        t: Times (B,).
        xt: Points on the path.
        ut: Conditional velocity at ``xt`` (the regression target).
        x0: Source samples after coupling.
        x1: Data samples after coupling.
        labels: Labels of ``x1`` after coupling (None if none were given).
        eps: The Gaussian noise added to the mean (zeros-like when the path has none).
    """

    t: Tensor
    xt: Tensor
    ut: Tensor
    x0: Tensor
    x1: Tensor
    labels: Tensor | None
    eps: Tensor


class ProbabilityPath:
    """Base class: the independent coupling and Gaussian conditional paths around a mean.

    Subclasses override :meth:`mean`, :meth:`std`, :meth:`velocity` and, for a coupling
    other than the independent one, :meth:`couple`.

    Args:
        sigma: Standard deviation (scale) of the noise around the mean path.
    """

    #: True when the path assumes a standard Gaussian source (x0 is never read otherwise).
    gaussian_source: bool = False

    def __init__(self, sigma: float = 0.0) -> None:
        if sigma < 0:
            raise ConfigError(f"{type(self).__name__}: sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def couple(self, x0: Tensor, x1: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Pair the minibatches; the independent coupling keeps them as they are."""
        return x0, x1, labels

    def mean(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """Mean of the conditional path at ``t``."""
        t = _pad(t, x0)
        return t * x1 + (1 - t) * x0

    def std(self, t: Tensor) -> Tensor | float:
        """Standard deviation of the conditional path at ``t`` ((B,) or a float)."""
        return self.sigma

    def velocity(self, x0: Tensor, x1: Tensor, t: Tensor, xt: Tensor) -> Tensor:
        """Conditional velocity ``u_t(x_t | x0, x1)``."""
        return x1 - x0

    def sample_xt(self, x0: Tensor, x1: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``mean_t + std_t * eps``."""
        return self.mean(x0, x1, t) + _pad(self.std(t), x0) * eps

    def sample(
        self,
        x0: Tensor,
        x1: Tensor,
        t: Tensor,
        labels: Tensor | None = None,
        eps: Tensor | None = None,
    ) -> PathSample:
        """Couple the minibatch, then draw ``x_t`` and its target ``u_t`` at times ``t``."""
        if x0.shape != x1.shape:
            raise ConfigError(f"source and data batches differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}")
        x0, x1, labels = self.couple(x0, x1, labels)
        if eps is None:
            eps = torch.randn_like(x0) if self.sigma > 0 else torch.zeros_like(x0)
        xt = self.sample_xt(x0, x1, t, eps)
        return PathSample(t, xt, self.velocity(x0, x1, t, xt), x0, x1, labels, eps)

    def conditional_point(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_t, u_t)`` for given pairs, without coupling and with the extra noise (sigma) at 0."""
        xt = self.sample_xt(x0, x1, t, torch.zeros_like(x0))
        return xt, self.velocity(x0, x1, t, xt)

    def score_coefficient(self, t: Tensor) -> Tensor:
        """``d u / d score`` of the marginal velocity at ``t`` (classifier guidance), sigma = 0.

        For ``x_t = a_t x1 + b_t x0`` with Gaussian x0: ``u = (a'/a) x + b (a' b - a b') / a * score``.
        """
        return (1 - t) / t

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(a, b, a', b')`` of the mean path ``a_t x1 + b_t x0`` at ``t`` (the noise around it ignored)."""
        t = torch.as_tensor(t)
        return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


@register("path", "cfm", aliases=("rectified_flow", "independent_cfm"))
class CFM(ProbabilityPath):
    """Independent-coupling CFM (Tong et al. 2024): straight path, target x1 - x0; rectified flow's first step.

    Args:
        sigma: Constant standard deviation around the straight path (0: rectified flow).
    """


# -- optimal transport couplings -------------------------------------------------------------
def ot_plan(x0: Tensor, x1: Tensor, method: str = "exact", reg: float = 0.05) -> np.ndarray:
    """Minibatch OT plan (uniform marginals, squared Euclidean cost) by POT: ``emd`` or ``sinkhorn``."""
    import ot as pot

    a, b = pot.unif(x0.shape[0]), pot.unif(x1.shape[0])
    cost = torch.cdist(x0.reshape(len(x0), -1), x1.reshape(len(x1), -1)) ** 2
    cost = cost.detach().cpu().numpy()
    if method == "exact":
        plan = pot.emd(a, b, cost, numThreads=1)
    elif method == "sinkhorn":
        plan = pot.sinkhorn(a, b, cost, reg=reg)
    else:
        raise ConfigError(f"unknown OT method {method!r}; choose 'exact' or 'sinkhorn'")
    if not np.all(np.isfinite(plan)) or abs(plan.sum()) < 1e-8:
        # Sinkhorn with a tiny regulariser underflows: fall back to the independent coupling.
        plan = np.ones_like(plan) / plan.size
    return plan


def plan_permutation(plan: np.ndarray) -> np.ndarray:
    """``src`` with ``src[j]`` the source paired with target ``j``: a permutation carrying most of the plan's mass.

    The exact plan of two equal uniform batches is a permutation matrix (over n), whose column
    argmax is that permutation. An entropic (Sinkhorn) plan is dense, and its column argmax may
    give one source to several targets; then the pairing is the assignment that maximises the
    plan mass it keeps (``scipy.optimize.linear_sum_assignment``), still a permutation.
    """
    if plan.shape[0] != plan.shape[1]:
        raise ConfigError(f"pairing without resampling needs equal batches, got a {plan.shape} plan")
    src = plan.argmax(0)
    if len(np.unique(src)) == len(src):
        return src
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(plan, maximize=True)
    src = np.empty(len(cols), dtype=np.int64)
    src[cols] = rows
    return src


def sample_plan(plan: np.ndarray, size: int, replace: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i, j)`` of ``size`` pairs drawn from the plan with NumPy's global RNG (as torchcfm)."""
    p = plan.flatten()
    choices = np.random.choice(plan.shape[0] * plan.shape[1], p=p / p.sum(), size=size, replace=replace)
    return np.divmod(choices, plan.shape[1])


@register("path", "ot_cfm")
class OTCFM(CFM):
    """OT-CFM (Tong et al. 2024): straight paths between pairs of the exact minibatch OT plan.

    With ``resample`` (torchcfm's behaviour) the pairs are drawn from the plan with
    replacement (seed NumPy for reproducibility). Without it, each ``x1`` keeps its place and
    label and receives the source sample the plan assigns to it (:func:`plan_permutation`: the
    exact plan's permutation, or for an entropic plan the permutation keeping most of its
    mass), so no data point and no source sample is dropped or repeated.

    Args:
        sigma: Constant standard deviation around the straight path.
        resample: Draw pairs from the plan with replacement (torchcfm) or permute the source.
        within_class: Solve OT separately within each class of the labels, so every pair
            joins a source sample to a data point of the class it is labelled with.
    """

    ot_method: str = "exact"

    def __init__(self, sigma: float = 0.0, resample: bool = True, within_class: bool = False) -> None:
        super().__init__(sigma)
        self.resample = bool(resample)
        self.within_class = bool(within_class)

    def _plan(self, x0: Tensor, x1: Tensor) -> np.ndarray:
        return ot_plan(x0, x1, self.ot_method, reg=2 * self.sigma**2)

    def _pair(self, x0: Tensor, x1: Tensor) -> tuple[np.ndarray, np.ndarray]:
        plan = self._plan(x0, x1)
        if self.resample:
            return sample_plan(plan, len(x0))
        return plan_permutation(plan), np.arange(len(x1))

    def couple(self, x0: Tensor, x1: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        if not self.within_class:
            i, j = self._pair(x0, x1)
            i, j = torch.as_tensor(i, device=x0.device), torch.as_tensor(j, device=x1.device)
            return x0[i], x1[j], labels[j] if labels is not None else None
        if labels is None:
            raise ConfigError("class-conditional OT needs the labels of the batch")
        src, dst = torch.empty(len(x1), dtype=torch.long), torch.empty(len(x1), dtype=torch.long)
        for c in torch.unique(labels).tolist():
            members = torch.nonzero(labels.cpu() == c).flatten()
            # The source samples are i.i.d., so those at the class's positions serve it.
            i, j = self._pair(x0[members.to(x0.device)], x1[members.to(x1.device)])
            src[members], dst[members] = members[torch.as_tensor(i)], members[torch.as_tensor(j)]
        src, dst = src.to(x0.device), dst.to(x1.device)
        return x0[src], x1[dst], labels[dst]


@register("path", "class_ot_cfm", aliases=("conditional_ot_cfm",))
class ClassOTCFM(OTCFM):
    """OT-CFM with the OT plan solved within each class, so labels stay paired with their samples.

    Args:
        sigma: Constant standard deviation around the straight path.
        resample: Draw pairs from each class's plan with replacement, or permute the source.
    """

    def __init__(self, sigma: float = 0.0, resample: bool = False) -> None:
        super().__init__(sigma, resample=resample, within_class=True)


@register("path", "sb_cfm", aliases=("schrodinger_bridge",))
class SchrodingerBridgeCFM(OTCFM):
    """Schrödinger-bridge CFM (Tong et al. 2024): Brownian-bridge paths between OT pairs.

    ``x_t = t x1 + (1 - t) x0 + sigma sqrt(t (1 - t)) eps``,
    ``u_t = (1 - 2t) / (2 t (1 - t)) (x_t - mean_t) + x1 - x0``; pairs from the exact plan
    (torchcfm's default) or the entropic plan with regulariser ``2 sigma^2``.

    Args:
        sigma: Diffusion scale of the bridge (> 0).
        ot_method: ``exact`` or ``sinkhorn``.
        resample: Draw pairs from the plan with replacement (torchcfm) or permute the source.
        within_class: Solve OT within each class.
    """

    def __init__(
        self, sigma: float = 1.0, ot_method: str = "exact", resample: bool = True, within_class: bool = False
    ) -> None:
        if sigma <= 0:
            raise ConfigError(f"sb_cfm needs sigma > 0, got {sigma}")
        if ot_method not in ("exact", "sinkhorn"):
            raise ConfigError(f"unknown OT method {ot_method!r}; choose 'exact' or 'sinkhorn'")
        super().__init__(sigma, resample=resample, within_class=within_class)
        self.ot_method = ot_method

    def std(self, t: Tensor) -> Tensor:
        return self.sigma * torch.sqrt(t * (1 - t))

    def velocity(self, x0: Tensor, x1: Tensor, t: Tensor, xt: Tensor) -> Tensor:
        tp = _pad(t, x0)
        # torchcfm's 1e-8 keeps t = 0 and t = 1 finite (the bridge has no noise there).
        return (1 - 2 * tp) / (2 * tp * (1 - tp) + 1e-8) * (xt - self.mean(x0, x1, t)) + x1 - x0

    def sample(self, x0, x1, t, labels=None, eps=None) -> PathSample:
        if eps is None:
            eps = torch.randn_like(x0)
        return super().sample(x0, x1, t, labels, eps)


@register("path", "target_cfm", aliases=("lipman_cfm",))
class TargetCFM(ProbabilityPath):
    """Lipman et al. (2023) OT path: mean t x1, std 1 - (1 - sigma) t around it; Gaussian source.

    ``x_t = t x1 + (1 - (1 - sigma) t) x0`` with ``x0 ~ N(0, I)`` playing the noise, and
    ``u_t = (x1 - (1 - sigma) x_t) / (1 - (1 - sigma) t)`` (torchcfm's TargetConditionalFlowMatcher).

    Args:
        sigma: sigma_min, the data-end standard deviation.
    """

    gaussian_source = True

    def mean(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return _pad(t, x1) * x1

    def std(self, t: Tensor) -> Tensor:
        return 1 - (1 - self.sigma) * t

    def sample(self, x0, x1, t, labels=None, eps=None) -> PathSample:
        # The source sample is the path's noise.
        return super().sample(x0, x1, t, labels, x0 if eps is None else eps)

    def velocity(self, x0: Tensor, x1: Tensor, t: Tensor, xt: Tensor) -> Tensor:
        tp = _pad(t, x1)
        return (x1 - (1 - self.sigma) * xt) / (1 - (1 - self.sigma) * tp)

    def conditional_point(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        # The source sample is the path's noise, as in training.
        xt = self.sample_xt(x0, x1, t, x0)
        return xt, self.velocity(x0, x1, t, xt)

    def score_coefficient(self, t: Tensor) -> Tensor:
        return self.std(t) / t

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = torch.as_tensor(t)
        return t, self.std(t), torch.ones_like(t), torch.full_like(t, -(1 - self.sigma))


@register("path", "vp_path", aliases=("vp_cfm", "trigonometric"))
class VPPath(ProbabilityPath):
    """Variance-preserving (trigonometric) interpolant: cos(pi t/2) x0 + sin(pi t/2) x1 (Albergo & Vanden-Eijnden 2023).

    Args:
        sigma: Constant standard deviation around the path.
    """

    def mean(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        tp = _pad(t, x0)
        return torch.cos(math.pi / 2 * tp) * x0 + torch.sin(math.pi / 2 * tp) * x1

    def velocity(self, x0: Tensor, x1: Tensor, t: Tensor, xt: Tensor) -> Tensor:
        tp = _pad(t, x0)
        return math.pi / 2 * (torch.cos(math.pi / 2 * tp) * x1 - torch.sin(math.pi / 2 * tp) * x0)

    def score_coefficient(self, t: Tensor) -> Tensor:
        return math.pi / 2 / torch.tan(math.pi / 2 * t)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h = math.pi / 2 * torch.as_tensor(t)
        return torch.sin(h), torch.cos(h), math.pi / 2 * torch.cos(h), -math.pi / 2 * torch.sin(h)


def denoised_from_velocity(path: ProbabilityPath, x: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """The denoised estimate ``x1_hat = E[x1 | x_t]`` from the marginal velocity ``v`` at ``x_t = x``.

    ``x = a x1_hat + b x0_hat`` and ``v = a' x1_hat + b' x0_hat`` (both linear in the posterior
    means) give ``x1_hat = (b v - b' x) / (a' b - a b')``; cfm: ``x + (1 - t) v``.
    """
    a, b, da, db = (_pad(c.to(x), x) for c in path.coefficients(torch.as_tensor(t).to(x)))
    return (b * v - db * x) / (da * b - a * db)


def velocity_from_denoised(path: ProbabilityPath, x: Tensor, x1_hat: Tensor, t: Tensor) -> Tensor:
    """The velocity at ``x_t = x`` whose denoised estimate is ``x1_hat``: the inverse of :func:`denoised_from_velocity`.

    ``v = ((a' b - a b') x1_hat + b' x) / b``; cfm: ``(x1_hat - x) / (1 - t)``.
    """
    a, b, da, db = (_pad(c.to(x), x) for c in path.coefficients(torch.as_tensor(t).to(x)))
    return ((da * b - a * db) * x1_hat + db * x) / b


def path_noise_level(path: ProbabilityPath, t: Tensor) -> Tensor:
    """Noise level ``sigma = b_t / a_t`` of ``x_hat = x_t / a_t = x1 + sigma x0`` (Gaussian source)."""
    a, b, _, _ = path.coefficients(torch.as_tensor(t))
    return b / a


def build_path(path: str | ProbabilityPath, **options: Any) -> ProbabilityPath:
    """A path from a registry name and its constructor options, or an already built path."""
    if isinstance(path, ProbabilityPath):
        if options:
            raise ConfigError("path options are given but the path is already built")
        return path
    cls = REGISTRY.get("path", path)
    try:
        return cls(**options)
    except TypeError as err:
        raise ConfigError(f"path {path!r}: {err}") from None


# -- time sampling ---------------------------------------------------------------------------
def sample_times(
    n: int,
    kind: str = "uniform",
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Training times in (0, 1): ``uniform``, or ``logit_normal`` = sigmoid(N(mean, std^2)) (Esser et al. 2024, SD3)."""
    if kind == "uniform":
        t = torch.rand(n, generator=generator)
    elif kind == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(n, generator=generator))
    else:
        raise ConfigError(f"unknown time sampling {kind!r}; choose one of {', '.join(TIME_SAMPLINGS)}")
    return t.to(device=device, dtype=dtype)


def quantile_times(u: Tensor, kind: str = "uniform", mean: float = 0.0, std: float = 1.0) -> Tensor:
    """The training times of :func:`sample_times` at quantiles ``u`` in (0, 1) of their distribution."""
    if kind == "uniform":
        return u
    if kind == "logit_normal":
        return torch.sigmoid(mean + std * math.sqrt(2) * torch.erfinv(2 * u - 1))
    raise ConfigError(f"unknown time sampling {kind!r}; choose one of {', '.join(TIME_SAMPLINGS)}")
