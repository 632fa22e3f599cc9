"""The diffusion PF-ODE likelihood with per-sample Hutchinson probes: a sample's estimate does not depend on its batch."""

import pytest
import torch

from framework.generative.diffusion import Diffusion
from framework.generative.diffusion.samplers import pf_velocity
from framework.generative.likelihood import log_likelihood

TINY_UNET = {"channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": ()}


def _field(model, labels):
    """The velocity Diffusion.log_likelihood integrates (its probability-flow drift for ``labels``)."""
    f, denoiser = model.formulation, model.denoiser(labels)
    return lambda t, x: pf_velocity(denoiser, x, t.clamp(f.likelihood_eps, f.t_max))


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_pf_ode_estimate_of_a_sample_does_not_depend_on_its_batch(probe):
    torch.manual_seed(0)
    model = Diffusion(num_classes=3, data_shape=(1, 8, 8), net_args=TINY_UNET).double().eval()
    with torch.no_grad():  # away from the zero-initialised output: a field with a non-trivial Jacobian
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    f = model.formulation
    ends = {"t_data": f.likelihood_eps, "t_noise": f.t_max, "prior_logp": f.prior_logp}
    options = {"divergence": "hutchinson", "probe": probe, "solver": "euler", "steps": 3}
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    labels = torch.tensor([0, 1, 2, 1])
    # The field here is the module's: same result as Diffusion.log_likelihood for the same probes.
    via_module = model.log_likelihood(x, labels, probe=probe, solver="euler", steps=3, generator=torch.Generator().manual_seed(5))
    direct = log_likelihood(_field(model, labels), x, generator=torch.Generator().manual_seed(5), **ends, **options)
    torch.testing.assert_close(direct.logp, via_module.logp, rtol=0, atol=0)

    seeds = torch.tensor([40, 41, 42, 43])
    full = model.log_likelihood(x, labels, seeds=seeds, **options)
    rows = torch.tensor([3, 0])
    others = torch.rand(1, 1, 8, 8, dtype=torch.float64) * 2 - 1
    part = model.log_likelihood(
        torch.cat([others, x[rows]]), torch.cat([torch.tensor([2]), labels[rows]]),
        seeds=torch.cat([torch.tensor([7]), seeds[rows]]), **options,
    )
    torch.testing.assert_close(part.logp[1:], full.logp[rows], rtol=1e-12, atol=1e-9)
    reseeded = model.log_likelihood(x[:1].repeat(4, 1, 1, 1), labels[:1].repeat(4), seeds=[1, 2, 3, 4], **options)
    assert reseeded.logp.unique().numel() > 1  # the probe matters: the invariance is not trivial
