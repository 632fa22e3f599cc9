"""Data pipeline speed: batch-at-a-time in-memory loading vs torchvision's per-sample pipeline.

    OMP_NUM_THREADS=1 python benchmarks/data_loading.py [--images 20000] [--threads 1]

1. One training epoch over CIFAR-shaped images (3x32x32, random crop 4 + horizontal flip,
   batch 128, no workers) through (a) classzoo's path: ``InMemoryDataset`` indexed once per
   batch, batch-aware augmentation, and (b) the usual torchvision path: a per-sample
   ``Dataset`` with ``transforms.v2.RandomCrop(32, padding=4)`` and
   ``RandomHorizontalFlip`` per image and the default collate.
2. The one-off cost of ``cifar10``'s ``setup()`` on full-size CIFAR-10 files (50,000 + 10,000
   synthetic images written in torchvision's pickle format): md5 checks, unpickling, the
   conversion to float32 in [-1, 1] and the stratified split.

Synthetic data: nothing is downloaded. Figures go to docs/benchmarks/data.md by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def epoch_seconds(loader: DataLoader) -> float:
    start = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    return time.perf_counter() - start


class PerSampleImages(Dataset):
    """The torchvision way: one image at a time through per-image transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        from torchvision.transforms import v2

        self.x, self.y = x, y
        self.transform = v2.Compose([v2.RandomCrop(32, padding=4, fill=-1.0), v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), self.y[i]


def loaders(n: int):
    from framework.data.base import InMemoryDataset, batch_passthrough
    from framework.data.transforms import build_augmentation

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).float() / 127.5 - 1
    y = torch.randint(0, 10, (n,), generator=g)
    ours = DataLoader(
        InMemoryDataset(x, y, transform=build_augmentation(4, True)),
        batch_size=128, shuffle=True, collate_fn=batch_passthrough,
    )  # fmt: skip
    theirs = DataLoader(PerSampleImages(x, y), batch_size=128, shuffle=True)
    return ours, theirs


def write_full_cifar10(root: Path) -> None:
    """50,000 + 10,000 random images in cifar-10-batches-py; point torchvision's md5 table at them."""
    import torchvision.datasets as tvd

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name: str, n: int) -> list[str]:
        data = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(data))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    tvd.CIFAR10.train_list = [dump(f"data_batch_{k}", 10000) for k in range(1, 6)]
    tvd.CIFAR10.test_list = [dump("test_batch", 10000)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(k) for k in range(10)]}))
    meta_md5 = hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest()
    tvd.CIFAR10.meta = {"filename": "batches.meta", "key": "label_names", "md5": meta_md5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours, theirs = loaders(args.images)
    epoch_seconds(ours)  # warm-up (allocator, first-call overheads)
    t_ours = epoch_seconds(ours)
    t_theirs = epoch_seconds(theirs)
    print(f"training epoch, {args.images} images 3x32x32, crop 4 + flip, batch 128, torch threads {args.threads}:")
    print(f"  in-memory, batch-aware (classzoo):  {t_ours:6.2f} s  {args.images / t_ours:9.0f} images/s")
    print(f"  per-sample transforms (torchvision): {t_theirs:6.2f} s  {args.images / t_theirs:9.0f} images/s")
    print(f"  speed-up: {t_theirs / t_ours:.1f}x")

    from framework.data.vision import CIFAR10DataModule

    with tempfile.TemporaryDirectory() as tmp:
        write_full_cifar10(Path(tmp))
        dm = CIFAR10DataModule(root=tmp, val_size=5000)
        start = time.perf_counter()
        dm.setup("fit")
        t_setup = time.perf_counter() - start
        print(f"cifar10 setup() on full-size files (60,000 images): {t_setup:.2f} s; "
              f"train/val/test {len(dm.train_dataset)}/{len(dm.val_dataset)}/{len(dm.test_dataset)}")  # fmt: skip
    usage = resource.getrusage(resource.RUSAGE_SELF)  # ru_maxrss is in KiB on Linux
    print(f"peak resident memory of this process: {usage.ru_maxrss / 2**20:.2f} GiB; "
          f"CPU time (user + system): {usage.ru_utime + usage.ru_stime:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
