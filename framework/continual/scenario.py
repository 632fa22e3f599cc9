"""Class-incremental scenarios: DataModules that wrap any labelled DataModule and serve it step by step.

A scenario fixes a class order and cuts it into steps (a base step, then increments). Labels are
remapped to positions in the class order, so step s always owns a contiguous label range
``[start, end)`` and "classes seen after step s" is simply ``label < end``. The continual
LightningModule (:class:`framework.continual.base.ContinualModule`) owns the step counter; each
epoch the scenario's ``train_dataloader`` asks it which data to train on (the step's data, plus
exemplars, or cached features), so one ``trainer.fit`` runs the whole protocol.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from framework.data.base import ClasszooDataModule, InMemoryDataset
from framework.errors import ConfigError
from framework.io import write_atomic
from registry import register

__all__ = ["ClassIncremental", "FewShotIncremental", "IncrementalScenario", "class_order_from_seed", "relabel"]


def class_order_from_seed(num_classes: int, seed: int) -> list[int]:
    """PyCIL's class order: ``np.random.seed(seed); np.random.permutation(num_classes)`` (own RNG here)."""
    return np.random.RandomState(seed).permutation(num_classes).tolist()


class _Relabelled(Dataset):
    """Rows ``indices`` of a map-style dataset with labels mapped through ``label_map``."""

    def __init__(self, dataset: Dataset, indices: Tensor, label_map: Tensor) -> None:
        self.dataset, self.indices, self.label_map = dataset, indices.tolist(), label_map

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, y = self.dataset[self.indices[i]]
        return x, self.label_map[int(y)]


def relabel(dataset: Dataset, indices: Tensor, label_map: Tensor, augment: bool = True) -> Dataset:
    """The rows ``indices`` of ``dataset`` with labels ``label_map[y]`` (in-memory data stays in memory).

    ``augment=False`` drops an in-memory dataset's (augmentation) transform: features for class
    means, herding and frozen-extractor caches are computed on clean images, as in PyCIL.
    """
    indices = torch.as_tensor(indices, dtype=torch.long)
    if isinstance(dataset, InMemoryDataset):
        transform = dataset.transform if augment else None
        return InMemoryDataset(dataset.x[indices], label_map[dataset.y[indices]], transform)
    return _Relabelled(dataset, indices, label_map)


