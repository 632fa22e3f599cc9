"""Classification Accuracy Score: a classifier trained on label-permuted samples scores near chance on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from framework.data.generated import GeneratedDataModule
from framework.errors import ConfigError
from framework.metrics.cas import classification_accuracy_score
from tests.compositions._generators import PermutedLabelGenerator, save_checkpoint

QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"
SHORT = ["--trainer.max_epochs=4", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--trainer.logger=false", "--trainer.enable_checkpointing=false"]



def test_generated_split_has_the_real_labels_and_real_evaluation_splits(tmp_path):
    path = save_checkpoint(PermutedLabelGenerator(shift=3), tmp_path / "g.ckpt")
    dm = GeneratedDataModule(generator=path, cache_dir=str(tmp_path / "cache"), batch_size=32)
    dm.setup("fit")
    real = dm.real
    assert torch.equal(dm.train_dataset.y, real.train_dataset.y)  # same size, same label distribution
    assert dm.val_dataset is real.val_dataset and dm.test_dataset is real.test_dataset
    # sample i is an image of class (label + 3) % 10 chosen by its seed: a real image, wrongly labelled
    x, y = dm.train_dataset.x, dm.train_dataset.y
    row = real.train_dataset.x.flatten(1)
    match = (x[:5].flatten(1)[:, None] == row[None]).all(-1).float().argmax(1)
    assert torch.equal(real.train_dataset.y[match], (y[:5] + 3) % 10)
    # cached by checkpoint and options: a second module reads the same file
    (cached,) = list((tmp_path / "cache").glob("generated-*.npz"))
    again = GeneratedDataModule(generator=path, cache_dir=str(tmp_path / "cache"))
    again.setup("fit")
    assert torch.equal(again.train_dataset.x, x)
    with np.load(cached) as data:
        assert data["images"].shape == (len(y), 1, 8, 8)
    other = GeneratedDataModule(generator=path, cache_dir=str(tmp_path / "cache"), num_samples=50, seed=1)
    other.setup("fit")
    assert len(other.train_dataset) == 50 and len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_a_generator_that_does_not_fit_the_data_is_one_config_error(tmp_path):
    path = save_checkpoint(PermutedLabelGenerator(num_classes=10, data_shape=(1, 8, 8)), tmp_path / "g.ckpt")
    with pytest.raises(ConfigError, match="shaped \\(1, 8, 8\\), the data are \\(1, 16, 16\\)"):
        GeneratedDataModule(generator=path, real_args={"image_size": 16})
    with pytest.raises(ConfigError, match="does not take 'steps'"):
        GeneratedDataModule(generator=path, steps=3).setup("fit")


def test_cas_of_a_label_permuting_generator_is_near_chance(in_tmp):
    permuted = save_checkpoint(PermutedLabelGenerator(shift=1), in_tmp / "permuted.ckpt")
    result = classification_accuracy_score(permuted, QUICKSTART, root=in_tmp / "cas", overrides=SHORT)
    assert result["real_accuracy"] > 0.85, result
    assert result["cas"] < 0.2, result  # chance is 0.1: every training label is off by one
    assert result["ratio"] == pytest.approx(result["cas"] / result["real_accuracy"])
    faithful = save_checkpoint(PermutedLabelGenerator(shift=0), in_tmp / "faithful.ckpt")
    assert classification_accuracy_score(faithful, QUICKSTART, root=in_tmp / "cas0", overrides=SHORT, real_arm=False)["cas"] > 0.85


def test_a_gan_checkpoint_is_drawn_through_its_generate_interface(tmp_path):
    """CAS of a GAN: the ``generated`` set is its EMA generator's samples, sample i from seed i; options reach ``generate``."""
    from framework.generative.gan.module import ADCGAN
    from framework.generative.output import sample_seeds

    torch.manual_seed(0)
    gan = ADCGAN(num_classes=10, generator_args={"channels": 4, "latent_dim": 8}, discriminator_args={"channels": 4})
    with torch.no_grad():  # an EMA generator unlike G, so that the two draws below differ
        for p in gan.generator_ema.parameters():
            p.add_(0.3 * torch.randn_like(p))
    path = save_checkpoint(gan, tmp_path / "adcgan.ckpt")
    dm = GeneratedDataModule(generator=path, num_samples=24, seed=5, generation_batch_size=7)
    dm.setup("fit")
    x, y = dm.train_dataset.x, dm.train_dataset.y
    gan.eval()
    expected = gan.generate(y, sample_seeds(torch.arange(24), 5)).clamp(-1, 1)  # EMA G by default
    torch.testing.assert_close(x, expected)
    raw = GeneratedDataModule(generator=path, num_samples=24, seed=5, sample_options={"use_ema": False})
    raw.setup("fit")
    torch.testing.assert_close(raw.train_dataset.x, gan.generate(y, sample_seeds(torch.arange(24), 5), use_ema=False).clamp(-1, 1))
    assert (raw.train_dataset.x - x).abs().max() > 0.05
    with pytest.raises(ConfigError, match="does not take 'steps'"):
        GeneratedDataModule(generator=path, steps=2).setup("fit")  # a GAN has no sampler steps: one line, not a TypeError


def test_cas_script_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    import importlib.util

    from framework.generative.gan.module import ADCGAN

    spec = importlib.util.spec_from_file_location("cas_script", Path(__file__).resolve().parents[2] / "benchmarks" / "cas.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = save_checkpoint(ADCGAN(num_classes=10, generator_args={"channels": 4, "latent_dim": 8},
                                  discriminator_args={"channels": 4}), tmp_path / "adcgan.ckpt")
    base = ["--ckpt", path, "--generator-recipe", str(QUICKSTART.parent / "adcgan_digits.yaml"), "--no-real",
            "--root", str(tmp_path / "cas")]
    assert script.cli([*base, "--generated-args", '{"steps": 2}', "--", *SHORT]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not take 'steps'" in err, err
    with pytest.raises(SystemExit) as stop:
        script.cli([*base, "--generated-args", "{steps: 2}"])
    assert stop.value.code == 2 and "not JSON" in capsys.readouterr().err
