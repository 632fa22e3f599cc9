"""mnist / fashion_mnist / cifar10 / cifar100 on tiny fake data in torchvision's on-disk formats."""

import pytest
import torch
from _fake_datasets import images, write_cifar10, write_cifar100, write_mnist

from framework.data.transforms import Compose
from framework.data.vision import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
)
from framework.errors import DataNotFoundError


def _unit(a):
    return torch.as_tensor(a, dtype=torch.float32) / 127.5 - 1.0


@pytest.mark.parametrize("cls,folder", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")])
def test_mnist_family_reads_idx_files(tmp_path, cls, folder):
    write_mnist(tmp_path, folder, n_train=60, n_test=20)
    dm = cls(root=str(tmp_path), val_size=10, batch_size=16)
    assert dm.num_classes == 10 and dm.data_shape == (1, 28, 28) and dm.image_shape == (1, 28, 28)
    assert len(dm.class_names) == 10
    dm.setup("fit")
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (50, 10, 20)
    # Test images are exactly the files' pixels mapped to [-1, 1], in file order.
    expected = _unit(images(20, 1, 28))
    assert torch.equal(dm.test_dataset.x, expected)
    assert torch.equal(dm.test_dataset.y, torch.arange(20) % 10)
    assert dm.test_dataset.x.dtype == torch.float32 and dm.test_dataset.y.dtype == torch.int64
    # Train and val partition the training file; every class is in val exactly once (stratified).
    all_train = _unit(images(60, 1, 28))
    rows = torch.cat([dm.train_dataset.x, dm.val_dataset.x])
    found = {int(torch.nonzero((all_train == r).flatten(1).all(1))[0]) for r in rows}
    assert found == set(range(60))
    assert sorted(dm.val_dataset.y.tolist()) == list(range(10))
    assert dm.train_dataset.transform is None  # no augmentation by default for MNIST
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 28, 28) and y.shape == (16,)


def test_split_is_seeded(tmp_path):
    write_mnist(tmp_path, n_train=60, n_test=10)

    def val(seed):
        dm = MNISTDataModule(root=str(tmp_path), val_size=20, split_seed=seed)
        dm.setup()
        return dm.val_dataset.x

    assert torch.equal(val(1), val(1))
    assert not torch.equal(val(1), val(2))


