"""The denoiser nets: shapes, conditioning, bad shapes."""

import pytest
import torch

import registry
from framework.errors import ConfigError

TINY = {
    "unet": {"channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (4,)},
    "dit": {"hidden_size": 32, "depth": 2, "num_heads": 2, "patch_size": 2},
    "resmlp": {"width": 32, "depth": 2},
}


def _perturb(net):
    # The nets zero-initialise their outputs (and DiT its modulations): move off zero.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("name", ["unet", "dit", "resmlp"])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_net_shapes_and_conditioning(name, num_classes):
    shape = (1, 8, 8)
    net = registry.create("net", name, data_shape=shape, num_classes=num_classes, **TINY[name]).eval()
    x = torch.randn(4, *shape)
    out0 = net(x, torch.rand(4), torch.tensor([0, 1, 2, num_classes]) if num_classes else None)
    assert out0.shape == x.shape and torch.all(out0 == 0)  # zero-initialised output layer
    _perturb(net)
    level = torch.full((4,), 0.3)
    out = net(x, level, torch.tensor([0, 1, 2, num_classes]) if num_classes else None)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, net(x, level + 0.5, torch.tensor([0, 1, 2, num_classes]) if num_classes else None))
    if num_classes:
        other = net(x, level, torch.tensor([1, 2, 0, 0]))
        assert not torch.allclose(out, other)  # the label matters
    # Samples are processed independently (no batch statistics).
    single = net(x[1:2], level[1:2], torch.tensor([1]) if num_classes else None)
    torch.testing.assert_close(single, out[1:2], rtol=1e-4, atol=1e-5)


def test_resmlp_on_vectors_and_bad_shapes():
    net = registry.create("net", "resmlp", data_shape=(2,), num_classes=8, width=16, depth=1)
    assert net(torch.randn(5, 2), torch.rand(5), torch.arange(5)).shape == (5, 2)
    with pytest.raises(ConfigError):
        registry.create("net", "unet", data_shape=(2,), num_classes=0)
    with pytest.raises(ConfigError):
        registry.create("net", "unet", data_shape=(1, 6, 6), num_classes=0, channel_mult=(1, 2, 2))
    with pytest.raises(ConfigError):
        registry.create("net", "dit", data_shape=(1, 8, 8), num_classes=0, patch_size=3)
    with pytest.raises(ConfigError):
        registry.create("net", "dit", data_shape=(1, 8, 8), num_classes=0, hidden_size=30, num_heads=4)
