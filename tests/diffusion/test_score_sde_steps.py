"""One predictor / corrector step equals score_sde's formulas (sampling.py) on fixed tensors.

score_sde indexes discrete schedules by ``timestep = int(t (N - 1) / T)``; at ``t = k / (N - 1)``
those equal our continuous ones, so single steps can be compared exactly.
"""

import math

import pytest
import torch

from framework.generative.diffusion.formulations import VE, VP
from framework.generative.diffusion.samplers import (
    Denoiser,
    _langevin_step,
    _reverse_diffusion_step,
)

N, K = 1000, 400


def _score_model(x_t, t, formulation):
    """A fixed nonlinear 'score' (any function works for a one-step formula check)."""
    return -torch.tanh(x_t) * (1 + t)


class _ScoreDenoiser(Denoiser):
    def __init__(self, formulation):
        super().__init__(lambda x, s: x, formulation)

    def score(self, x_t, t):
        self.nfe += 1
        return _score_model(x_t, t, self.formulation)


def test_vp_reverse_diffusion_step_equals_score_sde():
    f = VP()
    t = torch.tensor(K / (N - 1), dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    z = torch.randn_like(x)
    # score_sde VPSDE.discretize + ReverseDiffusionPredictor
    discrete_betas = torch.linspace(0.1 / N, 20 / N, N, dtype=torch.float64)
    timestep = int(t * (N - 1))
    beta = discrete_betas[timestep]
    f_ref = torch.sqrt(1 - beta) * x - x
    g_ref = torch.sqrt(beta)
    x_mean = x - (f_ref - g_ref**2 * _score_model(x, t, f))
    score_sde = x_mean + g_ref * z
    ours = _reverse_diffusion_step(_ScoreDenoiser(f), x, t, t - 1 / N, lambda like: z)
    # Ours: DDPM's beta_i = 1 - abar(t) / abar(t - 1/N) from the exact marginal, abar(t) =
    # exp(-int_0^t beta) = exp(-(b0 t + (b1 - b0) t^2 / 2)); score_sde's beta(t) / N is its
    # first-order expansion, equal to O(1/N^2).
    log_abar = lambda s: -(0.1 * s + 19.9 * s**2 / 2)
    beta_exact = 1 - math.exp(log_abar(float(t)) - log_abar(float(t) - 1 / N))
    exact = x - ((math.sqrt(1 - beta_exact) - 1) * x - beta_exact * _score_model(x, t, f)) + math.sqrt(beta_exact) * z
    torch.testing.assert_close(ours, exact, rtol=1e-12, atol=1e-12)
    # 1 - exp(-I) with I = beta(t) / N - (b1 - b0) / (2 N^2): differs by (beta(t)^2 / 2 + (b1 - b0) / 2) / N^2.
    assert abs(beta_exact - float(beta)) < 50 / N**2
    # The noise coefficient sqrt(beta) differs by O(N^-3/2): about 2e-4 times |z|.
    torch.testing.assert_close(ours, score_sde, rtol=0, atol=2e-3)


def test_ve_reverse_diffusion_step_equals_score_sde():
    f = VE(0.01, 50.0)
    t = torch.tensor(K / (N - 1), dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    z = torch.randn_like(x)
    discrete_sigmas = torch.exp(torch.linspace(math.log(0.01), math.log(50.0), N, dtype=torch.float64))
    timestep = int(t * (N - 1))
    sigma, adjacent = discrete_sigmas[timestep], discrete_sigmas[timestep - 1]
    g_ref = torch.sqrt(sigma**2 - adjacent**2)
    expected = x + g_ref**2 * _score_model(x, t, f) + g_ref * z
    ours = _reverse_diffusion_step(_ScoreDenoiser(f), x, t, t - 1 / (N - 1), lambda like: z)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("formulation", [VP(), VE()])
def test_langevin_corrector_step_equals_score_sde(formulation):
    """With one sample per batch score_sde's batch-mean norms are the sample's own (step_rule norms)."""
    f = formulation
    t = torch.tensor(K / (N - 1), dtype=torch.float64)
    x = torch.randn(1, 16, dtype=torch.float64)
    z = torch.randn_like(x)
    snr = 0.16
    if isinstance(f, VP):
        # score_sde: alpha = 1 - discrete_betas[timestep]; ours is the exact abar ratio, equal to O(1/N^2).
        alpha = 1 - torch.linspace(0.1 / N, 20 / N, N, dtype=torch.float64)[int(t * (N - 1))]
        tol = 1e-4
    else:
        alpha = torch.tensor(1.0, dtype=torch.float64)
        tol = 1e-12
    grad = _score_model(x, t, f)
    step = (snr * torch.norm(z, dim=-1).mean() / torch.norm(grad, dim=-1).mean()) ** 2 * 2 * alpha
    expected = x + step * grad + torch.sqrt(step * 2) * z
    ours = _langevin_step(_ScoreDenoiser(f), x, t, f.langevin_alpha(t, t - 1 / N), snr, "norms", lambda like: z)
    torch.testing.assert_close(ours, expected, rtol=tol, atol=tol)
