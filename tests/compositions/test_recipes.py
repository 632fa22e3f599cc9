"""The generative-classifier and CAS recipes run through the CLI on tiny generator checkpoints made here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framework.cli import main
from framework.generative.diffusion import Diffusion
from framework.generative.flow.model import FlowMatching
from tests.compositions._generators import save_checkpoint

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FAST = ["--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TINY_UNET = {"channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attn_resolutions": []}
SMALL = ["--model.n_samples=[2, 4]", "--model.to_keep=[2, 1]", "--data.eval_batch_size=16"]



@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    root = tmp_path_factory.mktemp("generators")
    torch.manual_seed(0)
    return {
        "diffusion": save_checkpoint(Diffusion(num_classes=10, net_args=TINY_UNET), root / "edm.ckpt"),
        "flow": save_checkpoint(FlowMatching(num_classes=10, net_args=TINY_UNET, time_sampling="logit_normal"), root / "flow.ckpt"),
    }


@pytest.mark.parametrize(("recipe", "family"), [("diffusion_classifier_digits.yaml", "diffusion"),
                                                ("flow_classifier_digits.yaml", "flow")])
def test_classifier_recipe_tests_and_predicts(recipe, family, generators, in_tmp):
    args = ["--config", str(RECIPES / recipe), "--model.generator", generators[family], *SMALL, *FAST]
    assert main(["test", *args]) == 0
    assert main(["predict", *args]) == 0
    (scores,) = list(in_tmp.glob("**/generative_scores.npz"))  # the log dir (fast_dev_run: the root dir)
    with np.load(scores) as data:
        assert data["errors"].shape == data["probabilities"].shape == (16, 10)
        assert data["predictions"].shape == data["labels"].shape == (16,)
        np.testing.assert_allclose(data["nfe"], 10 * 2 + 2 * 2)
        np.testing.assert_allclose(data["probabilities"].sum(1), 1, rtol=1e-9)
        assert float(data["temperature"]) > 0


def test_a_checkpoint_that_is_no_generator_exits_2_with_one_line(in_tmp):
    from framework.models.classifier import Classifier

    path = save_checkpoint(Classifier(num_classes=10), in_tmp / "clf.ckpt")
    run = subprocess.run(
        [sys.executable, "-m", "framework", "test", "--config", str(RECIPES / "diffusion_classifier_digits.yaml"),
         "--model.generator", path, *FAST], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.strip().splitlines() if not line.startswith("Seed set to")]  # Lightning's info line
    assert len(lines) == 1 and "holds a Classifier, not a GenerativeModule" in lines[0], lines


def test_cas_recipe_fits_on_generated_digits(generators, in_tmp):
    args = ["--config", str(RECIPES / "cas_digits.yaml"), "--data.generator", generators["flow"],
            "--data.init_args.sample_options={steps: 1}", *FAST]
    assert main(["fit", *args]) == 0
    assert len(list(in_tmp.glob("outputs/cas_digits/cache/generated-*.npz"))) == 1
