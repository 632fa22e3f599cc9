"""benchmarks/eval_generated.py on digits with a small evaluator trained here."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import framework
from framework.generative.output import save_samples
from framework.metrics import ClassifierFeatures
from framework.models.classifier import Classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from eval_generated import evaluate_samples, main  # noqa: E402


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    torch.manual_seed(0)
    data = framework.build("data", "digits", batch_size=128)
    model = Classifier(num_classes=10, data_shape=(1, 8, 8), net="cnn", net_args={"channels": [8, 16]})
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, data)
    path = tmp_path_factory.mktemp("evaluator") / "evaluator.ckpt"
    trainer.save_checkpoint(path)
    return path, data


def test_real_test_set_scores_like_the_test_set(evaluator, tmp_path):
    path, data = evaluator
    x, y = data.test_dataset.x, data.test_dataset.y
    save_samples(tmp_path, x, y, num_rows=10)
    result = evaluate_samples(tmp_path, path, "digits", verbose=False)
    assert result["fd_test"] == pytest.approx(0, abs=1e-6)
    assert result["fd_train"] == pytest.approx(result["fd_real"], rel=1e-9) and result["fd_real"] > 0
    assert result["accuracy"] == result["real_accuracy"] and result["accuracy"] > 0.5
    assert result["num_samples"] == result["num_test"] == len(y)
    assert len(result["accuracy_per_class"]) == 10 and min(result["accuracy_per_class"]) <= result["accuracy"]


def test_noise_scores_far_worse_and_cli_writes_json(evaluator, tmp_path):
    path, _ = evaluator
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(200, 1, 8, 8, generator=g) * 2 - 1, torch.arange(200) // 20
    save_samples(tmp_path, images, labels, num_rows=10)
    result = main(
        ["--samples", str(tmp_path / "samples.npz"), "--evaluator", str(path), "--json", str(tmp_path / "r.json")]
    )
    assert result["fd_ratio"] > 10 and result["accuracy"] < 0.5
    assert (tmp_path / "r.json").read_text().count('"fd_ratio":') == 1
    # Per-class accuracy, None for a class without samples.
    relabelled = np.where(labels.numpy() == 3, 4, labels.numpy())
    per_class = evaluate_samples((images.numpy(), relabelled), path, verbose=False)["accuracy_per_class"]
    assert len(per_class) == 10 and per_class[3] is None
    predicted = ClassifierFeatures(str(path)).features_and_logits(images)[1].argmax(1)
    assert per_class[4] == pytest.approx((predicted[relabelled == 4] == 4).float().mean().item(), abs=1e-4)
    # Arrays work as well as files, and give the same figures.
    same = evaluate_samples((images.numpy(), labels.numpy()), path, verbose=False)
    assert same["fd_test"] == pytest.approx(result["fd_test"]) and np.isclose(same["accuracy"], result["accuracy"])


def test_equal_count_floor_is_a_mean_over_subsets_and_the_same_in_every_process(evaluator):
    """The floor averages 50 train subsets taken in the split's stored order, not the shuffled loader's."""
    import eval_generated

    from framework.metrics import extract, frechet_distance_of_features

    path, data = evaluator
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(60, 1, 8, 8, generator=g) * 2 - 1, torch.arange(60) // 6
    results = []
    for process_seed in (1, 2):  # another process: another initial seed, another loader shuffle
        torch.manual_seed(process_seed)
        eval_generated._cached_reference.cache_clear()
        results.append(evaluate_samples((images.numpy(), labels.numpy()), str(path), verbose=False))
    first, second = results
    assert first["fd_real_equal"] == second["fd_real_equal"] and first["fd_ratio_equal"] == second["fd_ratio_equal"]
    assert first["fd_real_equal_subsets"] == 50 and first["fd_real_equal_sd"] > 0
    # Independently: the mean over the documented subsets of the stored train order.
    features = ClassifierFeatures(str(path))
    data.setup("fit")
    data.setup("test")
    train = extract(features, data.train_dataset.x)[0]
    test = extract(features, data.test_dataset.x)[0]
    gen = torch.Generator().manual_seed(0)
    floors = [frechet_distance_of_features(train[torch.randperm(len(train), generator=gen)[:60]], test).item()
              for _ in range(50)]  # fmt: skip
    assert first["fd_real_equal"] == pytest.approx(np.mean(floors), rel=1e-9)
    assert first["fd_real_equal_sd"] == pytest.approx(np.std(floors, ddof=1), rel=1e-6)
    assert first["fd_ratio_equal"] == pytest.approx(first["fd_test"] / np.mean(floors), rel=1e-9)
