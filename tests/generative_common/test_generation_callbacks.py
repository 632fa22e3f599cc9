"""SampleGrid and GenerationMetrics during fit, on the tiny generator."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from framework.callbacks import GenerationMetrics, SampleGrid
from framework.errors import ConfigError
from framework.generative.output import sample_seeds
from framework.metrics import ClassifierFeatures, extract, frechet_distance_of_features
from framework.models.classifier import Classifier

sys.path.insert(0, str(Path(__file__).parent))
from _toy_generator import ToyGenerator  # noqa: E402


def _data(n: int, seed: int) -> TensorDataset:
    """Three classes of 1x4x4 images around distinct levels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = (y.float() - 1).view(-1, 1, 1, 1) * 0.6 + 0.2 * torch.randn(n, 1, 4, 4, generator=g)
    return TensorDataset(x.clamp(-1, 1), y)


def _trainer(tmp_path, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    return L.Trainer(**(args | kw))


class RecordingGrid(SampleGrid):
    """Remembers the generator's weights each time it makes a grid."""

    def make_grid(self, trainer, pl_module):
        self.seen = pl_module.means.detach().clone()
        return super().make_grid(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self.current = pl_module.means.detach().clone()  # validation has swapped the training weights back
        super().on_train_epoch_end(trainer, pl_module)


def test_sample_grid_uses_the_ema_weights_and_logs_to_tensorboard(tmp_path):
    torch.manual_seed(0)
    model = ToyGenerator()
    ema = EMAWeightAveraging(decay=0.5)
    grid = RecordingGrid(every_n_epochs=2, num_per_class=4)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[ema, grid], logger=logger)
    train, val = DataLoader(_data(24, 0), batch_size=6), DataLoader(_data(12, 1), batch_size=6)
    trainer.fit(model, train, val)
    assert trainer.callbacks.index(grid) < trainer.callbacks.index(ema)  # moved ahead of EMA's swap-out
    # Epoch 1 (every 2nd) and epoch 2 (the last).
    assert [p.name for p in grid.paths] == ["epoch=0001.png", "epoch=0002.png"]
    assert all(p.parent == Path(trainer.log_dir) / "samples" for p in grid.paths)
    assert Image.open(grid.paths[-1]).size == (4 * 34 + 2, 3 * 34 + 2)
    # The last grid was made with the averaged weights, which on_train_end copies into the model.
    torch.testing.assert_close(grid.seen, model.means.detach())
    assert not torch.allclose(grid.seen, grid.current, atol=1e-3)
    events = list((Path(trainer.log_dir)).glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    assert [e.step for e in accumulator.Images("samples")] == [8, 12]


def test_sample_grid_without_validation(tmp_path):
    grid = SampleGrid(every_n_epochs=1, num_per_class=2)
    trainer = _trainer(tmp_path, callbacks=[grid], limit_val_batches=0)
    trainer.fit(
        ToyGenerator(num_classes=0, data_shape=(2,)),
        DataLoader(TensorDataset(torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), batch_size=4),
    )
    assert [p.name for p in grid.paths] == ["epoch=0000.png", "epoch=0001.png"]
    assert Image.open(grid.paths[0]).size == (512, 512)  # 2-D points: a scatter plot


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    torch.manual_seed(0)
    model = Classifier(num_classes=3, data_shape=(1, 4, 4), net="cnn", net_args={"channels": [8]})
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, DataLoader(_data(60, 2), batch_size=20))
    path = tmp_path_factory.mktemp("evaluator") / "evaluator.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def test_generation_metrics_log_fd_and_accuracy(tmp_path, evaluator):
    torch.manual_seed(0)
    model = ToyGenerator()
    metrics = GenerationMetrics(feature_args={"checkpoint": evaluator}, num_per_class=10, seed=5)
    trainer = _trainer(tmp_path, callbacks=[metrics])
    val = _data(18, 1)
    trainer.fit(model, DataLoader(_data(24, 0), batch_size=6), DataLoader(val, batch_size=6))
    logged = trainer.callback_metrics
    assert {"gen/fd", "gen/acc"} <= set(logged)

    # The same figures computed by hand from the final weights.
    extractor = ClassifierFeatures(evaluator)
    labels = torch.arange(30) // 10
    with torch.no_grad():
        images = model.generate(labels, sample_seeds(torch.arange(30), 5))
    gen_features, logits = extract(extractor, images)
    real_features, _ = extract(extractor, val.tensors[0])
    expected_fd = frechet_distance_of_features(gen_features, real_features).item()
    assert logged["gen/fd"].item() == pytest.approx(expected_fd, rel=1e-3, abs=1e-5)
    assert logged["gen/acc"].item() == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    # Real statistics were taken once (first validation epoch), not once per epoch.
    assert metrics.fid.real_features_num_samples.item() == 18

    # Standalone validation (inference mode on) still works and gives the same figures.
    result = _trainer(tmp_path, callbacks=[metrics]).validate(model, DataLoader(val, batch_size=6), verbose=False)
    assert result[0]["gen/fd"] == pytest.approx(logged["gen/fd"].item(), rel=1e-6)


def test_generation_metrics_unconditional(tmp_path, evaluator):
    metrics = GenerationMetrics(feature_args={"checkpoint": evaluator}, num_per_class=12)
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[metrics])
    trainer.fit(
        ToyGenerator(num_classes=0), DataLoader(_data(12, 0), batch_size=6), DataLoader(_data(12, 1), batch_size=6)
    )
    assert "gen/fd" in trainer.callback_metrics and "gen/acc" not in trainer.callback_metrics
    assert metrics.fid.fake_features_num_samples.item() == 12


def test_generation_metrics_bad_input(tmp_path, evaluator):
    with pytest.raises(ConfigError, match="not found"):
        GenerationMetrics(feature_args={"checkpoint": str(tmp_path / "nope.ckpt")})
    with pytest.raises(ConfigError, match="classes"):
        _trainer(tmp_path, callbacks=[GenerationMetrics(feature_args={"checkpoint": evaluator})]).fit(
            ToyGenerator(num_classes=4), DataLoader(_data(8, 0), batch_size=4)
        )
    with pytest.raises(ConfigError, match="generative"):
        _trainer(tmp_path, callbacks=[SampleGrid()]).fit(
            Classifier(num_classes=3, data_shape=(1, 4, 4)), DataLoader(_data(8, 0), batch_size=4)
        )
