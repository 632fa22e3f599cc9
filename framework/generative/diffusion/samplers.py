"""Diffusion samplers: short pure functions over a denoiser, a start state and noise levels.

Every sampler has the k-diffusion form ``sampler(model, x, sigmas, noise=None, **options)``:

* ``model`` is a :class:`Denoiser`: ``model(x_hat, sigma) ~ E[x_0 | x_hat]`` on the unscaled
  state ``x_hat = x_t / s(t)`` (see :mod:`.formulations`); it counts its evaluations (NFE)
  and converts to the score of ``x_t`` for the SDE samplers.
* ``x`` is the start state in ``x_hat`` space (``noise * model.formulation.init_scale(sigmas[0])``).
* ``sigmas`` are decreasing noise levels ending with 0 (``Formulation.sigmas``).
* ``noise(like)`` draws fresh standard normal noise (use ``PerSampleNoise`` so that sample i
  depends only on its own seed); ``None`` draws from torch's global generator.

The samplers return the final ``x_hat`` (at sigma 0: the sample); :func:`sample` also
reports the NFE. Samplers that work in the formulation's time (the score_sde ones and
``pf_ode``) move to ``x_t = s(t) x_hat`` and back, and finish, as score_sde does with
``denoise=True``, with one denoising step from the last nonzero noise level.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor

from framework.errors import ConfigError
from framework.generative.diffusion.formulations import Formulation, expand
from framework.generative.guidance import NetCalls
from registry import REGISTRY, register

__all__ = [
    "Denoiser",
    "SampleResult",
    "ddim",
    "ddpm",
    "dpmpp_2m",
    "edm_heun",
    "euler",
    "euler_maruyama",
    "pc",
    "pf_ode",
    "reverse_diffusion",
    "sample",
]

Noise = Callable[[Tensor], Tensor]


class Denoiser:
    """``D(x_hat, sigma)`` bound to its formulation, counting evaluations.

    Args:
        fn: ``fn(x_hat, sigma) -> denoised``, ``sigma`` a (B,) tensor.
        formulation: The formulation that relates ``sigma`` to time and scale.
        calls: The net-call counter ``fn`` reports to (guided denoisers: see
            :class:`framework.generative.guidance.NetCalls`); ``None`` counts one per call of ``fn``.
    """

    def __init__(
        self, fn: Callable[[Tensor, Tensor], Tensor], formulation: Formulation, calls: NetCalls | None = None
    ) -> None:
        self.fn, self.formulation = fn, formulation
        self._count_own = calls is None
        self.calls = NetCalls() if calls is None else calls

    @property
    def nfe(self) -> int:
        """Net evaluations per sample since the last reset (``sample`` resets it)."""
        return self.calls.count

    @nfe.setter
    def nfe(self, value: int) -> None:
        self.calls.count = value

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        if self._count_own:
            self.calls.count += 1
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return self.fn(x, sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma)

    def score(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``grad log p_t(x_t)`` = ``(D(x_t / s, sigma) - x_t / s) / (s sigma^2)``."""
        s, sigma = self.formulation.scale(t), self.formulation.sigma(t)
        x_hat = x_t / s
        return (self(x_hat, sigma) - x_hat) / (s * sigma**2)


@dataclass
class SampleResult:
    """A sampler's output: the final state and the number of denoiser evaluations."""

    x: Tensor
    nfe: int


def _noise(noise: Noise | None, like: Tensor) -> Tensor:
    return torch.randn_like(like) if noise is None else noise(like)


# -- samplers in sigma space (k-diffusion / EDM) --------------------------------------------
@register("sampler", "euler")
def euler(model: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise | None = None) -> Tensor:
    """Euler on the probability-flow ODE ``dx/dsigma = (x - D) / sigma`` (Karras et al. 2022, Alg. 1 without Heun)."""
    for i in range(len(sigmas) - 1):
        d = (x - model(x, sigmas[i])) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


