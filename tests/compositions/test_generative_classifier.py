"""The generative classifier: Bayes' rule on exact scores, shared pairs, the adaptive schedule, NFE, calibration."""

from __future__ import annotations

import math

import pytest
import torch

from framework.errors import ConfigError
from framework.generative import classify
from framework.generative.diffusion import Diffusion
from framework.generative.flow.model import FlowMatching
from framework.generative.generative_classifier import GenerativeClassifier
from tests.compositions._generators import gaussian_log_density, gaussian_mixture_diffusion, save_checkpoint

MEANS = torch.tensor([[-0.6, 0.2], [0.5, -0.3]], dtype=torch.float64)
STD = 0.35
TINY_UNET = {"channels": 8, "channel_mult": (1,), "num_res_blocks": 1, "attn_resolutions": ()}


def _mixture(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(2, (n,), generator=g)
    x = MEANS[y] + STD * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, y


def _model_log_likelihood(x):
    """log p(x | c) of the EDM model with the exact denoiser, in closed form: its PF-ODE is linear.

    x_t = mu + sqrt((std^2 + t^2) / (std^2 + t0^2)) (x - mu) carries x from t0 = sigma_min to
    T = sigma_max, where the model's prior is N(0, T^2 I) (not quite the data's N(mu, std^2 + T^2)).
    """
    t0, big = 0.002, 80.0
    gain = math.sqrt((STD**2 + big**2) / (STD**2 + t0**2))
    columns = []
    for m in MEANS:
        z = m + gain * (x - m)
        columns.append(gaussian_log_density(z, torch.zeros(2, dtype=torch.float64), big**2) + 2 * math.log(gain))
    return torch.stack(columns, 1)


def _bayes_log_posterior(x, log_prior, ll=None):
    ll = torch.stack([gaussian_log_density(x, m, STD**2) for m in MEANS], 1) if ll is None else ll
    joint = ll + log_prior
    return joint - torch.logsumexp(joint, 1, keepdim=True)


def _perturbed(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():  # away from the zero-initialised output: class-dependent, non-trivial errors
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def test_exact_mode_on_a_gaussian_mixture_is_the_bayes_rule():
    model = gaussian_mixture_diffusion(MEANS, STD)
    clf = GenerativeClassifier(num_classes=2, data_shape=(2,), generator=model, mode="exact", calibrate=False,
                               likelihood_args={"divergence": "exact", "rtol": 1e-7, "atol": 1e-7})
    x, _ = _mixture(16)
    out = clf.score(x)
    exact = _model_log_likelihood(x)
    torch.testing.assert_close(out["log_likelihood"], exact, atol=1e-3, rtol=0)
    # ... within the prior mismatch (mu / sigma_max per dim) of the data's own density
    truth = torch.stack([gaussian_log_density(x, m, STD**2) for m in MEANS], 1)
    assert (out["log_likelihood"] - truth).abs().max() < 0.05
    uniform = torch.full((2,), math.log(0.5), dtype=torch.float64)
    torch.testing.assert_close(out["logits"], _bayes_log_posterior(x, uniform, exact), atol=2e-4, rtol=0)
    assert torch.equal(out["predictions"], _bayes_log_posterior(x, uniform).argmax(1))
    # A non-uniform prior enters as Bayes' rule says.
    clf.log_prior = torch.tensor([0.8, 0.2], dtype=torch.float64).log()
    torch.testing.assert_close(clf.score(x)["logits"], _bayes_log_posterior(x, clf.log_prior, exact), atol=2e-4, rtol=0)


def test_error_mode_on_a_gaussian_mixture_agrees_with_the_bayes_rule():
    model = gaussian_mixture_diffusion(MEANS, STD)
    clf = GenerativeClassifier(num_classes=2, data_shape=(2,), generator=model, n_samples=[64], to_keep=[1], calibrate=False)
    x, _ = _mixture(200, seed=1)
    bayes = _bayes_log_posterior(x, torch.zeros(2, dtype=torch.float64)).argmax(1)
    agree = (clf.score(x)["predictions"] == bayes).double().mean()
    assert agree >= 0.95, agree


def _recorded_pairs(clf, x):
    seen = []
    original = clf.generator.conditional_error

    def spy(xx, labels, levels, noise, loss="l2"):
        seen.append((xx.clone(), labels.clone(), levels.clone(), noise.clone()))
        return original(xx, labels, levels, noise, loss)

    clf.generator.conditional_error = spy
    clf.score(x)
    xx, labels, levels, noise = (torch.cat(t) for t in zip(*seen))
    return xx, labels, levels, noise


@pytest.mark.parametrize("noise", ["shared", "independent"])
def test_the_pairs_are_shared_across_classes_only_in_shared_mode(noise):
    model = _perturbed(Diffusion(num_classes=3, data_shape=(1, 8, 8), net_args=TINY_UNET))
    clf = GenerativeClassifier(num_classes=3, generator=model, n_samples=[5], to_keep=[1], noise=noise, calibrate=False)
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    xx, labels, levels, nz = _recorded_pairs(clf, x)
    assert len(labels) == 2 * 3 * 5
    for i in range(2):
        rows = (xx == x[i]).flatten(1).all(1)
        per_class = [(levels[rows & (labels == c)], nz[rows & (labels == c)]) for c in range(3)]
        same = [torch.equal(per_class[0][0], lv) and torch.equal(per_class[0][1], n) for lv, n in per_class[1:]]
        assert all(same) == (noise == "shared"), same
        assert per_class[0][0].unique().numel() == 5  # five distinct levels per image
    # and the pairs differ between images
    rows0, rows1 = (xx == x[0]).flatten(1).all(1), (xx == x[1]).flatten(1).all(1)
    assert not torch.equal(levels[rows0], levels[rows1])


@pytest.mark.parametrize("family", ["diffusion", "flow"])
def test_adaptive_with_every_class_kept_equals_full(family):
    net = Diffusion if family == "diffusion" else FlowMatching
    model = _perturbed(net(num_classes=4, data_shape=(1, 8, 8), net_args=TINY_UNET))
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    full = GenerativeClassifier(num_classes=4, generator=model, n_samples=[12], to_keep=[1], calibrate=False).score(x)
    adaptive = GenerativeClassifier(num_classes=4, generator=model, n_samples=[4, 12], to_keep=[4, 1], calibrate=False).score(x)
    torch.testing.assert_close(adaptive["errors"], full["errors"], rtol=1e-6, atol=1e-9)
    assert torch.equal(adaptive["predictions"], full["predictions"])
    assert torch.equal(full["counts"], torch.full((6, 4), 12))
    # a shrinking schedule evaluates the dropped classes on the first stage only
    staged = GenerativeClassifier(num_classes=4, generator=model, n_samples=[4, 12], to_keep=[2, 1], calibrate=False).score(x)
    assert sorted(staged["counts"][0].tolist()) == [4, 4, 12, 12]
    torch.testing.assert_close(staged["nfe"], torch.full((6,), 4 * 4 + 2 * 8.0, dtype=torch.float64))


def test_nfe_is_the_number_of_real_net_calls():
    model = gaussian_mixture_diffusion(MEANS, STD)
    net = model.net
    x, _ = _mixture(7)
    for n_samples, to_keep in (([3, 10], [1, 1][:0] or [2, 1]), ([10], [1])):
        clf = GenerativeClassifier(num_classes=2, data_shape=(2,), generator=model, n_samples=n_samples, to_keep=to_keep,
                                   calibrate=False, batch_rows=5)
        net.calls = 0
        out = clf.score(x)
        assert out["nfe"][0] * len(x) == net.calls == classify.adaptive_nfe(2, n_samples, to_keep) * len(x)
    clf = GenerativeClassifier(num_classes=2, data_shape=(2,), generator=model, mode="exact", calibrate=False,
                               likelihood_args={"solver": "euler", "steps": 6, "divergence": "hutchinson"})
    net.calls = 0
    out = clf.score(x)
    assert out["nfe"][0] * len(x) == net.calls == 2 * 6 * len(x)


def test_temperature_fit_matches_the_closed_form():
    # Scores (a, -a): p(correct) = sigmoid(2a / T); the NLL is minimal where it equals the accuracy k / n.
    a, n, k = 0.8, 50, 41
    labels = torch.cat([torch.zeros(k), torch.ones(n - k)]).long()
    scores = torch.tensor([[a, -a]]).repeat(n, 1)
    expected = 2 * a / math.log(k / (n - k))
    assert classify.fit_temperature(scores, labels) == pytest.approx(expected, rel=1e-4)


def test_ece_by_hand_and_against_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = torch.tensor([[0.9, 0.1], [0.81, 0.19], [0.3, 0.7], [0.45, 0.55], [0.62, 0.38]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0, 0])
    # top-1: 0.9 right, 0.81 wrong, 0.7 right, 0.55 wrong, 0.62 right.
    # 2 bins [0, .5), [.5, 1]: all in bin 2; acc 3/5, mean confidence 0.716.
    assert classify.expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(abs(0.6 - 0.716))
    # 5 bins of width 0.2: [.4, .6) holds 0.55 (acc 0); [.6, .8) 0.62, 0.7 (acc 1); [.8, 1] 0.81, 0.9 (acc 1/2).
    by_hand = 1 / 5 * 0.55 + 2 / 5 * abs(1 - 0.66) + 2 / 5 * abs(0.5 - 0.855)
    assert classify.expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(by_hand)
    reference = multiclass_calibration_error(probs.float(), labels, num_classes=2, n_bins=5, norm="l1")
    assert classify.expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(float(reference), abs=1e-6)
    g = torch.Generator().manual_seed(0)
    many = torch.softmax(3 * torch.randn(300, 4, generator=g, dtype=torch.float64), 1)
    many_labels = torch.randint(4, (300,), generator=g)
    reference = multiclass_calibration_error(many.float(), many_labels, num_classes=4, n_bins=15, norm="l1")
    assert classify.expected_calibration_error(many, many_labels) == pytest.approx(float(reference), abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_samples": [20, 100], "to_keep": [3, 3]}, "strictly decreasing"),
        ({"n_samples": [20, 20], "to_keep": [3, 1]}, "strictly increasing"),
        ({"n_samples": [20, 100], "to_keep": [11, 1]}, "more classes than there are"),
        ({"n_samples": [20], "to_keep": [3, 1]}, "same length"),
        ({"loss": "l3"}, "unknown loss"),
    ],
)
def test_a_bad_schedule_is_one_config_error(kwargs, message):
    model = Diffusion(num_classes=10, data_shape=(1, 8, 8), net_args=TINY_UNET)
    with pytest.raises(ConfigError, match=message):
        GenerativeClassifier(generator=model, **kwargs)



def test_a_generator_that_does_not_fit_is_one_config_error(tmp_path):
    from framework.generative.gan.module import ADCGAN
    from framework.models.classifier import Classifier

    with pytest.raises(ConfigError, match="^generator: .*holds a Classifier, not a GenerativeModule"):
        GenerativeClassifier(generator=save_checkpoint(Classifier(num_classes=10), tmp_path / "c.ckpt"))
    with pytest.raises(ConfigError, match="^generator: .*trained on 3 classes, the data have 10"):
        GenerativeClassifier(generator=save_checkpoint(Diffusion(num_classes=3, net_args=TINY_UNET), tmp_path / "d.ckpt"))
    with pytest.raises(ConfigError, match="unconditional"):
        GenerativeClassifier(generator=save_checkpoint(Diffusion(num_classes=0, net_args=TINY_UNET), tmp_path / "u.ckpt"))
    gan = GenerativeClassifier(generator=ADCGAN(num_classes=10), calibrate=False)  # builds; it has no error to classify with
    with pytest.raises(ConfigError, match="no conditional denoising error"):
        gan.score(torch.zeros(1, 1, 8, 8))
