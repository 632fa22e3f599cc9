"""Diffusion formulations: the VP, sub-VP and VE SDEs of Song et al. (2021) and EDM.

Every formulation is written in the common form of Karras et al. (2022, eq. 4):

    x_t = s(t) * (x_0 + sigma(t) * eps),     eps ~ N(0, I)

so one internal denoiser ``D(x_hat, sigma, labels) ~ E[x_0 | x_hat]`` on the unscaled state
``x_hat = x_t / s(t)`` serves every sampler (k-diffusion's convention). A formulation knows

* its marginal (score_sde's ``marginal_prob``), forward SDE (``sde``) and its one-step
  discretisation (``discretize``, for the reverse-diffusion predictor: the exact transition
  of the marginal, so it is defined at every step count);
* how the net is parametrised (:meth:`Formulation.denoise`): eps-prediction for the
  score_sde SDEs, EDM's preconditioning for ``edm``;
* its training loss (:meth:`Formulation.loss`) and default sampling noise levels.

Conversions (``x_hat = x0 + sigma * eps``): ``eps = (x_hat - D) / sigma``,
``score_x_hat = (D - x_hat) / sigma**2``, ``score_x_t = score_x_hat / s``, and the
probability-flow velocity ``dx_t/dt = f(t) x_t - g(t)**2 / 2 * score_x_t``.

Pure math: no Lightning here. ``net`` arguments are callables ``net(x, noise_level, labels)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from framework.errors import ConfigError
from registry import register

__all__ = ["EDM", "VE", "VP", "Formulation", "Net", "SubVP", "expand", "karras_sigmas"]

Net = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def expand(v: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast a scalar or (B,) tensor against a (B, ...) tensor."""
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    if v.ndim == 0:
        return v
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0, dtype=torch.float64) -> Tensor:
    """EDM noise levels (Karras et al. 2022, eq. 5): ``steps`` rho-spaced values, then 0."""
    if steps < 1:
        raise ConfigError(f"sampling needs steps >= 1, got {steps}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sig, sig.new_zeros(1)]).to(dtype)


class Formulation(ABC):
    """Base class. Subclasses define ``alpha_std`` (the marginal) and ``sde``.

    Attributes:
        t_max: Time of the prior (T).
        t_min: Smallest time used for sampling and likelihood (score_sde's ``eps`` 1e-3;
            EDM: ``sigma_min``).
        train_eps: Smallest training time (score_sde: 1e-5).
        likelihood_eps: Data-end time of the likelihood integral (score_sde: 1e-5).
        prior_std: Standard deviation of the prior of ``x_T``.
        default_schedule: ``"time"`` (uniform in t) or ``"karras"``.
    """

    t_max: float = 1.0
    t_min: float = 1e-3
    train_eps: float = 1e-5
    prior_std: float = 1.0
    default_schedule: str = "time"
    likelihood_eps: float = 1e-5

    # -- marginal and SDE (score_sde's sde_lib) ---------------------------------------
    @abstractmethod
    def alpha_std(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Marginal ``x_t | x_0 ~ N(alpha(t) x_0, std(t)^2 I)``."""

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of ``x_t | x_0`` (score_sde's ``marginal_prob``)."""
        alpha, std = self.alpha_std(t)
        return expand(alpha, x0) * x0, std

    @abstractmethod
    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Forward SDE ``dx = f(x, t) dt + g(t) dw``: returns ``(f(x, t), g(t))``."""

    def discretize(self, x: Tensor, t: Tensor, t_next: Tensor) -> tuple[Tensor, Tensor]:
        """The forward step ``t_next -> t`` as ``x_t = x + f + G z``: returns ``(f, G)``.

        The exact Gaussian transition that keeps the marginal: with ``r = alpha(t) / alpha(t_next)``,
        ``f = (r - 1) x`` and ``G^2 = std(t)^2 - r^2 std(t_next)^2`` (>= 0 for every formulation
        here, at every step size). For VP this is DDPM's chain ``beta_i = 1 - abar(t) / abar(t_next)``,
        for VE / EDM SMLD's ``G^2 = sigma(t)^2 - sigma(t_next)^2``. See docs/diffusion.md for
        how it relates to score_sde's ``discrete_betas``.
        """
        alpha, std = self.alpha_std(t)
        alpha_next, std_next = self.alpha_std(t_next)
        r = alpha / alpha_next
        var = (std**2 - (r * std_next) ** 2).clamp_min(0)
        return (expand(r, x) - 1) * x, var.sqrt()

    def langevin_alpha(self, t: Tensor, t_next: Tensor) -> Tensor:
        """The ``alpha`` factor of score_sde's Langevin corrector step (1 except VP/sub-VP)."""
        return torch.ones_like(t)

    # -- the common (scale, sigma) form -------------------------------------------------
    def scale(self, t: Tensor) -> Tensor:
        """``s(t)``: the signal scale."""
        return self.alpha_std(t)[0]

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t)``: noise level of the unscaled state ``x_t / s(t)``."""
        alpha, std = self.alpha_std(t)
        return std / alpha

    @abstractmethod
    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`sigma`."""

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(torch.tensor(self.t_min, dtype=torch.float64)))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(torch.tensor(self.t_max, dtype=torch.float64)))

    def init_scale(self, sigma0: Tensor) -> Tensor:
        """Std of the prior in ``x_hat`` space at noise level ``sigma0``: ``prior_std / s(t0)``."""
        return self.prior_std / self.scale(self.t_of_sigma(sigma0))

    def prior_logp(self, z: Tensor) -> Tensor:
        """Log-density of the prior ``N(0, prior_std^2 I)`` at ``x_T = z``, per sample."""
        d = z[0].numel()
        flat = z.reshape(z.shape[0], -1)
        return -0.5 * d * math.log(2 * math.pi * self.prior_std**2) - flat.pow(2).sum(1) / (2 * self.prior_std**2)

    def sigmas(self, steps: int, schedule: str | None = None, rho: float = 7.0, dtype=torch.float64) -> Tensor:
        """``steps`` decreasing noise levels from ``sigma_max`` to ``sigma_min``, then 0.

        ``time``: ``sigma(t)`` on ``t`` uniform in ``[t_max, t_min]`` (score_sde, DDPM-like);
        ``karras``: EDM's rho-spacing between the same end points; ``vp``: DDPM's grid for any
        formulation, the time of the linear VP schedule (beta 0.1 to 20, :class:`VP`) uniform
        between the same end points (guided-diffusion's respaced steps; ``time`` for ``vp``).
        """
        schedule = schedule or self.default_schedule
        if steps < 1:
            raise ConfigError(f"sampling needs steps >= 1, got {steps}")
        if schedule == "karras":
            return karras_sigmas(steps, self.sigma_min, self.sigma_max, rho, dtype)
        if schedule == "time":
            ts = torch.linspace(self.t_max, self.t_min, steps, dtype=torch.float64)
            sig = self.sigma(ts)
            return torch.cat([sig, sig.new_zeros(1)]).to(dtype)
        if schedule == "vp":
            vp = VP()
            ends = vp.t_of_sigma(torch.tensor([self.sigma_max, self.sigma_min], dtype=torch.float64))
            sig = vp.sigma(torch.linspace(float(ends[0]), float(ends[1]), steps, dtype=torch.float64))
            return torch.cat([sig, sig.new_zeros(1)]).to(dtype)
        raise ConfigError(f"unknown noise schedule {schedule!r}; choose 'time', 'karras' or 'vp'")

    # -- the net's parametrisation ----------------------------------------------------
    @abstractmethod
    def noise_level(self, t: Tensor) -> Tensor:
        """What the net receives as its noise input at time ``t``."""

    def denoise(self, net: Net, x_hat: Tensor, sigma: Tensor, labels: Tensor | None) -> Tensor:
        """``D(x_hat, sigma)`` from an eps-predicting net fed ``x_t = s x_hat`` (score_sde)."""
        t = self.t_of_sigma(sigma)
        x_t = expand(self.scale(t), x_hat) * x_hat
        eps = net(x_t, self.noise_level(t), labels)
        return x_hat - expand(sigma, x_hat) * eps.to(x_hat.dtype)

    def train_times(self, u: Tensor) -> Tensor:
        """Training times at quantiles ``u`` in (0, 1) of their distribution: ``U(train_eps, T)``."""
        return u * (self.t_max - self.train_eps) + self.train_eps

    def residual(
        self, net: Net, x0: Tensor, labels: Tensor | None, t: Tensor, noise: Tensor, likelihood_weighting: bool = False
    ) -> Tensor:
        """The training residual at given times and noise: the loss is its mean square over dims.

        With an eps-predicting net, ``eps_hat(x_t) - z`` for ``x_t = alpha x0 + std z``
        (score_sde's ``|| s std + z ||``); likelihood weighting scales it by ``g(t) / std(t)``.
        """
        mean, std = self.marginal(x0, t)
        x_t = mean + expand(std, x0) * noise
        r = net(x_t, self.noise_level(t), labels) - noise
        if likelihood_weighting:
            r = r * expand(self.sde(x_t, t)[1] / std, x0)
        return r

    def loss(
        self, net: Net, x0: Tensor, labels: Tensor | None, likelihood_weighting: bool = False
    ) -> Tensor:
        """Denoising score matching per sample (score_sde's ``get_sde_loss_fn``), mean over dims.

        ``t ~ U(train_eps, T)``; with an eps-predicting net the loss ``|| s std + z ||^2`` is
        ``|| z - eps_hat ||^2``; likelihood weighting multiplies by ``g(t)^2 / std(t)^2``.
        """
        b = x0.shape[0]
        t = self.train_times(torch.rand(b, device=x0.device, dtype=x0.dtype))
        z = torch.randn_like(x0)
        return self.residual(net, x0, labels, t, z, likelihood_weighting).pow(2).reshape(b, -1).mean(1)


