"""Images in torchvision's ImageFolder layout (``<split>/<class>/<image>``): in memory when small,
streamed from disk by DataLoader workers otherwise."""

from __future__ import annotations

import os
from functools import partial

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from framework.data.base import ImageDataModule, InMemoryDataset, stratified_split
from framework.data.vision import uint8_to_unit_range
from framework.errors import ConfigError, DataNotFoundError
from registry import register

__all__ = ["ImageFiles", "ImageFolderDataModule", "load_image"]

_MODES = {1: "L", 3: "RGB"}


def load_image(path: str, image_size: int, channels: int) -> Tensor:
    """One image file as float32 (C, S, S) in [-1, 1]: shorter side resized to S, centre-cropped."""
    import torchvision.transforms.v2.functional as TF
    from PIL import Image

    with Image.open(path) as img:
        x = TF.pil_to_tensor(img.convert(_MODES[channels]))
    x = TF.center_crop(TF.resize(x, image_size, antialias=True), [image_size, image_size])
    return uint8_to_unit_range(x)


class ImageFiles(Dataset):
    """Labelled image files decoded on access (the streamed path; workers overlap the decoding).

    Args:
        samples: ``(path, label)`` pairs.
        image_size: Side of the square output images.
        channels: 1 (greyscale) or 3 (RGB).
        transform: Batch-aware augmentation, applied to each image as a batch of one.
    """

    def __init__(self, samples: list[tuple[str, int]], image_size: int, channels: int, transform=None) -> None:
        self.samples, self.image_size, self.channels, self.transform = samples, image_size, channels, transform
        self.targets = torch.tensor([label for _, label in samples], dtype=torch.long)
        self.load = partial(load_image, image_size=image_size, channels=channels)  # picklable for workers

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = self.load(self.samples[i][0])
        if self.transform is not None:
            x = self.transform(x[None])[0]
        return x, self.targets[i]

    def subset(self, index: Tensor, transform=None) -> ImageFiles:
        """The files at ``index`` with their own ``transform``."""
        return ImageFiles([self.samples[int(i)] for i in index], self.image_size, self.channels, transform)


