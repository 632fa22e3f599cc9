"""The ``generated`` DataModule: a real DataModule whose training split is replaced by generated samples.

Training a classifier from scratch on it and testing it on the real test split gives the
Classification Accuracy Score (Ravuri & Vinyals 2019): ``lightning fit --config
recipes/quickstart.yaml --data generated --data.generator CKPT`` then ``lightning test``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import registry
from framework.data.base import ClasszooDataModule, InMemoryDataset
from framework.errors import ConfigError
from registry import register

__all__ = ["GeneratedDataModule", "generate_dataset", "file_digest"]


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _import(path: str) -> type:
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ConfigError(f"real: cannot import the DataModule {path}") from None


@torch.no_grad()
def generate_dataset(
    generator: Any, labels: Tensor, seed: int = 0, batch_size: int = 500, **options: Any
) -> Tensor:
    """Sample ``i`` of class ``labels[i]`` from the per-sample seed ``sample_seeds(i, seed)``, batch by batch.

    Images are clamped to [-1, 1]; sample i depends on (i, labels[i], seed, options) only.
    """
    from framework.generative.output import check_options, sample_seeds

    check_options(generator.generate, options, type(generator).__name__)
    out = []
    for start in range(0, len(labels), batch_size):
        index = torch.arange(start, min(start + batch_size, len(labels)))
        images = generator.generate(labels[index].to(generator.device), sample_seeds(index, seed), **options)
        images = images.detach().float().cpu()
        if images.ndim == 4:
            images = images.clamp(-1, 1)
        out.append(images)
    return torch.cat(out) if out else torch.empty(0, *generator.data_shape)


@register("data", "generated", aliases=("cas",))
class GeneratedDataModule(ClasszooDataModule):
    """A real DataModule with its training split replaced by a generator's samples (for CAS).

    The generated training set has the real training split's labels, in its order (so its size
    and label distribution), unless ``num_samples`` asks for another size (labels then drawn
    from the real frequencies, seeded). Sample i is generated from the seed of index i, so the
    set is the same on any device count; it is cached in ``cache_dir`` under a key of the
    checkpoint's SHA-256, the options, the seed and the labels. Validation and test splits are
    the real ones, so a classifier trained on it is scored on real data.

    Args:
        generator: Checkpoint of a trained class-conditional generator (or the generator itself, in a notebook).
        generator_model: Registry name of its model (default: recorded in the checkpoint).
        real: Registry name of the real DataModule (``digits``, ``cifar10``, ...).
        real_args: Its arguments (batch sizes are this module's).
        num_samples: Size of the generated training set (default: the real training split's).
        seed: Seed of the per-sample generation seeds.
        sampler: Sampler / ODE solver of the generator (default: its own).
        steps: Sampling steps (default: its own).
        guidance: Guidance rule (``cfg``, ``none``, ...; default: its own).
        guidance_scale: Guidance scale (default: its own).
        sample_options: Further options of the generator's ``generate``.
        cache_dir: Directory of the cached generated set (None: generate in memory every run).
        generation_batch_size: Samples per ``generate`` call.
        device: Device to generate on (``cpu``, ``cuda``).
        batch_size: Training batch size.
        eval_batch_size: Evaluation batch size (default: batch_size).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        generator: str | nn.Module = "",
        generator_model: str | None = None,
        real: str = "digits",
        real_args: dict[str, Any] | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        sample_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        generation_batch_size: int = 500,
        device: str = "cpu",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers)
        real_args = {k: v for k, v in (real_args or {}).items() if k not in ("batch_size", "eval_batch_size", "num_workers")}
        real_class = registry.get("data", real) if "." not in real else _import(real)
        self.real: ClasszooDataModule = real_class(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, **real_args
        )
        self.num_classes, self.class_names = self.real.num_classes, self.real.class_names
        self.data_shape = tuple(self.real.data_shape)
        if num_samples is not None and num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
        if generation_batch_size < 1:
            raise ConfigError(f"generation_batch_size must be >= 1, got {generation_batch_size}")
        from framework.generative.generative_classifier import load_generator

        self.generator_path = generator
        self.generator = load_generator(generator, generator_model, self.num_classes, self.data_shape)
        options = {"sampler": sampler, "steps": steps, "guidance": guidance, "guidance_scale": guidance_scale}
        self.options = {**{k: v for k, v in options.items() if v is not None}, **(sample_options or {})}
        self.num_samples, self.seed, self.cache_dir = num_samples, seed, cache_dir
        self.generation_batch_size, self.device = generation_batch_size, device

    def train_labels(self) -> Tensor:
        """Labels of the generated set: the real training labels, or ``num_samples`` drawn from their frequencies."""
        real = self.real.targets("train")
        if self.num_samples is None:
            return real.clone()
        g = torch.Generator().manual_seed(self.seed)
        return real[torch.randint(len(real), (self.num_samples,), generator=g)]

    def _cache_path(self, labels: Tensor) -> Path | None:
        if self.cache_dir is None or not isinstance(self.generator_path, str):
            return None
        key = json.dumps({"checkpoint": file_digest(self.generator_path), "options": self.options, "seed": self.seed,
                          "labels": hashlib.sha256(labels.numpy().tobytes()).hexdigest()}, sort_keys=True, default=str)
        return Path(self.cache_dir) / f"generated-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"

    def generated_train(self) -> tuple[Tensor, Tensor]:
        """The generated training images and their labels (from the cache when there)."""
        labels = self.train_labels()
        path = self._cache_path(labels)
        if path is not None and path.is_file():
            with np.load(path) as data:
                return torch.from_numpy(data["images"]), torch.from_numpy(data["labels"])
        self.generator.to(self.device)
        images = generate_dataset(self.generator, labels, self.seed, self.generation_batch_size, **self.options)
        if path is not None:
            from framework.io import write_atomic

            arrays = {"images": images.numpy(), "labels": labels.numpy()}
            write_atomic(path, lambda f: np.savez(f, **arrays))
        return images, labels

    def setup(self, stage: str | None = None) -> None:
        self.real.setup(stage)
        self.val_dataset, self.test_dataset = self.real.val_dataset, self.real.test_dataset
        if self.train_dataset is None and stage in (None, "fit"):
            self.train_dataset = InMemoryDataset(*self.generated_train())