@register("formulation", "vp")
class VP(Formulation):
    """Variance-preserving SDE (Song et al. 2021): ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw``.

    Args:
        beta_min: beta(0) (score_sde 0.1).
        beta_max: beta(1) (score_sde 20).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 < beta_min < beta_max:
            raise ConfigError(f"vp needs 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """``-1/2 int_0^t beta``."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha_std(self, t: Tensor) -> tuple[Tensor, Tensor]:
        lmc = self.log_mean_coeff(t)
        return lmc.exp(), (-torch.expm1(2 * lmc)).sqrt()

    def sigma(self, t: Tensor) -> Tensor:
        return torch.expm1(-2 * self.log_mean_coeff(t)).sqrt()

    def _t_of_integral(self, integral: Tensor) -> Tensor:
        # Solve 0.5 t^2 (b1 - b0) + t b0 = integral for t >= 0.
        d = self.beta_max - self.beta_min
        return (-self.beta_min + (self.beta_min**2 + 2 * d * integral).sqrt()) / d

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return self._t_of_integral(torch.log1p(sigma**2))

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        return -0.5 * expand(beta, x) * x, beta.sqrt()

    def step_alpha(self, t: Tensor, t_next: Tensor) -> Tensor:
        """DDPM's per-step ``alpha_i = abar(t) / abar(t_next) = exp(-int_{t_next}^t beta)``, in (0, 1].

        score_sde uses ``1 - beta(t) / N`` (its ``discrete_betas``), the first-order expansion of
        the same quantity: it agrees to O(1/N^2) per step and turns negative for
        ``N <= beta_max``; the exact ratio is defined at every step count.
        """
        return torch.exp(2 * (self.log_mean_coeff(t) - self.log_mean_coeff(t_next)))

    def discretize(self, x: Tensor, t: Tensor, t_next: Tensor) -> tuple[Tensor, Tensor]:
        # DDPM's chain: x_t = sqrt(alpha_i) x + sqrt(1 - alpha_i) z (the base class's exact step).
        alpha = self.step_alpha(t, t_next)
        return (expand(alpha.sqrt(), x) - 1) * x, (-torch.expm1(alpha.log())).sqrt()

    def langevin_alpha(self, t: Tensor, t_next: Tensor) -> Tensor:
        # score_sde's LangevinCorrector takes alpha = sde.alphas[timestep] for VP and sub-VP.
        return self.step_alpha(t, t_next)

    def noise_level(self, t: Tensor) -> Tensor:
        # score_sde's continuous DDPM++ models take t * 999 (the DDPM step index scale).
        return t * 999


