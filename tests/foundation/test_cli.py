"""The CLI: registry names in YAML, links, --print_config round trip, list, bad input, lightning-sdk."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import yaml

import framework
from framework.cli import main, resolve_config, run_cli
from framework.models.classifier import Classifier
from tests import _processes as processes

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "quickstart.yaml")
QUICKSTART = os.path.abspath(QUICKSTART)
FAST = ["--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one clear line, no traceback
    return err[0]


@pytest.mark.parametrize("form", ["classifier", "Classifier", "framework.models.classifier.Classifier"])
def test_model_named_by_key_class_name_or_import_path(form, in_tmp):
    config = yaml.safe_load(open(QUICKSTART))
    config["model"]["class_path"] = form
    config["data"] = "digits"
    (in_tmp / "r.yaml").write_text(yaml.safe_dump(config))
    cli = run_cli(["fit", "--config", "r.yaml", *FAST])
    assert type(cli.model) is Classifier
    # The data's shapes were linked into the model; the notebook's build() gives the same class.
    assert cli.model.num_classes == 10 and cli.model.data_shape == (1, 8, 8)
    assert type(framework.build("model", "classifier", num_classes=10)) is type(cli.model)
    assert type(cli.datamodule) is type(framework.build("data", "digits"))


def test_resolve_config_rewrites_nested_class_paths():
    config = {
        "model": "classifier",
        "data": {"class_path": "Digits", "init_args": {"inner": {"class_path": "digits"}}},
        "trainer": {"callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint"}]},
    }
    out = resolve_config(config)
    named = resolve_config({"trainer": {"callbacks": [{"class_path": "sample_grid"}]}})
    assert named["trainer"]["callbacks"][0]["class_path"] == "framework.callbacks.sample_grid.SampleGrid"
    assert out["model"] == "framework.models.classifier.Classifier"
    assert out["data"]["class_path"] == "framework.data.digits.DigitsDataModule"
    assert out["data"]["init_args"]["inner"]["class_path"] == "framework.data.digits.DigitsDataModule"
    assert out["trainer"] == config["trainer"]


def test_print_config_parses_again(in_tmp, capsys):
    assert main(["fit", "--config", QUICKSTART, "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "framework.models.classifier.Classifier" in printed
    (in_tmp / "printed.yaml").write_text(printed)
    assert main(["fit", "--config", "printed.yaml", *FAST]) == 0


def test_list_prints_every_kind_and_filters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("model:", "data:", "net:"):
        assert kind in out
    assert "classifier" in out and "Cross-entropy classifier" in out
    assert main(["list", "model"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model:") and "\nnet:" not in out and "digits" not in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["fit", "--config", QUICKSTART, "--model", "classifer"], "unknown model 'classifer'; did you mean 'classifier'"),
        (["fit", "--config", QUICKSTART, "--data", "digts"], "unknown data 'digts'; did you mean 'digits'"),
        (["fit", "--config", QUICKSTART, "--trainer.max_epochs", "abc"], "trainer.max_epochs: expected int"),
        (["fit", "--config", QUICKSTART, "--model.init_args.label_smoothing", "x"], "model.label_smoothing: expected float"),
        (["fit", "--config", "no/such/recipe.yaml"], "config file not found: no/such/recipe.yaml"),
        (["fit", "--config", QUICKSTART, "--model.init_args.net", "cnnn", *FAST], "unknown net 'cnnn'; did you mean 'cnn'"),
        (["list", "nothing"], "unknown kind 'nothing'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, expected, capsys, in_tmp):
    assert main(args) == 2
    line = _error_line(capsys)
    assert line.startswith(("lightning: error:", "classzoo: error:"))
    assert expected in line


def test_data_that_does_not_fit_the_net_is_a_config_error(capsys, in_tmp):
    # The mlp takes any shape, the cnn needs images: vectors from a custom DataModule do not fit.
    (in_tmp / "vecdata.py").write_text(
        textwrap.dedent(
            """
            import torch
            from framework.data.base import ClasszooDataModule, InMemoryDataset

            class Vectors(ClasszooDataModule):
                def __init__(self):
                    super().__init__(batch_size=8)
                    self.num_classes, self.class_names, self.data_shape = 2, ["a", "b"], (5,)

                def setup(self, stage=None):
                    x, y = torch.randn(16, 5), torch.arange(16) % 2
                    self.train_dataset = self.val_dataset = self.test_dataset = InMemoryDataset(x, y)
            """
        )
    )
    sys.path.insert(0, str(in_tmp))
    try:
        assert main(["fit", "--config", QUICKSTART, "--data", "vecdata.Vectors", *FAST]) == 2
        assert "net 'cnn' needs image data (C, H, W) but the data has shape (5,)" in _error_line(capsys)
        assert main(["fit", "--config", QUICKSTART, "--data", "vecdata.Vectors", "--model.init_args.net", "mlp", *FAST]) == 2
        assert "net 'mlp': got an unexpected keyword argument 'channels'" in _error_line(capsys)
        net_args = '--model.init_args.net_args={"hidden": [16]}'
        assert main(["fit", "--config", QUICKSTART, "--data", "vecdata.Vectors", "--model.init_args.net", "mlp", net_args, *FAST]) == 0
    finally:
        sys.path.remove(str(in_tmp))


def test_debug_shows_the_traceback(in_tmp):
    with pytest.raises(Exception, match="classifer"):
        main(["fit", "--config", QUICKSTART, "--model", "classifer", "--debug"])


def test_console_scripts_exit_2_on_bad_input(in_tmp):
    bindir = os.path.dirname(sys.executable)
    for script in ("lightning", "classzoo"):
        assert os.path.exists(os.path.join(bindir, script)), f"console script {script} not installed"
    proc = processes.run([sys.executable, "-m", "framework", "fit", "--config", QUICKSTART, "--model", "adcgn"], timeout=240)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown model 'adcgn'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_commands_that_are_not_ours_go_to_lightning_sdk(tmp_path):
    """Where lightning-sdk is installed and owns `lightning`, its sub-commands still work."""
    site = tmp_path / "site"
    (site / "lightning_sdk").mkdir(parents=True)
    (site / "lightning_sdk" / "__init__.py").write_text("")
    (site / "lightning_sdk" / "cli.py").write_text(
        "import sys\ndef main():\n    print('sdk got', sys.argv[1:])\n    return 0\n"
    )
    dist = site / "lightning_sdk-9.9.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lightning-sdk\nVersion: 9.9\n")
    (dist / "entry_points.txt").write_text("[console_scripts]\nlightning = lightning_sdk.cli:main\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import sys; from framework.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = processes.run([sys.executable, "-c", code, "login", "--x"], timeout=120, env=env)
    assert proc.returncode == 0 and "sdk got ['login', '--x']" in proc.stdout
    proc = processes.run([sys.executable, "-c", code, "list", "model"], timeout=120, env=env)
    assert proc.returncode == 0 and "classifier" in proc.stdout


def test_torch_threads_option_sets_torch_threads(in_tmp):
    import torch

    before = torch.get_num_threads()
    try:
        run_cli(["fit", "--config", QUICKSTART, "--torch_threads", "2", *FAST])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
