"""Guidance rules on fixed tensors: the formulas, not just shapes."""

import pytest
import torch

import registry
from framework.errors import ConfigError
from framework.generative.guidance import (
    GuidanceInput,
    build_guidance,
    classifier_log_prob_grad,
)


def _predict(x, labels):
    # A prediction that depends on the label, so cond and uncond differ.
    return x * 2 + labels.view(-1, 1).to(x.dtype)


def test_cfg_formula_and_convention():
    x = torch.randn(3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    inp = GuidanceInput(x=x, labels=y, null_label=5)
    cond, uncond = _predict(x, y), _predict(x, torch.full_like(y, 5))
    for w in (0.0, 1.0, 3.5):
        out = build_guidance("cfg", scale=w)(_predict, inp)
        torch.testing.assert_close(out, uncond + w * (cond - uncond))
    torch.testing.assert_close(build_guidance("cfg", scale=1.0)(_predict, inp), cond)
    torch.testing.assert_close(build_guidance("none")(_predict, inp), cond)


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))

    def forward(self, x, noise_level):
        return (x @ self.w) / (1 + noise_level.view(-1, 1))


def test_classifier_gradient_is_exact_for_a_linear_softmax():
    clf = _Linear()
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    level = torch.rand(5, dtype=torch.float64)
    grad = classifier_log_prob_grad(clf, x, level, y)
    # d/dx log softmax(xW/c)_y = (W[:, y] - W p) / c
    logits = (x @ clf.w) / (1 + level.view(-1, 1))
    p = logits.softmax(-1)
    expected = (clf.w.T[y] - p @ clf.w.T) / (1 + level.view(-1, 1))
    torch.testing.assert_close(grad, expected.detach())
    coef = torch.full((5,), 0.5, dtype=torch.float64)
    inp = GuidanceInput(x=x, labels=y, null_label=3, classifier=clf, noise_level=level, score_coef=coef)
    out = build_guidance("classifier", scale=2.0)(_predict, inp)
    torch.testing.assert_close(out, _predict(x, y) + 2.0 * 0.5 * expected.detach())
    combined = build_guidance("cfg+classifier", scale=2.0, classifier_scale=2.0)(_predict, inp)
    cond, uncond = _predict(x, y), _predict(x, torch.full_like(y, 3))
    torch.testing.assert_close(combined, uncond + 2 * (cond - uncond) + expected.detach())
    # Works inside inference mode too (the sample command's predict loop).
    with torch.inference_mode():
        torch.testing.assert_close(classifier_log_prob_grad(clf, x, level, y), grad)


def test_errors():
    with pytest.raises(registry.UnknownNameError):
        build_guidance("cgf")
    with pytest.raises(ConfigError):
        build_guidance("classifier", scale=1.0)(_predict, GuidanceInput(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), 1))
    with pytest.raises(ConfigError):
        build_guidance("cfg", bogus=1)
