"""The GAN recipes run through the CLI: digits ones for one step, CIFAR ones (shrunk) on a fake CIFAR on disk."""

import sys
from pathlib import Path

import pytest
import torch

from framework.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
FAST = ["--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
sys.path.insert(0, str(ROOT / "tests" / "data"))


# Every GAN recipe is picked up by its name: *gan_digits.yaml and *gan_cifar10 / *gan_cifar100.yaml.
DIGITS_RECIPES = sorted(p.name for p in RECIPES.glob("*gan_digits.yaml"))
CIFAR_RECIPES = sorted(p.name for p in RECIPES.glob("*gan_cifar*.yaml"))


def test_every_gan_family_has_its_recipes():
    for name in ("adcgan", "acgan", "tacgan", "pdgan"):
        assert {f"{name}_digits.yaml"} <= set(DIGITS_RECIPES)
        assert {f"{name}_cifar10.yaml", f"{name}_cifar100.yaml"} <= set(CIFAR_RECIPES)


@pytest.mark.parametrize("recipe", DIGITS_RECIPES)
def test_digits_recipe_runs_one_step(recipe, in_tmp):
    assert main(["fit", "--config", str(RECIPES / recipe), *FAST]) == 0


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*gan_glyphs.yaml")))
def test_glyphs_recipe_runs_one_step_shrunk(recipe, tiny_glyphs, in_tmp):
    small = [
        '--model.init_args.generator_args={"channels": 2, "latent_dim": 8, "spectral_norm": true, "init": "N02"}',
        '--model.init_args.discriminator_args={"channels": 2, "spectral_norm": true, "init": "N02"}',
        "--data.init_args.batch_size=16", "--trainer.accelerator=cpu",
    ]
    assert main(["fit", "--config", str(RECIPES / recipe), *FAST, *tiny_glyphs("--data.init_args."), *small]) == 0


@pytest.mark.parametrize("recipe", CIFAR_RECIPES)
def test_cifar_recipe_runs_one_step_shrunk(recipe, in_tmp, monkeypatch):
    import _fake_datasets

    writer = "write_cifar100" if "cifar100" in recipe else "write_cifar10"
    getattr(_fake_datasets, writer)(in_tmp / "data", monkeypatch)
    small = [
        '--model.init_args.generator_args={"channels": 2, "latent_dim": 8, "spectral_norm": true, "init": "N02"}',
        '--model.init_args.discriminator_args={"channels": 2, "spectral_norm": true, "init": "N02"}',
        "--data.init_args.batch_size=4",
    ]
    assert main(["fit", "--config", str(RECIPES / recipe), *FAST, *small]) == 0


def test_sample_command_writes_ema_samples(in_tmp):
    # One epoch of 5 batches (10 optimizer steps with n_dis 1), validated, so the recipe's ModelCheckpoint saves.
    steps = ["--trainer.max_steps=10", "--model.init_args.n_dis=1", "--model.init_args.ema_start=1",
             "--data.init_args.batch_size=256",
             "--trainer.check_val_every_n_epoch=1", "--trainer.enable_progress_bar=false",
             "--trainer.enable_model_summary=false", "--trainer.default_root_dir=run"]
    assert main(["fit", "--config", str(RECIPES / "adcgan_digits.yaml"), *steps]) == 0
    # The recipe's ModelCheckpoint writes under --trainer.default_root_dir (Lightning's convention).
    ckpt = in_tmp / "run" / "lightning_logs" / "version_0" / "checkpoints" / "adcgan_digits.ckpt"
    assert not (in_tmp / "outputs").exists() and not (in_tmp / "lightning_logs").exists()
    out = in_tmp / "samples"
    assert main(["sample", "--config", str(RECIPES / "adcgan_digits.yaml"), "--ckpt_path", str(ckpt),
                 "--num_per_class", "3", "--output", str(out)]) == 0
    import numpy as np

    samples = np.load(out / "samples.npz")
    assert samples["images"].shape == (30, 1, 8, 8) and (samples["labels"] == np.repeat(np.arange(10), 3)).all()
    assert (out / "grid.png").is_file()
    # The samples are the checkpoint's EMA generator's (which differs from the raw G by now).
    from framework.generative.gan import ADCGAN

    model = ADCGAN.load_from_checkpoint(ckpt)
    index = torch.arange(30)
    labels = torch.as_tensor(samples["labels"])
    expected = model.predict_step((index, labels), 0)["images"]
    torch.testing.assert_close(torch.as_tensor(samples["images"]), expected)
    model.sample_options = {"use_ema": False}
    assert not torch.allclose(model.predict_step((index, labels), 0)["images"], expected)


# liang-hou/adcgan BigGAN-PyTorch/scripts/launch_cifar{10,100}_ema_{loss}.sh: --loss and --D_lambda / --G_lambda
# (acgan 0.2, tacgan and adcgan 1.0, pdgan none: the projection is in the adversarial logit).
REFERENCE_LOSS = {"adcgan": ("adc", 1.0), "acgan": ("ac", 0.2), "tacgan": ("tac", 1.0), "pdgan": ("projection", None)}


def test_glyphs_recipe_is_the_cifar100_recipe_on_glyphs():
    import yaml

    glyphs = yaml.safe_load((RECIPES / "adcgan_glyphs.yaml").read_text())
    cifar = yaml.safe_load((RECIPES / "adcgan_cifar100.yaml").read_text())
    assert glyphs["data"]["class_path"] == "glyphs" and glyphs["data"]["init_args"]["batch_size"] == 50
    assert {k: v for k, v in glyphs.items() if k != "data"} == {k: v for k, v in cifar.items() if k != "data"}


@pytest.mark.parametrize("recipe", CIFAR_RECIPES)
def test_cifar_recipe_has_the_reference_script_settings(recipe):
    import yaml

    config = yaml.safe_load((RECIPES / recipe).read_text())
    name, dataset = recipe.removesuffix(".yaml").split("_")
    trainer, model, data = config["trainer"], config["model"], config["data"]
    args = model["init_args"]
    conditioning, lam = REFERENCE_LOSS[name]
    assert model["class_path"] == name and args["conditioning"] == conditioning
    if lam is None:
        assert "d_lambda" not in args and "g_lambda" not in args
    else:
        assert args["d_lambda"] == args["g_lambda"] == lam
    # --batch_size 50 --num_D_steps 4 --G_lr/--D_lr 2e-4 (BigGAN's Adam betas (0, 0.999), eps 1e-8)
    # --G_init/--D_init N02, SN in G and D, ch 64, dim_z 128, --ema --ema_start 1000 (decay 0.9999),
    # --num_epochs 1000, --dataset C10 / C100, no augmentation, --G_shared off, hinge adversarial loss.
    assert data["class_path"] == dataset and data["init_args"]["batch_size"] == 50
    assert data["init_args"]["crop_padding"] == 0 and data["init_args"]["horizontal_flip"] is False
    assert args["n_dis"] == 4 and args["adversarial_loss"] == "hinge"
    for opt in ("generator_optimizer", "discriminator_optimizer"):
        assert args[opt]["init_args"] == {"lr": 0.0002, "betas": [0.0, 0.999], "eps": 1.0e-08}
    for net in ("generator_args", "discriminator_args"):
        assert args[net]["channels"] == 64 and args[net]["spectral_norm"] is True and args[net]["init"] == "N02"
    assert args["generator_args"]["latent_dim"] == 128 and args["generator_args"]["shared_dim"] is None
    assert args["ema"] is True and args["ema_decay"] == 0.9999 and args["ema_start"] == 1000
    assert trainer["max_epochs"] == 1000
