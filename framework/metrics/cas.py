"""Classification Accuracy Score (Ravuri & Vinyals 2019): a classifier trained only on generated samples, tested on real data.

:func:`classification_accuracy_score` runs two arms of one classifier recipe through the CLI:
trained from scratch on the real training split, and on the ``generated`` DataModule (the same
size and label distribution, drawn from the generator checkpoint); both are tested on the real
test split with the weights of their last epoch (nothing is selected on test data). ``CAS /
real accuracy`` says how much of the real data's use for classification the samples keep.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from framework.errors import ConfigError

__all__ = ["classification_accuracy_score", "data_section"]

_LOADER_ARGS = ("batch_size", "eval_batch_size", "num_workers")


def _load_recipe(path: str | os.PathLike, role: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"{role} recipe not found: {path}")
    with open(path) as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict) or "data" not in config:
        raise ConfigError(f"{role} recipe {path} has no data section")
    return config


def data_section(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(class_path, init_args)`` of a recipe's data section (``data: digits`` or the dict form)."""
    data = config["data"]
    if isinstance(data, str):
        return data, {}
    return data["class_path"], dict(data.get("init_args") or {})


def _fit_and_test(config: dict[str, Any], root: Path, extra: Sequence[str]) -> float:
    from framework.cli import run_cli

    text = yaml.safe_dump(config, sort_keys=False)
    cli = run_cli(["fit", "--config", text, "--trainer.default_root_dir", str(root), *extra])
    (metrics,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    if "test/acc" not in metrics:
        raise ConfigError(f"the classifier recipe's model logs no test/acc (it logged {sorted(metrics)})")
    return float(metrics["test/acc"])


def classification_accuracy_score(
    generator: str,
    classifier_recipe: str | os.PathLike,
    generator_recipe: str | os.PathLike | None = None,
    root: str | os.PathLike = "runs/cas",
    generated_args: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    real_arm: bool = True,
) -> dict[str, float]:
    """CAS of ``generator`` with the classifier of ``classifier_recipe``, beside its real-data accuracy.

    Args:
        generator: Checkpoint of a trained class-conditional generator.
        classifier_recipe: A classifier recipe (``recipes/quickstart.yaml``); its model, trainer
            and seed serve both arms.
        generator_recipe: The recipe that trained the generator: its data section is the real
            data of both arms (default: the classifier recipe's).
        root: Directory of the two runs (``real/``, ``generated/``) and of the generated-set cache.
        generated_args: Further arguments of the ``generated`` DataModule (``sampler``,
            ``steps``, ``guidance``, ``num_samples``, ...).
        overrides: Extra CLI arguments for both arms (``--trainer.max_epochs=5``).
        real_arm: Also train on the real data (False: CAS only).

    Returns:
        ``cas``, and with the real arm ``real_accuracy`` and ``ratio`` = cas / real_accuracy.
    """
    root = Path(root)
    classifier = _load_recipe(classifier_recipe, "classifier")
    source = _load_recipe(generator_recipe, "generator") if generator_recipe else classifier
    real, real_args = data_section(source)
    _, classifier_data_args = data_section(classifier)
    loaders = {k: classifier_data_args[k] for k in _LOADER_ARGS if k in classifier_data_args}
    real_args = {k: v for k, v in real_args.items() if k not in _LOADER_ARGS}

    result: dict[str, float] = {}
    if real_arm:
        config = copy.deepcopy(classifier)
        config["data"] = {"class_path": real, "init_args": {**real_args, **loaders}}
        result["real_accuracy"] = _fit_and_test(config, root / "real", overrides)
    config = copy.deepcopy(classifier)
    config["data"] = {
        "class_path": "generated",
        "init_args": {"generator": str(generator), "real": real, "real_args": real_args, "cache_dir": str(root / "cache"),
                      **loaders, **(generated_args or {})},
    }
    result["cas"] = _fit_and_test(config, root / "generated", overrides)
    if real_arm:
        result["ratio"] = result["cas"] / result["real_accuracy"] if result["real_accuracy"] > 0 else float("nan")
    return result