@register("formulation", "subvp", aliases=("sub_vp", "sub-vp"))
class SubVP(VP):
    """Sub-VP SDE (Song et al. 2021): VP's drift, diffusion ``sqrt(beta(t) (1 - exp(-2 int beta)))``.

    Args:
        beta_min: beta(0) (score_sde 0.1).
        beta_max: beta(1) (score_sde 20).
    """

    def alpha_std(self, t: Tensor) -> tuple[Tensor, Tensor]:
        lmc = self.log_mean_coeff(t)
        # score_sde: std = 1 - exp(2 lmc), without a square root.
        return lmc.exp(), -torch.expm1(2 * lmc)

    def sigma(self, t: Tensor) -> Tensor:
        alpha, std = self.alpha_std(t)
        return std / alpha

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        # sigma = (1 - a^2) / a  =>  a = (sqrt(sigma^2 + 4) - sigma) / 2.
        alpha = 2 / ((sigma**2 + 4).sqrt() + sigma)
        return self._t_of_integral(-2 * alpha.log())

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        discount = -torch.expm1(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
        return -0.5 * expand(beta, x) * x, (beta * discount).sqrt()

    def discretize(self, x: Tensor, t: Tensor, t_next: Tensor) -> tuple[Tensor, Tensor]:
        """score_sde's Euler step ``f = f(x, t) dt, G = g(t) sqrt(dt)`` (its subVPSDE keeps the default).

        Unlike VP's chain it has no square root of ``1 - beta dt``, so it is defined at every
        step count; we keep score_sde's choice here.
        """
        dt = t - t_next
        drift, diffusion = self.sde(x, t)
        return drift * expand(dt, x), diffusion * dt.sqrt()


@register("formulation", "ve")
class VE(Formulation):
    """Variance-exploding SDE (Song et al. 2021): ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``.

    Args:
        sigma_min: sigma(0) (score_sde 0.01).
        sigma_max: sigma(1) and the prior's std (score_sde 50 for CIFAR-10).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"ve needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.smin, self.smax = float(sigma_min), float(sigma_max)
        self.prior_std = self.smax
        self.t_min = 1e-5  # score_sde's sampling eps for the VE configs

    def alpha_std(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), self.smin * (self.smax / self.smin) ** t

    def sigma(self, t: Tensor) -> Tensor:
        return self.smin * (self.smax / self.smin) ** t

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return torch.log(sigma / self.smin) / math.log(self.smax / self.smin)

    def init_scale(self, sigma0: Tensor) -> Tensor:
        return sigma0

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.sigma(t)
        return torch.zeros_like(x), sigma * math.sqrt(2 * math.log(self.smax / self.smin))

    def noise_level(self, t: Tensor) -> Tensor:
        # NCSN++ embeds log(sigma); we pass EDM's c_noise = ln(sigma) / 4 to keep it O(1).
        return self.sigma(t).log() / 4


@register("formulation", "edm")
class EDM(Formulation):
    """EDM (Karras et al. 2022): ``s = 1, sigma(t) = t``, preconditioned denoiser, log-normal sigmas.

    Args:
        sigma_data: Std of the data (0.5).
        p_mean: Mean of ``ln sigma`` during training (-1.2).
        p_std: Std of ``ln sigma`` during training (1.2).
        sigma_min: Smallest sampling noise level (0.002).
        sigma_max: Largest sampling noise level and prior std (80).
    """

    default_schedule = "karras"
    train_eps = 0.0

    def __init__(
        self,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
    ) -> None:
        if not 0 < sigma_min < sigma_max or sigma_data <= 0 or p_std <= 0:
            raise ConfigError("edm needs 0 < sigma_min < sigma_max, sigma_data > 0 and p_std > 0")
        self.sigma_data, self.p_mean, self.p_std = float(sigma_data), float(p_mean), float(p_std)
        self.t_min, self.t_max, self.prior_std = float(sigma_min), float(sigma_max), float(sigma_max)
        self.likelihood_eps = self.t_min

    def alpha_std(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), t

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return sigma

    def init_scale(self, sigma0: Tensor) -> Tensor:
        return sigma0

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(x), (2 * t).sqrt()

    def preconditioning(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``c_skip, c_out, c_in, c_noise`` (EDM Table 1)."""
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sigma**2 + sd2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def noise_level(self, t: Tensor) -> Tensor:
        return t.log() / 4

    def denoise(self, net: Net, x_hat: Tensor, sigma: Tensor, labels: Tensor | None) -> Tensor:
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma)
        f = net(expand(c_in, x_hat) * x_hat, c_noise, labels)
        return expand(c_skip, x_hat) * x_hat + expand(c_out, x_hat) * f.to(x_hat.dtype)

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def train_times(self, u: Tensor) -> Tensor:
        """Training noise levels at quantiles ``u`` of EDM's log-normal: ``exp(p_mean + p_std Phi^-1(u))``."""
        return (self.p_mean + self.p_std * math.sqrt(2) * torch.erfinv(2 * u - 1)).exp()

    def residual(
        self, net: Net, x0: Tensor, labels: Tensor | None, t: Tensor, noise: Tensor, likelihood_weighting: bool = False
    ) -> Tensor:
        """``sqrt(lambda(sigma)) (D(x0 + sigma n) - x0)`` at ``sigma = t``: EDM's loss is its mean square."""
        if likelihood_weighting:
            raise ConfigError("likelihood weighting is defined for the vp/subvp/ve SDE losses, not edm")
        noisy = x0 + expand(t, x0) * noise
        denoised = self.denoise(net, noisy, t, labels)
        return expand(self.loss_weight(t).sqrt(), x0) * (denoised - x0)

    def loss(
        self, net: Net, x0: Tensor, labels: Tensor | None, likelihood_weighting: bool = False
    ) -> Tensor:
        """EDM's loss per sample: ``lambda(sigma) || D(x0 + sigma n) - x0 ||^2``, mean over dims."""
        if likelihood_weighting:
            raise ConfigError("likelihood weighting is defined for the vp/subvp/ve SDE losses, not edm")
        b = x0.shape[0]
        sigma = (torch.randn(b, device=x0.device, dtype=x0.dtype) * self.p_std + self.p_mean).exp()
        noise = torch.randn_like(x0)
        return self.residual(net, x0, labels, sigma, noise).pow(2).reshape(b, -1).mean(1)