class IncrementalScenario(ClasszooDataModule):
    """Base of the scenarios: a wrapped DataModule, a class order and the steps cut from it.

    Subclasses fill ``self.step_sizes`` (and may override :meth:`train_indices`).

    Args:
        dataset: The DataModule to split into steps (e.g. ``digits``, ``cifar100``).
        class_order: Explicit class order (original labels); overrides ``seed``.
        seed: Seed of the class order (PyCIL convention); None keeps the natural order.
        eval_split: Split evaluated after each step ("test" or "val").
        batch_size: Training batch size (default: the wrapped DataModule's).
        eval_batch_size: Evaluation batch size (default: the wrapped DataModule's).
        num_workers: DataLoader workers (default: the wrapped DataModule's).
    """

    few_shot = False

    def __init__(
        self,
        dataset: ClasszooDataModule,
        class_order: Sequence[int] | None = None,
        seed: int | None = 1993,
        eval_split: str = "test",
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size or dataset.batch_size,
            eval_batch_size=eval_batch_size or dataset.eval_batch_size,
            num_workers=dataset.num_workers if num_workers is None else num_workers,
        )
        if eval_split not in ("test", "val"):
            raise ConfigError(f"eval_split must be 'test' or 'val', got {eval_split!r}")
        self.dataset = dataset
        self.eval_split = eval_split
        self.num_classes = dataset.num_classes
        self.data_shape = tuple(dataset.data_shape)
        if class_order is not None:
            order = [int(c) for c in class_order]
            if sorted(order) != list(range(self.num_classes)):
                raise ConfigError(
                    f"class_order must be a permutation of 0..{self.num_classes - 1}, got {len(order)} entries"
                )
        elif seed is not None:
            order = class_order_from_seed(self.num_classes, seed)
        else:
            order = list(range(self.num_classes))
        self._set_order(order)
        self.class_names = [dataset.class_names[c] for c in self.class_order]
        self.step_sizes: list[int] = []

    def _set_order(self, order: Sequence[int]) -> None:
        self.class_order = list(order)
        # label_map[original label] = position in the class order (the label every method sees).
        self.label_map = torch.empty(self.num_classes, dtype=torch.long)
        self.label_map[torch.tensor(self.class_order)] = torch.arange(self.num_classes)

    # -- steps ----------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return len(self.step_sizes)

    def step_range(self, step: int) -> tuple[int, int]:
        """Labels ``[start, end)`` (after remapping) first seen at ``step``."""
        start = sum(self.step_sizes[:step])
        return start, start + self.step_sizes[step]

    def seen_classes(self, step: int) -> int:
        """Number of classes seen after ``step`` (labels below it)."""
        return self.step_range(step)[1]

    def class_step(self) -> Tensor:
        """The step that introduces each (remapped) label; -1 for classes never used."""
        steps = torch.full((self.num_classes,), -1, dtype=torch.long)
        for s in range(self.num_steps):
            start, end = self.step_range(s)
            steps[start:end] = s
        return steps

    # -- data -----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.dataset.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.dataset.setup("fit")
        if self.dataset.test_dataset is None:
            self.dataset.setup("test")
        self.train_dataset = self.dataset.train_dataset
        self.val_dataset = self.dataset.val_dataset
        self.test_dataset = self.dataset.test_dataset

    def labels(self, split: str) -> Tensor:
        """Remapped labels of a whole split of the wrapped data."""
        return self.label_map[self.dataset.targets(split)]

    def train_indices(self, step: int) -> Tensor:
        """Indices (into the wrapped training set) of the data available at ``step``: its new classes."""
        start, end = self.step_range(step)
        labels = self.labels("train")
        return torch.nonzero((labels >= start) & (labels < end)).flatten()

    def subset(self, split: str, indices: Tensor, augment: bool = True) -> Dataset:
        """Rows of a split of the wrapped data, remapped labels (``augment=False``: no train-time transform)."""
        dataset = {"train": self.dataset.train_dataset, "val": self.dataset.val_dataset, "test": self.dataset.test_dataset}[
            split
        ]
        if dataset is None:
            raise ConfigError(f"{type(self.dataset).__name__} has no {split!r} split")
        return relabel(dataset, indices, self.label_map, augment)

    def train_data(self, steps: int | Sequence[int]) -> Dataset:
        """Training data of one step, or the union over several (e.g. every step so far)."""
        steps = [steps] if isinstance(steps, int) else list(steps)
        return self.subset("train", torch.cat([self.train_indices(s) for s in steps]))

    def eval_indices(self, step: int) -> Tensor:
        """Indices of the evaluation split's samples of every class seen after ``step``."""
        labels = self.labels(self.eval_split)
        return torch.nonzero(labels < self.seen_classes(step)).flatten()

    def eval_data(self, step: int) -> Dataset:
        """Evaluation data of all classes seen after ``step``."""
        return self.subset(self.eval_split, self.eval_indices(step))

    def loader(self, dataset: Dataset, train: bool) -> DataLoader:
        """A DataLoader with this scenario's batch size and workers."""
        return self._loader(dataset, train=train)

    def train_dataloader(self) -> DataLoader:
        from framework.continual.base import ContinualModule

        module = self.trainer.lightning_module if self.trainer is not None else None
        if not isinstance(module, ContinualModule):
            raise ConfigError(
                f"the {type(self).__name__} scenario trains continual models only (finetune, fetril, wa, ...), "
                f"got {type(module).__name__}"
            )
        return self.loader(module.train_data(self), train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.subset("val", torch.arange(len(self.dataset.targets("val")))), train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.subset("test", torch.arange(len(self.dataset.targets("test")))), train=False)

    def describe(self) -> dict:
        """The scenario as plain data (saved next to metrics.json)."""
        return {
            "class_order": self.class_order,
            "step_sizes": self.step_sizes,
            "step_classes": [self.class_order[slice(*self.step_range(s))] for s in range(self.num_steps)],
        }


