"""Probability paths against torchcfm's matchers and flow_matching's CondOTProbPath."""

import numpy as np
import pytest
import torch
from flow_matching.path import CondOTProbPath
from torchcfm.conditional_flow_matching import (
    ConditionalFlowMatcher,
    ExactOptimalTransportConditionalFlowMatcher,
    SchrodingerBridgeConditionalFlowMatcher,
    TargetConditionalFlowMatcher,
    VariancePreservingConditionalFlowMatcher,
)

from framework.errors import ConfigError
from framework.generative.flow.paths import build_path, sample_times


def _batch(seed=0, n=64, shape=(3, 4)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, *shape, generator=g)
    x1 = torch.randn(n, *shape, generator=g) * 0.5 + 2.0
    t = torch.rand(n, generator=g)
    eps = torch.randn(n, *shape, generator=g)
    return x0, x1, t, eps


@pytest.mark.parametrize(
    ("name", "options", "reference"),
    [
        ("cfm", {"sigma": 0.0}, ConditionalFlowMatcher(0.0)),
        ("cfm", {"sigma": 0.3}, ConditionalFlowMatcher(0.3)),
        ("target_cfm", {"sigma": 0.05}, TargetConditionalFlowMatcher(0.05)),
        ("vp_path", {"sigma": 0.1}, VariancePreservingConditionalFlowMatcher(0.1)),
    ],
)
def test_independent_paths_equal_torchcfm(name, options, reference):
    x0, x1, t, eps = _batch()
    ours = build_path(name, **options).sample(x0, x1, t, eps=eps)
    xt = reference.sample_xt(x0, x1, t, eps)
    ut = reference.compute_conditional_flow(x0, x1, t, xt)
    torch.testing.assert_close(ours.xt, xt)
    torch.testing.assert_close(ours.ut, ut)


def test_target_cfm_uses_the_source_as_its_noise():
    x0, x1, t, _ = _batch()
    ours = build_path("target_cfm", sigma=0.0).sample(x0, x1, t)
    torch.testing.assert_close(ours.xt, t[:, None, None] * x1 + (1 - t[:, None, None]) * x0)


def test_cfm_equals_flow_matching_cond_ot_path():
    x0, x1, t, _ = _batch(1)
    ours = build_path("cfm").sample(x0, x1, t)
    theirs = CondOTProbPath().sample(x_0=x0, x_1=x1, t=t)
    torch.testing.assert_close(ours.xt, theirs.x_t)
    torch.testing.assert_close(ours.ut, theirs.dx_t)


@pytest.mark.parametrize(("name", "reference"), [
    ("ot_cfm", ExactOptimalTransportConditionalFlowMatcher(0.2)),
    ("sb_cfm", SchrodingerBridgeConditionalFlowMatcher(0.2)),
])
def test_ot_paths_equal_torchcfm_when_seeded(name, reference):
    x0, x1, t, _ = _batch(2)
    y = torch.arange(len(x1)) % 5
    np.random.seed(7)
    torch.manual_seed(3)
    t_ref, xt_ref, ut_ref, _, y_ref, eps_ref = reference.guided_sample_location_and_conditional_flow(
        x0, x1, y1=y, t=t, return_noise=True
    )
    np.random.seed(7)
    ours = build_path(name, sigma=0.2).sample(x0, x1, t, labels=y, eps=eps_ref)
    torch.testing.assert_close(ours.xt, xt_ref)
    torch.testing.assert_close(ours.ut, ut_ref)
    assert torch.equal(ours.labels, y_ref)


def test_exact_ot_without_resampling_is_a_permutation_that_lowers_the_cost():
    x0, x1, t, _ = _batch(3, n=32, shape=(2,))
    s = build_path("ot_cfm", resample=False).sample(x0, x1, t)
    assert torch.equal(s.x1, x1)  # the data keeps its order
    assert sorted(map(tuple, s.x0.tolist())) == sorted(map(tuple, x0.tolist()))  # a permutation of the source
    assert ((s.x1 - s.x0) ** 2).sum() < ((x1 - x0) ** 2).sum()


