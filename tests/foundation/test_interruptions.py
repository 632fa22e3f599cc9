"""Stops and interruptions: the final state is saved, Ctrl-C keeps finished files whole."""

from __future__ import annotations

import csv
import glob
import json
import os
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import framework.continual.base
import framework.io
from framework.cli import main
from framework.trainer import ClasszooTrainer

from .test_atomic_io import HalfWrite

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QUICKSTART = os.path.join(REPO, "recipes", "quickstart.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    # Lightning ignores SIGINT from the first Ctrl-C on; the rest of the session must not.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in handlers.items():
        signal.signal(s, handler)


class Tiny(L.LightningModule):
    """4 batches an epoch; with ``manual``, one optimizer step per batch as the GANs do theirs."""

    def __init__(self, manual: bool = False) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        if not self.automatic_optimization:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, model, checkpoint, **kwargs) -> ClasszooTrainer:
    trainer = ClasszooTrainer(
        default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[checkpoint, *kwargs.pop("callbacks", [])], **kwargs,
    )  # fmt: skip
    data = TensorDataset(torch.randn(16, 2))
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=16))
    return trainer


def _step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


class TerminateAt(L.Callback):
    """Send this process SIGTERM (as ``kill`` or a scheduler does) after training step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            signal.raise_signal(signal.SIGTERM)


class StopAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.should_stop = True


# -- the final state -------------------------------------------------------------------------
@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_a_run_stopped_by_max_steps_mid_epoch_saves_its_last_step(tmp_path, manual):
    # Validation (and with it Lightning's checkpoint) at step 8; the run stops at step 10.
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _fit(tmp_path, Tiny(manual), checkpoint, max_steps=10, check_val_every_n_epoch=2)
    assert trainer.global_step == 10
    assert _step(tmp_path / "ckpt" / "last.ckpt") == 10
    # The newest state replaces the top-1 file (no monitor: the latest), as at every epoch end.
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["epoch=3-step=10.ckpt", "last.ckpt"]


def test_a_run_stopped_by_a_callback_saves_its_last_step_and_keeps_the_best(tmp_path):
    # Validation at step 8; the stop at step 10 is in an epoch without validation.
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, monitor="val_loss")
    _fit(tmp_path, Tiny(), checkpoint, max_epochs=5, check_val_every_n_epoch=2, callbacks=[StopAt(10)])
    assert _step(tmp_path / "ckpt" / "last.ckpt") == 10
    # The monitored top-k is scored by validation, which the final step did not have.
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["epoch=1-step=8.ckpt", "last.ckpt"]


def test_the_final_save_comes_before_weight_averaging_swaps_the_weights(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    averaging = EMAWeightAveraging(decay=0.5)
    _fit(tmp_path, Tiny(), checkpoint, max_steps=10, check_val_every_n_epoch=2, callbacks=[averaging])
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 10
    # Saved after the swap, the training weights would be lost: both entries the average.
    assert not torch.equal(saved["current_model_state"]["layer.weight"], saved["state_dict"]["layer.weight"])


# -- Ctrl-C ------------------------------------------------------------------------------------
def _interrupt_write(monkeypatch, module, name: str, count: int) -> None:
    """Make the ``count``-th ``write_atomic`` of a file called ``name`` stop half-way with a KeyboardInterrupt."""
    real, calls = module.write_atomic, []

    def write(path, contents):
        if os.path.basename(path) == name:
            calls.append(path)
            if len(calls) == count:
                write_half = contents if callable(contents) else (lambda f: f.write(contents.encode()))
                return real(path, lambda f: write_half(HalfWrite(f, 20, KeyboardInterrupt())))
        return real(path, contents)

    monkeypatch.setattr(module, "write_atomic", write)


def _our_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith(("classzoo:", "lightning:"))]


def test_ctrl_c_while_last_ckpt_is_rewritten_keeps_it_and_the_run_resumes_from_it(in_tmp, monkeypatch, capsys):
    args = [
        "fit", "--config", QUICKSTART, *QUIET[:2], "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=0",
        "--trainer.max_epochs=2", "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath=ckpts",
        "--trainer.callbacks.save_last=true", "--trainer.callbacks.save_top_k=0",
        "--trainer.callbacks.every_n_train_steps=2",
    ]  # fmt: skip
    with monkeypatch.context() as patch:
        _interrupt_write(patch, framework.io, "last.ckpt", count=3)  # saves at steps 2, 4, then 6
        assert main(args) == 130
    (line,) = _our_lines(capsys.readouterr().err)
    last = os.path.abspath(os.path.join("ckpts", "last.ckpt"))
    assert line.endswith(f": interrupted at step 6; newest checkpoint {last} (resume: --ckpt_path {last})"), line
    assert os.listdir("ckpts") == ["last.ckpt"] and _step(last) == 4

    assert main([*args, "--ckpt_path", "last"]) == 0
    assert _step(last) == 8


def test_ctrl_c_while_results_are_written_leaves_the_previous_complete_files(in_tmp, monkeypatch, capsys):
    recipe = os.path.join(REPO, "recipes", "ncm_digits.yaml")
    _interrupt_write(monkeypatch, framework.continual.base, "metrics.json", count=3)  # after steps 0 and 1
    args = ["fit", "--config", recipe, *QUIET, "--trainer.default_root_dir=out", "--model.init_args.base_epochs=1"]
    assert main(args) == 130
    assert len(_our_lines(capsys.readouterr().err)) == 1
    with open(os.path.join("out", "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["steps_done"] == 2 and len(metrics["accuracy"]) == 2
    with open(os.path.join("out", "results.csv"), newline="") as f:
        assert [row["step"] for row in csv.DictReader(f)] == ["0", "1"]
    assert sorted(os.listdir("out")) == ["config.yaml", "metrics.json", "results.csv", "scenario.json"]  # no temp file


def test_sigterm_stops_the_run_with_one_line_and_exit_code_143(in_tmp, capsys):
    # Lightning alone ends such a run with exit code 0: a scheduler would count it as done.
    args = [
        "fit", "--config", QUICKSTART, *QUIET, "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1",
        "--trainer.max_epochs=2", f"--trainer.callbacks+={__name__}.TerminateAt", "--trainer.callbacks.step=6",
    ]  # fmt: skip
    assert main(args) == 143
    (line,) = _our_lines(capsys.readouterr().err)
    (saved,) = glob.glob(os.path.abspath("checkpoints/*.ckpt"))  # the end of epoch 0
    assert line.endswith(f": terminated (SIGTERM) at step 6; newest checkpoint {saved} (resume: --ckpt_path {saved})")
    assert _step(saved) == 4


def test_ctrl_c_before_the_run_starts_is_one_line_too(in_tmp, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("framework.cli.preprocess_args", interrupted)
    assert main(["fit", "--config", QUICKSTART]) == 130
    assert [line.split(": ", 1)[1] for line in _our_lines(capsys.readouterr().err)] == ["interrupted"]
