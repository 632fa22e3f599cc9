"""`ClasszooTrainer.sample`, sample requests and output files, on a tiny generator defined here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from framework.core import ClasszooModule
from framework.errors import ConfigError
from framework.generative.base import GenerativeModule
from framework.generative.output import (
    SampleRequests,
    SampleWriter,
    class_grid,
    load_samples,
    sample_seeds,
    scatter_plot,
)
from framework.trainer import ClasszooTrainer

sys.path.insert(0, str(Path(__file__).parent))
from _toy_generator import ToyGenerator  # noqa: E402


class NotAGenerator(ClasszooModule):
    pass


def _trainer(**kw) -> ClasszooTrainer:
    args = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    return ClasszooTrainer(**(args | kw))


def _trained_model(seed: int = 0) -> ToyGenerator:
    torch.manual_seed(seed)
    model = ToyGenerator()
    with torch.no_grad():
        model.means.copy_(torch.randn_like(model.means))
    return model


def test_requests_and_seeds():
    req = SampleRequests(num_classes=3, num_per_class=4)
    assert len(req) == 12
    assert [int(req[i][1]) for i in range(12)] == [0] * 4 + [1] * 4 + [2] * 4
    assert int(req[7][0]) == 7 and req[7][0].dtype == torch.int64
    with pytest.raises(IndexError):
        req[12]
    assert len(SampleRequests(0, 5)) == 5 and int(SampleRequests(0, 5)[4][1]) == 0
    with pytest.raises(ConfigError):
        SampleRequests(3, 0)
    # The per-rank shares (what each DDP rank generates for the metrics callback) partition the requests.
    shares = [torch.cat([i for i, _ in req.batches(5, rank, 3)]) for rank in range(3)]
    assert sorted(torch.cat(shares).tolist()) == list(range(12)) and shares[1].tolist() == [1, 4, 7, 10]
    assert all(torch.equal(l, i // 4) for i, l in req.batches(5, 1, 3))
    assert sample_seeds(torch.arange(3), seed=0).tolist() == [0, 1, 2]
    seeds = sample_seeds(torch.arange(3), seed=2)
    assert seeds.tolist() == [(2 * 0x9E3779B9 + i) % 2**32 for i in range(3)]
    # Distinct within a run even across the 2**32 wrap-around, and disjoint from other seeds' runs.
    big = sample_seeds(torch.arange(100_000), seed=7)
    assert len(torch.unique(big)) == 100_000 and big.max() < 2**32
    assert not set(big.tolist()) & set(sample_seeds(torch.arange(100_000), seed=8).tolist())
    with pytest.raises(ConfigError):
        sample_seeds(torch.arange(3), seed=-1)


def test_sample_writes_files(tmp_path):
    model = _trained_model()
    path = _trainer().sample(model, num_per_class=5, output=str(tmp_path / "out"), seed=3, batch_size=4)
    images, labels = load_samples(path)
    assert images.dtype == np.float32 and labels.dtype == np.int64
    assert images.shape == (15, 1, 4, 4) and labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert images.min() >= -1 and images.max() <= 1
    # The per-sample seeds make sample i equal to generate() on its own.
    expected = model.generate(torch.tensor(labels), sample_seeds(torch.arange(15), 3))
    np.testing.assert_allclose(images, expected.detach().numpy(), atol=1e-6)
    grid = Image.open(tmp_path / "out" / "grid.png")
    # 3 rows of 5 32-pixel tiles (4x4 enlarged 8x) with 2-pixel padding.
    assert grid.size == (5 * 34 + 2, 3 * 34 + 2)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out" / "samples.npz").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    config = json.loads((tmp_path / "out" / "sample_config.json").read_text())
    assert config["seed"] == 3 and config["num_per_class"] == 5
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_sample_independent_of_batch_size_and_dependent_on_seed(tmp_path):
    model = _trained_model()
    a = load_samples(_trainer().sample(model, num_per_class=20, output=str(tmp_path / "a"), batch_size=1))[0]
    assert Image.open(tmp_path / "a" / "grid.png").size[0] == 16 * 34 + 2  # at most 16 columns
    b = load_samples(_trainer().sample(model, num_per_class=20, output=str(tmp_path / "b"), batch_size=7))[0]
    c = load_samples(_trainer().sample(model, num_per_class=20, output=str(tmp_path / "c"), seed=1))[0]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


def test_options_reach_generate_with_autograd(tmp_path):
    model = _trained_model()
    plain = load_samples(_trainer().sample(model, num_per_class=2, output=str(tmp_path / "p")))[0]
    guided = load_samples(
        _trainer().sample(model, num_per_class=2, output=str(tmp_path / "g"), guidance_scale=0.2, steps=2)
    )[0]
    # Two steps of x -= 0.2 * 2x shrink the pre-tanh values by 0.6^2.
    np.testing.assert_allclose(np.arctanh(guided), 0.36 * np.arctanh(plain), rtol=1e-4, atol=1e-5)
    assert model.sample_options == {} and model.sample_seed == 0  # restored afterwards
    with pytest.raises(ConfigError, match="sampler"):
        _trainer().sample(model, num_per_class=2, output=str(tmp_path / "x"), sampler="euler")
    with pytest.raises(ConfigError, match="eta"):
        _trainer().sample(model, num_per_class=2, output=str(tmp_path / "x"), options={"eta": 1.0})


def test_bad_input(tmp_path):
    model = _trained_model()
    with pytest.raises(ConfigError, match="checkpoint not found"):
        _trainer().sample(model, ckpt_path=str(tmp_path / "missing.ckpt"), output=str(tmp_path))
    with pytest.raises(ConfigError, match="generative"):
        _trainer().sample(NotAGenerator(), output=str(tmp_path))

    class Data:
        num_classes = 10

    with pytest.raises(ConfigError, match="classes"):
        _trainer().sample(model, datamodule=Data(), output=str(tmp_path))
    assert not (tmp_path / "samples.npz").exists()


def test_a_generator_without_generate_fails_clearly(tmp_path):
    class Incomplete(GenerativeModule):
        pass

    with pytest.raises(NotImplementedError, match="Incomplete must implement generate"):
        _trainer().sample(Incomplete(num_classes=2), num_per_class=1, output=str(tmp_path))
    assert not (tmp_path / "samples.npz").exists()


def test_unconditional_and_vector_data(tmp_path):
    model = ToyGenerator(num_classes=0, data_shape=(2,))
    images, labels = load_samples(_trainer().sample(model, num_per_class=6, output=str(tmp_path)))
    assert images.shape == (6, 2) and labels.tolist() == [0] * 6
    assert Image.open(tmp_path / "grid.png").size == (512, 512)  # scatter plot of 2-D points


def test_checkpoint_weights_are_the_ema_weights(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(24, 1, 4, 4)
    y = torch.arange(24) % 3
    loader = DataLoader(TensorDataset(x, y), batch_size=6)
    model = ToyGenerator()
    ema = EMAWeightAveraging(decay=0.5)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _trainer(max_epochs=2, callbacks=[ema, ckpt], enable_checkpointing=True)
    trainer.fit(model, loader)
    average = ema._average_model.module.means.detach().clone()
    saved = torch.load(ckpt.last_model_path, weights_only=False)
    current = saved["current_model_state"]["means"]
    assert not torch.allclose(average, current)  # the test can tell them apart

    seeds = sample_seeds(torch.arange(6), 0)
    labels = torch.arange(6) // 2
    with torch.no_grad():
        model.means.copy_(average)
        expected = model.generate(labels, seeds).numpy()
        model.means.zero_()  # the checkpoint must restore the weights

    # Same trainer (EMA callback still holding its average), then a fresh trainer and model.
    got = load_samples(
        trainer.sample(model, ckpt_path=ckpt.last_model_path, num_per_class=2, output=str(tmp_path / "a"))
    )[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    fresh = ToyGenerator()
    got = load_samples(
        _trainer(callbacks=[EMAWeightAveraging()]).sample(
            fresh, ckpt_path=ckpt.last_model_path, num_per_class=2, output=str(tmp_path / "b")
        )
    )[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_rendering_helpers(tmp_path):
    images = torch.linspace(-1, 1, 6 * 3 * 8 * 8).reshape(6, 3, 8, 8)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    grid = class_grid(images, labels, num_rows=3, columns=2, min_tile=8, padding=1)
    assert grid.mode == "RGB" and grid.size == (2 * 9 + 1, 3 * 9 + 1)
    pixels = np.asarray(grid)
    # Row 1 has one sample: its second tile is blank (black, from -1).
    assert pixels[1 + 9 : 9 + 9, 1 + 9 : 9 + 9].max() == 0
    assert pixels[1:9, 1:9].max() > 0
    plot = scatter_plot(torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]), torch.tensor([0, 1, 1]), size=64)
    # The middle point lands in the centre in class 1's colour; y grows upwards.
    assert plot.getpixel((32, 32)) == (255, 127, 14) and plot.getpixel((61, 3)) == (255, 127, 14)
    assert plot.getpixel((3, 61)) == (31, 119, 180) and plot.getpixel((3, 3)) == (255, 255, 255)


def test_writer_refuses_missing_or_repeated_samples(tmp_path):
    from types import SimpleNamespace

    trainer = SimpleNamespace(world_size=1, global_rank=0, strategy=SimpleNamespace(barrier=lambda name: None))
    writer = SampleWriter(tmp_path, num_rows=2)
    writer.expected = 4
    writer.on_predict_start(trainer, None)
    for index in ([0, 1], [1, 3]):  # 1 twice, 2 missing (as when every rank generated everything)
        index = torch.tensor(index)
        writer.on_predict_batch_end(
            trainer, None, {"index": index, "labels": index // 2, "images": torch.zeros(2, 2)}, None, 0
        )
    with pytest.raises(RuntimeError, match="not exactly 0..3"):
        writer.on_predict_epoch_end(trainer, None)
    assert not (tmp_path / "samples.npz").exists()
    with pytest.raises(ConfigError, match="predict_step must return"):
        writer.on_predict_batch_end(trainer, ToyGenerator(), torch.zeros(2), None, 0)
