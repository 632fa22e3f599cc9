"""Samplers against diffusers' schedulers, EDM's Algorithm 2, and the exact Gaussian score."""

import math

import pytest
import torch

import registry
from framework.generative.diffusion.formulations import EDM, VP
from framework.generative.diffusion.samplers import Denoiser, pf_velocity, sample

SAMPLERS = ["euler", "edm_heun", "ddim", "ddpm", "dpmpp_2m", "euler_maruyama", "reverse_diffusion", "pc", "pf_ode"]


def _eps_model(gaussian, alphas_cumprod):
    """diffusers-style eps(x_t, timestep) from the analytic denoiser at alpha_bar[timestep]."""

    def model(x_t, timestep):
        ab = alphas_cumprod[int(timestep)]
        sigma = ((1 - ab) / ab).sqrt()
        x_hat = x_t / ab.sqrt()
        return (x_hat - gaussian.denoise(x_hat, sigma.view(1))) / sigma

    return model


class _Replay:
    """Noise source replaying a fixed list (to feed the same noise to two implementations)."""

    def __init__(self, draws):
        self.draws, self.i = draws, 0

    def __call__(self, like):
        self.i += 1
        return self.draws[self.i - 1]


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_equals_diffusers(gaussian, spacing, eta):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, timestep_spacing=spacing, set_alpha_to_one=True)
    sched.set_timesteps(25)
    # Run diffusers' own step in float64 too (its schedule tensors are float32 by default).
    sched.alphas_cumprod = sched.alphas_cumprod.to(torch.float64)
    sched.final_alpha_cumprod = sched.final_alpha_cumprod.to(torch.float64)
    ab = sched.alphas_cumprod
    model = _eps_model(gaussian, ab)
    x_T = torch.randn(16, gaussian.d, dtype=torch.float64)
    draws = [torch.randn_like(x_T) for _ in sched.timesteps]
    x = x_T.clone()
    for i, t in enumerate(sched.timesteps):
        x = sched.step(model(x, t), t, x, eta=eta, variance_noise=draws[i]).prev_sample
    abs_ = ab[sched.timesteps]
    sigmas = torch.cat([((1 - abs_) / abs_).sqrt(), torch.zeros(1, dtype=torch.float64)])
    ours = sample("ddim", Denoiser(gaussian.denoise, VP()), x_T / abs_[0].sqrt(), sigmas, _Replay(draws), eta=eta)
    torch.testing.assert_close(ours.x, x, rtol=1e-9, atol=1e-9)
    assert ours.nfe == 25


def test_euler_equals_diffusers_euler_discrete(gaussian):
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(num_train_timesteps=1000)
    sched.set_timesteps(30)
    sched.sigmas = sched.sigmas.to(torch.float64)  # diffusers' own arithmetic in float64 too
    sigmas = sched.sigmas
    x0 = torch.randn(16, gaussian.d, dtype=torch.float64) * sched.init_noise_sigma
    x = x0.clone()
    for i, t in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(x, t)  # x / sqrt(sigma^2 + 1)
        sigma = sigmas[i]
        eps = (x_in * (sigma**2 + 1).sqrt() - gaussian.denoise(x_in * (sigma**2 + 1).sqrt(), sigma.view(1))) / sigma
        x = sched.step(eps, t, x).prev_sample
    ours = sample("euler", Denoiser(gaussian.denoise, VP()), x0, sigmas)
    # EulerDiscreteScheduler.step upcasts the sample to float32 internally: float32 tolerance.
    torch.testing.assert_close(ours.x, x, rtol=1e-5, atol=2e-6)


def test_dpmpp_2m_equals_diffusers_multistep(gaussian):
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
    )
    sched.set_timesteps(20)
    ab = sched.alphas_cumprod.to(torch.float64)
    model = _eps_model(gaussian, ab)
    x_T = torch.randn(16, gaussian.d, dtype=torch.float64)
    x = x_T.clone()
    for t in sched.timesteps:
        x = sched.step(model(x, t), t, x).prev_sample
    abs_ = ab[sched.timesteps]
    sigmas = torch.cat([((1 - abs_) / abs_).sqrt(), torch.zeros(1, dtype=torch.float64)])
    ours = sample("dpmpp_2m", Denoiser(gaussian.denoise, VP()), x_T / abs_[0].sqrt(), sigmas)
    torch.testing.assert_close(ours.x, x, rtol=1e-6, atol=1e-6)


