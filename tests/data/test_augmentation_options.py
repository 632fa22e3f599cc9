"""Every image DataModule takes the same batched augmentation options (ImageDataModule's), on training data only."""

from __future__ import annotations

import pytest
import torch
from _fake_datasets import write_cifar10, write_cifar100, write_image_folder, write_mnist

import framework  # noqa: F401 - registers everything
import registry
from framework.building import create
from framework.data.base import ImageDataModule
from framework.data.transforms import Cutout, RandomCrop, RandomHorizontalFlip
from framework.errors import ConfigError

NOT_IMAGES = {"toy2d", "class_incremental", "few_shot_incremental", "reflow_pairs", "generated"}  # vectors, wrappers, pairs


def _files(name, root, monkeypatch) -> dict:
    """Arguments (and fake files on disk) each DataModule needs; {} for those that need nothing."""
    if name in ("mnist", "fashion_mnist"):
        write_mnist(root, "MNIST" if name == "mnist" else "FashionMNIST", n_train=30, n_test=10)
        return {"root": str(root), "val_size": 10}
    if name == "cifar10":
        write_cifar10(root, monkeypatch, per_batch=4, n_test=8)
        return {"root": str(root), "val_size": 0}
    if name == "cifar100":
        write_cifar100(root, monkeypatch, n_train=100, n_test=20)
        return {"root": str(root), "val_size": 0}
    if name == "image_folder":
        write_image_folder(root / "images", splits=("train", "val"), per_class=3, size=12)
        return {"root": str(root / "images"), "image_size": 12}
    if name == "glyphs":
        return {"root": str(root), "n_train": 2, "n_test": 1, "render_workers": 1}
    return {}


IMAGE_MODULES = sorted(e.name for e in registry.entries("data") if e.name not in NOT_IMAGES)


@pytest.mark.parametrize("name", IMAGE_MODULES)
def test_every_image_datamodule_takes_the_augmentation_options(name, tmp_path, monkeypatch):
    kwargs = _files(name, tmp_path, monkeypatch)
    dm = create("data", name, **kwargs, crop_padding=2, horizontal_flip=True, cutout=4, batch_size=4)
    assert isinstance(dm, ImageDataModule), f"{name} should subclass ImageDataModule (its options, its augmentation)"
    assert [type(t) for t in dm.augmentation.transforms] == [RandomCrop, RandomHorizontalFlip, Cutout]
    dm.setup("fit")
    assert dm.train_dataset.transform is dm.augmentation  # training batches are augmented ...
    assert getattr(dm.val_dataset, "transform", None) is None  # ... evaluation batches never
    with pytest.raises(ConfigError, match="unexpected keyword argument 'cutuot'"):
        create("data", name, **kwargs, cutuot=4)


def test_digits_at_32_px_train_the_cifar_resnets_with_crop_flip_cutout():
    dm = create("data", "digits", image_size=32, crop_padding=4, horizontal_flip=True, cutout=8, batch_size=16)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    raw = dm.train_dataset.x
    assert x.shape == (16, 1, 32, 32) and not any(torch.equal(xi, r) for xi in x[:4] for r in raw)  # augmented
    for name in ("cifar_resnet20", "cifar_resnet32"):
        torch.manual_seed(0)
        net = registry.create("net", name, data_shape=dm.data_shape)
        head = torch.nn.Linear(net.num_features, dm.num_classes)
        params = [*net.parameters(), *head.parameters()]
        opt = torch.optim.SGD(params, lr=0.02)
        before = [p.detach().clone() for p in params]
        losses = []
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(head(net(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], (name, losses)
        assert all(not torch.equal(b, p) for b, p in zip(before, params) if p.requires_grad)


RECIPES = __import__("pathlib").Path(__file__).resolve().parents[2] / "recipes"
# The references' CIFAR training transforms, in order (PyCIL models/fetril.py and utils/data.py's
# iCIFAR100; TEEN dataloader/cifar100/cifar.py with autoaug): what each recipe must build.
PYCIL_FETRIL = ["RandomCrop(padding=4", "RandomHorizontalFlip(p=0.5)", "RandomBrightness(strength=0.24706)",
                "AutoAugment(policy='cifar10', fill=128.0", "Cutout(length=16, holes=1"]  # fmt: skip
TEEN = ["RandomCrop(padding=4", "RandomHorizontalFlip(p=0.5)", "AutoAugment(policy='cifar10', fill=128.0",
        "Cutout(length=16, holes=1"]  # fmt: skip
PYCIL_WA = ["RandomCrop(padding=4", "RandomHorizontalFlip(p=0.5)", "RandomBrightness(strength=0.24706)"]


@pytest.mark.parametrize(
    "recipe, expected",
    [("fetril_cifar100_b50_10steps.yaml", PYCIL_FETRIL), ("fetril_cifar100_b50_5steps.yaml", PYCIL_FETRIL),
     ("fetril_cifar100_b40_20steps.yaml", PYCIL_FETRIL), ("teen_cifar100_fscil.yaml", TEEN),
     ("wa_cifar100_b0_10steps.yaml", PYCIL_WA)],  # fmt: skip
)
def test_cifar_recipes_build_the_references_augmentation(recipe, expected):
    import yaml

    dataset = yaml.safe_load((RECIPES / recipe).read_text())["data"]["init_args"]["dataset"]
    dm = create("data", dataset["class_path"], **dataset["init_args"])
    steps = [repr(t) for t in dm.augmentation.transforms]
    assert len(steps) == len(expected) and all(s.startswith(e) for s, e in zip(steps, expected)), steps
    assert abs(63 / 255 - 0.24706) < 1e-5
