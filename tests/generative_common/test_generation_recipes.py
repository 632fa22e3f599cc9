"""The evaluator recipe writes the checkpoint that the generation-metrics recipe reads; both run."""

from __future__ import annotations

import os

from framework.cli import main

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_evaluator_then_generation_metrics_recipes(in_tmp):
    evaluator = os.path.join(REPO, "recipes", "evaluator_digits.yaml")
    assert main(["fit", "--config", evaluator, *QUIET, "--trainer.max_epochs=1", "--trainer.limit_train_batches=3"]) == 0
    # Under the run's log folder (the recipe's default_root_dir), where the metrics recipe's pattern finds it.
    assert os.path.isfile("outputs/evaluator/lightning_logs/version_0/checkpoints/digits.ckpt")
    watched = os.path.join(REPO, "recipes", "generation_metrics_digits.yaml")
    assert main(["fit", "--config", watched, *QUIET, "--trainer.fast_dev_run=1"]) == 0
