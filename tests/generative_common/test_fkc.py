"""Feynman-Kac corrected CFG: weight increment, systematic resampling, the tilted target's mean, NFE."""

import math

import pytest
import torch

from framework.errors import ConfigError
from framework.generative.diffusion.model import Diffusion
from framework.generative.fkc import fkc_log_weight_increment, karras_sigmas, systematic_resample
from framework.generative.flow.model import FlowMatching
from tests.generative_common._mixture import exact_velocity, mixture_denoiser

MEANS = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
HALF = torch.tensor([0.5, 0.5], dtype=torch.float64)
ONE = torch.ones(1, dtype=torch.float64)


def test_weight_increment_on_fixed_tensors():
    s_u = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    s_c = torch.tensor([[0.5, 0.0], [1.0, 1.0]])
    # -w (w - 1) ||s_u - s_c||^2 t dt with w = 3, t = 2, dt = -0.5: -6 * n * (-1) = 6 n
    expected = torch.tensor([6 * (0.25 + 4.0), 6 * (1.0 + 4.0)])
    torch.testing.assert_close(fkc_log_weight_increment(s_u, s_c, 3.0, 2.0, -0.5), expected)
    assert torch.all(fkc_log_weight_increment(s_u, s_c, 1.0, 2.0, -0.5) == 0)  # w = 1: plain conditional


def test_systematic_resampling_on_fixed_weights():
    logw = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
    # points (u + i / 4) mod 1; index = first cumulative weight >= point
    # row 0: u = 0.04 -> 0.04, 0.29, 0.54, 0.79 against 0.1, 0.3, 0.6, 1.0
    # row 1: u = 0.1  -> 0.1, 0.35, 0.6, 0.85 against 0.7, 0.8, 0.9, 1.0
    ids = systematic_resample(logw, torch.tensor([0.04, 0.1]))
    assert ids.tolist() == [[0, 1, 2, 3], [0, 0, 0, 2]]
    assert systematic_resample(torch.zeros(5), 0.1).tolist() == [0, 1, 2, 3, 4]  # equal weights keep all


def test_karras_grid_ends_with_zero():
    s = karras_sigmas(4, 80.0)
    assert s[0] == 80.0 and abs(float(s[-2]) - 0.002) < 1e-12 and s[-1] == 0 and len(s) == 5


def _two_class_diffusion():
    model = Diffusion(num_classes=2, data_shape=(1,), net="resmlp", net_args={"width": 8, "depth": 1}).double()
    model.rows = []

    def denoise(x, sigma, labels):
        model.rows.append(len(x))
        out = mixture_denoiser(x, sigma, MEANS, 1.0, HALF)  # the null class: the mixture
        for k in (0, 1):
            r = labels == k
            out[r] = mixture_denoiser(x[r], sigma[r], MEANS[k:k + 1], 1.0, ONE)
        return out

    model.denoise = denoise
    return model


def test_fkc_matches_the_tilted_targets_mean():
    w = 3.0
    grid = torch.linspace(-8, 10, 20001, dtype=torch.float64)
    log_n = lambda x, mu: -((x - mu) ** 2) / 2  # noqa: E731
    log_p = torch.logaddexp(log_n(grid, -1.0), log_n(grid, 1.0))
    target = torch.softmax((1 - w) * log_p + w * log_n(grid, 1.0), 0)
    mean = float((target * grid).sum())  # 1.440: p^(1 - w) p(x | c)^w, exact on the grid
    model, n = _two_class_diffusion(), 150
    labels, seeds = torch.ones(n, dtype=torch.long), torch.arange(n)
    args = dict(scale=w, steps=32, clamp=float("inf"))
    fkc = model.generate(labels, seeds, search="fkc", search_args={**args, "particles": 64})
    assert model.last_nfe == sum(model.rows) / n == 2 * 64 * 32 and model.last_classifier_evaluations == 0
    se = float(fkc.std()) / math.sqrt(n)
    assert abs(float(fkc.mean()) - mean) < 3 * se  # within Monte Carlo error
    m = 600  # plain CFG on the same stochastic sampler (one particle, no weights) overshoots it
    cfg = model.generate(torch.ones(m, dtype=torch.long), torch.arange(m), search="fkc",
                         search_args={**args, "particles": 1, "resample": False})
    assert float(cfg.mean()) - mean > 3 * float(cfg.std()) / math.sqrt(m)
    again = model.generate(labels[:3], seeds[:3], search="fkc", search_args={**args, "particles": 64})
    torch.testing.assert_close(again, fkc[:3])  # deterministic per sample seed


def test_fkc_on_a_flow_and_errors():
    model = FlowMatching(2, (1,), net="resmlp", net_args={"width": 8, "depth": 1}).double()
    rows = []

    def velocity(x, t, labels=None):
        rows.append(len(x))
        out = exact_velocity(model.path, x, t, lambda xx, s: mixture_denoiser(xx, s, MEANS, 1.0, HALF))
        for k in (0, 1):
            r = labels == k
            out[r] = exact_velocity(model.path, x[r], t, lambda xx, s: mixture_denoiser(xx, s, MEANS[k:k + 1], 1.0, ONE))
        return out

    model.forward = velocity
    labels = torch.tensor([1, 1, 0, 0, 1, 0])
    out = model.generate(labels, torch.arange(6), search="fkc", search_args={"particles": 4, "steps": 8})
    assert model.last_nfe == sum(rows) / 6 == 2 * 4 * 8
    assert ((out[:, 0] > 0) == (labels == 1)).float().mean() >= 5 / 6
    with pytest.raises(ConfigError, match="label dropout"):
        Diffusion(num_classes=0, data_shape=(1,), net="resmlp", net_args={"width": 8, "depth": 1}).generate(
            labels, torch.arange(6), search="fkc")
    with pytest.raises(ConfigError, match="particles"):
        model.generate(labels, torch.arange(6), search="fkc", search_args={"particles": 0})
