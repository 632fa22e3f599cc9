"""Formulations against score_sde's closed forms, and the forward process against diffusers."""

import math

import pytest
import torch

import registry
from framework.errors import ConfigError
from framework.generative.diffusion.formulations import (
    EDM,
    VE,
    VP,
    SubVP,
    karras_sigmas,
)

T = torch.tensor([1e-5, 1e-3, 0.1, 0.37, 0.5, 0.9, 1.0], dtype=torch.float64)


def test_vp_subvp_ve_marginals_equal_score_sde_closed_forms():
    x0 = torch.randn(len(T), 3, dtype=torch.float64)
    b0, b1 = 0.1, 20.0
    lmc = -0.25 * T**2 * (b1 - b0) - 0.5 * T * b0  # score_sde VPSDE.marginal_prob
    mean, std = VP().marginal(x0, T)
    torch.testing.assert_close(mean, torch.exp(lmc)[:, None] * x0)
    torch.testing.assert_close(std, torch.sqrt(1.0 - torch.exp(2.0 * lmc)))
    mean, std = SubVP().marginal(x0, T)
    torch.testing.assert_close(mean, torch.exp(lmc)[:, None] * x0)
    torch.testing.assert_close(std, 1 - torch.exp(2.0 * lmc))
    mean, std = VE(0.01, 50.0).marginal(x0, T)
    torch.testing.assert_close(mean, x0)
    torch.testing.assert_close(std, 0.01 * (50.0 / 0.01) ** T)
    # score_sde's SDE coefficients
    x = torch.ones(len(T), 1, dtype=torch.float64)
    beta = b0 + T * (b1 - b0)
    torch.testing.assert_close(VP().sde(x, T)[1], beta.sqrt())
    torch.testing.assert_close(SubVP().sde(x, T)[1], torch.sqrt(beta * (1 - torch.exp(-2 * b0 * T - (b1 - b0) * T**2))))
    torch.testing.assert_close(VE().sde(x, T)[1], 0.01 * 5000**T * math.sqrt(2 * math.log(5000)))


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "edm"])
def test_scale_sigma_form_is_consistent_with_the_sde(name):
    """x_t = s (x0 + sigma eps) with f = s'/s and g^2 = s^2 d(sigma^2)/dt (Karras et al. eq. 4)."""
    f = registry.create("formulation", name)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64) * (f.t_max if name == "edm" else 1.0)
    torch.testing.assert_close(f.t_of_sigma(f.sigma(t)), t)
    std = f.alpha_std(t)[1]
    torch.testing.assert_close(f.scale(t) * f.sigma(t), std)
    h = 1e-6
    ds = (f.scale(t + h) - f.scale(t - h)) / (2 * h)
    dvar = (f.sigma(t + h) ** 2 - f.sigma(t - h) ** 2) / (2 * h)
    x = torch.ones(len(t), 1, dtype=torch.float64)
    drift, g = f.sde(x, t)
    torch.testing.assert_close(drift[:, 0], ds / f.scale(t), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g**2, f.scale(t) ** 2 * dvar, rtol=1e-5, atol=1e-6)


def test_edm_preconditioning_and_sigmas():
    f = EDM()
    s = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = f.preconditioning(s)
    torch.testing.assert_close(c_skip, 0.25 / (s**2 + 0.25))
    torch.testing.assert_close(c_out, s * 0.5 / (s**2 + 0.25).sqrt())
    torch.testing.assert_close(c_in, 1 / (s**2 + 0.25).sqrt())
    torch.testing.assert_close(c_noise, s.log() / 4)
    torch.testing.assert_close(f.loss_weight(s), (s**2 + 0.25) / (s * 0.5) ** 2)
    sig = karras_sigmas(18, 0.002, 80.0)
    i = torch.arange(18, dtype=torch.float64)
    ref = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7  # EDM eq. 5
    torch.testing.assert_close(sig[:-1], ref)
    assert sig[-1] == 0 and len(f.sigmas(18)) == 19


def test_forward_process_equals_diffusers_add_noise():
    from diffusers import DDPMScheduler

    x0 = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    noise = torch.randn_like(x0)
    steps = torch.tensor([0, 10, 250, 500, 800, 999])
    for n in (1000, 8000):
        # DDPM's discrete betas are score_sde's beta(t) / N: the VP SDE is their N -> inf limit.
        sched = DDPMScheduler(num_train_timesteps=n, beta_start=0.1 / n, beta_end=20.0 / n, beta_schedule="linear")
        idx = steps * n // 1000
        ref = sched.add_noise(x0, noise, idx)
        # Our forward process x_t = s(t) (x0 + sigma eps) at the scheduler's own alpha_bar is exact:
        ab = sched.alphas_cumprod.to(torch.float64)[idx]
        sigma = ((1 - ab) / ab).sqrt().view(-1, 1, 1, 1)
        torch.testing.assert_close(ab.sqrt().view(-1, 1, 1, 1) * (x0 + sigma * noise), ref)
        # ... and the continuous VP marginal at t = (i + 1) / N converges to it.
        mean, std = VP().marginal(x0, (idx + 1).double() / n)
        err = (mean + std.view(-1, 1, 1, 1) * noise - ref).abs().max()
        assert err < (2e-2 if n == 1000 else 3e-3), (n, err)


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError):
        VP(beta_min=1.0, beta_max=0.5)
    with pytest.raises(ConfigError):
        VE(sigma_min=0.0)
    with pytest.raises(ConfigError):
        EDM().sigmas(0)
    with pytest.raises(ConfigError):
        VP().sigmas(10, schedule="cosine")


def test_vp_schedule_is_ddpm_grid_between_the_formulations_end_points():
    # DDPM's linear beta (0.1 .. 20) in continuous time: log(1 + sigma^2) = 0.1 tau + 19.9 tau^2 / 2;
    # the grid is uniform in tau between the formulation's sigma_max and sigma_min
    sig = EDM().sigmas(5, schedule="vp")
    assert len(sig) == 6 and sig[-1] == 0
    torch.testing.assert_close(sig[[0, 4]], torch.tensor([80.0, 0.002], dtype=torch.float64))

    def tau(s):  # the quadratic's positive root, by hand
        return (-0.1 + math.sqrt(0.01 + 2 * 19.9 * math.log(1 + s * s))) / 19.9

    hi, lo = tau(80.0), tau(0.002)
    for i in range(5):
        t = hi + i * (lo - hi) / 4
        assert math.isclose(float(sig[i]), math.sqrt(math.exp(0.1 * t + 19.9 * t * t / 2) - 1), rel_tol=1e-9)
    torch.testing.assert_close(VP().sigmas(7, schedule="vp"), VP().sigmas(7, schedule="time"))
