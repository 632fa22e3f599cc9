"""The reported NFE equals the generator net evaluations actually made (DESIGN.md), per sample.

A wrapper around the net counts the rows it evaluates; a call on 2B rows for a batch of B
(classifier-free guidance's batched branches) is two evaluations. Every sampler / ODE solver
is run with every guidance rule, including the ``cfg`` scales 0 and 1 that need one branch.
The noise-aware classifier counts its own calls too: ``last_classifier_evaluations`` is that count.
"""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import registry
from framework.generative.diffusion import Diffusion
from framework.generative.flow.model import FlowMatching

sys.path.insert(0, str(Path(__file__).parents[1] / "flow"))
from _nets import TinyVelocityNet  # noqa: E402

B = 3
GUIDANCE = [
    ("none", None, None),
    ("cfg", 0.0, None),
    ("cfg", 1.0, None),
    ("cfg", 3.0, None),
    ("classifier", 2.0, None),
    ("cfg+classifier", 1.0, 2.0),
    ("cfg+classifier", 3.0, 2.0),
]


class CountingNet(nn.Module):
    """The net, counting the rows (sample evaluations) it is called on."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = net, 0

    def forward(self, x, *args, **kwargs):
        self.rows += len(x)
        return self.inner(x, *args, **kwargs)


class TinyClassifier(nn.Module):
    """(x, noise_level) -> logits, counting its calls (they are not net evaluations)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.lin, self.calls = nn.Linear(dim + 1, num_classes), 0

    def forward(self, x, noise_level):
        self.calls += 1
        h = torch.cat([x.flatten(1), noise_level.reshape(-1, 1).to(x.dtype).expand(len(x), 1)], 1)
        return self.lin(h.to(self.lin.weight.dtype))


def _guided(model, name, scale, classifier_scale):
    model.guidance_classifier = TinyClassifier(2, 3)
    if classifier_scale is not None:
        model.classifier_scale = classifier_scale
    return {"guidance": name, "guidance_scale": scale}


@pytest.mark.parametrize("guidance", GUIDANCE, ids=lambda g: f"{g[0]}-{g[1]}")
@pytest.mark.parametrize("sampler", registry.REGISTRY.names("sampler"))
def test_diffusion_nfe_equals_net_calls(sampler, guidance):
    torch.manual_seed(0)
    model = Diffusion(num_classes=3, data_shape=(2,), net=TinyVelocityNet((2,), 3), formulation="vp").eval()
    model.net = counter = CountingNet(model.net)
    opts = _guided(model, *guidance)
    # A fixed-step solver: dopri5 with the classifier term is stiff (slow); flow tests dopri5 below.
    extra = {"solver": "rk4"} if sampler == "pf_ode" else {}
    model.generate(torch.arange(B) % 3, torch.arange(B), sampler=sampler, steps=4, **opts, **extra)
    assert counter.rows % B == 0
    assert model.last_nfe == counter.rows // B > 0
    if guidance[0] in ("classifier", "cfg+classifier"):
        assert model.guidance_classifier.calls > 0
    # The noise-aware classifier's own count is the reported one (0 without classifier guidance).
    assert model.last_classifier_evaluations == model.guidance_classifier.calls


@pytest.mark.parametrize("guidance", GUIDANCE, ids=lambda g: f"{g[0]}-{g[1]}")
@pytest.mark.parametrize("solver", ["euler", "midpoint", "heun", "rk4", "dopri5"])
def test_flow_nfe_equals_net_calls(solver, guidance):
    torch.manual_seed(0)
    model = FlowMatching(3, (2,), net=TinyVelocityNet((2,), 3)).eval()
    model.net = counter = CountingNet(model.net)
    opts = _guided(model, *guidance)
    model.generate(torch.arange(B) % 3, torch.arange(B), solver=solver, steps=3, **opts)
    assert counter.rows % B == 0
    assert model.last_nfe == counter.rows // B > 0
    assert model.last_classifier_evaluations == model.guidance_classifier.calls
    if guidance[0] in ("classifier", "cfg+classifier"):
        assert model.guidance_classifier.calls > 0


def test_cfg_branch_count_is_what_the_scale_needs():
    """w = 0 and w = 1 need one branch, other w two: 4 Euler steps cost 4, 4 and 8."""
    model = FlowMatching(3, (2,), net=TinyVelocityNet((2,), 3)).eval()
    nfe = []
    for w in (0.0, 1.0, 2.5):
        model.generate(torch.arange(B) % 3, torch.arange(B), solver="euler", steps=4, guidance="cfg", guidance_scale=w)
        nfe.append(model.last_nfe)
    assert nfe == [4, 4, 8]
