"""Fréchet distance against scipy and closed forms; feature extractors; torchmetrics FID in their space."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import scipy.linalg
import torch
from torch.utils.data import DataLoader, TensorDataset

from framework.errors import ConfigError
from framework.metrics import (
    ClassifierFeatures,
    InceptionFeatures,
    build_extractor,
    extract,
    fid_metric,
    frechet_distance,
    frechet_distance_of_features,
    frechet_distance_of_subsets,
    gaussian_statistics,
    kid_metric,
)
from framework.models.classifier import Classifier


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    """The pytorch-fid / TTUR formula: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim,rank", [(1, 1), (5, 5), (16, 16), (16, 6)])
def test_frechet_distance_matches_scipy(dim, rank):
    rng = np.random.default_rng(dim + rank)
    a, b = rng.normal(size=(dim, rank)), rng.normal(size=(dim, dim))
    s1, s2 = a @ a.T, b @ b.T / dim + 0.1 * np.eye(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    got = frechet_distance(*(torch.from_numpy(t) for t in (mu1, s1, mu2, s2)))
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8)


def test_frechet_distance_closed_forms():
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s.
    got = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[0.25]]))
    assert got.item() == pytest.approx(9 + (2 - 0.5) ** 2)
    # Identical Gaussians: 0; commuting covariances: sum of (sqrt eig differences)^2.
    s = torch.diag(torch.tensor([1.0, 4.0, 9.0]))
    assert frechet_distance(torch.zeros(3), s, torch.zeros(3), s).abs().item() < 1e-10
    got = frechet_distance(torch.zeros(3), s, torch.ones(3), torch.eye(3))
    assert got.item() == pytest.approx(3 + 0 + 1 + 4)
    with pytest.raises(ValueError):
        frechet_distance(torch.zeros(3), s, torch.zeros(2), torch.eye(2))


def _scipy_frechet_of_rows(x, ref) -> float:
    return _scipy_frechet(x.mean(0), np.cov(x, rowvar=False), ref.mean(0), np.cov(ref, rowvar=False))


def test_frechet_distance_of_subsets_follows_its_protocol():
    rng = np.random.default_rng(3)
    x, ref = rng.normal(size=(40, 3)), rng.normal(1.0, 2.0, size=(30, 3))
    got = frechet_distance_of_subsets(torch.from_numpy(x), torch.from_numpy(ref), size=12, count=5, seed=7)
    # The documented draw: one generator seeded 7, the first 12 rows of a fresh randperm each time.
    g = torch.Generator().manual_seed(7)
    expected = [_scipy_frechet_of_rows(x[torch.randperm(40, generator=g)[:12].numpy()], ref) for _ in range(5)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    assert len(set(np.round(expected, 8))) == 5  # five different subsets
    # The whole set (size >= N) once; too small a subset is an error.
    whole = frechet_distance_of_subsets(torch.from_numpy(x), torch.from_numpy(ref), size=40)
    assert whole.shape == (1,) and whole.item() == pytest.approx(_scipy_frechet_of_rows(x, ref), rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance_of_subsets(torch.from_numpy(x), torch.from_numpy(ref), size=1)


def test_gaussian_statistics_and_feature_distance():
    x = torch.randn(50, 4, dtype=torch.float64)
    mean, cov = gaussian_statistics(x)
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(0))
    np.testing.assert_allclose(cov.numpy(), np.cov(x.numpy(), rowvar=False), atol=1e-12)
    y = 2 * torch.randn(60, 4, dtype=torch.float64) + 1
    expected = _scipy_frechet(
        x.mean(0).numpy(), np.cov(x.numpy(), rowvar=False), y.mean(0).numpy(), np.cov(y.numpy(), rowvar=False)
    )
    assert frechet_distance_of_features(x, y).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        gaussian_statistics(x[:1])


@pytest.fixture(scope="module")
def evaluator_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    x, y = torch.rand(30, 1, 8, 8) * 2 - 1, torch.arange(30) % 3
    model = Classifier(num_classes=3, data_shape=(1, 8, 8), net="cnn")
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=10))
    path = tmp_path_factory.mktemp("evaluator") / "evaluator.ckpt"
    trainer.save_checkpoint(path)
    return str(path), model.eval()


def test_classifier_features_load_the_checkpoint(evaluator_checkpoint):
    path, model = evaluator_checkpoint
    extractor = build_extractor("classifier", checkpoint=path)
    assert isinstance(extractor, ClassifierFeatures) and extractor.num_features == model.backbone.num_features
    x = torch.rand(7, 1, 8, 8) * 2 - 1
    features, logits = extractor.features_and_logits(x)
    with torch.no_grad():
        torch.testing.assert_close(features, model.features(x))
        torch.testing.assert_close(logits, model(x))
        torch.testing.assert_close(extractor(x), model.features(x))
    extractor.train()
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())
    with pytest.raises(ConfigError, match="evaluator: checkpoint not found"):
        build_extractor("classifier", checkpoint="/nonexistent/evaluator.ckpt")


def test_fid_metric_in_classifier_space_equals_frechet_distance(evaluator_checkpoint):
    _, model = evaluator_checkpoint
    extractor = ClassifierFeatures.from_module(model)
    real, fake = torch.rand(40, 1, 8, 8) * 2 - 1, torch.rand(30, 1, 8, 8) - 1
    fid = fid_metric(extractor)
    fid.update(real[:25], real=True)
    fid.update(real[25:], real=True)
    fid.update(fake, real=False)
    f_real, _ = extract(extractor, real, batch_size=16)
    f_fake, logits = extract(extractor, fake)
    assert logits.shape == (30, 3)
    expected = frechet_distance_of_features(f_fake, f_real).item()
    assert fid.compute().item() == pytest.approx(expected, rel=1e-3)
    # Real statistics survive reset(): only the generated side is fed again.
    fid.reset()
    fid.update(real, real=False)
    assert abs(fid.compute().item()) < 1e-3 * expected
    kid = kid_metric(extractor, subset_size=10)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    mean, std = kid.compute()
    assert mean.item() > 0 and torch.isfinite(std)


def test_inception_features_from_a_local_weights_file(tmp_path, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # Build the architecture with random weights (no download), save them, load them back.
    torch.save({}, tmp_path / "empty.pth")
    with monkeypatch.context() as patch:
        patch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, *a, **k: None)
        torch.manual_seed(0)
        random_net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(tmp_path / "empty.pth"))
    torch.save(random_net.state_dict(), tmp_path / "weights.pth")

    extractor = build_extractor("inception", weights=str(tmp_path / "weights.pth"))
    assert extractor.num_features == 2048
    torch.testing.assert_close(extractor.inception.fc.weight, random_net.fc.weight)
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    features = extractor(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    # The same uint8 images through torch-fidelity's own forward (TF1-compatible resize) give the same features.
    uint8 = ((images.expand(-1, 3, -1, -1) + 1) * 127.5).round().to(torch.uint8)
    torch.testing.assert_close(features, random_net(uint8)[0], rtol=1e-4, atol=1e-4)
    smooth = InceptionFeatures(str(tmp_path / "weights.pth"), feature=64, antialias=True)
    assert smooth(images).shape == (2, 64)
    with pytest.raises(ConfigError, match="never downloaded"):
        InceptionFeatures(str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="2048"):
        InceptionFeatures(str(tmp_path / "weights.pth"), feature=100)
