"""Every diffusion recipe parses and runs one step (fast_dev_run) through the CLI."""

import glob
import inspect
import os
import warnings

import pytest
import torch
import yaml

from framework.callbacks import HalfLifeEMA
from framework.cli import resolve_class_path, run_cli
from framework.generative.diffusion import Diffusion, NoisyClassifier

RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")
FAST = ["--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# GPU recipes run here on CPU, on digits, with a small net: the point is that they parse and wire up.
ON_CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.precision=32-true"]
SMALL_NET = {
    "unet": ['--model.init_args.net_args={"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": []}'],
    "dit": ['--model.init_args.net_args={"hidden_size": 16, "depth": 1, "num_heads": 2, "patch_size": 2}'],
    "song_unet": ['--model.init_args.net_args={"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": []}'],
}
# the diffusion_classifier composition needs a trained generator: tests/compositions runs it
RECIPE_FILES = sorted(
    p for p in glob.glob(os.path.join(RECIPES, "diffusion_*.yaml")) if not p.endswith("_classifier_digits.yaml")
) + [os.path.join(RECIPES, "noisy_classifier_digits.yaml")]


@pytest.mark.parametrize("recipe", RECIPE_FILES, ids=os.path.basename)
def test_recipe_runs_one_step(recipe, in_tmp):
    args = ["fit", "--config", os.path.abspath(recipe), *FAST]
    if "cifar10" in recipe:
        with open(recipe) as f:
            net = yaml.safe_load(f)["model"]["init_args"]["net"]
        args += [*ON_CPU, "--data=digits", *SMALL_NET[net]]
    cli = run_cli(args)
    assert isinstance(cli.model, (Diffusion, NoisyClassifier))
    assert cli.trainer.global_step == 1
    if isinstance(cli.model, Diffusion):
        assert cli.model.num_classes == cli.datamodule.num_classes


def test_fit_then_sample_through_the_cli(in_tmp):
    """`lightning fit` then `lightning sample` with a sampler, steps and guidance from the command line."""
    import numpy as np

    from framework.cli import main

    recipe = os.path.abspath(os.path.join(RECIPES, "diffusion_digits.yaml"))
    tiny = SMALL_NET["unet"]
    fit = ["fit", "--config", recipe, *tiny, "--trainer.limit_train_batches=2", "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1",
           "--trainer.limit_val_batches=1",
           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
           f"--trainer.default_root_dir={in_tmp}"]
    assert main(fit) == 0
    ckpt = max(glob.glob(str(in_tmp / "**" / "*.ckpt"), recursive=True))
    sample = ["sample", "--config", recipe, *tiny, "--ckpt_path", ckpt, "--num_per_class", "2",
              "--output", str(in_tmp / "out"), "--sampler", "dpmpp_2m", "--steps", "3",
              "--guidance", "cfg", "--guidance_scale", "2.0"]
    assert main(sample) == 0
    with np.load(in_tmp / "out" / "samples.npz") as f:
        images, labels = f["images"], f["labels"]
    assert images.shape == (20, 1, 8, 8) and images.dtype == np.float32
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert (in_tmp / "out" / "grid.png").exists()


def test_edm_recipe_follows_edm_train_py():
    """NVlabs/edm `train.py --cond=1 --arch=ddpmpp` (and `training_loop.py`'s defaults), number by number."""
    with open(os.path.join(RECIPES, "diffusion_cifar10_edm.yaml")) as f:
        config = yaml.safe_load(f)
    trainer, model, data = config["trainer"], config["model"]["init_args"], config["data"]["init_args"]
    batch = trainer["devices"] * data["batch_size"] * trainer.get("accumulate_grad_batches", 1)
    assert batch == 512
    assert (trainer["max_steps"] - 1) * batch < 200e6 <= trainer["max_steps"] * batch  # --duration 200 Mimg
    assert trainer["precision"] == "bf16-mixed"  # ours; EDM's --fp16 off is 32-true (said in the recipe)
    (ema,) = [c for c in trainer["callbacks"] if "ema" in c["class_path"].lower()]
    assert resolve_class_path(ema["class_path"], None) == f"{HalfLifeEMA.__module__}.{HalfLifeEMA.__name__}"
    assert ema["init_args"] == {"halflife_kimg": 500, "rampup_ratio": 0.05}  # --ema 0.5 Mimg, ema_rampup_ratio
    assert model["net_args"]["dropout"] == 0.13 and model["augment_p"] == 0.12 and model["label_dropout"] == 0
    # --arch=ddpmpp: SongUNet, positional embedding, channel_mult_noise 1, resample_filter [1,1],
    # model_channels 128, channel_mult [2,2,2]; SongUNet's defaults num_blocks 4, attn_resolutions [16],
    # channel_mult_emb 4; --cond=1 with CIFAR-10's 10 labels and --augment 0.12's augment_dim 9.
    assert model["net"] == "song_unet"
    assert model["net_args"] == {
        "model_channels": 128, "channel_mult": [2, 2, 2], "num_blocks": 4, "attn_resolutions": [16], "dropout": 0.13,
        "embedding": "positional", "channel_mult_noise": 1, "resample_filter": [1, 1],
    }
    net = Diffusion(num_classes=10, data_shape=(3, 32, 32), net=model["net"], net_args=model["net_args"],
                    augment_p=model["augment_p"]).net
    defaults = inspect.signature(type(net)).parameters
    assert defaults["channel_mult_emb"].default == 4 and defaults["adaptive_scale"].default is False
    assert net.augment_dim == 9 and net.num_classes == 10
    assert sum(p.numel() for p in net.parameters()) == 55_735_299  # EDM's SongUNet at these settings
    assert model["grad_nan_to_num"] is True  # training_loop.py's nan_to_num of the gradients
    assert "augment_args" not in model  # train.py's multipliers are the pipeline's defaults
    assert data["horizontal_flip"] is False and data["crop_padding"] == 0  # --xflip off
    # Adam(lr 1e-3, betas (0.9, 0.999), eps 1e-8) on a loss summed over pixels = eps / pixels on our mean.
    adam = model["optimizer"]["init_args"]
    assert adam["lr"] == 1e-3 and adam["betas"] == [0.9, 0.999]
    assert adam["eps"] * 3 * 32 * 32 == pytest.approx(1e-8, rel=1e-6)
    # lr_rampup_kimg 10000: step k trains at lr * min(k * batch / 1e7, 1).
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], **adam)
    scheduler = getattr(torch.optim.lr_scheduler, model["scheduler"]["class_path"].rsplit(".", 1)[1])
    scheduler = scheduler(opt, **model["scheduler"]["init_args"])
    worst = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the scheduler without optimizer steps
        for k in range(21000):
            worst = max(worst, abs(opt.param_groups[0]["lr"] - adam["lr"] * min(k * batch / 1e7, 1)))
            scheduler.step()
    assert worst < 1.5e-5 * adam["lr"]


def test_vp_recipe_samples_as_score_sde_vp_config():
    """score_sde configs/vp/cifar10_ddpmpp_continuous.py: predictor euler_maruyama, corrector none,
    N = 1000 (default_cifar10_configs' model.num_scales), noise_removal (our samplers' final denoise)."""
    with open(os.path.join(RECIPES, "diffusion_cifar10_vp.yaml")) as f:
        model = yaml.safe_load(f)["model"]["init_args"]
    assert model["formulation"] == "vp" and model["formulation_args"] == {"beta_min": 0.1, "beta_max": 20.0}
    assert model["sampler"] == "euler_maruyama" and model["steps"] == 1000
    assert "snr" not in (model.get("sampler_args") or {})  # no Langevin corrector
    built = Diffusion(num_classes=10, data_shape=(1, 8, 8), net_args={"channels": 8, "channel_mult": (1,), "num_res_blocks": 1,
                      "attn_resolutions": ()}, sampler=model["sampler"], steps=model["steps"])
    assert built.sample_defaults["sampler"] == "euler_maruyama"
