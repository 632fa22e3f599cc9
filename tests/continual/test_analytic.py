"""ACIL's recursive least squares equals joint ridge regression; bad gamma is one ConfigError; the module end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from framework.cli import run_cli
from framework.continual.analytic import buffer_features, random_buffer_weight, rls_init, rls_update
from framework.errors import ConfigError

RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")


def _numpy_ridge(X: np.ndarray, Y: np.ndarray, gamma: float) -> np.ndarray:
    # Independent of the code under test: NumPy's solver on the normal equations.
    return np.linalg.solve(X.T @ X + gamma * np.eye(X.shape[1]), X.T @ Y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recursive_updates_equal_joint_ridge_for_any_class_order_and_batching(seed):
    g = np.random.default_rng(seed)
    d, classes, per_class, gamma = 40, 12, 30, 0.5
    X = g.normal(size=(classes * per_class, d)) + g.normal(size=(classes, d)).repeat(per_class, 0)
    y = np.arange(classes).repeat(per_class)
    order = g.permutation(classes)  # shuffled class order
    cuts = np.sort(g.choice(np.arange(1, classes), size=3, replace=False))
    steps = np.split(order, cuts)  # random partition of the classes into 4 steps
    R, W = rls_init(d, 0, gamma)  # no target column yet: they grow with the classes (zero padding)
    seen_rows: list[np.ndarray] = []
    width = 0
    for step_classes in steps:
        rows = np.nonzero(np.isin(y, step_classes))[0]
        rows = rows[g.permutation(len(rows))]
        width = max(width, int(step_classes.max()) + 1)
        # random partition of the step into batches of random sizes (size 1 included)
        bounds = np.sort(g.choice(np.arange(1, len(rows)), size=min(5, len(rows) - 1), replace=False))
        for batch in np.split(rows, bounds):
            Y = F.one_hot(torch.as_tensor(y[batch]), width).double()
            R, W = rls_update(R, W, torch.as_tensor(X[batch]), Y)
        seen_rows.append(rows)
        all_rows = np.concatenate(seen_rows)
        Y_all = np.eye(classes)[y[all_rows]][:, :width]
        expected = _numpy_ridge(X[all_rows], Y_all, gamma)
        assert W.shape == (d, width)
        assert np.abs(W.numpy() - expected).max() <= 1e-8
        np.testing.assert_allclose(R.numpy(), np.linalg.inv(X[all_rows].T @ X[all_rows] + gamma * np.eye(d)), atol=1e-10)


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_gamma_is_one_config_error(gamma):
    with pytest.raises(ConfigError, match="gamma"):
        rls_init(4, 2, gamma)


def test_a_gamma_too_small_for_the_data_raises_instead_of_nan_weights():
    # R0 = I / gamma overflows to inf. Where torch flushes subnormals (every fit does while it runs:
    # ClasszooModule.on_fit_start), 1e-320 is already 0 and rls_init refuses it; else the update does.
    X = torch.randn(5, 6, dtype=torch.float64)
    with pytest.raises(ConfigError, match="gamma"):
        R, W = rls_init(6, 3, 1e-320)
        rls_update(R, W, X, F.one_hot(torch.arange(5) % 3, 3).double(), 1e-320)


def test_buffer_is_seeded_and_uses_the_activation():
    w = random_buffer_weight(8, 16, seed=3)
    assert torch.equal(w, random_buffer_weight(8, 16, seed=3)) and not torch.equal(w, random_buffer_weight(8, 16, seed=4))
    assert w.dtype == torch.float64 and w.abs().max() <= 1 / np.sqrt(8)
    f = torch.randn(5, 8)
    assert torch.equal(buffer_features(f, w, "relu"), torch.relu(f.double() @ w.T))


@pytest.mark.parametrize("revisit", [0.5])
def test_acil_module_equals_ridge_on_all_data_seen(in_tmp, revisit):
    cli = run_cli([
        "fit", "--config", os.path.abspath(os.path.join(RECIPES, "acil_digits.yaml")),
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false",
        "--trainer.default_root_dir=out", "--model.init_args.base_epochs=1", "--model.init_args.buffer_width=64",
        "--model.init_args.analytic_batch_size=50", f"--data.init_args.revisit={revisit}",
    ])  # fmt: skip
    model, scenario = cli.model, cli.datamodule
    assert model.done
    indices = torch.cat([scenario.train_indices(s) for s in range(scenario.num_steps)])
    features, labels = model.feature_cache.get("train", indices)
    phi = buffer_features(features, model.buffer_weight, "relu").numpy()
    expected = _numpy_ridge(phi, np.eye(model.num_classes)[labels.numpy()], model.gamma)
    assert np.abs(model.W.numpy() - expected).max() <= 1e-8
    with open(os.path.join("out", "metrics.json")) as f:
        metrics = json.load(f)
    assert len(metrics["accuracy"]) == 4 and metrics["accuracy"][-1] > 50  # digits: far above chance (10 %)


def test_acil_refuses_bad_gamma_and_exemplars():
    import framework

    with pytest.raises(ConfigError, match="gamma"):
        framework.build("model", "acil", gamma=0.0, buffer_width=8)
    with pytest.raises(ConfigError, match="exemplar-free"):
        framework.build("model", "acil", memory_size=10, buffer_width=8)
