"""A ckpt_path that is not a checkpoint, or a checkpoint of another model: one line, exit 2.

Whatever the sub-command (fit, validate, test, predict, sample): never a traceback.
"""

from __future__ import annotations

import glob
import os
import sys

import pytest
import torch

from framework.cli import main
from tests.conftest import REPO
from tests import _processes as processes

QUICKSTART = os.path.join(REPO, "recipes", "quickstart.yaml")
FLOW = os.path.join(REPO, "recipes", "flow_toy2d.yaml")
DIFFUSION = os.path.join(REPO, "recipes", "diffusion_toy2d.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def _command(cmd: str, config: str, ckpt: str) -> list[str]:
    if cmd == "sample":
        return ["sample", "--config", config, "--ckpt_path", ckpt, "--num_per_class", "1", "--output", "out", *QUIET]
    return [cmd, "--config", config, "--ckpt_path", ckpt, "--trainer.fast_dev_run=1", *QUIET]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(("lightning: error:", "classzoo: error:")), err
    return lines[0]


@pytest.fixture(scope="module")
def flow_ckpt(tmp_path_factory):
    """A real checkpoint of a flow model on 8gaussians (9 classes), from a 1-step fit."""
    root = tmp_path_factory.mktemp("flow_ckpt")
    args = ["fit", "--config", FLOW, "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
            f"--trainer.default_root_dir={root}", "--torch_threads=1",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    assert main(args) == 0
    (path,) = glob.glob(str(root / "**" / "*.ckpt"), recursive=True)[:1]
    return path


@pytest.fixture
def corrupt(tmp_path):
    path = tmp_path / "corrupt.ckpt"
    path.write_text("this is not a checkpoint\n")
    return str(path)


@pytest.mark.parametrize("cmd", ["fit", "validate", "test", "predict", "sample"])
def test_corrupt_file_is_one_line(cmd, corrupt, capsys, in_tmp):
    config = DIFFUSION if cmd == "sample" else QUICKSTART
    assert main(_command(cmd, config, corrupt)) == 2
    assert f"ckpt_path {corrupt} is not a readable checkpoint" in _error_line(capsys)


@pytest.mark.parametrize("cmd", ["fit", "sample"])  # the check runs before any sub-command's own code
def test_checkpoint_of_another_model_class_is_one_line(cmd, flow_ckpt, capsys, in_tmp):
    config = DIFFUSION if cmd == "sample" else QUICKSTART
    assert main(_command(cmd, config, flow_ckpt)) == 2
    line = _error_line(capsys)
    assert "is a checkpoint of framework.generative.flow.model.FlowMatching, but the config's model is" in line


def test_checkpoint_of_another_configuration_is_one_line(flow_ckpt, capsys, in_tmp):
    # The same class, but 3 classes (moons) instead of 9: the label embedding does not fit.
    args = _command("fit", FLOW, flow_ckpt) + ["--data.init_args.distribution=moons"]
    assert main(args) == 2
    line = _error_line(capsys)
    assert "does not fit FlowMatching" in line and "size mismatch" in line


def test_missing_file_and_a_file_without_state_dict(tmp_path, capsys, in_tmp):
    assert main(_command("validate", QUICKSTART, str(tmp_path / "nothing.ckpt"))) == 2
    assert "checkpoint not found" in _error_line(capsys)
    torch.save({"epoch": 3}, tmp_path / "plain.pt")
    assert main(_command("validate", QUICKSTART, str(tmp_path / "plain.pt"))) == 2
    assert "is not a Lightning checkpoint (it has no 'pytorch-lightning_version')" in _error_line(capsys)


def test_console_script_corrupt_checkpoint_exits_2_without_traceback(corrupt, tmp_path):
    proc = processes.run(
        [sys.executable, "-m", "framework", "fit", "--config", QUICKSTART, "--ckpt_path", corrupt, *QUIET],
        cwd=tmp_path, timeout=240,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "is not a readable checkpoint" in errors[0], proc.stderr


def test_checkpoint_patterns_resolve_to_the_newest_match(tmp_path, capsys, in_tmp):
    from framework.errors import ConfigError
    from framework.loading import resolve_checkpoint

    for version, stamp in ((0, 1_000_000), (1, 3_000_000), (2, 2_000_000)):
        path = tmp_path / "lightning_logs" / f"version_{version}" / "checkpoints" / "x.ckpt"
        path.parent.mkdir(parents=True)
        path.write_text("")
        os.utime(path, (stamp, stamp))
    pattern = str(tmp_path / "lightning_logs" / "version_*" / "checkpoints" / "x.ckpt")
    assert resolve_checkpoint(pattern).endswith("version_1/checkpoints/x.ckpt")  # newest, not the highest version
    assert resolve_checkpoint(str(tmp_path / "plain.ckpt")) == str(tmp_path / "plain.ckpt")  # no pattern: as given
    with pytest.raises(ConfigError, match="no checkpoint matches"):
        resolve_checkpoint(str(tmp_path / "nothing_*" / "x.ckpt"))
    # --ckpt_path takes a pattern too; one that matches nothing is one line.
    assert main(_command("validate", QUICKSTART, str(tmp_path / "nothing_*.ckpt"))) == 2
    assert "no checkpoint matches" in _error_line(capsys)


def test_ckpt_path_pattern_names_the_checkpoint(flow_ckpt, in_tmp):
    pattern = os.path.join(os.path.dirname(flow_ckpt), "*.ckpt")
    assert main(_command("validate", FLOW, pattern) + ["--trainer.limit_val_batches=1"]) == 0
