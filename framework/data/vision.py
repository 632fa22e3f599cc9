"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 read from torchvision's on-disk formats into memory.

Each set is read once by ``torchvision.datasets`` (which also downloads it when asked), then kept
as float32 NCHW tensors in [-1, 1] with int64 labels, served a batch at a time by
:class:`~framework.data.base.InMemoryDataset`. Training augmentations are the batch-aware ones
of :mod:`framework.data.transforms`. The validation split is held out of the training set,
stratified by class and seeded; ``val_size: 0`` validates on the test set instead.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from framework.data.base import ImageDataModule, InMemoryDataset, stratified_split
from framework.errors import ConfigError, DataNotFoundError
from registry import register

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "MNISTDataModule",
    "TorchvisionDataModule",
    "resize_images",
    "uint8_to_unit_range",
]


def uint8_to_unit_range(images: Tensor) -> Tensor:
    """uint8 pixels 0..255 to float32 in [-1, 1] (p / 127.5 - 1)."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)  # in place: one float copy of the data set


def resize_images(x: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Bilinear resize of an NCHW batch to ``size`` x ``size`` (antialiased when shrinking), in chunks."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < min(x.shape[-2:])
    parts = [
        F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        for part in torch.split(x, chunk)
    ]
    # Bilinear interpolation of [-1, 1] values stays in range up to rounding.
    return torch.cat(parts).clamp_(-1.0, 1.0)


class TorchvisionDataModule(ImageDataModule):
    """Base of the DataModules over a ``torchvision.datasets`` class (not registered itself).

    Subclasses set ``dataset_name`` (the torchvision class), ``folder`` (where torchvision
    looks under ``root``), ``native_size``, ``channels`` and ``num_classes``.

    Args:
        root: Directory that holds the dataset in torchvision's layout.
        download: Fetch the dataset into ``root`` when it is not there (on local rank 0, in
            ``prepare_data``); off, a missing dataset is an error.
        image_size: Side of the (square) images; differs from the native size by a bilinear resize.
        val_size: Training images held out for validation (stratified by class, seeded by
            ``split_seed``); 0 validates on the test set.
        split_seed: Seed of the validation split.
        **kwargs: Training augmentations (``crop_padding``, ``horizontal_flip``, ``brightness``,
            ``autoaugment``, ``cutout``, ``cutout_holes``) and loader options (``batch_size``,
            ``eval_batch_size``, ``num_workers``) of :class:`~framework.data.base.ImageDataModule`.
    """

    dataset_name: str
    folder: str
    native_size: int
    channels: int
    known_class_names: tuple[str, ...] = ()

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        image_size: int | None = None,
        val_size: int = 5000,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        image_size = image_size or self.native_size
        if image_size < 4:
            raise ConfigError(f"{self.registry_name} image_size must be >= 4, got {image_size}")
        if val_size < 0:
            raise ConfigError(f"{self.registry_name} val_size must be >= 0, got {val_size}")
        self.root = os.path.expanduser(root)
        self.download = download
        self.image_size = image_size
        self.val_size = val_size
        self.split_seed = split_seed
        self.data_shape = (self.channels, image_size, image_size)
        # Known before the files are read (the CLI builds the model first); setup() takes the
        # names from the dataset's own metadata.
        self.class_names = list(self.known_class_names or self._torchvision_class().classes)

    @property
    def registry_name(self) -> str:
        """The name this DataModule is registered under (what the user wrote), for messages."""
        import registry

        entry = registry.REGISTRY.find(type(self))
        return entry.name if entry else type(self).__name__

    def _torchvision_class(self):
        import torchvision.datasets

        return getattr(torchvision.datasets, self.dataset_name)

    def _open(self, train: bool, download: bool):
        """The torchvision dataset object; a missing dataset raises DataNotFoundError."""
        cls = self._torchvision_class()
        try:
            return cls(self.root, train=train, download=download)
        except (RuntimeError, OSError) as err:
            reason = " ".join(str(err).split())  # torchvision's messages span lines; ours is one
            if download:  # no network, refused, bad archive: torchvision raises RuntimeError or URLError
                raise DataNotFoundError(
                    f"{self.registry_name}: could not download {self.dataset_name} into {self.root}: {reason}"
                ) from None
            if not isinstance(err, RuntimeError) or "not found" not in reason:
                raise
            where = os.path.join(os.path.abspath(self.root), self.folder)
            raise DataNotFoundError(
                f"{self.registry_name}: no {self.dataset_name} data in {where}; pass download: true "
                f"(e.g. --data.download=true) to fetch it, or set root to the directory that holds {self.folder}/"
            ) from None

    def _read(self, train: bool) -> tuple[Tensor, Tensor]:
        """One split as float32 NCHW in [-1, 1] at ``image_size`` and int64 labels."""
        ds = self._open(train, download=False)
        self.class_names = list(ds.classes)
        images = torch.as_tensor(np.asarray(ds.data))
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # NHW / NHWC -> NCHW
        x = resize_images(uint8_to_unit_range(images.contiguous()), self.image_size)
        y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
        return x, y

    def prepare_data(self) -> None:
        if self.download:
            self._open(train=True, download=True)
            self._open(train=False, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        x, y = self._read(train=True)
        x_test, y_test = self._read(train=False)
        self.test_dataset = InMemoryDataset(x_test, y_test)
        if self.val_size == 0:
            self.train_dataset = InMemoryDataset(x, y, transform=self.augmentation)
            self.val_dataset = self.test_dataset
            return
        if self.val_size >= len(y):
            raise ConfigError(
                f"{self.registry_name} val_size {self.val_size} leaves no training data ({len(y)} images)"
            )
        fraction = self.val_size / len(y)
        train, val = stratified_split(y, (1.0 - fraction, fraction), self.split_seed)
        self.train_dataset = InMemoryDataset(x[train], y[train], transform=self.augmentation)
        self.val_dataset = InMemoryDataset(x[val], y[val])


class _MNISTFamily(TorchvisionDataModule):
    native_size = 28
    channels = 1
    num_classes = 10


@register("data", "mnist")
class MNISTDataModule(_MNISTFamily):
    """MNIST (60k/10k 28x28 grey digits) from torchvision's files in ``root/MNIST/raw``, in memory.

    ``image_size: 32`` resizes to 32 px (bilinear) for nets built for 32 px inputs. No
    augmentation by default (``crop_padding``, ``horizontal_flip``, ... turn them on).
    See :class:`TorchvisionDataModule` for the arguments.
    """

    dataset_name = "MNIST"
    folder = "MNIST/raw"


@register("data", "fashion_mnist", aliases=("fashionmnist",))
class FashionMNISTDataModule(_MNISTFamily):
    """Fashion-MNIST (60k/10k 28x28 grey clothes) from torchvision's files in ``root/FashionMNIST/raw``.

    Same arguments and defaults as ``mnist`` (see :class:`TorchvisionDataModule`).
    """

    dataset_name = "FashionMNIST"
    folder = "FashionMNIST/raw"


# The label names of the CIFAR meta files (``batches.meta`` / ``meta``), in label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
    can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
    dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
    lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree
    pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea
    seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table
    tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman
    worm""".split()  # noqa: SIM905 - 100 names read better as words than as a 100-line literal
)