def test_mnist_resize_to_32(tmp_path):
    write_mnist(tmp_path, n_train=20, n_test=10)
    dm = MNISTDataModule(root=str(tmp_path), image_size=32, val_size=0)
    assert dm.data_shape == (1, 32, 32)
    dm.setup()
    x = dm.train_dataset.x
    assert x.shape == (20, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    expected = torch.nn.functional.interpolate(_unit(images(20, 1, 28)), size=(32, 32), mode="bilinear")
    assert torch.allclose(x, expected.clamp(-1, 1), atol=1e-6)
    # val_size 0 validates on the test set.
    assert dm.val_dataset is dm.test_dataset


def test_cifar10_channels_layout_and_augmentation(tmp_path, monkeypatch):
    names = write_cifar10(tmp_path, monkeypatch, per_batch=10, n_test=20)
    dm = CIFAR10DataModule(root=str(tmp_path), val_size=10)
    assert dm.num_classes == 10 and dm.data_shape == (3, 32, 32) and dm.class_names == names
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (40, 10, 20)
    # CHW planes in the pickles -> NCHW tensors, pixel for pixel (no HWC/CHW mix-up).
    assert torch.equal(dm.test_dataset.x, _unit(images(20, 3, 32)))
    assert torch.equal(dm.test_dataset.y, torch.arange(20) % 10)
    # Standard CIFAR augmentation (crop 4 + flip) on training batches only.
    aug = dm.train_dataset.transform
    assert isinstance(aug, Compose) and aug.transforms[0].padding == 4
    assert dm.val_dataset.transform is None and dm.test_dataset.transform is None
    torch.manual_seed(0)
    x, _ = dm.train_dataset.__getitems__(list(range(40)))
    assert x.shape == (40, 3, 32, 32) and not torch.equal(x, dm.train_dataset.x)
    assert x.min() >= -1 and x.max() <= 1
    off = CIFAR10DataModule(root=str(tmp_path), val_size=0, crop_padding=0, horizontal_flip=False)
    off.setup()
    assert off.train_dataset.transform is None


def test_cifar100_fine_labels_and_names(tmp_path, monkeypatch):
    names = write_cifar100(tmp_path, monkeypatch, n_train=200, n_test=100)
    dm = CIFAR100DataModule(root=str(tmp_path), val_size=100)
    assert dm.num_classes == 100 and dm.class_names == names and dm.class_names[:2] == ["apple", "aquarium_fish"]
    dm.setup()
    assert len(dm.train_dataset) == 100 and len(dm.val_dataset) == 100
    assert sorted(dm.val_dataset.y.tolist()) == list(range(100))
    assert torch.equal(dm.test_dataset.y, torch.arange(100))


@pytest.mark.parametrize(
    "cls,folder",
    [
        (MNISTDataModule, "MNIST/raw"),
        (FashionMNISTDataModule, "FashionMNIST/raw"),
        (CIFAR10DataModule, "cifar-10-batches-py"),
        (CIFAR100DataModule, "cifar-100-python"),
    ],
)
def test_missing_data_without_download_is_one_clear_error(tmp_path, cls, folder):
    dm = cls(root=str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as err:
        dm.setup()
    message = str(err.value)
    assert str(tmp_path / "nowhere" / folder) in message and "download: true" in message
    assert "\n" not in message
    dm.prepare_data()  # download off: prepare_data does nothing (and no network)


def test_corrupt_cifar_is_reported_as_missing(tmp_path, monkeypatch):
    write_cifar10(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(DataNotFoundError, match="cifar10"):
        CIFAR10DataModule(root=str(tmp_path)).setup()


def test_bad_arguments(tmp_path):
    from framework.errors import ConfigError

    with pytest.raises(ConfigError):
        MNISTDataModule(root=str(tmp_path), val_size=-1)
    with pytest.raises(ConfigError):
        MNISTDataModule(root=str(tmp_path), image_size=2)
    write_mnist(tmp_path, n_train=20, n_test=10)
    with pytest.raises(ConfigError, match="leaves no training data"):
        MNISTDataModule(root=str(tmp_path), val_size=20).setup()


def test_registered_names():
    from framework import build

    for name, cls in [("mnist", MNISTDataModule), ("fashion_mnist", FashionMNISTDataModule),
                      ("cifar10", CIFAR10DataModule), ("cifar100", CIFAR100DataModule)]:  # fmt: skip
        assert type(build("data", name)) is cls


def test_download_skips_data_already_there(tmp_path, monkeypatch):
    # prepare_data with download on only fetches what is missing: present data means no network.
    write_mnist(tmp_path, n_train=20, n_test=10)
    write_cifar10(tmp_path, monkeypatch)
    for cls in (MNISTDataModule, CIFAR10DataModule):
        dm = cls(root=str(tmp_path), download=True, val_size=0)
        dm.prepare_data()
        dm.setup()
        assert len(dm.test_dataset) in (10, 20)


@pytest.mark.parametrize("cls,module", [(MNISTDataModule, "mnist"), (CIFAR10DataModule, "cifar")])
def test_failed_download_is_one_clear_error(tmp_path, monkeypatch, cls, module):
    import importlib
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("network unreachable")

    monkeypatch.setattr(
        importlib.import_module(f"torchvision.datasets.{module}"), "download_and_extract_archive", offline
    )
    dm = cls(root=str(tmp_path), download=True)
    with pytest.raises(DataNotFoundError, match="could not download") as err:
        dm.prepare_data()
    assert "\n" not in str(err.value)