def test_sinkhorn_plan_without_resampling_pairs_by_a_permutation():
    """A dense entropic plan whose column argmax repeats a source: the pairing is still a permutation,
    the one keeping most of the plan's mass (checked against all 5! permutations)."""
    import itertools

    from framework.generative.flow.paths import plan_permutation

    plan = np.array([[0.9, 0.8, 0.1, 0.0, 0.2],
                     [0.1, 0.7, 0.0, 0.3, 0.1],
                     [0.0, 0.1, 0.6, 0.5, 0.0],
                     [0.2, 0.0, 0.2, 0.1, 0.4],
                     [0.1, 0.3, 0.3, 0.0, 0.3]])
    assert len(set(plan.argmax(0).tolist())) < 5  # argmax(0) gives source 0 to targets 0 and 1
    src = plan_permutation(plan)
    assert sorted(src.tolist()) == list(range(5))
    best = max(itertools.permutations(range(5)), key=lambda p: sum(plan[p[j], j] for j in range(5)))
    assert sum(plan[src[j], j] for j in range(5)) == pytest.approx(sum(plan[best[j], j] for j in range(5)))
    # An exact plan (a permutation matrix / n) keeps its own permutation.
    perm = np.random.default_rng(0).permutation(6)
    exact = np.zeros((6, 6))
    exact[perm, np.arange(6)] = 1 / 6
    assert plan_permutation(exact).tolist() == perm.tolist()


@pytest.mark.parametrize("within_class", [False, True])
def test_sb_sinkhorn_without_resampling_uses_every_source_once(within_class):
    x0, x1, t, _ = _batch(5, n=48, shape=(2,))
    y = torch.arange(48) % 3
    path = build_path("sb_cfm", sigma=1.0, ot_method="sinkhorn", resample=False, within_class=within_class)
    a, b, labels = path.couple(x0, x1, y)
    assert torch.equal(b, x1) and torch.equal(labels, y)
    assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, x0.tolist()))  # a permutation of the source


@pytest.mark.parametrize("resample", [False, True])
def test_class_ot_keeps_labels_with_their_samples(resample):
    x0, _, t, _ = _batch(4, n=60, shape=(2,))
    y = torch.arange(60) % 3
    x1 = torch.stack([y.float() * 10, -y.float() * 10], 1) + torch.randn(60, 2)  # class c sits at (10c, -10c)
    np.random.seed(0)
    s = build_path("class_ot_cfm", resample=resample).sample(x0, x1, t, labels=y)
    # Every data point comes back with its own label; plain OT would mix them.
    expected = (s.x1[:, 0] / 10).round().long()
    assert torch.equal(s.labels, expected)
    if not resample:
        assert torch.equal(s.labels, y) and torch.equal(s.x1, x1)
    with pytest.raises(ConfigError, match="labels"):
        build_path("class_ot_cfm").sample(x0, x1, t)


def test_time_sampling():
    g = torch.Generator().manual_seed(0)
    u = sample_times(20000, "uniform", generator=g)
    ln = sample_times(20000, "logit_normal", mean=0.0, std=1.0, generator=g)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert 0 < ln.min() and ln.max() < 1 and abs(ln.median() - 0.5) < 0.01
    # Logit-normal puts more mass in the middle than the uniform does.
    assert ((ln - 0.5).abs() < 0.25).float().mean() > ((u - 0.5).abs() < 0.25).float().mean() + 0.1
    torch.testing.assert_close(torch.logit(ln).std(), torch.tensor(1.0), atol=0.03, rtol=0)
    with pytest.raises(ConfigError, match="time sampling"):
        sample_times(3, "beta")


def test_bad_paths_raise_config_error():
    with pytest.raises(ConfigError, match="sigma"):
        build_path("sb_cfm", sigma=0.0)
    with pytest.raises(ConfigError, match="sigma"):
        build_path("cfm", sigma=-1.0)
    with pytest.raises(ConfigError, match="path 'cfm'"):
        build_path("cfm", width=3)


@pytest.mark.parametrize(
    ("name", "a", "b"),
    [
        ("cfm", lambda t: t, lambda t: 1 - t),
        ("vp_path", lambda t: torch.sin(torch.pi / 2 * t), lambda t: torch.cos(torch.pi / 2 * t)),
        ("target_cfm", lambda t: t, lambda t: 1 - (1 - 0.01) * t),
    ],
)
def test_score_coefficient_turns_the_score_into_the_marginal_velocity(name, a, b):
    # x_t = a x1 + b x0, x0 ~ N(0, 1), x1 ~ N(mu, s^2): the marginal velocity E[a' x1 + b' x0 | x_t]
    # equals (a'/a) x + coef * score with score = -(x - a mu) / var.
    path = build_path(name, sigma=0.01) if name == "target_cfm" else build_path(name)
    mu, s = 1.5, 0.7
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    da = torch.autograd.grad(a(t).sum(), t)[0]
    db = torch.autograd.grad(b(t).sum(), t)[0]
    t = t.detach()
    x = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    var = a(t) ** 2 * s**2 + b(t) ** 2
    d = x - a(t) * mu
    velocity = da * (mu + a(t) * s**2 / var * d) + db * (b(t) / var * d)
    torch.testing.assert_close(da / a(t) * x + path.score_coefficient(t) * (-d / var), velocity)
