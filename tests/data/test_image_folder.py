"""image_folder on a tiny folder of PNGs: layouts, carved splits, memory vs streamed, errors."""

import pytest
import torch
from _fake_datasets import write_image_folder

from framework.data.base import InMemoryDataset
from framework.data.image_folder import ImageFiles, ImageFolderDataModule
from framework.errors import ConfigError, DataNotFoundError


def _value(j, k, c):
    # write_image_folder's pixel value of class j, image k, channel c, in [-1, 1].
    return ((20 * j + 3 * k + 60 * c) % 256) / 127.5 - 1.0


def test_train_val_folders_in_memory(tmp_path):
    write_image_folder(tmp_path, splits=("train", "val"), per_class=4, size=12)
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, batch_size=5)
    assert dm.class_names == ["cat", "dog", "eel"] and dm.num_classes == 3 and dm.data_shape == (3, 8, 8)
    dm.setup()
    assert dm.kept_in_memory and isinstance(dm.train_dataset, InMemoryDataset)
    assert len(dm.train_dataset) == 12 and len(dm.val_dataset) == 12
    assert dm.test_dataset is dm.val_dataset  # no test folder, no test_fraction
    x, y = dm.val_dataset.x, dm.val_dataset.y
    assert x.shape == (12, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    # Files are read in class then name order; uniform images stay uniform through the resize.
    for row, (j, k) in enumerate((j, k) for j in range(3) for k in range(4)):
        assert y[row] == j
        for c in range(3):
            assert torch.allclose(x[row, c], torch.full((8, 8), _value(j, k, c)), atol=1e-6)
    batch_x, _ = next(iter(dm.train_dataloader()))
    assert batch_x.shape == (5, 3, 8, 8)


def test_flat_folder_carves_seeded_stratified_splits(tmp_path):
    write_image_folder(tmp_path / "train", splits=("",), per_class=10, size=8)
    dm = ImageFolderDataModule(str(tmp_path / "train"), image_size=8, val_fraction=0.2, test_fraction=0.3, split_seed=3)
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (15, 6, 9)
    assert torch.bincount(dm.val_dataset.y).tolist() == [2, 2, 2]
    everything = torch.cat([dm.train_dataset.x, dm.val_dataset.x, dm.test_dataset.x])
    assert len(torch.unique(everything.flatten(1), dim=0)) == 30  # disjoint, all images used
    again = ImageFolderDataModule(
        str(tmp_path / "train"), image_size=8, val_fraction=0.2, test_fraction=0.3, split_seed=3
    )
    again.setup()
    assert torch.equal(again.val_dataset.x, dm.val_dataset.x)


def test_streamed_matches_in_memory_and_greyscale(tmp_path):
    write_image_folder(tmp_path, splits=("train", "test"), per_class=3, size=10)
    kwargs = {"image_size": 6, "channels": 1, "val_fraction": 0.0, "batch_size": 4}
    mem = ImageFolderDataModule(str(tmp_path), in_memory=True, **kwargs)
    disk = ImageFolderDataModule(str(tmp_path), max_memory_mb=0, **kwargs)
    mem.setup()
    disk.setup()
    assert not disk.kept_in_memory and isinstance(disk.train_dataset, ImageFiles)
    assert disk.val_dataset is disk.test_dataset  # val_fraction 0: validate on the test folder
    assert disk.targets("test").tolist() == mem.targets("test").tolist()
    streamed = torch.cat([x for x, _ in disk.test_dataloader()])
    assert streamed.shape == (9, 1, 6, 6)
    assert torch.allclose(streamed, mem.test_dataset.x)


def test_augmentation_only_on_training(tmp_path):
    write_image_folder(tmp_path, splits=("train", "val"), per_class=2, size=8)
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, crop_padding=2, horizontal_flip=True, in_memory=False)
    dm.setup()
    assert dm.train_dataset.transform is not None and dm.val_dataset.transform is None
    x, _ = dm.train_dataset[0]
    assert x.shape == (3, 8, 8)


def test_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="no directory"):
        ImageFolderDataModule(str(tmp_path / "absent"))
    write_image_folder(tmp_path / "a", splits=("train",), per_class=2)
    with pytest.raises(ConfigError, match="val_fraction"):
        ImageFolderDataModule(str(tmp_path / "a"), val_fraction=0.0)
    with pytest.raises(ConfigError):
        ImageFolderDataModule(str(tmp_path / "a"), channels=2)
    write_image_folder(tmp_path / "b", splits=("train",), classes=("cat", "dog"), per_class=2)
    write_image_folder(tmp_path / "b", splits=("val",), classes=("cat", "emu"), per_class=2)
    with pytest.raises(ConfigError, match="emu"):
        ImageFolderDataModule(str(tmp_path / "b")).setup()
    (tmp_path / "c" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "c" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="no image files"):
        ImageFolderDataModule(str(tmp_path / "c")).setup()


def test_registered():
    from framework import build

    with pytest.raises(DataNotFoundError):
        build("data", "image_folder", root="/nonexistent/classzoo")
