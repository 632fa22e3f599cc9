"""The continual recipes: digits ones run their whole protocol through the CLI; GPU ones parse."""

import glob
import json
import os

import pytest

from framework.cli import main, run_cli

RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")
METHODS = ("finetune", "joint", "ncm", "fetril", "wa", "teen", "acil", "icarl", "generative_replay")
NO_GLYPHS = ("generative_replay",)  # digits only: its glyphs settings have not been measured
DIGITS = [
    os.path.join(RECIPES, name)
    for name in ("acil_digits.yaml", "fetril_digits.yaml", "finetune_digits.yaml", "finetune_digits_fewshot.yaml", "icarl_digits.yaml", "joint_digits.yaml",
                 "ncm_digits.yaml", "teen_digits.yaml", "wa_digits.yaml", "generative_replay_digits.yaml",
                 "generative_replay_diffusion_digits.yaml", "generative_replay_adcgan_digits.yaml")
]
GPU = [
    os.path.join(RECIPES, name)
    for name in ("fetril_cifar100_b40_20steps.yaml", "fetril_cifar100_b50_10steps.yaml", "fetril_cifar100_b50_5steps.yaml",
                 "fetril_openclip_cifar100.yaml", "teen_cifar100_fscil.yaml", "wa_cifar100_b0_10steps.yaml",
                 "finetune_cifar100_b50_10steps.yaml", "joint_cifar100_b50_10steps.yaml", "ncm_cifar100_b50_10steps.yaml",
                 "icarl_cifar100_b0_10steps.yaml", "icarl_cifar100_b50_10steps.yaml", "acil_cifar100_b50_25steps.yaml")
]
GLYPHS = sorted(p for p in glob.glob(os.path.join(RECIPES, "*_glyphs*.yaml")) if os.path.basename(p).startswith(METHODS))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def _methods(recipes):
    return {m for m in METHODS for p in recipes if os.path.basename(p).startswith(m + "_")}


def test_every_method_has_a_digits_recipe_and_every_recipe_is_listed():
    assert _methods(DIGITS) == set(METHODS)
    ours = {p for p in glob.glob(os.path.join(RECIPES, "*.yaml")) if os.path.basename(p).startswith(METHODS)}
    listed = DIGITS + GPU + GLYPHS
    assert ours == {os.path.abspath(p) for p in listed} or ours == set(listed)
    assert _methods(GLYPHS) == set(METHODS) - set(NO_GLYPHS)  # every method on glyphs too


@pytest.mark.parametrize("recipe", DIGITS, ids=os.path.basename)
def test_digits_recipe_runs_the_whole_protocol(recipe, in_tmp):
    short = ["--model.init_args.base_epochs=1"]
    if "ncm" not in recipe and "teen" not in recipe:
        short.append("--model.init_args.epochs=1")
    if "generative_replay" in recipe:
        short += ["--model.init_args.generator_epochs=1", "--model.init_args.replay_per_class=8"]
    cli = run_cli(["fit", "--config", os.path.abspath(recipe), *QUIET, "--trainer.default_root_dir=out", *short])
    assert cli.model.done
    with open(os.path.join("out", "metrics.json")) as f:
        metrics = json.load(f)
    assert len(metrics["accuracy"]) == cli.datamodule.num_steps == 4
    if "fewshot" in recipe or "teen" in recipe:
        assert metrics["harmonic_mean"][0] is None and len(metrics["harmonic_mean"]) == 4


@pytest.mark.parametrize("recipe", DIGITS[1:2], ids=os.path.basename)
def test_fast_dev_run(recipe, in_tmp):
    assert main(["fit", "--config", os.path.abspath(recipe), *QUIET, "--trainer.fast_dev_run=1"]) == 0


@pytest.mark.parametrize("recipe", GPU, ids=os.path.basename)
def test_gpu_recipe_parses(recipe, in_tmp, capsys):
    assert main(["fit", "--config", os.path.abspath(recipe), "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "framework.continual" in printed


@pytest.mark.parametrize("recipe", GLYPHS, ids=os.path.basename)
def test_glyphs_recipe_fast_dev_run(recipe, tiny_glyphs, in_tmp):
    small = ["--model.init_args.buffer_width=128"] if "acil" in recipe else []  # R is width^2 float64
    tiny = tiny_glyphs("--data.init_args.dataset.init_args.") + ["--data.init_args.batch_size=32"]
    assert main(["fit", "--config", os.path.abspath(recipe), *QUIET, "--trainer.fast_dev_run=1", *tiny, *small]) == 0
