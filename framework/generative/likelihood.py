"""Log-likelihood of an ODE generator by the instantaneous change of variables.

For ``dx/dt = f(t, x)`` carrying noise at ``t_noise`` to data at ``t_data``,
``d log p_t(x_t) / dt = -div f(t, x_t)`` (Chen et al. 2018, Neural ODEs, thm. 1), so

    log p_data(x) = log p_noise(z) + integral from t_data to t_noise of div f(t, x_t) dt,

where ``z`` is ``x`` carried to ``t_noise``. The state is augmented with the running
integral and both are solved together (score_sde's ``likelihood.py``; FFJORD). The
divergence is exact (one backward pass per dimension: small data) or the
Hutchinson-Skilling estimate ``eps^T (df/dx) eps`` (unbiased; images) with a Rademacher or
Gaussian probe per sample, held fixed along the trajectory as in score_sde. Probe row i is
drawn from the sample's own seed (:class:`framework.generative.noise.PerSampleNoise`), so
with the same seed a sample gets the same estimate whatever batch it is in and wherever in
it (with a fixed-step solver; ``dopri5`` picks one step size for the whole batch, which
couples samples at the level of its tolerance).

Flow matching passes its velocity field (noise at t=0, data at t=1); diffusion passes its
probability-flow drift (data at t=eps, noise at t=T). Images quantised to ``levels``
values in [-1, 1] are uniformly dequantised first and scored in bits/dim with score_sde's
offset: ``bpd = -log p / (D ln 2) + log2(levels / 2)`` (7 for 8-bit data in [-1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from framework.errors import ConfigError
from framework.generative.noise import PerSampleNoise
from framework.generative.ode import Velocity, odesolve

__all__ = [
    "LikelihoodResult",
    "bits_per_dim",
    "dequantize",
    "divergence_exact",
    "divergence_hutchinson",
    "gaussian_logp",
    "hutchinson_probe",
    "log_likelihood",
]

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")

# Each use draws from ``seed + offset``: for one seed, the probe, the dequantisation noise and
# the samplers' streams (offset 0 for the initial noise, 1_000_003 for PerSampleNoise's default)
# all differ, so scoring data with the seeds that generated samples reuses none of their noise.
PROBE_SEED_OFFSET = 0x2F6B_1D3
DEQUANTIZE_SEED_OFFSET = 0x3C6E_F37


@dataclass
class LikelihoodResult:
    """Log-likelihoods of a batch, in nats.

    Attributes:
        logp: ``log p_data(x)`` per sample, shape (B,).
        prior_logp: ``log p_noise(z)`` per sample.
        delta_logp: The integral of the divergence (``logp - prior_logp``).
        z: The data carried to the noise end.
        nfe: Evaluations of the augmented field (each one velocity plus its divergence).
    """

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    z: Tensor
    nfe: int

    def bits_per_dim(self, levels: int | None = 256, data_range: float = 2.0) -> Tensor:
        """Per-sample bits/dim; see :func:`bits_per_dim`."""
        return bits_per_dim(self.logp, self.z[0].numel(), levels, data_range)


def gaussian_logp(z: Tensor, std: float = 1.0) -> Tensor:
    """Log-density of ``N(0, std^2 I)`` per sample (all dimensions after the first summed)."""
    d = z[0].numel()
    sq = z.flatten(1).pow(2).sum(1)
    return -0.5 * d * math.log(2 * math.pi * std**2) - sq / (2 * std**2)


def bits_per_dim(logp: Tensor, num_dims: int, levels: int | None = 256, data_range: float = 2.0) -> Tensor:
    """Negative log-likelihood in bits per dimension.

    With ``levels`` (data quantised to that many values over an interval of width
    ``data_range``), adds ``log2(levels / data_range)``: the continuous density of
    dequantised data becomes a discrete probability (score_sde's offset 7 for 256 levels in
    [-1, 1], 8 in [0, 1]). ``levels=None`` gives the continuous figure.
    """
    bpd = -logp / (num_dims * math.log(2))
    if levels is not None:
        bpd = bpd + math.log2(levels / data_range)
    return bpd


def dequantize(
    x: Tensor,
    levels: int = 256,
    low: float = -1.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
    seeds: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """Uniform dequantisation: a value ``k`` of ``levels`` becomes uniform over its bin.

    Data in [low, high] on the grid ``low + k (high - low) / (levels - 1)`` maps to
    ``low + (k + u) (high - low) / levels`` with ``u ~ U[0, 1)`` (score_sde: ``(x 255 + u) / 256``).
    ``u`` comes from ``generator`` for the whole batch, or with ``seeds`` row i from
    ``seeds[i]`` (``u = Phi(n)`` for a per-sample normal ``n``), so that a sample is
    dequantised the same in any batch.
    """
    unit = (x - low) / (high - low) * (levels - 1)
    if seeds is not None:
        if generator is not None:
            raise ConfigError("dequantize takes seeds or a generator, not both")
        _check_seeds(seeds, x.shape[0])
        normal = PerSampleNoise(seeds, offset=DEQUANTIZE_SEED_OFFSET)(x.double())
        u = torch.special.ndtr(normal).clamp(max=1 - 2**-53)  # [0, 1): a bin's upper edge belongs to the next
        return (low + (unit.double().round() + u) / levels * (high - low)).to(x.dtype)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    return low + (unit.round() + u) / levels * (high - low)


def _check_seeds(seeds: Tensor | Sequence[int], batch: int) -> None:
    if len(seeds) != batch:
        raise ConfigError(f"got {len(seeds)} seeds for a batch of {batch} samples")


def divergence_exact(f: Velocity, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``f(t, x)`` and its exact divergence, one backward pass per dimension."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = f(t, x)
        flat = v.flatten(1)
        div = torch.zeros(x.shape[0], dtype=v.dtype, device=v.device)
        for i in range(flat.shape[1]):
            grad = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i < flat.shape[1] - 1)[0]
            div = div + grad.flatten(1)[:, i]
    return v.detach(), div.detach()


def divergence_hutchinson(f: Velocity, t: Tensor, x: Tensor, probe: Tensor) -> tuple[Tensor, Tensor]:
    """``f(t, x)`` and the Hutchinson-Skilling estimate ``probe^T (df/dx) probe`` of its divergence."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = f(t, x)
        grad = torch.autograd.grad((v * probe).sum(), x)[0]
    return v.detach(), (grad * probe).flatten(1).sum(1).detach()


