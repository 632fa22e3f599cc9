"""Likelihood by the instantaneous change of variables, against exact Gaussian densities."""

import math

import pytest
import torch

from framework.errors import ConfigError
from framework.generative.likelihood import bits_per_dim, dequantize, gaussian_logp, log_likelihood
from framework.generative.ode import odesolve

MU = torch.tensor([1.5, -0.5], dtype=torch.float64)
L = torch.tensor([[1.2, 0.0], [0.7, 0.5]], dtype=torch.float64)  # target covariance L L^T


def _velocity(t, x):
    # Straight path x_t = t mu + M_t x0 with M_t = (1 - t) I + t L carries N(0, I) to N(mu, L L^T).
    m = (1 - t) * torch.eye(2, dtype=x.dtype) + t * L
    x0 = torch.linalg.solve(m, (x - t * MU).T).T
    return MU + x0 @ (L - torch.eye(2, dtype=x.dtype)).T


def _exact_logp(x):
    return torch.distributions.MultivariateNormal(MU, scale_tril=L).log_prob(x)


def test_exact_velocity_reaches_target_mean_and_covariance():
    x0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1 = odesolve(_velocity, x0, solver="rk4", steps=20).x
    torch.testing.assert_close(x1, MU + x0 @ L.T, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x1.mean(0), MU, atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(x1.T), L @ L.T, atol=0.08, rtol=0)


@pytest.mark.parametrize("solver", ["dopri5", "rk4"])
def test_exact_divergence_gives_exact_log_density(solver):
    x = MU + torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) @ L.T
    result = log_likelihood(_velocity, x, t_data=1.0, t_noise=0.0, solver=solver, steps=40)
    torch.testing.assert_close(result.logp, _exact_logp(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.z, torch.linalg.solve(L, (x - MU).T).T, rtol=1e-5, atol=1e-5)
    assert result.nfe > 0


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    x = torch.tensor([[0.3, -1.0]], dtype=torch.float64).repeat(3000, 1)
    result = log_likelihood(
        _velocity, x, divergence="hutchinson", probe=probe, generator=torch.Generator().manual_seed(2),
        solver="rk4", steps=20,
    )
    # Each row has its own probe: the estimates scatter, their mean is the exact value.
    assert result.logp.std() > 1e-3
    assert abs(result.logp.mean() - _exact_logp(x[:1])[0]) < 4 * result.logp.std() / math.sqrt(len(x))


def test_likelihood_under_inference_mode():
    x = torch.zeros(3, 2, dtype=torch.float64)
    with torch.inference_mode():
        result = log_likelihood(_velocity, x, solver="euler", steps=50)
    torch.testing.assert_close(result.logp, _exact_logp(x), rtol=0.05, atol=0.05)


def test_bits_per_dim_and_dequantisation():
    # score_sde's offset: 7 bits for 256 levels in [-1, 1], 8 in [0, 1].
    zero = torch.zeros(1)
    assert bits_per_dim(zero, 10).item() == pytest.approx(7.0)
    assert bits_per_dim(zero, 10, data_range=1.0).item() == pytest.approx(8.0)
    assert bits_per_dim(torch.tensor([-10 * math.log(2)]), 10, levels=None).item() == pytest.approx(1.0)
    # A standard normal in 1 dim scored continuously.
    lp = gaussian_logp(torch.zeros(1, 1))
    assert lp.item() == pytest.approx(-0.5 * math.log(2 * math.pi))

    levels = 17  # the digits data: 0..16 -> p/8 - 1
    x = torch.arange(levels, dtype=torch.float32) / 8 - 1
    deq = dequantize(x.repeat(100), levels=levels, generator=torch.Generator().manual_seed(0))
    bins = ((deq + 1) / 2 * levels).floor()
    assert torch.equal(bins, torch.arange(levels, dtype=torch.float32).repeat(100))
    assert not torch.equal(deq, x.repeat(100))


def test_bad_options_raise():
    with pytest.raises(ConfigError, match="divergence"):
        log_likelihood(_velocity, torch.zeros(1, 2), divergence="skilling")
    with pytest.raises(ConfigError, match="probe"):
        log_likelihood(_velocity, torch.zeros(1, 2), divergence="hutchinson", probe="uniform")
