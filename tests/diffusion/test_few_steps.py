"""Every sampler on every formulation returns finite samples at any step count (issue 9).

VP's score_sde chain ``sqrt(1 - beta(t) dt)`` and its Langevin ``alpha = 1 - beta(t) dt`` turn
negative for ``N <= beta_max`` steps; the exact-marginal step (DDPM's alpha-bar ratios) is
defined at every N. The data are a 2-D Gaussian with its exact denoiser, so the test is fast.
"""

import pytest
import torch

import registry
from framework.generative.diffusion.formulations import VP
from framework.generative.diffusion.samplers import Denoiser, sample
from tests.diffusion.conftest import GaussianData

FORMULATIONS = ["vp", "subvp", "ve", "edm"]
DATA = GaussianData(d=2)


@pytest.mark.parametrize("steps", [5, 10, 20, 1000])
@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("sampler", registry.REGISTRY.names("sampler"))
def test_samples_are_finite_at_every_step_count(sampler, formulation, steps):
    if sampler == "pf_ode" and steps == 1000:
        steps = 20  # dopri5 ignores the inner levels: 1000 would repeat the 20-step case
    f = registry.create("formulation", formulation)
    sigmas = f.sigmas(steps)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, DATA.d, generator=g, dtype=torch.float64)
    noise = lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype)
    out = sample(sampler, Denoiser(DATA.denoise, f), z * f.init_scale(sigmas[0]), sigmas, noise)
    assert torch.isfinite(out.x).all(), f"{sampler} on {formulation} with {steps} steps: {out.x}"


@pytest.mark.parametrize("formulation", ["vp", "ve", "edm"])
def test_discretize_keeps_the_exact_marginal_at_any_step_size(formulation):
    """x_s ~ N(a_s x0, std_s^2) and x_t = x_s + f + G z give N(a_t x0, std_t^2), even for one huge step."""
    f = registry.create("formulation", formulation)
    lo, hi = (0.01, 0.99) if formulation != "edm" else (0.01, 70.0)
    t_next, t = torch.tensor([lo, lo], dtype=torch.float64), torch.tensor([hi, 0.5 * (lo + hi)], dtype=torch.float64)
    x0 = torch.tensor([[1.5], [-0.7]], dtype=torch.float64)
    a_s, std_s = f.alpha_std(t_next)
    a_t, std_t = f.alpha_std(t)
    # x_s = a_s x0 + std_s e; the step is linear in x_s: x_t = (x_s + f(x_s)) + G z.
    unit = torch.ones_like(x0)
    r = (unit + f.discretize(unit, t, t_next)[0])[:, 0]  # f is (r - 1) x
    G = f.discretize(unit, t, t_next)[1]
    torch.testing.assert_close(r * a_s, a_t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close((r * std_s) ** 2 + G**2, std_t**2, rtol=1e-10, atol=1e-12)


def test_vp_step_alpha_is_ddpm_alpha_bar_ratio():
    f = VP()
    t, t_next = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    abar = lambda s: torch.exp(-(0.1 * s + 0.5 * 19.9 * s**2))  # exp(-int_0^s beta)
    torch.testing.assert_close(f.step_alpha(t, t_next), abar(t) / abar(t_next))
    assert 0 < float(f.langevin_alpha(t, t_next)) < 1
