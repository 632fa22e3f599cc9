"""Tiny datasets written in the exact on-disk formats torchvision reads (no download in tests).

Pixel values encode what a test checks: image ``i`` of a split has, at row ``h`` and column
``w`` of channel ``c``, the value ``pixel(i, c, h, w)``; its label is ``i % num_classes``.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np


def pixel(i: int, c: int, h: int, w: int) -> int:
    """A value that differs along every axis, so a transposed or flipped read is caught."""
    return (7 * i + 50 * c + 3 * h + 5 * w) % 256


def images(n: int, channels: int, size: int) -> np.ndarray:
    i, c, h, w = np.meshgrid(np.arange(n), np.arange(channels), np.arange(size), np.arange(size), indexing="ij")
    return pixel(i, c, h, w).astype(np.uint8)  # (N, C, H, W)


def _write_idx(path: Path, array: np.ndarray) -> None:
    # IDX: two zero bytes, type 0x08 (ubyte), number of dims, then big-endian int32 dims and the data.
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20) -> None:
    """``root/<folder>/raw`` with the four uncompressed idx-ubyte files (MNIST or FashionMNIST)."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images(n, 1, 28)[:, 0])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def _pickle(path: Path, obj) -> str:
    path.write_bytes(pickle.dumps(obj))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _cifar_rows(n: int) -> np.ndarray:
    # CIFAR rows: 1024 red, 1024 green, 1024 blue values, each plane row-major.
    return images(n, 3, 32).reshape(n, 3 * 32 * 32)


def write_cifar10(root: Path, monkeypatch, per_batch: int = 10, n_test: int = 20) -> list[str]:
    """``root/cifar-10-batches-py``: data_batch_1..5, test_batch, batches.meta; patches torchvision's md5s."""
    import torchvision.datasets as tvd

    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    train_list = []
    all_train = _cifar_rows(5 * per_batch)
    for b in range(5):
        rows = all_train[b * per_batch : (b + 1) * per_batch]
        labels = [(b * per_batch + k) % 10 for k in range(per_batch)]
        md5 = _pickle(folder / f"data_batch_{b + 1}", {"batch_label": f"batch {b + 1}", "data": rows, "labels": labels})
        train_list.append([f"data_batch_{b + 1}", md5])
    md5 = _pickle(folder / "test_batch", {"data": _cifar_rows(n_test), "labels": [k % 10 for k in range(n_test)]})
    meta_md5 = _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch})
    # torchvision checks every file against the real archive's md5; make it check ours.
    monkeypatch.setattr(tvd.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": meta_md5})
    return names


def write_cifar100(root: Path, monkeypatch, n_train: int = 200, n_test: int = 100) -> list[str]:
    """``root/cifar-100-python``: train, test, meta (fine and coarse labels); patches torchvision's md5s."""
    import torchvision.datasets as tvd

    from framework.data.vision import CIFAR100_CLASSES

    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)

    def split(n):
        fine = [k % 100 for k in range(n)]
        return {"data": _cifar_rows(n), "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]}

    train_md5 = _pickle(folder / "train", split(n_train))
    test_md5 = _pickle(folder / "test", split(n_test))
    names = list(CIFAR100_CLASSES)
    meta_md5 = _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": [str(k) for k in range(20)]})
    monkeypatch.setattr(tvd.CIFAR100, "train_list", [["train", train_md5]])
    monkeypatch.setattr(tvd.CIFAR100, "test_list", [["test", test_md5]])
    monkeypatch.setattr(tvd.CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names", "md5": meta_md5})
    return names


def write_image_folder(
    root: Path, splits=("train", "val"), classes=("cat", "dog", "eel"), per_class=4, size=12, mode="RGB"
):
    """``root/<split>/<class>/<k>.png``; image k of class j has every pixel of channel c = 20 j + 3 k + 60 c."""
    from PIL import Image

    for split in splits:
        for j, name in enumerate(classes):
            d = Path(root) / split / name
            d.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                channels = 3 if mode == "RGB" else 1
                value = [(20 * j + 3 * k + 60 * c) % 256 for c in range(channels)]
                arr = np.broadcast_to(np.array(value, dtype=np.uint8), (size, size, channels)).copy()
                Image.fromarray(arr if mode == "RGB" else arr[..., 0], mode=mode).save(d / f"{k}.png")
