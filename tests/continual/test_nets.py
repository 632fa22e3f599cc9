"""CIFAR ResNets (shapes, sizes) and the frozen open_clip encoder (weights from a file the test writes)."""

import json

import pytest
import torch
import torch.nn.functional as F

import registry
from framework.errors import ConfigError, DataNotFoundError


@pytest.mark.parametrize(
    "name,features,params",
    [("cifar_resnet20", 64, 0.27e6), ("resnet32", 64, 0.46e6), ("cifar_resnet18", 512, 11.17e6)],
)
def test_cifar_resnets(name, features, params):
    net = registry.create("net", name, data_shape=(3, 32, 32))
    assert net.num_features == features
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(params, rel=0.02)  # He et al. / PyCIL sizes
    if name != "cifar_resnet18":
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, features)


def test_resnet_option_a_shortcut_has_no_parameters():
    a = registry.create("net", "cifar_resnet20", data_shape=(1, 8, 8), shortcut="pad")
    b = registry.create("net", "cifar_resnet20", data_shape=(1, 8, 8), shortcut="conv")
    assert sum(p.numel() for p in a.parameters()) < sum(p.numel() for p in b.parameters())
    assert a(torch.randn(3, 1, 8, 8)).shape == (3, 64)
    with pytest.raises(ConfigError):
        registry.create("net", "cifar_resnet20", data_shape=(8,))


TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip architecture, random weights saved to a file, and a local-dir copy."""
    import open_clip

    root = tmp_path_factory.mktemp("clip")
    (root / "configs").mkdir()
    (root / "configs" / "tiny-test-vit.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(root / "configs")
    torch.manual_seed(3)
    model = open_clip.create_model("tiny-test-vit")
    torch.save(model.state_dict(), root / "weights.pth")
    (root / "folder").mkdir()
    (root / "folder" / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    torch.save(model.state_dict(), root / "folder" / "open_clip_pytorch_model.bin")
    return model.eval(), root


def _reference(model, x):
    """open_clip's own encode_image on [0, 1] images resized and normalised by hand."""
    mean = torch.tensor(open_clip_mean()).view(1, 3, 1, 1)
    std = torch.tensor(open_clip_std()).view(1, 3, 1, 1)
    x = F.interpolate(((x + 1) / 2).expand(-1, 3, -1, -1), size=(16, 16), mode="bilinear", antialias=True)
    with torch.no_grad():
        return model.encode_image((x - mean) / std)


def open_clip_mean():
    import open_clip

    return open_clip.OPENAI_DATASET_MEAN


def open_clip_std():
    import open_clip

    return open_clip.OPENAI_DATASET_STD


def test_open_clip_loads_a_weights_file_and_matches_encode_image(tiny_clip):
    model, root = tiny_clip
    net = registry.create("net", "open_clip", data_shape=(1, 8, 8), model_name="tiny-test-vit", weights=str(root / "weights.pth"))
    assert net.num_features == 16
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    assert torch.allclose(net(x), _reference(model, x), atol=1e-5)
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.visual.training
    folder = registry.create("net", "open_clip", data_shape=(1, 8, 8), model_name=f"local-dir:{root / 'folder'}")
    assert torch.allclose(folder(x), net(x), atol=1e-6)
    with pytest.warns(UserWarning, match="randomly initialised"):
        fresh = registry.create("net", "open_clip", data_shape=(1, 8, 8), model_name="tiny-test-vit")
    assert not torch.allclose(fresh(x), net(x))


def test_open_clip_bad_input(tiny_clip, tmp_path):
    with pytest.raises(DataNotFoundError):
        registry.create("net", "open_clip", data_shape=(3, 32, 32), model_name="tiny-test-vit", weights=str(tmp_path / "no.bin"))
    with pytest.raises(ConfigError):
        registry.create("net", "open_clip", data_shape=(3, 32, 32), model_name="hf-hub:laion/x")
    with pytest.raises(ConfigError):
        registry.create("net", "open_clip", data_shape=(3, 32, 32), model_name="no-such-arch")
    with pytest.raises(ConfigError):
        registry.create("net", "open_clip", data_shape=(2,), model_name="tiny-test-vit")


def test_ncm_on_a_frozen_open_clip_encoder(tiny_clip, tmp_path):
    """base_epochs 0: nothing trains; the protocol runs on cached embeddings."""
    import lightning as L

    from framework.continual.scenario import ClassIncremental
    from framework.data.digits import DigitsDataModule

    _, root = tiny_clip
    model = registry.create(
        "model", "ncm", num_classes=10, data_shape=(1, 8, 8), net="open_clip",
        net_args={"model_name": "tiny-test-vit", "weights": str(root / "weights.pth")}, base_epochs=0,
    )
    data = ClassIncremental(DigitsDataModule(), base_classes=4, increment=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=data)
    assert model.done and trainer.current_epoch == 0 and len(model.correct) == 4
    assert model.results()["accuracy"][0] > 100 / 4  # random features still beat chance on 4 classes
