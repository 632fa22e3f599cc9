"""timm-style: every registered net is built and run once, whatever its role.

Roles are read off ``forward``'s signature: ``(x)`` backbones and discriminator trunks give
(B, features); ``(x, noise_level, labels)`` denoisers give a tensor shaped like x;
``(z, labels)`` generators give images of ``data_shape``.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import framework  # noqa: F401 - registers everything
import registry
from framework.building import create

# Smaller than the defaults where the defaults are paper-sized; the point is to run each net.
OVERRIDES = {
    "open_clip": None,  # needs a weights file or a hub download: built from a local file in tests/continual/test_nets.py
    "gan_discriminator": None,  # built from a trained GAN checkpoint in tests/gan
    "dit": {"hidden_size": 32, "depth": 1, "num_heads": 2},
    "unet": {"channels": 16},
    "sn_resnet_generator": {"channels": 8, "latent_dim": 16},
    "sn_resnet_discriminator": {"channels": 8},
    "dcgan_generator": {"channels": 8, "latent_dim": 16},
    "dcgan_discriminator": {"channels": 8},
}
NETS = [name for name in registry.names("net") if not name.endswith("/<name>")] + ["timm/resnet18"]


def _data_shape(name: str) -> tuple[int, ...]:
    if name == "resmlp":
        return (2,)
    if name.startswith(("sn_resnet", "timm/", "cifar_resnet")):
        return (3, 32, 32) if name.startswith("sn_resnet") else (3, 16, 16)
    return (1, 8, 8)


@pytest.mark.parametrize("name", NETS)
def test_registered_net_builds_and_runs(name):
    if name in OVERRIDES and OVERRIDES[name] is None:
        pytest.skip("built from a local weights file in its own test")
    torch.manual_seed(0)
    shape = _data_shape(name)
    kwargs = dict(OVERRIDES.get(name, {}))
    params = inspect.signature(registry.get("net", name)).parameters
    if "num_classes" in params:
        kwargs["num_classes"] = 3
    net = create("net", name, data_shape=shape, **kwargs).eval()
    forward = [p for p in inspect.signature(net.forward).parameters if p != "self"]
    batch = 2
    with torch.no_grad():
        if forward[:3] == ["x", "noise_level", "labels"]:
            x = torch.randn(batch, *shape)
            out = net(x, torch.rand(batch), torch.tensor([0, 3]))  # 3 = the null label (no class)
            assert out.shape == x.shape
        elif forward[:2] == ["z", "labels"]:
            z = torch.randn(batch, net.latent_dim if hasattr(net, "latent_dim") else kwargs["latent_dim"])
            out = net(z, torch.tensor([0, 2]))
            assert out.shape == (batch, *shape)
        else:
            out = net(torch.rand(batch, *shape) * 2 - 1)
            assert out.ndim == 2 and out.shape[0] == batch
            if hasattr(net, "num_features"):
                assert out.shape[1] == net.num_features
    assert torch.isfinite(out).all()
