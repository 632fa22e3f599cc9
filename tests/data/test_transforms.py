"""Batch augmentations: agree with torchvision's per-image ops, seeded by torch's global RNG."""

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from framework.data.base import InMemoryDataset
from framework.data.transforms import (
    AutoAugment,
    Compose,
    Cutout,
    RandomBrightness,
    RandomCrop,
    RandomHorizontalFlip,
    build_augmentation,
)
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


# --- Brightness, Cutout, AutoAugment: each against its definition, drawn per sample ---------


def _uint8_batch(b=64, c=3, size=12, seed=0):
    """Images on the 8-bit grid (as CIFAR's), in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, size, size), generator=g).float() / 127.5 - 1


def test_brightness_is_torchvision_colorjitter_per_sample():
    x = _uint8_batch(b=32)
    torch.manual_seed(3)
    out = RandomBrightness(0.4)(x)
    torch.manual_seed(3)
    factors = torch.empty(32).uniform_(0.6, 1.4)  # ColorJitter's range [max(0, 1 - b), 1 + b]
    for i in range(32):
        expected = TF.adjust_brightness((x[i] + 1) / 2, float(factors[i])) * 2 - 1  # on the [0, 1] image
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-6)
    # A mid-grey image (0.5 in [0, 1]) lands in [0.5 * 0.6, 0.5 * 1.4]; factors differ per sample.
    grey = RandomBrightness(0.4)(torch.zeros(500, 1, 2, 2))
    levels = (grey[:, 0, 0, 0] + 1) / 2
    assert levels.min() >= 0.3 - 1e-6 and levels.max() <= 0.7 + 1e-6 and levels.unique().numel() > 400
    assert torch.equal(RandomBrightness(0.0)(x), x)


def _cutout_reference(h, w, centres_y, centres_x, length):
    """PyCIL / TEEN's Cutout mask, written out pixel by pixel from their definition."""
    mask = torch.ones(h, w)
    for y, x in zip(centres_y.tolist(), centres_x.tolist()):
        y1, y2 = min(max(y - length // 2, 0), h), min(max(y + length // 2, 0), h)
        x1, x2 = min(max(x - length // 2, 0), w), min(max(x + length // 2, 0), w)
        for r in range(y1, y2):
            for c in range(x1, x2):
                mask[r, c] = 0
    return mask


@pytest.mark.parametrize("length, holes", [(4, 1), (5, 2)])
def test_cutout_paints_the_references_square_clipped_at_the_borders(length, holes):
    x = torch.ones(200, 3, 9, 11)
    torch.manual_seed(4)
    out = Cutout(length, holes)(x)
    torch.manual_seed(4)
    cy, cx = torch.randint(0, 9, (200, holes)), torch.randint(0, 11, (200, holes))
    for i in range(200):
        expected = torch.where(_cutout_reference(9, 11, cy[i], cx[i], length).bool(), 1.0, -1.0)
        assert torch.equal(out[i], expected.expand(3, 9, 11)), i
    if holes == 1:
        cut = (out[:, 0] == -1).sum((1, 2))
        inside = (cy[:, 0] >= length // 2) & (cy[:, 0] + length // 2 <= 9) & (cx[:, 0] >= length // 2) & (cx[:, 0] + length // 2 <= 11)
        assert inside.any() and (cut[inside] == length * length).all()  # a whole square away from the borders
        assert (cut[~inside] < length * length).all()  # clipped at a border
    assert torch.equal(Cutout(0)(x), x)


def test_autoaugment_equals_torchvision_image_by_image(monkeypatch):
    from torchvision.transforms import AutoAugment as Reference
    from torchvision.transforms import AutoAugmentPolicy

    x = _uint8_batch(b=300, size=12)
    torch.manual_seed(5)
    out = AutoAugment("cifar10")(x)
    torch.manual_seed(5)
    policy, probs, signs = torch.randint(25, (300,)), torch.rand(300, 2), torch.randint(2, (300, 2))
    reference = Reference(AutoAugmentPolicy.CIFAR10, fill=128)
    images = ((x + 1) * 127.5).round().to(torch.uint8)
    for i in range(300):
        monkeypatch.setattr(Reference, "get_params", staticmethod(lambda n, i=i: (int(policy[i]), probs[i], signs[i])))
        expected = reference(images[i]).float() / 127.5 - 1
        assert torch.equal(out[i], expected), (i, reference.policies[int(policy[i])])
    assert len(set(policy.tolist())) == 25  # every sub-policy was exercised
    assert (out != x).flatten(1).any(1).float().mean() > 0.5  # most samples changed


def test_autoaugment_leaves_untouched_samples_alone_and_takes_grey_images():
    x = torch.rand(64, 1, 8, 8) * 2 - 1  # not on the 8-bit grid
    torch.manual_seed(6)
    out = AutoAugment("cifar10")(x)
    torch.manual_seed(6)
    policy, probs = torch.randint(25, (64,)), torch.rand(64, 2)
    ops = AutoAugment("cifar10").policies
    applied = torch.tensor([any(probs[i, s] <= ops[int(policy[i])][s][1] for s in range(2)) for i in range(64)])
    assert (~applied).any() and torch.equal(out[~applied], x[~applied])
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1


def test_same_seed_same_batch_and_each_sample_its_own_draw():
    aug = build_augmentation(crop_padding=2, horizontal_flip=True, brightness=0.25, autoaugment="cifar10", cutout=4)
    assert [type(t).__name__ for t in aug.transforms] == ["RandomCrop", "RandomHorizontalFlip", "RandomBrightness", "AutoAugment", "Cutout"]
    x = _uint8_batch(1, size=12).expand(64, -1, -1, -1).contiguous()  # one image, 64 times
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    b = aug(x)
    assert torch.equal(a, b)
    assert len({tuple(img.flatten().tolist()) for img in a}) == 64  # every copy augmented differently
    torch.manual_seed(8)
    assert not torch.equal(aug(x), a)


def test_bad_new_arguments():
    with pytest.raises(ConfigError, match="brightness"):
        RandomBrightness(-0.1)
    with pytest.raises(ConfigError, match="cutout"):
        Cutout(-1)
    with pytest.raises(ConfigError, match="cutout"):
        build_augmentation(cutout=4, cutout_holes=0)
    with pytest.raises(ConfigError, match="policy"):
        AutoAugment("cifar100")


def test_batched_equalize_equals_torchvision():
    from framework.data.transforms import equalize

    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, 256, (6, 3, 24, 24), generator=g, dtype=torch.uint8)  # 576 pixels: step 1 or 2
    x[1] = torch.randint(100, 104, (3, 24, 24), generator=g, dtype=torch.uint8)  # few levels
    x[2] = 7  # one level: step 0, left alone
    x[3, 0] = (torch.arange(576) % 200).to(torch.uint8).view(24, 24)
    x[4] = (torch.rand(3, 24, 24, generator=g) ** 3 * 255).to(torch.uint8)  # skewed histogram
    out = equalize(x)
    assert torch.equal(out, TF.equalize(x)) and not torch.equal(out[[0, 1, 3, 4]], x[[0, 1, 3, 4]])
    assert torch.equal(equalize(x[:, :1]), TF.equalize(x[:, :1]))
