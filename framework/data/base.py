"""DataModule base class and the in-memory dataset every small set uses."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from framework.data.transforms import build_augmentation


class InMemoryDataset(Dataset):
    """Tensors ``x`` (N, ...) and ``y`` (N,) served a whole batch at a time.

    ``__getitems__`` indexes the tensors once per batch (no per-sample Python work), and
    ``transform`` (if any) is applied to the batch tensor: it must be batch-aware.
    """

    def __init__(self, x: Tensor, y: Tensor, transform=None) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x, self.y, self.transform = x, y.long(), transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.x.index_select(0, idx)  # several times faster than fancy indexing
        return (self.transform(x) if self.transform is not None else x), self.y.index_select(0, idx)

    def subset(self, mask_or_index: Tensor) -> InMemoryDataset:
        """The rows selected by a boolean mask or an index tensor (same transform)."""
        return InMemoryDataset(self.x[mask_or_index], self.y[mask_or_index], self.transform)


def batch_passthrough(batch):
    """collate_fn for datasets whose ``__getitems__`` already returns a collated batch."""
    return batch


_SAMPLER_BLOCK = 8192


class EpochShuffleSampler(RandomSampler):
    """A permutation that depends only on (seed, epoch), like DistributedSampler on one process.

    The order of epoch k is the same in an uninterrupted run and in a run resumed at epoch k,
    and the global RNG is left alone. Being a RandomSampler, Lightning swaps it for a
    DistributedSampler under DDP.
    """

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.data_source)
        # randperm draws the same swaps whatever its dtype, so int32 holds the same order in half
        # the memory of int64, and it is handed out a block at a time: no Python int per row of
        # the epoch (a list of 500,000 ints is ~20 MB).
        order = torch.randperm(n, generator=g, dtype=torch.int32 if n < 2**31 else torch.int64)
        for block in order.split(_SAMPLER_BLOCK):
            yield from block.tolist()


def make_loader(dataset: Dataset, batch_size: int, train: bool, seed: int, num_workers: int = 0) -> DataLoader:
    """The DataLoader every DataModule hands Lightning: an :class:`EpochShuffleSampler` seeded with
    ``seed`` when ``train``, whole batches from ``__getitems__`` for in-memory sets.

    Loaders draw their worker seeds from their own generator, not the global one, so building a
    loader (sanity check, validation) never shifts the training randomness.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(dataset, seed) if train else None,
        generator=torch.Generator().manual_seed(seed),
        drop_last=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=batch_passthrough if isinstance(dataset, InMemoryDataset) else None,
    )


class ClasszooDataModule(L.LightningDataModule):
    """Base of the registered DataModules.

    Subclasses set ``num_classes``, ``class_names`` and ``data_shape`` in ``__init__`` (the CLI
    reads them before ``setup`` to build the model) and fill ``train_dataset``,
    ``val_dataset`` and ``test_dataset`` in ``setup``.

    Args:
        batch_size: Training batch size (evaluation uses ``eval_batch_size``).
        eval_batch_size: Batch size of validation, test and predict loaders (default: batch_size).
        num_workers: DataLoader worker processes; 0 for in-memory data (nothing to overlap).
    """

    num_classes: int
    class_names: list[str]
    data_shape: tuple[int, ...]

    def __init__(self, batch_size: int = 128, eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) for image data, None for vector data."""
        return self.data_shape if len(self.data_shape) == 3 else None

    @property
    def dim(self) -> int | None:
        """Dimension of vector data, None for images."""
        return self.data_shape[0] if len(self.data_shape) == 1 else None

    def targets(self, split: str) -> Tensor:
        """Labels of a split ("train", "val" or "test") as int64, after ``setup``."""
        dataset = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}[split]
        if dataset is None:
            self.setup("fit" if split in ("train", "val") else "test")
            dataset = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}[split]
        return _dataset_targets(dataset)

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not filled this split")
        batch_size = self.batch_size if train else self.eval_batch_size
        return make_loader(dataset, batch_size, train, torch.initial_seed(), self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, train=False)

    def ordered_dataloader(self, split: str) -> DataLoader:
        """A split ("train", "val" or "test") in its stored order, unshuffled, at the evaluation batch size.

        For metrics that must not depend on the process (the training loader's shuffle is
        seeded from ``torch.initial_seed()``): features of the real training images, say.
        """
        dataset = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}[split]
        return self._loader(dataset, train=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split (``lightning predict`` on a classifier scores the held-out images)."""
        if self.test_dataset is None:
            self.setup("predict")
        return self._loader(self.test_dataset, train=False)


class ImageDataModule(ClasszooDataModule):
    """Base of the image DataModules: the batched training augmentations every one of them takes.

    ``self.augmentation`` (None when every option is off) is the pipeline of
    :func:`framework.data.transforms.build_augmentation`; a subclass hands it to its training
    dataset only (``InMemoryDataset(x, y, transform=self.augmentation)``) and forwards the
    keyword arguments it does not define itself (``**kwargs``) here, so a new option reaches
    every DataModule, and the YAML schema lists them all.

    Args:
        crop_padding: Random crop after padding every side by this many pixels (constant -1,
            black; torchvision's ``RandomCrop(size, padding=p)``); 0: off.
        horizontal_flip: Mirror each training image left-right with probability 0.5.
        brightness: Brightness jitter strength b (torchvision's ``ColorJitter(brightness=b)``:
            each image scaled by a factor uniform in [max(0, 1 - b), 1 + b]); PyCIL's CIFAR
            training uses 63/255 = 0.247. 0: off.
        autoaugment: AutoAugment policy (``cifar10``, ``imagenet``, ``svhn``: torchvision's
            ``AutoAugment`` drawn per sample, grey 128 fill); None: off.
        cutout: Side of the Cutout square painted black (PyCIL / TEEN on CIFAR: 16); 0: off.
        cutout_holes: Cutout squares per image.
        batch_size: Training batch size.
        eval_batch_size: Evaluation batch size (default: batch_size).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        *,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        brightness: float = 0.0,
        autoaugment: str | None = None,
        cutout: int = 0,
        cutout_holes: int = 1,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers)
        self.augmentation = build_augmentation(crop_padding, horizontal_flip, brightness, autoaugment, cutout, cutout_holes)


def _dataset_targets(dataset: Dataset) -> Tensor:
    if isinstance(dataset, InMemoryDataset):
        return dataset.y
    for attr in ("targets", "labels", "y"):
        if hasattr(dataset, attr):
            return torch.as_tensor(getattr(dataset, attr), dtype=torch.long)
    if isinstance(dataset, torch.utils.data.Subset):
        return _dataset_targets(dataset.dataset)[torch.as_tensor(dataset.indices)]
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def stratified_split(y: Tensor, fractions: Sequence[float], seed: int) -> list[Tensor]:
    """Index tensors splitting ``y`` into parts of the given fractions, class by class, seeded."""
    g = torch.Generator().manual_seed(seed)
    parts: list[list[Tensor]] = [[] for _ in fractions]
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for k, frac in enumerate(fractions):
            stop = len(idx) if k == len(fractions) - 1 else start + round(frac * len(idx))
            parts[k].append(idx[start:stop])
            start = stop
    return [torch.sort(torch.cat(p)).values for p in parts]
