"""Off-the-shelf (EluCD) and gradient-free (GFCG) classifier guidance: formulas, mixtures, NFE."""

import functools
import math

import pytest
import torch
from torch import nn

from framework.errors import ConfigError
from framework.generative.diffusion.model import Diffusion
from framework.generative.flow.model import FlowMatching
from framework.generative.guidance import GuidanceInput, build_guidance
from framework.generative.guidance_clean import (
    calibrated_log_prob_grad,
    elucd_schedule,
    elucd_score_weight,
    gfcg_reference,
    softplus_activations,
    vp_time_of_sigma,
)
from tests.generative_common._mixture import MixtureClassifier, exact_velocity, mixture_denoiser, mode_fraction

W = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1], [-0.4, 0.2, 0.9], [2.0, 0.0, -0.5]], dtype=torch.float64)


class _Linear(nn.Module):
    def forward(self, x):
        return x @ W


def test_calibrated_gradient_of_a_linear_classifier():
    x = torch.tensor([[0.1, -0.2, 0.3, 0.4], [1.0, 0.5, -0.5, 0.0]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    g = calibrated_log_prob_grad(_Linear(), x, y, tau1=1.0, tau2=0.5)
    # d/dx [tau1 (xW)_y - log sum_j exp(tau2 (xW)_j)] = tau1 W[:, y] - tau2 W softmax(tau2 xW)
    for i in range(2):
        f = [sum(float(x[i, d]) * float(W[d, j]) for d in range(4)) for j in range(3)]
        e = [math.exp(0.5 * fj) for fj in f]
        p = [ej / sum(e) for ej in e]
        expected = [float(W[d, y[i]]) - 0.5 * sum(float(W[d, j]) * p[j] for j in range(3)) for d in range(4)]
        torch.testing.assert_close(g[i], torch.tensor(expected, dtype=torch.float64))


def test_schedule_at_known_noise_levels():
    # VP time 0.5: log(1 + sigma^2) = 0.1 * 0.5 + 19.9 * 0.5^2 / 2
    sigma = torch.tensor([math.sqrt(math.exp(0.05 + 19.9 / 8) - 1), 1e-4], dtype=torch.float64)
    torch.testing.assert_close(vp_time_of_sigma(sigma)[0], torch.tensor(0.5, dtype=torch.float64))
    gamma = elucd_schedule(sigma, kappa=0.3)
    torch.testing.assert_close(gamma[0], torch.tensor(1 + 0.3 * 20 / (0.1 + 19.9 * 0.5), dtype=torch.float64))
    assert abs(float(gamma[1]) - 1) < 1e-3  # sin(pi tau) -> 0 at the data end
    lam = elucd_score_weight(sigma, kappa=0.3)
    torch.testing.assert_close(lam, gamma / torch.sqrt(1 + sigma**2))


def test_elucd_rule_on_fixed_tensors():
    x = torch.tensor([[0.2, -0.1, 0.4, 0.3], [-0.5, 0.6, 0.1, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 2])
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    predict = lambda xx, yy: 0.5 * xx + 0.1 * yy.view(-1, 1).to(xx)  # noqa: E731 - a denoiser D
    inp = GuidanceInput(x=x, labels=y, null_label=3, score_coef=sigma**2, clean_classifier=_Linear(),
                        denoise=lambda d: d, sigma=sigma)
    out = build_guidance("elucd", scale=2.0)(predict, inp)
    d = predict(x, y)
    g = calibrated_log_prob_grad(_Linear(), d, y, 1.0, 0.5)
    lam = elucd_score_weight(sigma, 0.3).view(-1, 1)
    torch.testing.assert_close(out, d + sigma.view(-1, 1) ** 2 * 2.0 * lam * g)
    # the null-class prediction when asked (a generator trained with every label dropped)
    out_u = build_guidance("elucd", scale=0.0, unconditional=True)(predict, inp)
    torch.testing.assert_close(out_u, predict(x, torch.full_like(y, 3)))
    with pytest.raises(ConfigError, match="clean"):
        build_guidance("elucd")(predict, GuidanceInput(x=x, labels=y, null_label=3))


def _linear_calibrated_grad(x0, y, tau1=1.0, tau2=0.5):
    """``tau1 W[:, y] - tau2 W softmax(tau2 x0 W)`` by hand (the linear classifier's calibrated gradient)."""
    rows = []
    for i in range(len(x0)):
        f = [sum(float(x0[i, d]) * float(W[d, j]) for d in range(4)) for j in range(3)]
        e = [math.exp(tau2 * fj) for fj in f]
        p = [ej / sum(e) for ej in e]
        rows.append([tau1 * float(W[d, y[i]]) - tau2 * sum(float(W[d, j]) * p[j] for j in range(3)) for d in range(4)])
    return torch.tensor(rows, dtype=torch.float64)


def _gamma_by_hand(sigma):
    """EluCD's ``1 + 0.3 sin(pi tau) 20 / beta(tau)``, tau the VP time of sigma by bisection, as a (B, 1) column."""
    out = []
    for s_ in sigma.tolist():
        lo, hi = 0.0, 1.0
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if 0.1 * mid + 19.9 * mid**2 / 2 < math.log(1 + s_**2) else (lo, mid)
        out.append(1 + 0.3 * math.sin(math.pi * lo) * 20 / (0.1 + 19.9 * lo))
    return torch.tensor(out, dtype=torch.float64).view(-1, 1)


def test_elucd_clips_x0_hat_to_the_data_range_for_classifier_and_step():
    # the reference (p_mean_variance, clip_denoised=True) clamps pred_xstart to [-1, 1]; the
    # classifier's gradient is taken there and the step's mean is built from it
    x = torch.tensor([[2.4, -0.1, 0.4, -3.0], [-0.5, 3.6, 0.1, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 2])
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    predict = lambda xx, yy: 0.5 * xx + 0.1 * yy.view(-1, 1).to(xx)  # noqa: E731 - a denoiser D
    d = predict(x, y)  # [[1.3, 0.05, 0.3, -1.4], [-0.05, 2.0, 0.25, 0.2]]: three entries out of [-1, 1]
    d_clip = torch.tensor([[1.0, 0.05, 0.3, -1.0], [-0.05, 1.0, 0.25, 0.2]], dtype=torch.float64)
    lam = _gamma_by_hand(sigma) / torch.sqrt(1 + sigma.view(-1, 1) ** 2)
    g = _linear_calibrated_grad(d_clip, y)
    diff = GuidanceInput(x=x, labels=y, null_label=3, score_coef=sigma**2, clean_classifier=_Linear(),
                         denoise=lambda p: p, undenoise=lambda p: p, sigma=sigma, data_range=(-1.0, 1.0))
    out = build_guidance("elucd", scale=2.0)(predict, diff)
    torch.testing.assert_close(out, d_clip + sigma.view(-1, 1) ** 2 * 2.0 * lam * g)
    # clip_denoised False: the unclamped estimate, as before session 5
    out_raw = build_guidance("elucd", scale=2.0, clip_denoised=False)(predict, diff)
    torch.testing.assert_close(out_raw, d + sigma.view(-1, 1) ** 2 * 2.0 * lam * _linear_calibrated_grad(d, y))
    # vector data has no range: nothing is clamped
    vec = GuidanceInput(**{**diff.__dict__, "data_range": None})
    torch.testing.assert_close(build_guidance("elucd", scale=2.0)(predict, vec), out_raw)
    # a flow (cfm at t = 0.6): the prediction is a velocity, x1_hat = x + (1 - t) v; the guided
    # velocity is the one whose x1_hat is the clamped one, plus score_coef * s lambda g / a
    t, a = 0.6, 0.6
    vel = lambda xx, yy: (predict(xx, yy) - xx) / (1 - t) + 2.0 * xx  # noqa: E731 - x1_hat = D + 0.8 x
    x1 = x + (1 - t) * vel(x, y)
    x1_clip = x1.clamp(-1, 1)
    coef = (1 - t) / a  # b (a' b - a b') / a with a = t, b = 1 - t
    flow = GuidanceInput(x=x, labels=y, null_label=3, score_coef=coef, clean_classifier=_Linear(),
                         denoise=lambda v: x + (1 - t) * v, undenoise=lambda x1_: (x1_ - x) / (1 - t),
                         sigma=sigma, hat_scale=a, data_range=(-1.0, 1.0))
    out_f = build_guidance("elucd", scale=2.0)(vel, flow)
    expected = (x1_clip - x) / (1 - t) + coef * 2.0 * lam * _linear_calibrated_grad(x1_clip, y) / a
    torch.testing.assert_close(out_f, expected)
    with pytest.raises(ConfigError, match="undenoise"):
        build_guidance("elucd")(predict, GuidanceInput(**{**diff.__dict__, "undenoise": None}))


def test_elucd_through_denoiser_applies_the_chain_rule():
    # grad_x log p(y | x0_hat(x)) = J^T g(x0_hat): a linear denoiser D(x) = x A^T + b has J = A
    # (the calibrated log-probability runs in float32: tolerances to match)
    close = functools.partial(torch.testing.assert_close, rtol=1e-5, atol=1e-6)
    x = torch.tensor([[0.2, -0.1, 0.4, 0.3], [-0.5, 0.6, 0.1, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 2])
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    A = torch.tensor([[0.5, 0.1, 0.0, -0.2], [0.0, 0.4, 0.3, 0.0], [0.2, 0.0, 0.6, 0.1], [-0.1, 0.0, 0.2, 0.7]],
                     dtype=torch.float64)  # fmt: skip
    predict = lambda xx, yy: xx @ A.T + 0.1 * yy.view(-1, 1).to(xx)  # noqa: E731
    d = predict(x, y)
    gamma = _gamma_by_hand(sigma)
    inp = GuidanceInput(x=x, labels=y, null_label=3, score_coef=sigma**2, clean_classifier=_Linear(),
                        denoise=lambda p, at=None: p, undenoise=lambda p: p, sigma=sigma)
    out = build_guidance("elucd", scale=2.0, through_denoiser=True)(predict, inp)
    close(out, d + sigma.view(-1, 1) ** 2 * 2.0 * gamma * (_linear_calibrated_grad(d, y) @ A))
    # with the data range, the clamp lies inside the graph: no gradient where it binds
    big = 3 * x
    d_big = predict(big, y)
    mask = (d_big.abs() < 1).to(d_big)
    assert 0 < mask.sum() < mask.numel()
    clip = GuidanceInput(**{**inp.__dict__, "x": big, "data_range": (-1.0, 1.0)})
    out_c = build_guidance("elucd", scale=2.0, through_denoiser=True)(predict, clip)
    g_c = (mask * _linear_calibrated_grad(d_big.clamp(-1, 1), y)) @ A
    close(out_c, d_big.clamp(-1, 1) + sigma.view(-1, 1) ** 2 * 2.0 * gamma * g_c)
    # a flow (cfm at t = 0.6): x1_hat = x + (1 - t) v(x) depends on x directly too, J = I + (1 - t) M
    t, coef = 0.6, 0.4 / 0.6
    vel = lambda xx, yy: xx @ A.T  # noqa: E731 - v = x M^T with M = A
    flow = GuidanceInput(x=x, labels=y, null_label=3, score_coef=coef, clean_classifier=_Linear(),
                         denoise=lambda v, at=x: at + (1 - t) * v, undenoise=lambda x1: (x1 - x) / (1 - t),
                         sigma=sigma, hat_scale=0.6)
    out_f = build_guidance("elucd", scale=2.0, through_denoiser=True)(vel, flow)
    jac = torch.eye(4, dtype=torch.float64) + (1 - t) * A
    x1 = x + (1 - t) * vel(x, y)
    close(out_f, vel(x, y) + coef * 2.0 * gamma * (_linear_calibrated_grad(x1, y) @ jac))


def test_velocity_from_denoised_inverts_denoised_from_velocity():
    from framework.generative.flow.paths import build_path, denoised_from_velocity, velocity_from_denoised

    x = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)
    x1 = torch.tensor([[1.0, -0.4], [-0.7, 0.9]], dtype=torch.float64)
    t = torch.tensor([0.25, 0.8], dtype=torch.float64)
    # cfm (a = t, b = 1 - t): v = (x1 - x) / (1 - t)
    torch.testing.assert_close(velocity_from_denoised(build_path("cfm"), x, x1, t), (x1 - x) / (1 - t).view(-1, 1))
    for name in ("vp_path", "target_cfm"):
        path = build_path(name)
        torch.testing.assert_close(denoised_from_velocity(path, x, velocity_from_denoised(path, x, x1, t), t), x1)


def test_softplus_swap_is_temporary():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    x = torch.tensor([[-1.0, 0.5]])
    plain = net(x)
    with softplus_activations(net, beta=3.0) as n:
        assert n == 2
        h = nn.functional.softplus(net[0](x), beta=3.0)
        torch.testing.assert_close(net(x), nn.functional.softplus(net[2][0](h), beta=3.0))
    assert [m for m in net.modules() if isinstance(m, nn.ReLU)] == relus
    torch.testing.assert_close(net(x), plain)


def test_softplus_swap_in_a_timm_net():
    from framework.models.classifier import Classifier

    clf = Classifier(num_classes=3, data_shape=(3, 16, 16), net="timm/resnet10t", net_args={"pretrained": False})
    before = sum(isinstance(m, nn.ReLU) for m in clf.modules())
    with softplus_activations(clf) as n:
        assert n == before > 0 and not any(type(m) is nn.ReLU for m in clf.modules())
    assert sum(isinstance(m, nn.ReLU) for m in clf.modules()) == before


def test_gfcg_reference_class_and_scale():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    ref, w = gfcg_reference(logits, torch.tensor([1, 1]), scale=4.0)
    e0 = [math.exp(v) for v in (2.0, 1.0, 0.0)]
    e1 = [math.exp(v) for v in (0.0, 3.0, 1.0)]
    assert ref.tolist() == [0, 2]  # the likeliest class other than the target
    torch.testing.assert_close(w, torch.tensor([4 * e0[0] / (e0[0] + e0[1]), 4 * e1[2] / (e1[2] + e1[1])]))
    x = torch.randn(2, 4, dtype=torch.float64)
    predict = lambda xx, yy: xx + yy.view(-1, 1).to(xx)  # noqa: E731
    clf = lambda x0: logits  # noqa: E731
    inp = GuidanceInput(x=x, labels=torch.tensor([1, 1]), null_label=3, clean_classifier=clf, denoise=lambda d: d,
                        sigma=torch.ones(2))
    out = build_guidance("gfcg", scale=4.0)(predict, inp)
    cond = x + 1
    torch.testing.assert_close(out, cond + w.view(-1, 1).double() * (cond - predict(x, ref)))


class _CountingDenoise:
    def __init__(self, batch):
        self.batch, self.nfe = batch, 0

    def __call__(self, x, sigma, labels=None):
        self.nfe += len(x) // self.batch
        return mixture_denoiser(x, sigma)


@pytest.mark.parametrize(("formulation", "through"), [("vp", False), ("ve", False), ("edm", False), ("edm", True)])
def test_elucd_steers_an_unconditional_diffusion_to_the_target_component(formulation, through):
    n = 200
    model = Diffusion(num_classes=0, data_shape=(2,), net="resmlp", net_args={"width": 8, "depth": 1},
                      formulation=formulation).double()
    counter = _CountingDenoise(n)
    model.denoise = counter
    clf = MixtureClassifier()
    model.set_clean_classifier(clf)
    labels, seeds = torch.ones(n, dtype=torch.long), torch.arange(n)
    plain = model.generate(labels, seeds, sampler="euler", steps=12, schedule="karras")
    assert 0.3 < mode_fraction(plain, 1) < 0.7
    counter.nfe = clf.calls = 0
    guided = model.generate(labels, seeds, sampler="euler", steps=12, schedule="karras", guidance="elucd",
                            guidance_scale=1.0, guidance_args={"through_denoiser": through})
    assert mode_fraction(guided, 1) > 0.9
    assert model.last_nfe == counter.nfe == 12 and model.last_classifier_evaluations == clf.calls == 12


@pytest.mark.parametrize(("path", "through"), [("cfm", False), ("vp_path", False), ("target_cfm", False), ("cfm", True)])
def test_elucd_steers_a_flow_on_every_path(path, through):
    n = 200
    model = FlowMatching(0, (2,), net="resmlp", net_args={"width": 8, "depth": 1}, path=path).double()
    calls = []
    model.forward = lambda x, t, labels=None: calls.append(len(x) // n) or exact_velocity(model.path, x, t)
    clf = MixtureClassifier()
    model.set_clean_classifier(clf)
    labels, seeds = torch.zeros(n, dtype=torch.long), torch.arange(n)
    plain = model.generate(labels, seeds, solver="euler", steps=16)
    assert 0.3 < mode_fraction(plain, 0) < 0.7
    calls.clear()
    guided = model.generate(labels, seeds, solver="euler", steps=16, guidance="elucd", guidance_scale=1.0,
                            guidance_args={"through_denoiser": through})
    assert mode_fraction(guided, 0) > 0.9
    assert model.last_nfe == sum(calls) == 16 and model.last_classifier_evaluations == 16


def test_gfcg_counts_two_evaluations_per_step_and_needs_a_conditional_model():
    n = 64
    model = Diffusion(num_classes=2, data_shape=(2,), net="resmlp", net_args={"width": 8, "depth": 1}).double()
    # class k's denoiser is component k's; the null class the mixture's
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)

    def denoise(x, sigma, labels):
        calls.append(len(x) // n)
        out = mixture_denoiser(x, sigma)
        for k in (0, 1):
            rows = labels == k
            out[rows] = mixture_denoiser(x[rows], sigma[rows], means[k:k + 1], weights=torch.ones(1, dtype=torch.float64))
        return out

    calls = []
    model.denoise = denoise
    model.set_clean_classifier(MixtureClassifier())
    labels = torch.arange(n) % 2
    out = model.generate(labels, torch.arange(n), sampler="euler", steps=8, guidance="gfcg", guidance_scale=2.0)
    assert model.last_nfe == sum(calls) == 16 and model.last_classifier_evaluations == 8
    assert mode_fraction(out[labels == 1], 1) > 0.95 and mode_fraction(out[labels == 0], 0) > 0.95
    uncond = Diffusion(num_classes=0, data_shape=(2,), net="resmlp", net_args={"width": 8, "depth": 1})
    with pytest.raises(ConfigError, match="class-conditional"):
        uncond.generate(labels, torch.arange(n), guidance="gfcg")