def test_dpmpp_2m_equals_algorithm_2_by_hand_on_uneven_steps():
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2; alpha = 1, lambda = -ln sigma) written out in floats.

    1-D data N(m, v), whose denoiser is m + v / (v + sigma^2) (x - m). Steps of very uneven
    length in lambda (ratios r = h_prev / h of 0.30 and 4.5) make r and 1 / r differ, so a
    sampler with the ratio inverted, or the two denoised estimates weighted the wrong way,
    lands elsewhere.
    """
    m, v = 0.4, 0.25
    sigmas = [10.0, 5.0, 0.5, 0.3, 0.0]

    def denoise(x, sigma):
        return m + v / (v + sigma**2) * (x - m)

    starts = [-7.0, 1.5, 12.0]
    expected = []
    for x in starts:
        previous, h_previous = None, None
        for sigma, sigma_next in zip(sigmas, sigmas[1:]):
            d = denoise(x, sigma)
            if sigma_next == 0:  # last step: x_0 = D(x, sigma)
                x = d
                break
            h = math.log(sigma) - math.log(sigma_next)  # lambda_next - lambda
            if previous is None:
                d_mix = d
            else:
                r = h_previous / h
                d_mix = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * previous
            x = sigma_next / sigma * x - (math.exp(-h) - 1) * d_mix
            previous, h_previous = d, h
        expected.append(x)
    fn = lambda x, sigma: denoise(x, sigma.reshape(-1)[0])
    ours = sample("dpmpp_2m", Denoiser(fn, EDM()), torch.tensor(starts, dtype=torch.float64).view(3, 1),
                  torch.tensor(sigmas, dtype=torch.float64))
    torch.testing.assert_close(ours.x.view(3), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert ours.nfe == 4


def test_edm_heun_equals_diffusers_heun_with_karras_sigmas(gaussian):
    from diffusers import HeunDiscreteScheduler

    sched = HeunDiscreteScheduler(num_train_timesteps=1000, use_karras_sigmas=True)
    sched.set_timesteps(10)
    sched.sigmas = sched.sigmas.to(torch.float64)  # diffusers' arithmetic in float64 too
    x0 = torch.randn(16, gaussian.d, dtype=torch.float64) * sched.init_noise_sigma
    x = x0.clone()
    for i, t in enumerate(sched.timesteps):  # every sigma twice (Heun's two stages), except the ends
        sigma = sched.sigmas[i]
        x_hat = sched.scale_model_input(x, t) * (sigma**2 + 1).sqrt()
        eps = (x_hat - gaussian.denoise(x_hat, sigma.view(1))) / sigma
        x = sched.step(eps, t, x).prev_sample
    sigmas = torch.unique_consecutive(sched.sigmas)
    ours = sample("edm_heun", Denoiser(gaussian.denoise, VP()), x0, sigmas)
    torch.testing.assert_close(ours.x, x, rtol=1e-10, atol=1e-10)
    assert ours.nfe == len(sched.timesteps) == 19


def test_edm_heun_equals_algorithm_2(gaussian):
    """EDM Algorithm 2 written out independently, with churn and a shared noise stream."""
    n, s_churn, s_tmin, s_tmax, s_noise = 18, 40.0, 0.05, 50.0, 1.003
    ts = EDM().sigmas(n)
    x_T = torch.randn(16, gaussian.d, dtype=torch.float64) * ts[0]
    draws = [torch.randn_like(x_T) for _ in range(n)]
    k, x_next = 0, x_T
    for i in range(n):
        t_cur, t_next, x_cur = ts[i], ts[i + 1], x_next
        gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= t_cur <= s_tmax else 0
        t_hat = t_cur + gamma * t_cur
        if gamma > 0:
            x_hat = x_cur + (t_hat**2 - t_cur**2).sqrt() * s_noise * draws[k]
            k += 1
        else:
            x_hat = x_cur
        d_cur = (x_hat - gaussian.denoise(x_hat, t_hat.view(1))) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < n - 1:
            d_prime = (x_next - gaussian.denoise(x_next, t_next.view(1))) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    ours = sample(
        "edm_heun", Denoiser(gaussian.denoise, EDM()), x_T, ts, _Replay(draws),
        churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
    )
    torch.testing.assert_close(ours.x, x_next, rtol=1e-10, atol=1e-10)
    assert ours.nfe == 35 and k > 0


# First-order and stochastic samplers need more steps than the second-order ones.
STEPS = {"euler": 200, "ddim": 200, "euler_maruyama": 400, "reverse_diffusion": 400, "pc": 400, "ddpm": 400}


@pytest.mark.parametrize("formulation", ["vp", "subvp", "ve", "edm"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_reproduces_gaussian_mean_and_cov(gaussian, formulation, sampler):
    f = registry.create("formulation", formulation)
    steps = STEPS.get(sampler, 60)
    sigmas = f.sigmas(steps)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3000, gaussian.d, generator=g, dtype=torch.float64)
    noise = lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype)
    out = sample(sampler, Denoiser(gaussian.denoise, f), z * f.init_scale(sigmas[0]), sigmas, noise)
    # 3000 samples: Monte-Carlo error of the mean ~0.01, of a covariance entry ~0.01.
    assert (out.x.mean(0) - gaussian.mean).abs().max() < 0.06
    assert (torch.cov(out.x.T) - gaussian.cov).abs().max() < 0.06
    assert out.nfe > 0


@pytest.mark.parametrize("sampler", ["euler", "edm_heun", "dpmpp_2m", "ddim"])
def test_deterministic_sampler_error_shrinks_with_steps(gaussian, sampler):
    """Against the exact PF-ODE map (dopri5 at tight tolerance) from the same start."""
    f = VP()
    z = torch.randn(200, gaussian.d, dtype=torch.float64)
    ref_sig = f.sigmas(2)
    ref = sample("pf_ode", Denoiser(gaussian.denoise, f), z * f.init_scale(ref_sig[0]), ref_sig, rtol=1e-9, atol=1e-9)
    # pf_ode ends with a Tweedie step from sigma_min; compare samplers that stop at the same level.
    errs = []
    for steps in (10, 40):
        sig = f.sigmas(steps)
        out = sample(sampler, Denoiser(gaussian.denoise, f), z * f.init_scale(sig[0]), sig)
        errs.append((out.x - ref.x).abs().max().item())
    assert errs[1] < errs[0] * 0.7, errs


def test_pf_velocity_matches_edm_ode(gaussian):
    """For EDM (s = 1, sigma = t) the probability-flow drift is (x - D) / sigma."""
    f = EDM()
    model = Denoiser(gaussian.denoise, f)
    x = torch.randn(4, gaussian.d, dtype=torch.float64)
    t = torch.tensor(0.7, dtype=torch.float64)
    torch.testing.assert_close(pf_velocity(model, x, t), (x - gaussian.denoise(x, t.view(1))) / t)
