"""Feynman-Kac correctors for classifier-free guidance (Skreta et al. 2025, "Feynman-Kac correctors
in diffusion: annealing, guidance, and product of experts"; reference: martaskrt/fkc-diffusion,
``applications/images/edm2/generate_images.py``, the ``--fkc`` path of ``edm_sampler``).

Plain CFG with weight ``w`` does not sample the tilted target ``p(x)^(1 - w) p(x | c)^w``;
FKC runs ``K`` particles per sample on a stochastic sampler driven by the CFG score and
reweights them by the Feynman-Kac weights that make the particle system target it, with
systematic resampling every step but the last. In the reference's form (EDM, ``sigma = t``,
``x_hat`` space; every formulation and flow path reaches it through its denoised estimate):

* score ``s = (1 - w) s_u + w s_c`` with ``s = (D - x) / t^2`` of the unconditional and
  conditional denoisers;
* Euler-Maruyama ``x <- x - 2 t s dt + sqrt(2 t |dt|) xi`` (``dt < 0``);
* log-weight increment ``da = -w (w - 1) ||s_u - s_c||^2 t dt`` (:func:`fkc_log_weight_increment`),
  centred over the particles and clamped to ``[-clamp, clamp]`` (the reference's stabiliser:
  a bias, documented in docs/guidance.md);
* systematic resampling from ``softmax(a)`` (:func:`systematic_resample`), then ``a = 0``.

Registered as the ``fkc`` entry of kind ``search`` (inference-time algorithms): each returned
sample has its own ``K`` particles, seeded from its seed (so it depends on nothing else), and is
particle 0 after the last step (after resampling the particles are exchangeable). NFE per
sample: ``2 K steps`` (both CFG branches of every particle).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from framework.errors import ConfigError
from framework.generative.noise import PerSampleNoise, seeded_randn
from framework.generative.search import Search, SearchResult, candidate_seeds
from registry import register

__all__ = ["FeynmanKacCFG", "cfg_score", "fkc_log_weight_increment", "karras_sigmas", "systematic_resample"]


def cfg_score(s_u: Tensor, s_c: Tensor, w: float) -> Tensor:
    """The CFG score ``(1 - w) s_u + w s_c`` (w = 1: conditional)."""
    return (1 - w) * s_u + w * s_c


def fkc_log_weight_increment(s_u: Tensor, s_c: Tensor, w: float, t: float, dt: float) -> Tensor:
    """``-w (w - 1) ||s_u - s_c||^2 t dt`` per sample (reference ``d_a``; ``dt`` is negative)."""
    norm = (s_u - s_c).pow(2).flatten(1).sum(1)
    return -w * (w - 1) * norm * t * dt


def systematic_resample(log_weights: Tensor, u: Tensor | float) -> Tensor:
    """Systematic resampling indices from ``softmax(log_weights)`` over the last dim, one uniform ``u`` per row.

    The reference's ``sample_cat_sys``: points ``(u + i / K) mod 1``, weights clipped to
    ``[1e-6, 1]`` (not renormalised), index = the first cumulative weight >= the point
    (``np.digitize(..., right=True)``; an index past the end becomes the last).
    """
    k = log_weights.shape[-1]
    u = torch.as_tensor(u, dtype=torch.float64).reshape(*log_weights.shape[:-1], 1)
    points = (u + torch.arange(k, dtype=torch.float64) / k) % 1.0
    bins = torch.cumsum(torch.softmax(log_weights.double().cpu(), dim=-1).clip(1e-6, 1.0), dim=-1)
    ids = torch.searchsorted(bins.contiguous(), points.contiguous(), right=False)
    return ids.clamp_max(k - 1)


def karras_sigmas(steps: int, sigma_max: float, sigma_min: float = 0.002, rho: float = 7.0) -> Tensor:
    """EDM's noise levels (Karras et al. 2022, eq. 5) with a final 0, as the reference's sampler."""
    i = torch.arange(steps, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + i / max(steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


@register("search", "fkc", aliases=("feynman_kac",))
class FeynmanKacCFG(Search):
    """FKC-corrected classifier-free guidance: ``K`` particles per sample targeting ``p^(1 - w) p(.|c)^w``.

    Args:
        particles: Particles ``K`` per returned sample.
        scale: CFG weight ``w`` (1: conditional; the reference's ``guidance``).
        steps: Euler-Maruyama steps (reference default 32).
        clamp: Clamp of the centred log-weight increments (the reference's Heun ``edm_sampler``: 2;
            its Euler-Maruyama variant: 1; ``inf``: none, unbiased).
        resample: Resample (False: the same particles, plain CFG on the stochastic sampler).
        sigma_max: Largest noise level (default: the generator's, at most 80).
        sigma_min: Smallest nonzero noise level.
        rho: Karras schedule exponent.
    """

    needs_verifier = False

    def __init__(
        self,
        particles: int = 4,
        scale: float = 3.0,
        steps: int = 32,
        clamp: float = 2.0,
        resample: bool = True,
        sigma_max: float | None = None,
        sigma_min: float = 0.002,
        rho: float = 7.0,
    ) -> None:
        if particles < 1 or steps < 1 or clamp <= 0:
            raise ConfigError("fkc needs particles >= 1, steps >= 1 and clamp > 0")
        self.particles, self.scale, self.steps, self.clamp = int(particles), float(scale), int(steps), float(clamp)
        self.resample, self.sigma_max, self.sigma_min, self.rho = bool(resample), sigma_max, float(sigma_min), float(rho)

    def __call__(self, trajectory, verifier, labels, seeds) -> SearchResult:
        b, k, w = len(labels), self.particles, self.scale
        cand = candidate_seeds(seeds, k).reshape(-1)  # particle j of sample i starts from its own seed
        rep = labels.repeat_interleave(k)
        sigma_max = min(float(trajectory.sigma_max), 80.0) if self.sigma_max is None else float(self.sigma_max)
        ts = karras_sigmas(self.steps, sigma_max, self.sigma_min, self.rho).tolist()
        x = seeded_randn(cand, trajectory.shape, device=labels.device, dtype=torch.float64) * ts[0]
        noise = PerSampleNoise(seeds)  # sample i's generator draws the noise of all its K particles
        uniforms = [torch.Generator().manual_seed(int(s)) for s in candidate_seeds(seeds, 1, stream=7).view(-1)]
        for i in range(self.steps):
            t, dt = ts[i], ts[i + 1] - ts[i]
            d_u, d_c = trajectory.branches(x, rep, t)
            s_u, s_c = (d_u - x) / t**2, (d_c - x) / t**2
            xi = noise(x.view(b, k, *x.shape[1:])).view_as(x)
            x = x - 2 * t * cfg_score(s_u, s_c, w) * dt + (2 * t * abs(dt)) ** 0.5 * xi
            if self.resample and i != self.steps - 1 and k > 1:
                da = fkc_log_weight_increment(s_u, s_c, w, t, dt).view(b, k)
                da = (da - da.mean(dim=1, keepdim=True)).clamp(-self.clamp, self.clamp)
                u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in uniforms])
                picks = systematic_resample(da, u)  # (B, K), within each sample's own particles
                x = x[(torch.arange(b).view(-1, 1) * k + picks).view(-1).to(x.device)]
        out = x.view(b, k, *x.shape[1:])[:, 0]
        return SearchResult(out, torch.zeros(b), trajectory.rows_nfe / b, 0.0)