class _CIFARFamily(TorchvisionDataModule):
    """The CIFAR sets: the standard augmentation (random crop with 4 px padding, flip) on by default.

    Args:
        root: Directory that holds the dataset in torchvision's layout.
        download: Fetch the dataset into ``root`` when it is not there.
        image_size: Side of the images (default 32).
        val_size: Training images held out for validation; 0 validates on the test set.
        split_seed: Seed of the validation split.
        crop_padding: Random-crop padding of training images (0: no crop).
        horizontal_flip: Random horizontal flips of training images.
        **kwargs: The other augmentation and loader options of
            :class:`~framework.data.base.ImageDataModule`.
    """

    native_size = 32
    channels = 3

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        image_size: int | None = None,
        val_size: int = 5000,
        split_seed: int = 0,
        crop_padding: int = 4,
        horizontal_flip: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(
            root, download, image_size, val_size, split_seed, crop_padding=crop_padding,
            horizontal_flip=horizontal_flip, **kwargs,
        )  # fmt: skip


@register("data", "cifar10")
class CIFAR10DataModule(_CIFARFamily):
    """CIFAR-10 (50k/10k 32x32 colour images, 10 classes) from ``root/cifar-10-batches-py``, in memory.

    Training images get the standard CIFAR augmentation by default: random crop with 4 px
    padding and horizontal flip. See :class:`TorchvisionDataModule` for the arguments.
    """

    dataset_name = "CIFAR10"
    folder = "cifar-10-batches-py"
    num_classes = 10
    known_class_names = CIFAR10_CLASSES


@register("data", "cifar100")
class CIFAR100DataModule(_CIFARFamily):
    """CIFAR-100 (50k/10k 32x32 colour images, 100 fine classes) from ``root/cifar-100-python``, in memory.

    Same augmentation defaults as ``cifar10`` (crop 4 + flip). See :class:`TorchvisionDataModule`.
    """

    dataset_name = "CIFAR100"
    folder = "cifar-100-python"
    num_classes = 100
    known_class_names = CIFAR100_CLASSES