@register("data", "class_incremental")
class ClassIncremental(IncrementalScenario):
    """Class-incremental scenario: ``base_classes`` classes, then steps of ``increment`` classes.

    Examples: CIFAR-100 B50 in 5 steps (``base_classes: 50, increment: 10``), B0 in 10 steps
    (``base_classes: 0, increment: 10``), uneven steps (``increment: [3, 2, 1]``).

    Args:
        dataset: The DataModule to split into steps.
        base_classes: Classes of the first step (0: the first step is an ordinary increment).
        increment: Classes per later step, or the list of their sizes. With an int, the last
            step takes what is left when it does not divide evenly.
        num_steps: Number of steps after the base step (default: until every class is used).
        class_order: Explicit class order (original labels); overrides ``seed``.
        seed: Seed of the class order (PyCIL: 1993); None keeps the natural order.
        eval_split: Split evaluated after each step ("test" or "val").
        revisit: Generalized class-incremental setting (G-ACIL): the fraction of each class's
            training samples that its own step does not get; they are spread evenly over the
            later steps, so a step brings new classes and more data of classes already seen.
            0 (default) is the ordinary setting. Classes of the last step keep all their data.
        revisit_seed: Seed of which samples of a class are held back for later steps.
        batch_size: Training batch size (default: the wrapped DataModule's).
        eval_batch_size: Evaluation batch size (default: the wrapped DataModule's).
        num_workers: DataLoader workers (default: the wrapped DataModule's).
    """

    def __init__(
        self,
        dataset: ClasszooDataModule,
        base_classes: int = 0,
        increment: int | list[int] = 10,
        num_steps: int | None = None,
        class_order: list[int] | None = None,
        seed: int | None = 1993,
        eval_split: str = "test",
        revisit: float = 0.0,
        revisit_seed: int = 0,
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(dataset, class_order, seed, eval_split, batch_size, eval_batch_size, num_workers)
        self.step_sizes = _step_sizes(self.num_classes, base_classes, increment, num_steps)
        if not 0.0 <= revisit < 1.0:
            raise ConfigError(f"revisit must be in [0, 1) (a class keeps some data for its own step), got {revisit}")
        self.revisit, self.revisit_seed = float(revisit), revisit_seed
        self._step_indices: list[Tensor] | None = None

    def train_indices(self, step: int) -> Tensor:
        """The step's training samples: its new classes' (all of them, or with ``revisit`` their
        kept share) plus, with ``revisit``, a chunk of the held-back samples of every earlier class."""
        if self.revisit == 0.0:
            return super().train_indices(step)
        if self._step_indices is None:
            self._step_indices = self._generalized_steps()
        return self._step_indices[step]

    def _generalized_steps(self) -> list[Tensor]:
        """Class c of step s with n samples (in a seeded order): the first n - floor(revisit n)
        go to step s, the rest are cut into len(later steps) near-equal consecutive chunks
        (``np.array_split``), chunk k going to step s + 1 + k."""
        labels = self.labels("train")
        rng = np.random.RandomState(self.revisit_seed)
        steps: list[list[np.ndarray]] = [[] for _ in range(self.num_steps)]
        for c in range(self.seen_classes(self.num_steps - 1)):
            pool = torch.nonzero(labels == c).flatten().numpy()
            pool = pool[rng.permutation(len(pool))]
            first = int(self.class_step()[c])
            later = self.num_steps - 1 - first
            held = int(np.floor(self.revisit * len(pool))) if later else 0
            steps[first].append(pool[: len(pool) - held])
            for k, chunk in enumerate(np.array_split(pool[len(pool) - held :], later) if held else []):
                steps[first + 1 + k].append(chunk)
        return [torch.from_numpy(np.sort(np.concatenate(parts))).long() for parts in steps]

    def describe(self) -> dict:
        out = super().describe()
        if self.revisit:
            out["revisit"], out["revisit_seed"] = self.revisit, self.revisit_seed
            out["step_samples"] = [int(len(self.train_indices(s))) for s in range(self.num_steps)]
        return out


def _step_sizes(num_classes: int, base: int, increment: int | Sequence[int], num_steps: int | None) -> list[int]:
    if base < 0 or base > num_classes:
        raise ConfigError(f"base_classes must be in 0..{num_classes}, got {base}")
    if isinstance(increment, int):
        if increment <= 0:
            raise ConfigError(f"increment must be positive, got {increment}")
        rest, increments = num_classes - base, []
        while rest > 0 and (num_steps is None or len(increments) < num_steps):
            increments.append(min(increment, rest))
            rest -= increments[-1]
    else:
        increments = [int(i) for i in increment][:num_steps]
        if any(i <= 0 for i in increments):
            raise ConfigError(f"every increment must be positive, got {list(increment)}")
    sizes = ([base] if base else []) + increments
    if sum(sizes) > num_classes:
        raise ConfigError(f"steps {sizes} need {sum(sizes)} classes but the data has {num_classes}")
    if len(sizes) < 2:
        raise ConfigError(f"an incremental scenario needs at least two steps, got {sizes}")
    return sizes


@register("data", "few_shot_incremental")
class FewShotIncremental(IncrementalScenario):
    """Few-shot class-incremental scenario: a base session with all data, then N-way K-shot sessions.

    CIFAR-100 / miniImageNet: ``base_classes: 60, ways: 5, shots: 5`` (8 sessions); CUB-200:
    ``base_classes: 100, ways: 10, shots: 5`` (10 sessions). Support sets are drawn once from
    ``support_seed`` (and written to ``support_file`` when given, read from it when it exists),
    or read from CEC-style index files ``index_dir/session_<k>.txt`` (session 1 lists the base
    training samples, session k > 1 the support set of session k - 1; lines are sample indices
    into the training set, or image paths matched against the dataset's ``samples``). With
    index files, the class order and the step sizes come from the files.

    Args:
        dataset: The DataModule to split into sessions.
        base_classes: Classes of the base session.
        ways: New classes per session.
        shots: Training samples per new class.
        num_sessions: Number of few-shot sessions (default: until the classes run out).
        support_seed: Seed of the support-set draw.
        support_file: JSON file of the support sets (read if it exists, written otherwise).
        index_dir: Directory of CEC-style ``session_<k>.txt`` files (overrides the draw).
        class_order: Explicit class order (original labels); overrides ``seed``.
        seed: Seed of the class order; None (FSCIL convention) keeps the natural order.
        eval_split: Split evaluated after each session ("test" or "val").
        batch_size: Training batch size (default: the wrapped DataModule's).
        eval_batch_size: Evaluation batch size (default: the wrapped DataModule's).
        num_workers: DataLoader workers (default: the wrapped DataModule's).
    """

    few_shot = True

    def __init__(
        self,
        dataset: ClasszooDataModule,
        base_classes: int = 60,
        ways: int = 5,
        shots: int = 5,
        num_sessions: int | None = None,
        support_seed: int = 1,
        support_file: str | None = None,
        index_dir: str | None = None,
        class_order: list[int] | None = None,
        seed: int | None = None,
        eval_split: str = "test",
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(dataset, class_order, seed, eval_split, batch_size, eval_batch_size, num_workers)
        if shots <= 0 or ways <= 0 or base_classes <= 0:
            raise ConfigError(f"few-shot sessions need base_classes, ways, shots > 0, got {base_classes}, {ways}, {shots}")
        self.base_classes, self.ways, self.shots = base_classes, ways, shots
        self.support_seed, self.support_file, self.index_dir = support_seed, support_file, index_dir
        if index_dir is None:
            self.step_sizes = _step_sizes(self.num_classes, base_classes, ways, num_sessions)
            if any(s != ways for s in self.step_sizes[1:]):
                self.step_sizes = self.step_sizes[: 1 + (self.num_classes - base_classes) // ways]
        self._session_indices: list[Tensor] | None = None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self._session_indices is None:
            if self.index_dir is not None:
                self._read_index_files()
            else:
                self._draw_or_load_support()

    def train_indices(self, step: int) -> Tensor:
        if step == 0 and self.index_dir is None:
            return super().train_indices(0)
        assert self._session_indices is not None, "call setup() first"
        return self._session_indices[step]

    def _draw_or_load_support(self) -> None:
        if self.support_file and os.path.exists(self.support_file):
            with open(self.support_file) as f:
                saved = json.load(f)
            if saved.get("class_order") != self.class_order or saved.get("step_sizes") != self.step_sizes:
                raise ConfigError(f"{self.support_file} was drawn for another class order or other sessions")
            self._session_indices = [torch.tensor(ix, dtype=torch.long) for ix in saved["sessions"]]
            return
        rng = np.random.RandomState(self.support_seed)
        labels = self.labels("train")
        sessions = [torch.empty(0, dtype=torch.long)]  # the base session uses all its data
        for step in range(1, self.num_steps):
            start, end = self.step_range(step)
            chosen = []
            for c in range(start, end):
                pool = torch.nonzero(labels == c).flatten().numpy()
                if len(pool) < self.shots:
                    raise ConfigError(f"class {self.class_order[c]} has {len(pool)} training samples, fewer than {self.shots} shots")
                chosen.append(np.sort(rng.choice(pool, self.shots, replace=False)))
            sessions.append(torch.from_numpy(np.concatenate(chosen)).long())
        self._session_indices = sessions
        if self.support_file:  # written whole or not at all: a cut-off file would fail the next run
            write_atomic(self.support_file, json.dumps({**self.describe(), "support_seed": self.support_seed}))

    def _read_index_files(self) -> None:
        files = sorted(
            (int(name[len("session_") : -len(".txt")]), name)
            for name in os.listdir(self.index_dir)
            if name.startswith("session_") and name.endswith(".txt")
        )
        if not files or files[0][0] != 1:
            raise ConfigError(f"{self.index_dir} has no session_1.txt")
        targets = self.dataset.targets("train")
        lookup = _path_lookup(self.dataset.train_dataset)
        sessions, order = [], []
        for _, name in files:
            with open(os.path.join(self.index_dir, name)) as f:
                lines = [line.strip() for line in f if line.strip()]
            idx = torch.tensor([_resolve_index(line, lookup, name) for line in lines], dtype=torch.long)
            classes = sorted(set(targets[idx].tolist()) - set(order))
            order += classes
            sessions.append((idx, len(classes)))
        order += [c for c in range(self.num_classes) if c not in order]
        self._set_order(order)
        self.class_names = [self.dataset.class_names[c] for c in self.class_order]
        self.step_sizes = [n for _, n in sessions]
        self._session_indices = [idx for idx, _ in sessions]

    def describe(self) -> dict:
        out = super().describe()
        if self._session_indices is not None:
            out["sessions"] = [ix.tolist() for ix in self._session_indices]
        return out


def _path_lookup(dataset: Dataset) -> dict[str, list[tuple[str, int]]] | None:
    """File name -> [(path, index)] of an ImageFolder-like dataset (``samples`` or ``imgs``)."""
    samples = getattr(dataset, "samples", None) or getattr(dataset, "imgs", None)
    if samples is None:
        return None
    lookup: dict[str, list[tuple[str, int]]] = {}
    for i, (path, _) in enumerate(samples):
        path = os.path.normpath(str(path))
        lookup.setdefault(os.path.basename(path), []).append((path, i))
    return lookup


def _resolve_index(line: str, lookup: dict[str, list[tuple[str, int]]] | None, file: str) -> int:
    if line.isdigit():
        return int(line)
    if lookup is not None:
        line = os.path.normpath(line)
        for path, i in lookup.get(os.path.basename(line), []):
            # CEC lists are relative to the dataset root; the dataset may hold absolute paths.
            if path.endswith(line) or line.endswith(path):
                return i
    raise ConfigError(f"{file}: cannot find {line!r} in the training set (need indices or the dataset's sample paths)")
