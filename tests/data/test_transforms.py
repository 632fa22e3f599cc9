"""Batch augmentations: agree with torchvision's per-image ops, seeded by torch's global RNG."""

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from framework.data.base import InMemoryDataset
from framework.data.transforms import Compose, RandomCrop, RandomHorizontalFlip, build_augmentation
from framework.errors import ConfigError


def _batch(b=16, c=3, h=8, w=10):
    return torch.linspace(-1, 1, b * c * h * w).reshape(b, c, h, w).contiguous()


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_random_crop_equals_torchvision_pad_then_crop(mode):
    x = _batch()
    torch.manual_seed(0)
    out = RandomCrop(padding=3, padding_mode=mode)(x)
    assert out.shape == x.shape
    # Replay the same draws and crop each image with torchvision.
    torch.manual_seed(0)
    top = torch.randint(0, 7, (16,))
    left = torch.randint(0, 7, (16,))
    for i in range(16):
        padded = TF.pad(x[i], [3, 3, 3, 3], fill=-1.0, padding_mode=mode)
        expected = TF.crop(padded, int(top[i]), int(left[i]), 8, 10)
        assert torch.equal(out[i], expected)


def test_random_crop_offsets_cover_the_range_and_fill_is_black():
    x = torch.ones(512, 1, 4, 4)
    torch.manual_seed(1)
    out = RandomCrop(padding=2)(x)
    # The number of fully padded (-1) rows reveals the vertical offset's distance from the centre.
    vertical = (out[:, 0, :, :] == -1).all(-1).sum(-1)  # fully padded rows per image: |offset - 2|
    assert set(vertical.tolist()) == {0, 1, 2}
    assert set(out.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(RandomCrop(padding=0)(x), x)


def test_flip_is_per_sample_and_seeded():
    x = _batch(b=200)
    torch.manual_seed(2)
    out = RandomHorizontalFlip(p=0.5)(x)
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert (flipped ^ kept).all()
    assert 60 < flipped.sum() < 140
    torch.manual_seed(2)
    assert torch.equal(RandomHorizontalFlip(p=0.5)(x), out)
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x), x)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), x.flip(-1))


def test_compose_build_and_dataset_apply_per_batch():
    aug = build_augmentation(crop_padding=4, horizontal_flip=True)
    assert isinstance(aug, Compose) and len(aug.transforms) == 2
    assert isinstance(aug.transforms[0], RandomCrop) and isinstance(aug.transforms[1], RandomHorizontalFlip)
    assert build_augmentation() is None
    calls = []

    def spy(batch):
        calls.append(batch.shape)
        return aug(batch)

    ds = InMemoryDataset(_batch(b=32, h=32, w=32), torch.arange(32) % 10, transform=spy)
    x, y = ds.__getitems__(list(range(8)))
    assert x.shape == (8, 3, 32, 32) and calls == [(8, 3, 32, 32)]  # one call for the whole batch
    assert torch.equal(y, torch.arange(8))


def test_bad_arguments():
    with pytest.raises(ConfigError):
        RandomCrop(padding=-1)
    with pytest.raises(ConfigError):
        RandomCrop(padding_mode="wrap")
    with pytest.raises(ConfigError):
        RandomHorizontalFlip(p=1.5)
    with pytest.raises(ValueError, match="NCHW"):
        RandomCrop(2)(torch.zeros(3, 8, 8))
