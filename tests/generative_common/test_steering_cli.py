"""`lightning sample` with a steering classifier: unfit classifiers are one line and exit 2; NFE is reported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from framework.cli import main
from framework.models.classifier import Classifier

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
UNCOND = str(RECIPES / "diffusion_digits_uncond.yaml")


def _save(model, path):
    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer")
    torch.manual_seed(0)
    return {
        "digits": _save(Classifier(num_classes=10, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [16]}),
                        root / "digits.ckpt"),
        "three": _save(Classifier(num_classes=3, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [16]}),
                       root / "three.ckpt"),
        "points": _save(Classifier(num_classes=10, data_shape=(2,), net="mlp", net_args={"hidden": [16]}),
                        root / "points.ckpt"),
    }


def test_a_classifier_of_another_shape_is_one_line_and_exit_2(classifiers, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "framework", "sample", "--config", UNCOND, "--model.init_args.clean_classifier",
         classifiers["points"], "--guidance", "elucd", "--num_per_class", "1", "--output", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in proc.stderr  # besides Lightning's "Seed set to 0"
    assert errors[0].startswith("classzoo: error: clean_classifier:") and "shaped (2,)" in errors[0]


def test_a_classifier_of_another_class_count_is_one_line_and_exit_2(classifiers, tmp_path, capsys):
    args = ["sample", "--config", str(RECIPES / "diffusion_digits.yaml"), "--model.init_args.clean_classifier",
            classifiers["three"], "--guidance", "gfcg", "--num_per_class", "1", "--output", str(tmp_path / "o")]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "trained on 3 classes, the data have 10" in err[0]


@pytest.mark.parametrize("extra, nfe, classifier_evals", [
    (["--guidance", "elucd", "--guidance_scale", "1"], 3, 3),  # edm_heun, 2 steps = 3 net calls, 3 gradients
    (["--options", '{"search": "random", "search_args": {"n": 2}}'], 6, 2),  # 2 candidates, 2 scored
])
def test_sample_reports_nfe_and_classifier_evaluations(classifiers, tmp_path, extra, nfe, classifier_evals):
    out = tmp_path / "o"
    args = ["sample", "--config", UNCOND, "--model.init_args.clean_classifier", classifiers["digits"],
            "--steps", "2", "--num_per_class", "1", "--output", str(out), *extra]
    assert main(args) == 0
    config = json.loads((out / "sample_config.json").read_text())
    assert config["nfe"] == nfe and config["classifier_evaluations"] == classifier_evals
    assert len(json.loads((out / "sample_config.json").read_text())["options"]) >= 1
