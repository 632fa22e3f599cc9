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


@pytest.mark.parametrize("recipe", ["adcgan_digits.yaml", "acgan_digits.yaml", "tacgan_digits.yaml", "pdgan_digits.yaml"])
def test_digits_recipe_runs_one_step(recipe, in_tmp):
    assert main(["fit", "--config", str(RECIPES / recipe), *FAST]) == 0


@pytest.mark.parametrize("recipe, writer", [("adcgan_cifar10.yaml", "write_cifar10"), ("adcgan_cifar100.yaml", "write_cifar100")])
def test_cifar_recipe_runs_one_step_shrunk(recipe, writer, in_tmp, monkeypatch):
    import _fake_datasets

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
    ckpt = in_tmp / "outputs" / "adcgan_digits" / "adcgan_digits.ckpt"  # the recipe's ModelCheckpoint
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