@register("sampler", "edm_heun", aliases=("heun",))
def edm_heun(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise: Noise | None = None,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's 2nd-order method with optional churn (Karras et al. 2022, Algorithm 2; N steps = 2N - 1 NFE)."""
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(churn / n, math.sqrt(2) - 1) if s_tmin <= float(sigma) <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + (sigma_hat**2 - sigma**2).sqrt() * s_noise * _noise(noise, x)
        d = (x - model(x, sigma_hat)) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        if sigma_next > 0:
            d_next = (x_next - model(x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (0.5 * d + 0.5 * d_next)
        x = x_next
    return x


@register("sampler", "ddim")
def ddim(model: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise | None = None, eta: float = 0.0) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) in sigma space with ``alpha_bar = 1 / (1 + sigma^2)``; eta 1 is DDPM."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, sigma)
        if sigma_next == 0:
            x = x0
            continue
        eps = (x - x0) / sigma
        ab, ab_next = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        c = eta * ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).sqrt()
        # x_{t'} = sqrt(ab') x0 + sqrt(1 - ab' - c^2) eps + c z, divided by sqrt(ab').
        x = x0 + ((1 - ab_next - c**2) / ab_next).sqrt() * eps
        if eta > 0:
            x = x + c / ab_next.sqrt() * _noise(noise, x)
    return x


@register("sampler", "ddpm", aliases=("ancestral",))
def ddpm(model: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise | None = None) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2): DDIM with eta 1 (posterior variance beta-tilde)."""
    return ddim(model, x, sigmas, noise, eta=1.0)


@register("sampler", "dpmpp_2m", aliases=("dpm++2m",))
def dpmpp_2m(model: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise | None = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in ``lambda = -ln sigma``, first order on the last step."""
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
            continue
        h = sigma.log() - sigma_next.log()
        if old_denoised is None:
            d = denoised
        else:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x - torch.expm1(-h) * d
        old_denoised, h_last = denoised, h
    return x


# -- samplers in the formulation's time (score_sde) ------------------------------------------
def _times(model: Denoiser, sigmas: Tensor) -> Tensor:
    if sigmas[-1] != 0 or len(sigmas) < 2:
        raise ConfigError("noise levels must end with 0")
    return model.formulation.t_of_sigma(sigmas[:-1])


def _finish(model: Denoiser, x_t: Tensor, t: Tensor) -> Tensor:
    """Last step: the denoised mean at the smallest nonzero noise level (score_sde's ``denoise``)."""
    f = model.formulation
    return model(x_t / f.scale(t), f.sigma(t))


@register("sampler", "euler_maruyama", aliases=("em",))
def euler_maruyama(model: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise | None = None) -> Tensor:
    """Euler-Maruyama on the reverse-time SDE ``dx = [f - g^2 score] dt + g dw`` (Song et al. 2021, eq. 6)."""
    f, ts = model.formulation, _times(model, sigmas)
    x = x * f.scale(ts[0])
    for t, t_next in pairwise(ts):
        dt = t_next - t
        drift, g = f.sde(x, t)
        x = x + (drift - g**2 * model.score(x, t)) * dt + g * (-dt).sqrt() * _noise(noise, x)
    return _finish(model, x, ts[-1])


def _reverse_diffusion_step(model: Denoiser, x: Tensor, t: Tensor, t_next: Tensor, noise: Noise | None) -> Tensor:
    drift, g = model.formulation.discretize(x, t, t_next)
    x_mean = x - (drift - g**2 * model.score(x, t))
    return x_mean + g * _noise(noise, x)


@register("sampler", "reverse_diffusion")
def reverse_diffusion(model: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise | None = None) -> Tensor:
    """Reverse-diffusion predictor: the forward chain's discretisation run backwards (Song et al. 2021, eq. 46)."""
    f, ts = model.formulation, _times(model, sigmas)
    x = x * f.scale(ts[0])
    for t, t_next in pairwise(ts):
        x = _reverse_diffusion_step(model, x, t, t_next, noise)
    return _finish(model, x, ts[-1])


def _langevin_step(
    model: Denoiser, x: Tensor, t: Tensor, alpha: Tensor, snr: float, step_rule: str, noise: Noise | None
) -> Tensor:
    grad = model.score(x, t)
    z = _noise(noise, x)
    if step_rule == "norms":
        # score_sde's rule with per-sample norms (score_sde averages them over the batch,
        # which would make a sample depend on its batch-mates).
        ratio = z.reshape(len(x), -1).norm(dim=1) / grad.reshape(len(x), -1).norm(dim=1)
        step = expand(2 * alpha * (snr * ratio) ** 2, x)
    elif step_rule == "sigma":
        # The same rule with the norms' expectations, ||z||^2 = d and ||score||^2 = d / std^2:
        # no heavy-tailed steps in low dimension, where single-sample norms fluctuate.
        step = 2 * alpha * (snr * model.formulation.alpha_std(t)[1]) ** 2
    else:
        raise ConfigError(f"unknown Langevin step rule {step_rule!r}; choose 'sigma' or 'norms'")
    return x + step * grad + (2 * step).sqrt() * z