@register("data", "image_folder", aliases=("imagefolder",))
class ImageFolderDataModule(ImageDataModule):
    """Labelled images in folders: ``root/train/<class>/*.png`` plus ``root/val`` and/or ``root/test``.

    Without a ``train`` folder, ``root/<class>/...`` is the training set. A split without its
    folder is carved out of the training images (stratified by class, seeded) when its
    fraction is positive; a test split without folder or fraction is the validation split,
    and the reverse. Classes are the training folder's sub-folders in sorted order; the other
    splits may lack a class but not add one. Every image is converted to ``channels``,
    its shorter side resized to ``image_size`` and centre-cropped to a square.

    The data sit in memory (float32, decoded once, ``num_workers`` processes decoding) when
    they take at most ``max_memory_mb``, or when ``in_memory`` is true; otherwise every batch
    is decoded from disk by ``num_workers`` DataLoader workers (set it to the CPU count).

    Args:
        root: The dataset directory.
        image_size: Side of the square images.
        channels: 1 (greyscale) or 3 (RGB).
        val_fraction: Fraction of each training class held out for validation when there is no
            ``root/val`` (0: validate on the test split).
        test_fraction: Fraction of each training class held out for testing when there is no
            ``root/test`` (0: test on the validation split).
        split_seed: Seed of the carved splits.
        in_memory: Keep the decoded images in memory (None: when they fit ``max_memory_mb``).
        max_memory_mb: Size limit of the automatic in-memory choice.
        **kwargs: Training augmentations (``crop_padding``, ``horizontal_flip``, ``brightness``,
            ``autoaugment``, ``cutout``, ``cutout_holes``) and loader options (``batch_size``,
            ``eval_batch_size``, ``num_workers``: here the processes decoding images) of
            :class:`~framework.data.base.ImageDataModule`.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 32,
        channels: int = 3,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        in_memory: bool | None = None,
        max_memory_mb: int = 2048,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if channels not in _MODES:
            raise ConfigError(f"image_folder channels must be 1 or 3, got {channels}")
        if image_size < 1:
            raise ConfigError(f"image_folder image_size must be positive, got {image_size}")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"image_folder fractions must leave training data: val {val_fraction}, test {test_fraction}"
            )
        self.root = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(self.root):
            raise DataNotFoundError(f"image_folder: no directory {self.root}")
        self.split_dirs = {s: os.path.join(self.root, s) for s in ("train", "val", "test")}
        self.split_dirs = {s: d for s, d in self.split_dirs.items() if os.path.isdir(d)}
        self.train_dir = self.split_dirs.pop("train", self.root)
        fractions = {"val": val_fraction, "test": test_fraction}
        self.carved = {s: f for s, f in fractions.items() if s not in self.split_dirs and f > 0}
        if not self.split_dirs and not self.carved:
            raise ConfigError(
                f"image_folder: {self.root} has no val/ or test/ folder; set val_fraction > 0 to hold images out"
            )
        self.image_size, self.channels = image_size, channels
        self.split_seed = split_seed
        self.in_memory, self.max_memory_mb = in_memory, max_memory_mb
        self.class_names = _classes(self.train_dir)
        self.num_classes = len(self.class_names)
        self.data_shape = (channels, image_size, image_size)
        self.kept_in_memory: bool | None = None  # decided in setup()

    def _files(self, directory: str) -> ImageFiles:
        from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

        extra = sorted(set(_classes(directory)) - set(self.class_names))
        if extra:
            raise ConfigError(
                f"image_folder: {directory} has classes missing from {self.train_dir}: {', '.join(extra)}"
            )
        class_to_idx = {name: i for i, name in enumerate(self.class_names)}
        samples = make_dataset(directory, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        if not samples:
            raise DataNotFoundError(f"image_folder: no image files under {directory}")
        return ImageFiles(samples, self.image_size, self.channels)

    def _to_memory(self, files: ImageFiles, transform) -> InMemoryDataset:
        loader = DataLoader(files, batch_size=256, num_workers=self.num_workers)
        xs, ys = zip(*loader)
        return InMemoryDataset(torch.cat(xs), torch.cat(ys), transform=transform)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train = self._files(self.train_dir)
        splits: dict[str, ImageFiles] = {s: self._files(d) for s, d in self.split_dirs.items()}
        if self.carved:
            names = ["train", *self.carved]
            fractions = [1.0 - sum(self.carved.values()), *self.carved.values()]
            parts = dict(zip(names, stratified_split(train.targets, fractions, self.split_seed)))
            splits.update({s: train.subset(parts[s]) for s in self.carved})
            train = train.subset(parts["train"])
        splits.setdefault("val", splits.get("test"))
        splits.setdefault("test", splits["val"])
        distinct = {id(d): d for d in (train, *splits.values())}.values()  # val and test may be one split
        total = sum(len(d) for d in distinct)
        size_mb = total * self.channels * self.image_size**2 * 4 / 2**20
        self.kept_in_memory = self.in_memory if self.in_memory is not None else size_mb <= self.max_memory_mb
        if self.kept_in_memory:
            val = self._to_memory(splits["val"], None)
            test = val if splits["test"] is splits["val"] else self._to_memory(splits["test"], None)
            self.train_dataset = self._to_memory(train, self.augmentation)
            self.val_dataset, self.test_dataset = val, test
        else:
            train.transform = self.augmentation
            self.train_dataset, self.val_dataset, self.test_dataset = train, splits["val"], splits["test"]


def _classes(directory: str) -> list[str]:
    from torchvision.datasets.folder import find_classes

    try:
        return find_classes(directory)[0]
    except FileNotFoundError:
        raise DataNotFoundError(f"image_folder: no class folders in {directory}") from None
