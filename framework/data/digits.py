"""scikit-learn's bundled 8x8 handwritten digits: the embedded dataset (no download)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from framework.data.base import ImageDataModule, InMemoryDataset, stratified_split
from framework.errors import ConfigError
from registry import register


def load_digits_tensors(image_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as float32 (N, 1, S, S) in [-1, 1] (pixel p in 0..16 -> p/8 - 1) and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    if image_size != 8:
        # Bilinear on the [-1, 1] image keeps the range; antialiasing only matters when shrinking.
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(-1, 1)
    return x, torch.as_tensor(bunch.target, dtype=torch.long)


@register("data", "digits")
class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8x8 digits (1,797 images, 10 classes) in memory, stratified seeded split.

    At ``image_size`` 32 the digits fit the CIFAR nets (``cifar_resnet20/32``); no
    augmentation by default (the options of :class:`~framework.data.base.ImageDataModule`:
    ``crop_padding``, ``horizontal_flip``, ``brightness``, ``autoaugment``, ``cutout``).

    Args:
        image_size: 8 (native), 16 or 32 (bilinear resize, for nets that need larger inputs).
        val_fraction: Fraction of each class held out for validation.
        test_fraction: Fraction of each class held out for testing.
        split_seed: Seed of the stratified split (independent of the training seed).
        **kwargs: Augmentation and loader options (batch_size, ...) of ImageDataModule.
    """

    def __init__(
        self,
        image_size: int = 8,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if image_size not in (8, 16, 32):
            raise ConfigError(f"digits image_size must be 8, 16 or 32, got {image_size}")
        if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError(f"digits fractions must leave training data: val {val_fraction}, test {test_fraction}")
        self.image_size = image_size
        self.fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
        self.split_seed = split_seed
        self.num_classes = 10
        self.class_names = [str(d) for d in range(10)]
        self.data_shape = (1, image_size, image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        x, y = load_digits_tensors(self.image_size)
        train, val, test = stratified_split(y, self.fractions, self.split_seed)
        self.train_dataset = InMemoryDataset(x[train], y[train], transform=self.augmentation)
        self.val_dataset = InMemoryDataset(x[val], y[val])
        self.test_dataset = InMemoryDataset(x[test], y[test])