@register("sampler", "pc")
def pc(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise: Noise | None = None,
    snr: float = 0.16,
    corrector_steps: int = 1,
    step_rule: str = "sigma",
) -> Tensor:
    """Predictor-corrector (Song et al. 2021, Alg. 1-3): Langevin corrector with ``snr``, then reverse diffusion.

    ``step_rule`` sets the Langevin step ``2 alpha (snr ||z|| / ||score||)^2``: ``norms`` uses
    each sample's norms, ``sigma`` their expectations (``||z|| / ||score|| = std(t)``).
    """
    f, ts = model.formulation, _times(model, sigmas)
    x = x * f.scale(ts[0])
    for i, t in enumerate(ts):
        last = i == len(ts) - 1
        # The last level has no successor: its corrector reuses the previous step's size.
        dt = (t - ts[i + 1]) if not last else (ts[i - 1] - t if i > 0 else t)
        for _ in range(corrector_steps):
            x = _langevin_step(model, x, t, f.langevin_alpha(t, t - dt), snr, step_rule, noise)
        if not last:
            x = _reverse_diffusion_step(model, x, t, ts[i + 1], noise)
    return _finish(model, x, ts[-1])


@register("sampler", "pf_ode", aliases=("ode",))
def pf_ode(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise: Noise | None = None,
    solver: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Tensor:
    """Probability-flow ODE ``dx/dt = f - g^2 score / 2`` (Song et al. 2021, eq. 13), solved by ``framework.generative.ode``.

    ``dopri5`` (adaptive, score_sde's RK45 tolerances) ignores the inner noise levels; a
    fixed-step solver (``euler``, ``heun``, ``midpoint``, ``rk4``) steps on their times.
    """
    from framework.generative.ode import ADAPTIVE_SOLVERS, odesolve

    f, ts = model.formulation, _times(model, sigmas)
    grid = ts[[0, -1]] if solver in ADAPTIVE_SOLVERS else ts
    if len(grid) < 2:
        grid = ts[[0, 0]]
    lo, hi = float(ts[-1]), float(ts[0])
    # torchdiffeq's dopri5 evaluates stages past the end time and interpolates back; keep
    # the field defined there (VP's sigma(t) is not for t < 0) by freezing it at the end.
    velocity = lambda t, x_t: pf_velocity(model, x_t, t.clamp(lo, hi))
    result = odesolve(velocity, x * f.scale(ts[0]), solver=solver, ts=grid, rtol=rtol, atol=atol)
    return _finish(model, result.x, ts[-1])


def pf_velocity(model: Denoiser, x_t: Tensor, t: Tensor) -> Tensor:
    """Probability-flow drift ``f(x, t) - g(t)^2 / 2 * score(x, t)``."""
    drift, g = model.formulation.sde(x_t, t)
    return drift - 0.5 * g**2 * model.score(x_t, t)


# -- the entry point --------------------------------------------------------------------------
def sample(
    sampler: str,
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise: Noise | None = None,
    **options: float | str,
) -> SampleResult:
    """Run the registered ``sampler`` and report its NFE.

    Args:
        sampler: Registered sampler name (``lightning list sampler``).
        model: The counting denoiser.
        x: Start state in ``x_hat`` space.
        sigmas: Decreasing noise levels ending with 0.
        noise: Fresh-noise source for stochastic samplers.
        **options: The sampler's own options (``eta``, ``churn``, ``snr``, ``solver``, ...).
    """
    fn = REGISTRY.get("sampler", sampler)
    model.nfe = 0
    sigmas = sigmas.to(device=x.device, dtype=x.dtype)
    try:
        out = fn(model, x, sigmas, noise, **options)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise ConfigError(f"sampler {sampler!r}: {err}") from None
        raise
    return SampleResult(out, model.nfe)
