"""timm/resnet18 with ``pretrained: <local file>``: the file's weights are the ones used."""

import pytest
import timm
import torch

from framework.errors import ConfigError, DataNotFoundError
from registry import create


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(123)
    # A random resnet18 with a 10-class head: the head must be dropped, the rest loaded.
    return timm.create_model("resnet18", num_classes=10)


def _assert_loaded(net, source):
    theirs = source.state_dict()
    ours = net.state_dict()
    assert set(ours) == {k for k in theirs if not k.startswith("fc.")}
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "lightning"])
def test_pretrained_local_file_is_loaded(tmp_path, source, fmt):
    path = tmp_path / f"weights.{'ckpt' if fmt == 'lightning' else fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    elif fmt == "lightning":
        torch.save({"state_dict": source.state_dict(), "epoch": 3}, path)
    else:
        torch.save(source.state_dict(), path)
    net = create("net", "timm/resnet18", data_shape=(3, 32, 32), pretrained=str(path))
    _assert_loaded(net, source)
    # Without the file the weights are a fresh random init, so the check above is not vacuous.
    fresh = create("net", "timm/resnet18", data_shape=(3, 32, 32))
    assert not torch.equal(fresh.conv1.weight, source.conv1.weight)
    # The loaded backbone computes the source's penultimate features.
    source.eval(), net.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(net(x), source.forward_head(source.forward_features(x), pre_logits=True), atol=1e-5)


def test_pretrained_backbone_inside_the_classifier(tmp_path, source):
    from framework import build

    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build(
        "model", "classifier", num_classes=5, data_shape=(3, 32, 32), net="timm/resnet18",
        net_args={"pretrained": str(path)},
    )  # fmt: skip
    _assert_loaded(model.backbone, source)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_weights_of_another_architecture_are_a_config_error(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", num_classes=0).state_dict(), path)
    with pytest.raises(ConfigError, match="do not fit timm/resnet18"):
        create("net", "timm/resnet18", data_shape=(3, 32, 32), pretrained=str(path))


def test_missing_weights_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="weights file not found"):
        create("net", "timm/resnet18", data_shape=(3, 32, 32), pretrained=str(tmp_path / "absent.pth"))


def test_unreadable_or_misshapen_weights_are_config_errors(tmp_path):
    import timm

    from framework.errors import ConfigError

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="cannot read weights"):
        create("net", "timm/resnet18", data_shape=(3, 16, 16), pretrained=str(junk))
    grey = tmp_path / "grey.pth"
    torch.save(timm.create_model("resnet18", num_classes=0, in_chans=1).state_dict(), grey)
    with pytest.raises(ConfigError, match="do not fit timm/resnet18"):
        create("net", "timm/resnet18", data_shape=(3, 16, 16), pretrained=str(grey))
