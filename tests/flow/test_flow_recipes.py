"""Every flow recipe runs through the CLI (one step), reflow included."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from framework.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FAST = ["--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


# every CPU flow recipe ("flow_*.yaml"; the CIFAR-10 one is checked against its reference below;
# flow_classifier_digits.yaml is a composition that needs a trained generator: tests/compositions runs it)
CPU_RECIPES = sorted(p.name for p in RECIPES.glob("flow_*.yaml") if "cifar" not in p.name and "classifier" not in p.name)


@pytest.mark.parametrize("recipe", CPU_RECIPES)
def test_recipe_runs_one_step(recipe, in_tmp):
    assert main(["fit", "--config", str(RECIPES / recipe), *FAST]) == 0


def test_reflow_recipe_trains_on_the_teacher_pairs(in_tmp):
    # A one-step teacher leaves its checkpoint where reflow_digits.yaml reads it.
    # Without validation the checkpoint callback saves at the end of each epoch (every epoch: 1).
    # It goes where Lightning puts checkpoints, under the run's log folder, and reflow_digits.yaml
    # finds the newest one by its pattern lightning_logs/version_*/checkpoints/flow_digits.ckpt.
    steps = ["--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.check_val_every_n_epoch=1", "--trainer.enable_progress_bar=false",
             "--trainer.enable_model_summary=false"]
    assert main(["fit", "--config", str(RECIPES / "flow_digits.yaml"), *steps]) == 0
    assert (in_tmp / "lightning_logs/version_0/checkpoints/flow_digits.ckpt").is_file()
    small = ["--data.init_args.num_pairs=40", "--data.init_args.teacher_solver=euler"]

    def reflow(teacher_steps, *root):
        assert main(["fit", "--config", str(RECIPES / "reflow_digits.yaml"), *FAST, *small,
                     f"--data.init_args.teacher_steps={teacher_steps}", *root]) == 0

    reflow(2)
    pairs = np.load(in_tmp / "reflow_pairs.npz")  # the cache lives in the run's root dir (here the working dir)
    assert pairs["x0"].shape == pairs["x1"].shape == (40, 1, 8, 8)
    # Runs in other root dirs keep their own caches: b's pairs (1 teacher step) are not a's (3 steps).
    reflow(3, "--trainer.default_root_dir=a")
    reflow(1, "--trainer.default_root_dir=b")
    a, b = np.load(in_tmp / "a/reflow_pairs.npz"), np.load(in_tmp / "b/reflow_pairs.npz")
    np.testing.assert_array_equal(a["x0"], b["x0"])  # the same seeded sources ...
    assert np.abs(a["x1"] - b["x1"]).max() > 1e-3  # ... carried by different teacher solves
    np.testing.assert_array_equal(np.load(in_tmp / "reflow_pairs.npz")["x1"], pairs["x1"])  # the first run's is untouched


def test_cifar10_recipe_builds_and_steps():
    """No CIFAR-10 here: check the recipe's model section against the schema, shrunk, on random images."""
    from framework.generative.flow.model import FlowMatching
    from jsonargparse import ArgumentParser

    config = yaml.safe_load((RECIPES / "flow_cifar10.yaml").read_text())
    args = dict(config["model"]["init_args"])
    optimizer = args.pop("optimizer")
    args.pop("scheduler")
    args["net_args"] = {**args["net_args"], "channels": 8, "num_heads": 2}
    parser = ArgumentParser()
    parser.add_class_arguments(FlowMatching, "model")
    parser.parse_object({"model": {**args, "optimizer": optimizer}})  # the recipe's names and types are valid
    model = FlowMatching(num_classes=10, data_shape=(3, 32, 32), **args)
    loss = model.loss(torch.rand(4, 3, 32, 32) * 2 - 1, torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss)
