"""Every diffusion recipe parses and runs one step (fast_dev_run) through the CLI."""

import glob
import os

import pytest

from framework.cli import run_cli
from framework.generative.diffusion import Diffusion, NoisyClassifier

RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")
FAST = ["--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# GPU recipes run here on CPU, on digits, with a small net: the point is that they parse and wire up.
ON_CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.precision=32-true"]
SMALL_NET = {
    "unet": ['--model.init_args.net_args={"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": []}'],
    "dit": ['--model.init_args.net_args={"hidden_size": 16, "depth": 1, "num_heads": 2, "patch_size": 2}'],
}
RECIPE_FILES = sorted(glob.glob(os.path.join(RECIPES, "diffusion_*.yaml"))) + [os.path.join(RECIPES, "noisy_classifier_digits.yaml")]


@pytest.mark.parametrize("recipe", RECIPE_FILES, ids=os.path.basename)
def test_recipe_runs_one_step(recipe, in_tmp):
    args = ["fit", "--config", os.path.abspath(recipe), *FAST]
    if "cifar10" in recipe:
        net = "dit" if "dit" in recipe else "unet"
        args += [*ON_CPU, "--data=digits", *SMALL_NET[net]]
    cli = run_cli(args)
    assert isinstance(cli.model, (Diffusion, NoisyClassifier))
    assert cli.trainer.global_step == 1
    if isinstance(cli.model, Diffusion):
        assert cli.model.num_classes == cli.datamodule.num_classes
