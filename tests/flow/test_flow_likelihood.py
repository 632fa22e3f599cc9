"""Likelihood by the instantaneous change of variables, against exact Gaussian densities; per-sample probes."""

import math

import pytest
import torch

from framework.errors import ConfigError
from framework.generative.likelihood import (
    bits_per_dim,
    dequantize,
    gaussian_logp,
    hutchinson_probe,
    log_likelihood,
)
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
@pytest.mark.parametrize("draw", ["generator", "seeds"])
def test_hutchinson_is_unbiased(probe, draw):
    x = torch.tensor([[0.3, -1.0]], dtype=torch.float64).repeat(3000, 1)
    given = {"generator": torch.Generator().manual_seed(2)} if draw == "generator" else {"seeds": torch.arange(3000) + 7}
    result = log_likelihood(_velocity, x, divergence="hutchinson", probe=probe, solver="rk4", steps=20, **given)
    # Each row has its own probe: the estimates scatter, their mean is the exact value.
    assert result.logp.std() > 1e-3
    assert abs(result.logp.mean() - _exact_logp(x[:1])[0]) < 4 * result.logp.std() / math.sqrt(len(x))


def _nonlinear_velocity():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    return lambda t, x: net(torch.cat([x, t.reshape(1, 1).expand(x.shape[0], 1)], 1))


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_a_samples_hutchinson_estimate_does_not_depend_on_its_batch(probe):
    f = _nonlinear_velocity()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64)
    seeds = [11, 12, 13, 14, 15]
    options = {"divergence": "hutchinson", "probe": probe, "solver": "rk4", "steps": 8}
    full = log_likelihood(f, x, seeds=seeds, **options)
    # Samples 3 and 0 again, at other positions, among other samples.
    others = torch.randn(2, 2, generator=g, dtype=torch.float64)
    part = log_likelihood(f, torch.cat([others, x[3:4], x[0:1]]), seeds=[99, 98, 14, 11], **options)
    torch.testing.assert_close(part.logp[2:], full.logp[[3, 0]], rtol=1e-12, atol=1e-12)
    # The estimate does depend on the probe: other seeds, other values (this field's Jacobian
    # is not a multiple of the identity). A generator draws the seeds by position, so copies of
    # one sample get different probes.
    copies = x[3:4].repeat(8, 1)
    assert log_likelihood(f, copies, seeds=range(1000, 1008), **options).logp.unique().numel() > 1
    assert log_likelihood(f, copies, generator=torch.Generator().manual_seed(0), **options).logp.unique().numel() > 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hutchinson_probes_are_seeded_per_sample(dtype):
    like = torch.zeros(4, 3, 5, dtype=dtype)
    rademacher = hutchinson_probe(like, "rademacher", [3, 1, 4, 1])
    assert rademacher.dtype == dtype and rademacher.shape == like.shape
    assert set(rademacher.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(rademacher[1], rademacher[3], rtol=0, atol=0)  # same seed, same probe
    assert not torch.equal(rademacher[0], rademacher[1])
    torch.testing.assert_close(hutchinson_probe(like[:1], "rademacher", [1])[0], rademacher[1], rtol=0, atol=0)
    gaussian = hutchinson_probe(torch.zeros(2000, 8, dtype=dtype), "gaussian", torch.arange(2000))
    assert abs(gaussian.mean()) < 0.03 and abs(gaussian.var() - 1) < 0.05
    many = hutchinson_probe(torch.zeros(4000, 2), "rademacher", torch.arange(4000))
    assert abs(many.mean()) < 0.05
    with pytest.raises(ConfigError, match="seeds"):
        hutchinson_probe(like, "gaussian", [1, 2])


def test_dequantisation_seeded_per_sample():
    levels = 17
    x = (torch.arange(levels, dtype=torch.float32) / 8 - 1).repeat(20).reshape(20, levels)
    deq = dequantize(x, levels=levels, seeds=torch.arange(20))
    bins = ((deq + 1) / 2 * levels).floor()
    assert torch.equal(bins, torch.arange(levels, dtype=torch.float32).expand(20, levels))
    assert deq.dtype == torch.float32
    u = (deq + 1) / 2 * levels - bins
    assert abs(u.mean() - 0.5) < 0.05 and u.min() >= 0 and u.max() < 1
    torch.testing.assert_close(dequantize(x[[7, 2]], levels=levels, seeds=[7, 2]), deq[[7, 2]], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="not both"):
        dequantize(x, levels=levels, seeds=torch.arange(20), generator=torch.Generator())


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
    with pytest.raises(ConfigError, match="not both"):
        log_likelihood(_velocity, torch.zeros(1, 2), divergence="hutchinson", seeds=[0], generator=torch.Generator())
    with pytest.raises(ConfigError, match="2 seeds for a batch of 1"):
        log_likelihood(_velocity, torch.zeros(1, 2), divergence="hutchinson", seeds=[0, 1])


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_flow_model_bits_per_dim_of_a_sample_does_not_depend_on_its_batch(probe):
    from _nets import TinyVelocityNet

    from framework.generative.flow.model import FlowMatching

    torch.manual_seed(0)
    model = FlowMatching(3, (1, 4, 4), net=TinyVelocityNet((1, 4, 4), 3)).double().eval()
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 17, (6, 1, 4, 4), generator=g).double() / 8 - 1  # 17 levels, as the digits
    labels, index = torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6)

    def bits(rows):
        # Per-sample seeds for the dequantisation and the probe: the sample's index in the data.
        x = dequantize(data[rows], levels=17, seeds=index[rows])
        result = model.log_likelihood(
            x, labels[rows], divergence="hutchinson", probe=probe, seeds=index[rows], solver="rk4", steps=4
        )
        return result.bits_per_dim(levels=17)

    full, part = bits(torch.arange(6)), bits(torch.tensor([4, 1]))
    torch.testing.assert_close(part, full[[4, 1]], rtol=1e-12, atol=1e-12)
    other_probe = "gaussian" if probe == "rademacher" else "rademacher"
    x = dequantize(data, levels=17, seeds=index)
    assert not torch.allclose(  # the probe option reaches the estimator
        model.log_likelihood(x, labels, divergence="hutchinson", probe=other_probe, seeds=index, solver="rk4", steps=4).logp,
        model.log_likelihood(x, labels, divergence="hutchinson", probe=probe, seeds=index, solver="rk4", steps=4).logp,
    )
