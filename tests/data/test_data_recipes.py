"""The classifier recipes of the data area run one step through the CLI, on fake data in torchvision's formats."""

from pathlib import Path

import pytest
from _fake_datasets import write_cifar10, write_image_folder, write_mnist

from framework.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FAST = ["--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
CPU = ["--trainer.accelerator=cpu"]  # the GPU recipes smoke-test on the CPU


def test_toy2d_recipe(in_tmp):
    assert main(["fit", "--config", str(RECIPES / "classifier_toy2d.yaml"), *FAST]) == 0


@pytest.mark.parametrize(
    "recipe, folder", [("classifier_mnist.yaml", "MNIST"), ("classifier_fashion_mnist.yaml", "FashionMNIST")]
)
def test_mnist_recipes(recipe, folder, in_tmp):
    write_mnist(in_tmp / "data", folder, n_train=60, n_test=20)
    small = ["--data.init_args.val_size=10", "--data.init_args.batch_size=8", "--data.init_args.eval_batch_size=8"]
    assert main(["fit", "--config", str(RECIPES / recipe), *FAST, *CPU, *small]) == 0


def test_cifar10_resnet18_recipe_bf16_on_cpu(in_tmp, monkeypatch):
    write_cifar10(in_tmp / "data", monkeypatch, per_batch=4, n_test=8)
    small = ["--data.init_args.batch_size=4", "--data.init_args.eval_batch_size=4"]
    assert main(["fit", "--config", str(RECIPES / "classifier_cifar10_resnet18.yaml"), *FAST, *CPU, *small]) == 0


def test_image_folder_recipe(in_tmp):
    write_image_folder(in_tmp / "data" / "images", splits=("train", "val"), per_class=3, size=20)
    small = ["--data.init_args.num_workers=0", "--data.init_args.batch_size=4"]
    assert main(["fit", "--config", str(RECIPES / "classifier_image_folder.yaml"), *FAST, *CPU, *small]) == 0


def test_missing_data_is_exit_2(in_tmp, capsys):
    assert main(["fit", "--config", str(RECIPES / "classifier_mnist.yaml"), *FAST, *CPU]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass download: true" in err[0]
