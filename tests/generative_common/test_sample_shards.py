"""`sample` in shards: same samples as one file, both layouts readable, an interruption leaves whole shards."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import framework.generative.output as output
from framework.errors import ConfigError
from framework.generative.output import iter_samples, load_samples, shard_name
from framework.trainer import ClasszooTrainer

sys.path.insert(0, str(Path(__file__).parent))
from _toy_generator import ToyGenerator  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "foundation"))
from test_atomic_io import HalfWrite  # noqa: E402



class HalfFile(HalfWrite):
    """HalfWrite with the rest of the file's methods (np.savez's zip writer seeks and tells)."""

    def __getattr__(self, name):
        return getattr(self.f, name)


SHARDS = [shard_name(k, 3) for k in range(3)]


def _sample(out: Path, **kw) -> Path:
    torch.manual_seed(0)
    model = ToyGenerator()
    with torch.no_grad():
        model.means.copy_(torch.randn_like(model.means))
    trainer = ClasszooTrainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                              enable_model_summary=False)  # fmt: skip
    return trainer.sample(model, num_per_class=4, output=str(out), seed=5, **kw)  # 3 classes: 12 samples


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    return out, load_samples(_sample(out, batch_size=4))


def test_shards_hold_exactly_the_samples_of_one_file(tmp_path, plain):
    plain_dir, (images, labels) = plain
    path = _sample(tmp_path, batch_size=3, shard_size=5)  # batches straddle the shard boundaries
    assert path == tmp_path / "samples.npz"
    assert sorted(os.listdir(tmp_path)) == sorted(["grid.png", "sample_config.json", "samples.npz", *SHARDS])
    with np.load(path) as index:
        assert sorted(index.files) == ["counts", "shards"]
        assert index["shards"].tolist() == SHARDS and index["counts"].tolist() == [5, 5, 2]
    got = load_samples(tmp_path)
    np.testing.assert_array_equal(got[0], images)
    np.testing.assert_array_equal(got[1], labels)
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64
    parts = list(iter_samples(path))
    assert [len(p[1]) for p in parts] == [5, 5, 2]
    np.testing.assert_array_equal(parts[1][0], images[5:10])
    np.testing.assert_array_equal(load_samples(tmp_path / SHARDS[2])[1], labels[10:])  # one shard reads alone
    # The grid keeps the first images of each class without holding them all: the same picture.
    assert (tmp_path / "grid.png").read_bytes() == (plain_dir / "grid.png").read_bytes()
    # The unsharded layout is today's single file.
    with np.load(plain_dir / "samples.npz") as single:
        assert sorted(single.files) == ["images", "labels"]
    assert not any(name.startswith("samples-") for name in os.listdir(plain_dir))


def test_an_interrupted_shard_write_leaves_only_whole_shards(tmp_path, plain, monkeypatch):
    images = plain[1][0]
    real = output.write_atomic

    def write(path, contents):
        if os.path.basename(path) == SHARDS[1]:  # a full disk half-way through the second shard
            return real(path, lambda f: contents(HalfFile(f, 200, OSError("No space left on device"))))
        return real(path, contents)

    monkeypatch.setattr(output, "write_atomic", write)
    with pytest.raises(OSError, match="No space left"):
        _sample(tmp_path, batch_size=3, shard_size=5)
    assert os.listdir(tmp_path) == [SHARDS[0]]  # no cut-off shard, no temporary file, no index
    np.testing.assert_array_equal(load_samples(tmp_path / SHARDS[0])[0], images[:5])
    with pytest.raises(ConfigError, match="no samples file"):
        load_samples(tmp_path)


def test_an_index_whose_shards_are_gone_and_a_bad_shard_size_are_one_line_errors(tmp_path):
    _sample(tmp_path, batch_size=12, shard_size=5)
    (tmp_path / SHARDS[1]).unlink()
    with pytest.raises(ConfigError, match=f"missing: {SHARDS[1]}"):
        load_samples(tmp_path)
    with pytest.raises(ConfigError, match="shard_size must be >= 1"):
        _sample(tmp_path / "x", shard_size=0)
