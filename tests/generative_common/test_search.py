"""Inference-time search with verifiers: neighbourhoods, best-of-N, NFE counts, determinism per seed."""

import math

import pytest
import torch

from framework.errors import ConfigError
from framework.generative.diffusion.model import Diffusion
from framework.generative.flow.model import FlowMatching, flow_time_of_level
from framework.generative.flow.paths import build_path, path_noise_level
from framework.generative.search import PathSearch, candidate_seeds, sphere_neighbours
from framework.generative.verifiers import Verifier, build_verifier
from tests.generative_common._mixture import MixtureClassifier, exact_velocity, mixture_denoiser


def test_zero_order_neighbourhood_on_fixed_tensors():
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # norm 5
    out = sphere_neighbours(z, 6, threshold=0.95, generator=torch.Generator().manual_seed(0))
    flat, zf = out.reshape(6, -1).double(), z.reshape(-1).double()
    assert out.shape == (6, 2, 2)
    torch.testing.assert_close(flat.norm(dim=1), torch.full((6,), 5.0, dtype=torch.float64))
    torch.testing.assert_close(flat @ zf / 25, torch.full((6,), 0.95, dtype=torch.float64))
    # distance lambda = ||z|| sqrt(2 (1 - c)) from the pivot
    torch.testing.assert_close((flat - zf).norm(dim=1), torch.full((6,), 5 * math.sqrt(0.1), dtype=torch.float64))


def test_candidate_seeds_start_with_the_sample_seed():
    c = candidate_seeds(torch.tensor([7, 8]), 3)
    assert c[:, 0].tolist() == [7, 8] and len(set(c.reshape(-1).tolist())) == 6
    assert torch.equal(candidate_seeds(torch.tensor([7]), 5)[:, :3], c[:1])  # a prefix: best-of-N nests


def _diffusion(formulation="edm"):
    model = Diffusion(num_classes=0, data_shape=(2,), net="resmlp", net_args={"width": 8, "depth": 1},
                      formulation=formulation).double()
    model.calls = []
    model.denoise = lambda x, sigma, labels=None: model.calls.append(len(x)) or mixture_denoiser(x, sigma)
    model.set_clean_classifier(MixtureClassifier())
    return model


def _flow(path="cfm"):
    model = FlowMatching(0, (2,), net="resmlp", net_args={"width": 8, "depth": 1}, path=path).double()
    model.calls = []
    model.forward = lambda x, t, labels=None: model.calls.append(len(x)) or exact_velocity(model.path, x, t)
    model.set_clean_classifier(MixtureClassifier())
    return model


def test_best_of_n_never_lowers_the_verifier_score_and_n1_is_plain_sampling():
    model = _diffusion()
    labels, seeds = torch.ones(24, dtype=torch.long), torch.arange(24)
    opts = dict(sampler="euler", steps=6)
    plain = model.generate(labels, seeds, **opts)
    one = model.generate(labels, seeds, search="random", search_args={"n": 1}, **opts)
    torch.testing.assert_close(one, plain)
    previous = None
    for n in (1, 2, 4, 8):
        model.calls.clear()
        model.generate(labels, seeds, search="random", search_args={"n": n}, **opts)
        scores = model.last_search_scores
        if previous is not None:
            assert (scores >= previous - 1e-12).all()
        previous = scores
        # NFE: 6 steps per candidate; each net call is for 24 n rows
        assert model.last_nfe == 6 * n == sum(model.calls) / 24
        assert model.last_classifier_evaluations == n
    assert previous.mean() > -0.05  # 8 candidates: almost every sample in the target component


@pytest.mark.parametrize("family", ["diffusion", "flow"])
@pytest.mark.parametrize("search, args, runs", [
    ("zero_order", {"n": 3, "rounds": 2}, 8),
    ("paths", {"n": 2, "m": 2}, None),
])
def test_search_counts_and_is_deterministic_per_seed(family, search, args, runs):
    model = _diffusion() if family == "diffusion" else _flow()
    opts = dict(sampler="euler", steps=10) if family == "diffusion" else dict(solver="euler", steps=10)
    labels, seeds = torch.tensor([0, 1, 1, 0, 1]), torch.arange(5) + 100
    out = model.generate(labels, seeds, search=search, search_args=args, **opts)
    rows = sum(model.calls)
    assert model.last_nfe == rows / 5
    if runs is not None:
        assert model.last_nfe == runs * 10  # rounds (n + 1) full runs of 10 steps
    alone = model.generate(labels[2:3], seeds[2:3], search=search, search_args=args, **opts)
    torch.testing.assert_close(alone[0], out[2])  # a sample depends on its seed, not its batch
    plain = model.generate(labels, seeds, **opts)
    score = lambda x: MixtureClassifier()(x).log_softmax(1).gather(1, labels.view(-1, 1)).view(-1)  # noqa: E731
    if search == "zero_order":  # round 1's pivot is the plain sample's noise; the best seen is kept
        assert (score(out) >= score(plain) - 1e-9).all()
    assert (score(out) > math.log(0.5)).sum() >= (score(plain) > math.log(0.5)).sum()


def test_path_search_levels_and_flow_times():
    assert PathSearch().levels() == [0.8, 0.6, 0.4, 0.2]
    for name in ("cfm", "vp_path", "target_cfm"):
        path = build_path(name)
        t = flow_time_of_level(path, 0.3)
        assert abs(float(path_noise_level(path, torch.tensor(t, dtype=torch.float64))) - 0.3 / 0.7) < 1e-9
    assert abs(flow_time_of_level(build_path("cfm"), 0.3) - 0.7) < 1e-9


class _RightHalf(Verifier):
    """A user verifier: the documented interface (subclass, implement score)."""

    def score(self, x0_hat, labels):
        return x0_hat[:, 0]


def test_user_verifier_and_errors():
    model = _diffusion()
    out = model.generate(torch.zeros(8, dtype=torch.long), torch.arange(8), sampler="euler", steps=6,
                         search="random", search_args={"n": 6}, verifier=_RightHalf())
    assert (out[:, 0] > 0).all()
    with pytest.raises(ConfigError, match="clean_classifier"):
        build_verifier("classifier", None)
    with pytest.raises(ConfigError, match="n >= 1"):
        _diffusion().generate(torch.zeros(2, dtype=torch.long), [0, 1], search="random", search_args={"n": 0})
