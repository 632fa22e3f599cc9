"""framework.io: result files and checkpoints are replaced whole or not at all."""

from __future__ import annotations

import os
import stat

import fsspec
import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import TorchCheckpointIO
from torch.utils.data import DataLoader, TensorDataset

import framework.io
from framework.callbacks import FinalCheckpoint
from framework.io import AtomicCheckpointIO, write_atomic
from framework.trainer import ClasszooTrainer


class HalfWrite:
    """A file that takes ``limit`` bytes, then fails as an interruption in the middle of a write would."""

    def __init__(self, f, limit: int, error: BaseException) -> None:
        self.f, self.limit, self.error, self.written = f, limit, error, 0

    def write(self, data) -> int:
        if self.written + len(data) > self.limit:
            self.f.write(bytes(data)[: self.limit - self.written])
            raise self.error
        self.written += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_write_atomic_takes_bytes_text_or_a_writer_and_creates_the_directory(tmp_path):
    write_atomic(tmp_path / "a" / "x.bin", b"\x00\x01")
    write_atomic(tmp_path / "a" / "x.json", '{"é": 1}')
    write_atomic(tmp_path / "a" / "x.npz", lambda f: f.write(b"npz"))
    assert (tmp_path / "a" / "x.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a" / "x.json").read_text(encoding="utf-8") == '{"é": 1}'
    assert (tmp_path / "a" / "x.npz").read_bytes() == b"npz"
    assert sorted(os.listdir(tmp_path / "a")) == ["x.bin", "x.json", "x.npz"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, error):
    write_atomic(tmp_path / "metrics.json", b'{"steps_done": 1}')
    with pytest.raises(type(error)):
        write_atomic(tmp_path / "metrics.json", lambda f: HalfWrite(f, 3, error).write(b'{"steps_done": 2}'))
    assert (tmp_path / "metrics.json").read_bytes() == b'{"steps_done": 1}'
    assert os.listdir(tmp_path) == ["metrics.json"]
    with pytest.raises(OSError):  # a new file that fails never appears
        write_atomic(tmp_path / "results.csv", lambda f: HalfWrite(f, 3, OSError()).write(b"step,accuracy"))
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "grid.png", b"png")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


# -- checkpoints -----------------------------------------------------------------------------
class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(root, **kwargs) -> ClasszooTrainer:
    return ClasszooTrainer(
        default_root_dir=root, logger=False, enable_progress_bar=False, enable_model_summary=False, **kwargs
    )


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=4)


def test_trainer_writes_checkpoints_atomically_unless_a_checkpoint_io_is_given(tmp_path):
    trainer = _trainer(tmp_path)
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    assert sum(isinstance(c, FinalCheckpoint) for c in trainer.callbacks) == 1
    mine = TorchCheckpointIO()
    assert _trainer(tmp_path, plugins=[mine]).strategy.checkpoint_io is mine
    assert _trainer(tmp_path, plugins=mine).strategy.checkpoint_io is mine
    assert type(L.Trainer(logger=False).strategy.checkpoint_io) is TorchCheckpointIO  # only ours change


def test_an_interrupted_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[checkpoint])
    trainer.fit(Tiny(), _loader())
    last = tmp_path / "ckpt" / "last.ckpt"
    before = last.read_bytes()
    assert torch.load(last, weights_only=True)["global_step"] == 4

    real = framework.io.write_atomic

    def interrupted(path, contents):  # torch.save stops after 1000 bytes of the new checkpoint
        return real(path, lambda f: contents(HalfWrite(f, 1000, KeyboardInterrupt())))

    monkeypatch.setattr(framework.io, "write_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(last)
    assert last.read_bytes() == before
    assert os.listdir(tmp_path / "ckpt") == ["last.ckpt"]

    monkeypatch.setattr(framework.io, "write_atomic", real)
    trainer.save_checkpoint(tmp_path / "ckpt" / "again.ckpt")
    again = torch.load(tmp_path / "ckpt" / "again.ckpt", weights_only=True)
    assert again["global_step"] == 4
    torch.testing.assert_close(again["state_dict"], torch.load(last, weights_only=True)["state_dict"])


def test_remote_paths_keep_lightnings_writer(tmp_path):
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, "memory://classzoo-test/a.ckpt")
    with fsspec.open("memory://classzoo-test/a.ckpt", "rb") as f:
        assert torch.load(f, weights_only=True) == {"global_step": 3}
    fsspec.filesystem("memory").rm("/classzoo-test", recursive=True)
