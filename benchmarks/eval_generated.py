"""Score generated samples with the evaluator classifier: accuracy and Fréchet distance in its feature space.

    python benchmarks/eval_generated.py --samples outputs/diffusion_digits/samples \
        --evaluator 'outputs/evaluator/lightning_logs/version_*/checkpoints/digits.ckpt' [--data digits] [--data_args '{"image_size": 8}']

Prints and returns (as a dict, from :func:`evaluate_samples`):

- ``accuracy``: the evaluator's top-1 accuracy on the generated samples against the labels
  they were generated for (per sample);
- ``fd_test`` / ``fd_train``: Fréchet distance between the generated samples and the real
  test / train split in the evaluator's penultimate feature space;
- ``fd_real``: the same distance between the real train and test splits (the floor a perfect
  generator of the training distribution would reach, up to sample-size bias);
- ``fd_ratio`` = ``fd_test / fd_real`` (issue bars: <= 2.5 for diffusion and flows, <= 3 for GANs);
- ``real_accuracy``: the evaluator's accuracy on the real test split (its own ceiling);
- ``accuracy_per_class``: the accuracy on the samples of each class, None for a class with
  no samples;
- the memorisation check (:func:`framework.metrics.memorization_check`, pixel space):
  ``nn_train_median`` (median distance of a generated sample to its nearest training image),
  ``nn_train_median_test`` (the same for the real test images), ``nn_ratio`` (their ratio:
  about 1 without memorisation, near 0 for copies) and ``near_copy_fraction`` (generated
  samples nearer to a training image than 95 % of the test images are; 0.05 expected).
- ``fd_real_equal`` / ``fd_ratio_equal``: the floor and the ratio at equal sample counts: the
  floor is the mean Fréchet distance to the test split of ``EQUAL_COUNT_SUBSETS`` (50) seeded
  subsets of the train split (in its stored order), each as large as the generated set
  (:func:`framework.metrics.frechet_distance_of_subsets`); ``fd_real_equal_sd`` is their
  standard deviation (the floor's own spread; the mean's standard error is sd / sqrt(50)).

The evaluator and the real features are computed once per checkpoint file and data (cached
in the process), so calling it in a loop over samplers or NFEs is cheap.

Other benchmarks import it: ``from eval_generated import evaluate_samples, ensure_evaluator``
(with ``benchmarks/`` on ``sys.path``). :func:`ensure_evaluator` trains the evaluator with
``recipes/evaluator_digits.yaml`` once (about a minute on 2 CPU cores) and reuses the checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# recipes/evaluator_digits.yaml writes under its run's log folder; the newest run's checkpoint.
#: Train subsets averaged into the equal-count floor (one subset alone moved the ratio by ~30 %).
EQUAL_COUNT_SUBSETS = 50
DEFAULT_EVALUATOR = ROOT / "outputs" / "evaluator" / "lightning_logs" / "version_*" / "checkpoints" / "digits.ckpt"


def ensure_evaluator(
    path: str | os.PathLike = DEFAULT_EVALUATOR, recipe: str = "recipes/evaluator_digits.yaml"
) -> Path:
    """The evaluator checkpoint at ``path`` (a pattern: its newest match), trained first with ``lightning fit --config recipe`` if it is missing.

    The recipe's ModelCheckpoint must write ``path`` (``recipes/evaluator_digits.yaml`` writes
    the default); it keeps the last epoch (never selected on test data).
    """
    from framework.errors import ConfigError
    from framework.loading import resolve_checkpoint

    try:
        found = Path(resolve_checkpoint(path, "evaluator"))
    except ConfigError:  # a pattern that matches nothing yet
        found = None
    if found is not None and found.is_file():
        return found
    command = [sys.executable, "-m", "framework", "fit", "--config", str(ROOT / recipe)]
    print("training the evaluator:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    found = Path(resolve_checkpoint(path, "evaluator"))
    if not found.is_file():
        raise FileNotFoundError(f"{recipe} did not write {path}")
    return found


def _datamodule(data: Any, data_args: dict[str, Any] | None):
    if not isinstance(data, str):
        return data
    import framework

    return framework.build("data", data, **(data_args or {}))


def _reference(evaluator: Any, data: Any, data_args: dict[str, Any] | None) -> tuple:
    """Extractor, real train/test features, test logits and labels; cached for a checkpoint file and data name."""
    if isinstance(evaluator, torch.nn.Module) or not isinstance(data, str):
        return _compute_reference(evaluator, data, data_args)
    from framework.loading import resolve_checkpoint

    path = Path(resolve_checkpoint(evaluator, "evaluator"))  # a pattern: its newest match
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    return _cached_reference(str(path), stamp, data, json.dumps(data_args or {}, sort_keys=True))


@functools.lru_cache(maxsize=4)
def _cached_reference(path: str, stamp: int | None, data: str, data_args: str) -> tuple:
    # The modification time is part of the key: a retrained evaluator is not served from the cache.
    return _compute_reference(path, data, json.loads(data_args))


def _compute_reference(evaluator: Any, data: Any, data_args: dict[str, Any] | None) -> tuple:
    from framework.metrics import ClassifierFeatures, extract

    if isinstance(evaluator, torch.nn.Module):
        extractor = (
            evaluator if hasattr(evaluator, "features_and_logits") else ClassifierFeatures.from_module(evaluator)
        )
    else:
        extractor = ClassifierFeatures(str(evaluator))
    datamodule = _datamodule(data, data_args)
    datamodule.setup("fit")
    datamodule.setup("test")
    # The train split in its stored order (the training loader's shuffle is seeded per
    # process): the equal-count subsets of the floor are then the same in every process.
    with torch.no_grad():
        train_features, _ = extract(extractor, datamodule.ordered_dataloader("train"))
        test_features, test_logits = extract(extractor, datamodule.test_dataloader())
    test_labels = torch.cat([y for _, y in datamodule.test_dataloader()])
    train_images = torch.cat([x for x, _ in datamodule.ordered_dataloader("train")])
    test_images = torch.cat([x for x, _ in datamodule.test_dataloader()])
    return extractor, train_features, test_features, test_logits, test_labels, train_images, test_images


def evaluate_samples(
    samples: str | os.PathLike | tuple[np.ndarray, np.ndarray],
    evaluator: str | os.PathLike | torch.nn.Module = DEFAULT_EVALUATOR,
    data: Any = "digits",
    data_args: dict[str, Any] | None = None,
    batch_size: int = 500,
    verbose: bool = True,
) -> dict[str, float]:
    """Evaluator accuracy and Fréchet distances of generated samples (see the module docstring).

    Args:
        samples: ``samples.npz`` (or its directory), or ``(images, labels)`` arrays.
        evaluator: A ``classifier`` checkpoint path, or a classifier module already in memory.
        data: Registry name of the real data (or a DataModule instance).
        data_args: Arguments of the DataModule (must give the same split as the evaluator's training).
        batch_size: Batch size of feature extraction.
        verbose: Print the figures.
    """
    from framework.generative.output import load_samples
    from framework.metrics import extract, frechet_distance_of_features, frechet_distance_of_subsets, memorization_check

    images, labels = load_samples(samples) if not isinstance(samples, tuple) else samples
    images, labels = torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int64)
    start = time.perf_counter()
    extractor, train_features, test_features, test_logits, test_labels, train_images, test_images = _reference(
        evaluator, data, data_args
    )
    with torch.no_grad():
        gen_features, gen_logits = extract(extractor, images, batch_size)
    correct = (gen_logits.argmax(1) == labels).double()

    fd_test = frechet_distance_of_features(gen_features, test_features).item()
    fd_real = frechet_distance_of_features(train_features, test_features).item()
    result = {
        "num_samples": len(labels),
        "accuracy": correct.mean().item(),
        "fd_test": fd_test,
        "fd_train": frechet_distance_of_features(gen_features, train_features).item(),
        "fd_real": fd_real,
        "fd_ratio": fd_test / fd_real,
        "real_accuracy": (test_logits.argmax(1) == test_labels).double().mean().item(),
        "num_train": len(train_features),
        "num_test": len(test_features),
        "eval_seconds": time.perf_counter() - start,
        "accuracy_per_class": [
            round(correct[labels == c].mean().item(), 4) if (labels == c).any() else None
            for c in range(test_logits.shape[1])
        ],
        **memorization_check(images, train_images, test_images),
    }
    floor = frechet_distance_of_subsets(train_features, test_features, len(labels), EQUAL_COUNT_SUBSETS, seed=0)
    result["fd_real_equal"] = floor.mean().item()
    result["fd_real_equal_sd"] = floor.std().item() if len(floor) > 1 else 0.0
    result["fd_real_equal_subsets"] = len(floor)
    result["fd_ratio_equal"] = fd_test / result["fd_real_equal"]
    if verbose:
        print(format_result(result))
    return result


def digits_bits_per_dim(model: Any, count: int) -> dict:
    """Bits/dim of the first ``count`` test digits, dequantised within their 17 levels.

    ``model`` is any generator with ``log_likelihood(x, labels, divergence=..., seeds=...)``
    (diffusion: the PF-ODE; flow: the change of variables), Hutchinson-Rademacher. Test digit
    i is dequantised with seed ``sample_seeds(i, 0)`` and probed with ``sample_seeds(i, 1)``,
    so its estimate does not depend on ``count`` or on its batch-mates.
    """
    from framework.data.digits import DigitsDataModule
    from framework.generative.likelihood import dequantize
    from framework.generative.output import sample_seeds

    data = DigitsDataModule()
    data.setup("test")
    x, y = data.test_dataset.x[:count], data.test_dataset.y[:count]
    index = torch.arange(len(x))
    start = time.perf_counter()
    x = dequantize(x, levels=17, seeds=sample_seeds(index, 0))
    result = model.log_likelihood(x, y, divergence="hutchinson", seeds=sample_seeds(index, 1))
    bpd = result.bits_per_dim(levels=17)
    return {"count": count, "bpd": round(bpd.mean().item(), 4), "bpd_sem": round((bpd.std() / count**0.5).item(), 4),
            "nfe": result.nfe, "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def format_result(result: dict[str, float]) -> str:
    """The figures as aligned ``name  value`` lines."""
    return "\n".join(f"{k:>18}  {v:.4f}" if isinstance(v, float) else f"{k:>18}  {v}" for k, v in result.items())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", required=True, help="samples.npz or the directory holding it")
    parser.add_argument(
        "--evaluator", default=None, help=f"classifier checkpoint (default: train one at {DEFAULT_EVALUATOR})"
    )
    parser.add_argument("--data", default="digits", help="registry name of the real data")
    parser.add_argument("--data_args", default="{}", help="JSON arguments of the DataModule")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    evaluator = args.evaluator or ensure_evaluator()
    result = evaluate_samples(args.samples, evaluator, args.data, json.loads(args.data_args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