def hutchinson_probe(like: Tensor, kind: str, seeds: Tensor | Sequence[int]) -> Tensor:
    """A Hutchinson probe shaped like ``like``: row i Rademacher (+-1) or N(0, I), drawn from ``seeds[i]`` only."""
    if kind not in PROBES:
        raise ConfigError(f"unknown Hutchinson probe {kind!r}; choose one of {', '.join(PROBES)}")
    _check_seeds(seeds, like.shape[0])
    normal = PerSampleNoise(seeds, offset=PROBE_SEED_OFFSET)(like)
    if kind == "gaussian":
        return normal
    return torch.where(normal >= 0, 1.0, -1.0).to(like.dtype)  # the sign of a normal is Rademacher


def log_likelihood(
    f: Velocity,
    x: Tensor,
    t_data: float = 1.0,
    t_noise: float = 0.0,
    prior_logp: Callable[[Tensor], Tensor] = gaussian_logp,
    divergence: str = "exact",
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    seeds: Tensor | Sequence[int] | None = None,
    solver: str = "dopri5",
    steps: int = 100,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> LikelihoodResult:
    """``log p(x)`` in nats of the density that the ODE ``dx/dt = f(t, x)`` pushes from the noise end.

    Args:
        f: The velocity field; the data distribution is at ``t_data``, the prior at ``t_noise``.
        x: Data, shape (B, ...); dequantise images first (:func:`dequantize`).
        t_data: Time of the data end (flow matching 1; diffusion a small eps).
        t_noise: Time of the noise end (flow matching 0; diffusion T).
        prior_logp: Log-density of the noise distribution per sample (default N(0, I)).
        divergence: ``exact`` or ``hutchinson``.
        probe: Hutchinson probe distribution, ``rademacher`` or ``gaussian``; one per sample,
            drawn before the solve and held fixed along the trajectory.
        generator: CPU generator that draws the per-sample probe seeds when ``seeds`` is not
            given (None: torch's global generator); row i then gets the i-th seed drawn, so
            its estimate depends on its position in the batch.
        seeds: One seed per sample (e.g. :func:`~framework.generative.output.sample_seeds` of
            the samples' indices in the data set): sample i's probe depends on ``seeds[i]``
            only, so its estimate does not depend on the batch it is in.
        solver: An ``ode_solver`` name; ``dopri5`` (default, as score_sde's RK45) or fixed steps.
        steps: Steps of a fixed-step solver.
        rtol: Relative tolerance of ``dopri5`` (score_sde: 1e-5).
        atol: Absolute tolerance of ``dopri5`` (score_sde: 1e-5).

    Returns:
        A :class:`LikelihoodResult`.
    """
    if divergence not in DIVERGENCES:
        raise ConfigError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
    if probe not in PROBES:
        raise ConfigError(f"unknown Hutchinson probe {probe!r}; choose one of {', '.join(PROBES)}")
    if seeds is not None and generator is not None:
        raise ConfigError("log_likelihood takes probe seeds or a generator, not both")
    shape = x.shape
    eps = None
    if divergence == "hutchinson":
        if seeds is None:
            seeds = torch.randint(0, 2**62, (shape[0],), generator=generator)
        eps = hutchinson_probe(x, probe, seeds)

    def augmented(t: Tensor, state: Tensor) -> Tensor:
        xt = state[:, :-1].reshape(shape)
        if eps is None:
            v, div = divergence_exact(f, t, xt)
        else:
            v, div = divergence_hutchinson(f, t, xt, eps)
        return torch.cat([v.flatten(1), div[:, None]], 1)

    # Callers often sample under inference mode; the divergence needs autograd.
    with torch.inference_mode(False):
        start = torch.cat([x.detach().clone().flatten(1), x.new_zeros(shape[0], 1)], 1)
        result = odesolve(
            augmented, start, solver=solver, steps=steps, t_start=t_data, t_end=t_noise, rtol=rtol, atol=atol
        )
    z = result.x[:, :-1].reshape(shape)
    delta = result.x[:, -1]
    prior = prior_logp(z)
    return LikelihoodResult(prior + delta, prior, delta, z, result.nfe)
