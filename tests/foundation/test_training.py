"""End-to-end training through the CLI: quickstart accuracy, exact resume, DDP over gloo."""

from __future__ import annotations

import glob
import os
import sys

import torch

from framework.cli import main, run_cli
import pytest

from tests import _processes as processes

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QUICKSTART = os.path.join(REPO, "recipes", "quickstart.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_quickstart_reaches_97_percent_on_digits_test(in_tmp):
    cli = run_cli(["fit", "--config", QUICKSTART, *QUIET])
    (result,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    assert result["test/acc"] >= 0.97, result
    assert glob.glob("lightning_logs/version_0/checkpoints/*.ckpt")
    assert os.path.exists("lightning_logs/version_0/metrics.csv")


def _final_weights(root: str) -> dict[str, torch.Tensor]:
    (ckpt,) = glob.glob(f"{root}/lightning_logs/*/checkpoints/*.ckpt")
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(in_tmp):
    # Dropout, shuffling and AdamW state all matter here: resuming must restore each.
    common = ["--config", QUICKSTART, *QUIET, "--trainer.deterministic=true", "--trainer.limit_train_batches=5"]
    assert main(["fit", *common, "--trainer.max_epochs=3", "--trainer.default_root_dir=full"]) == 0
    assert main(["fit", *common, "--trainer.max_epochs=1", "--trainer.default_root_dir=part"]) == 0
    (ckpt,) = glob.glob("part/lightning_logs/*/checkpoints/*.ckpt")
    assert main(["fit", *common, "--trainer.max_epochs=3", "--trainer.default_root_dir=resumed", "--ckpt_path", ckpt]) == 0
    full, resumed = _final_weights("full"), _final_weights("resumed")
    part = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert any(not torch.equal(full[k], part[k]) for k in full)  # training did move on after the stop
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)


# Longer than the suite's 300 s: the process timeout (300 s) fails first, with its own message.
@pytest.mark.timeout(360)
def test_ddp_cpu_recipe_runs_two_processes_over_gloo_and_writes_one_checkpoint(in_tmp):
    args = [
        sys.executable, "-m", "framework", "fit", "--config", os.path.join(REPO, "recipes", "ddp_cpu.yaml"), *QUIET,
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_TORCH_DISTRIBUTED_BACKEND": "gloo"}
    proc = processes.run(args, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2" in proc.stderr + proc.stdout or "distributed_backend=gloo" in proc.stderr + proc.stdout
    checkpoints = glob.glob("lightning_logs/*/checkpoints/*.ckpt")
    assert len(checkpoints) == 1, checkpoints
