"""The base LightningModule of the class-incremental methods: one ``fit`` runs the whole protocol.

How the loop works (docs/continual.md has the picture):

* The module owns the step counter (``self.step``) and the number of epochs done in that step.
  ``step_epochs(step)`` says how many epochs a step trains (0: a training-free step).
* Every epoch the scenario DataModule's ``train_dataloader`` calls :meth:`train_data`, so each
  epoch trains on the current step's data (``reload_dataloaders_every_n_epochs`` is set to 1).
* When a step's epochs are done (``on_train_epoch_end``), the module calls ``on_step_end``,
  evaluates on the seen classes, writes metrics.json / results.csv, begins the next step
  (``on_step_start``) and runs straight through training-free steps. Optimizers are rebuilt at
  the first epoch of a step (``configure_optimizers`` reads ``self.step``).
* ``trainer.fit_loop.max_epochs`` is set to the protocol's total, and the fit stops after the
  last step. The step state, the results so far and the exemplar memory are saved in every
  checkpoint, so ``fit(ckpt_path=...)`` resumes at the same step.

Subclasses override the template hooks: ``step_epochs``, ``on_step_start``, ``train_data``,
``training_loss``, ``on_step_end``, ``classify`` / ``predict``.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset

import registry
from framework.continual import metrics as cl_metrics
from framework.continual.features import FeatureCache, extract_features
from framework.continual.functional import distillation_loss, herding
from framework.continual.scenario import IncrementalScenario
from framework.core import ClasszooModule
from framework.errors import ConfigError
from framework.io import write_atomic
from framework.models.classifier import configure_optimizer


class ContinualModule(ClasszooModule):
    """Base of the class-incremental methods: a backbone net, a classifier head over all classes
    (masked to the classes seen so far), the step loop, evaluation, metrics and exemplar memory.

    Args:
        num_classes: Number of classes of the whole scenario (linked from the data).
        data_shape: Shape of one input (linked from the data).
        net: Registry name of the backbone (``cnn``, ``cifar_resnet32``, ``timm/resnet18``, ...).
        net_args: Keyword arguments of the backbone.
        base_epochs: Training epochs of the base (first) step.
        epochs: Training epochs of each later step.
        base_optimizer: Optimizer of the base step.
        optimizer: Optimizer of the later steps.
        base_scheduler: Scheduler of the base step (default: cosine over the step).
        scheduler: Scheduler of the later steps (default: cosine over the step).
        base_scheduler_interval: When the base step's scheduler steps: ``epoch`` or ``step``
            (as ``scheduler_interval``).
        scheduler_interval: When the later steps' scheduler steps: ``epoch`` (once per epoch;
            the default cosine's ``T_max`` is the step's epochs, so a 1-epoch step is never
            annealed) or ``step`` (after every optimiser step; the default cosine's ``T_max``
            is the step's epochs x its optimiser steps per epoch, which grow with the step's
            data and exemplars, so the learning rate reaches 0 at the step's last batch).
        memory_size: Total exemplar budget, split evenly over the seen classes (0: no memory).
        memory_per_class: Fixed exemplars per class instead of a total budget.
        head_bias: Whether the linear head has a bias.
        base_checkpoint: Checkpoint of a continual run (any method with the same net and
            classes, e.g. ``finetune`` with ``epochs: 0``) whose backbone and head weights
            replace this model's before the base step; with ``base_epochs: 0`` the base step
            trains nothing and every method starts from the same base model (a pretrained base
            as FeTrIL's official code uses; benchmarks/continual_glyphs.py shares one per seed).
    """

    def __init__(
        self,
        num_classes: int = 10,
        data_shape: Sequence[int] = (1, 8, 8),
        net: str = "cnn",
        net_args: dict[str, Any] | None = None,
        base_epochs: int = 10,
        epochs: int = 10,
        base_optimizer: OptimizerCallable = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        optimizer: OptimizerCallable = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        base_scheduler: LRSchedulerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        base_scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        memory_size: int = 0,
        memory_per_class: int | None = None,
        head_bias: bool = True,
        base_checkpoint: str | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, data_shape=data_shape)
        if num_classes < 2:
            raise ConfigError(f"class-incremental learning needs at least 2 classes, got {num_classes}")
        if base_epochs < 0 or epochs < 0 or memory_size < 0 or (memory_per_class is not None and memory_per_class < 0):
            raise ConfigError("epochs and memory sizes must be >= 0")
        for name, value in (("base_scheduler_interval", base_scheduler_interval), ("scheduler_interval", scheduler_interval)):
            if value not in ("epoch", "step"):
                raise ConfigError(f"{name} must be 'epoch' or 'step', got {value!r}")
        self.save_hyperparameters(ignore=["base_optimizer", "base_scheduler"])
        self.backbone = registry.create("net", net, data_shape=self.data_shape, **(net_args or {}))
        self.num_features = int(self.backbone.num_features)
        self.head = self.build_head(head_bias)
        self.base_checkpoint = base_checkpoint
        if base_checkpoint:
            self.load_base(base_checkpoint)
        self.base_epochs, self.epochs = base_epochs, epochs
        self.base_optimizer, self.optimizer = base_optimizer, optimizer
        self.base_scheduler, self.scheduler = base_scheduler, scheduler
        self.base_scheduler_interval, self.scheduler_interval = base_scheduler_interval, scheduler_interval
        self.memory_size, self.memory_per_class = memory_size, memory_per_class
        # Protocol state (saved in checkpoints by on_save_checkpoint).
        self.step = 0
        self.step_epoch = 0
        self.started = False
        self.done = False
        self.correct: list[list[int]] = []
        self.total: list[list[int]] = []
        self.memory: dict[int, Tensor] = {}  # label -> indices into the training set, herding order
        self.step_seconds: list[float] = []  # wall time of each step: its training and step-end work (not the evaluation)
        self.step_cpu_seconds: list[float] = []  # the same work in CPU seconds of this process (time.process_time)
        self._step_clock = time.perf_counter()
        self._step_cpu_clock = time.process_time()
        self._new_optimizer = False
        self.feature_cache: FeatureCache | None = None

    # -- network ------------------------------------------------------------------------------
    def build_head(self, bias: bool) -> nn.Module:
        """The classifier over all ``num_classes`` (rows of unseen classes are masked out)."""
        return nn.Linear(self.num_features, self.num_classes, bias=bias)

    def load_base(self, path: str) -> None:
        """Backbone and head weights from a continual checkpoint (``base_checkpoint``); one-line errors."""
        from framework.loading import read_checkpoint

        state = read_checkpoint(path, "base_checkpoint")["state_dict"]
        for name, part in (("backbone", self.backbone), ("head", self.head)):
            prefix = name + "."
            weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                part.load_state_dict(weights)
            except RuntimeError as err:
                raise ConfigError(
                    f"base_checkpoint {path}: its {name} does not fit this model's: {str(err).splitlines()[0]}"
                ) from None

    def reset_rows(self, start: int, end: int) -> None:
        """Fresh initialisation of the head rows of new classes (PyCIL's ``update_fc`` does the same)."""
        if isinstance(self.head, nn.Linear):
            fresh = nn.Linear(self.num_features, end - start, bias=self.head.bias is not None).to(self.head.weight)
            with torch.no_grad():
                self.head.weight[start:end] = fresh.weight
                if self.head.bias is not None:
                    self.head.bias[start:end] = fresh.bias

    def forward(self, x: Tensor) -> Tensor:
        """Logits over all classes, (B, num_classes)."""
        return self.head(self.backbone(x))

    def classify_features(self, features: Tensor) -> Tensor:
        """Evaluation scores of backbone features, (B, num_classes); argmax over seen classes predicts."""
        return self.head(features)

    def classify(self, x: Tensor) -> Tensor:
        """Evaluation scores of inputs, (B, num_classes)."""
        return self.classify_features(self.backbone(x))

    # -- scenario --------------------------------------------------------------------------
    @property
    def scenario(self) -> IncrementalScenario:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if not isinstance(datamodule, IncrementalScenario):
            raise ConfigError(
                f"{type(self).__name__} needs an incremental scenario as data (class_incremental or "
                f"few_shot_incremental wrapping a dataset), got {type(datamodule).__name__}"
            )
        return datamodule

    @property
    def seen(self) -> int:
        """Classes seen so far (the current step's included)."""
        return self.scenario.seen_classes(self.step)

    @property
    def known(self) -> int:
        """Classes of the steps before the current one."""
        return self.scenario.step_range(self.step)[0]

    # -- template hooks ----------------------------------------------------------------------
    def step_epochs(self, step: int) -> int:
        """Training epochs of ``step`` (0: nothing is trained at that step)."""
        return self.base_epochs if step == 0 else self.epochs

    def on_step_start(self, step: int) -> None:
        """Prepare ``step`` (after its new head rows are initialised). Must be safe to call again:
        it is re-run when a run resumes from a checkpoint, so keep it to state derived from
        the checkpointed one (caches, pseudo-features)."""

    def train_data(self, scenario: IncrementalScenario) -> Dataset:
        """Training data of the current step: its new classes plus the exemplar memory."""
        data = scenario.train_data(self.step)
        if self.memory:
            data = _concat([data, scenario.subset("train", torch.cat(list(self.memory.values())))])
        return data

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy over the classes seen so far."""
        return F.cross_entropy(self(x)[:, : self.seen], y)

    def on_step_end(self, step: int) -> None:
        """After the step's training, before its evaluation (aligning, prototypes, memory...)."""
        self.update_memory(step)

    # -- Lightning -----------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.training_loss(x, y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``lightning test``: accuracy (%) on the test samples of the classes seen so far."""
        x, y = batch
        seen = self.scenario.seen_classes(self.step)
        keep = y < seen
        if bool(keep.any()):
            preds = self.classify(x[keep])[:, :seen].argmax(1)
            accuracy = 100.0 * (preds == y[keep]).float().mean()
            self.log("test/accuracy", accuracy, batch_size=int(keep.sum()), sync_dist=True)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        epochs = max(1, self.step_epochs(self.step))
        if not params or self.step_epochs(self.step) == 0:
            return None  # training-free step: Lightning runs no optimizer
        if self.step == 0:
            optimizer, scheduler, interval = self.base_optimizer, self.base_scheduler, self.base_scheduler_interval
        else:
            optimizer, scheduler, interval = self.optimizer, self.scheduler, self.scheduler_interval
        if scheduler is None:
            periods = epochs * (self.optimizer_steps_per_epoch() if interval == "step" else 1)
            scheduler = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=periods)
        return configure_optimizer(params, optimizer, scheduler, interval=interval)

    def optimizer_steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch of the current step: its batches (as the trainer counts
        them: the loader of the step's data, ``limit_train_batches``, the ranks' share) over
        ``accumulate_grad_batches``, the last partial accumulation included.

        The trainer counts them once the step's loader is built, which happens before
        ``on_train_epoch_start`` rebuilds the step's optimizer. The optimizer Lightning builds
        at setup, before any loader, is never trained with: a fresh fit rebuilds it at the first
        epoch and a resumed one loads the checkpoint's scheduler state (its ``T_max``
        included), so it gets 1 here.
        """
        batches = self.trainer.num_training_batches if self._trainer is not None else float("inf")
        if not math.isfinite(batches) or batches < 1:
            return 1
        return max(1, math.ceil(int(batches) / self.trainer.accumulate_grad_batches))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        scenario = self.scenario
        if scenario.num_classes != self.num_classes:
            raise ConfigError(f"the model has {self.num_classes} classes but the scenario {scenario.num_classes}")
        trainer = self.trainer
        # Each epoch serves the current step's data, so the loaders are rebuilt every epoch.
        trainer.reload_dataloaders_every_n_epochs = 1
        if not trainer.fast_dev_run:
            trainer.fit_loop.max_epochs = sum(self.step_epochs(s) for s in range(scenario.num_steps))
        if self.done:  # resumed from the checkpoint of a finished protocol: report it again
            self._write(self.results())
            rank_zero_info(cl_metrics.format_table(self.results(), title=f"{type(self).__name__} results"))
            trainer.should_stop = True
            return
        self._step_clock = time.perf_counter()  # a resumed step's time counts from the resume
        self._step_cpu_clock = time.process_time()
        if not self.started:
            self.started = True
            self._begin_step(0)
        else:
            self.on_step_start(self.step)  # rebuild derived state after a resume
        self._run_finished_steps()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self._new_optimizer:
            self.trainer.strategy.setup_optimizers(self.trainer)
            self._new_optimizer = False

    def on_train_epoch_end(self) -> None:
        if self.done:
            return
        self.step_epoch += 1
        self._run_finished_steps()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["continual"] = {
            "step": self.step,
            "step_epoch": self.step_epoch,
            "started": self.started,
            "done": self.done,
            "correct": self.correct,
            "total": self.total,
            "memory": {int(c): ix.tolist() for c, ix in self.memory.items()},
            "frozen": self.feature_cache is not None,
            "step_seconds": self.step_seconds,
            "step_cpu_seconds": self.step_cpu_seconds,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["continual"]
        self.step, self.step_epoch = state["step"], state["step_epoch"]
        self.started, self.done = state["started"], state["done"]
        self.correct, self.total = state["correct"], state["total"]
        self.step_seconds = state.get("step_seconds", [])
        self.step_cpu_seconds = state.get("step_cpu_seconds", [])
        self.memory = {int(c): torch.tensor(ix, dtype=torch.long) for c, ix in state["memory"].items()}
        if state["frozen"]:
            self.freeze_backbone()  # before configure_optimizers: the saved optimizer holds only the trainable rest
        if self.step_epoch == 0:
            # Saved at a step boundary: the saved optimizer belongs to the previous step (other
            # parameters, other schedule); configure_optimizers builds this step's afresh.
            checkpoint["optimizer_states"] = []
            checkpoint["lr_schedulers"] = []

    # -- the step loop ---------------------------------------------------------------------------
    def _begin_step(self, step: int) -> None:
        self.step, self.step_epoch = step, 0
        self._step_clock = time.perf_counter()
        self._step_cpu_clock = time.process_time()
        start, end = self.scenario.step_range(step)
        if not (step == 0 and self.base_checkpoint):  # the loaded base rows are the base step's
            self.reset_rows(start, end)
        self.on_step_start(step)
        self._sync_from_rank_zero()
        self._new_optimizer = self.step_epochs(step) > 0

    def _run_finished_steps(self) -> None:
        """End every step whose epochs are done, and begin the next, until one needs training."""
        while not self.done and self.step_epoch >= self.step_epochs(self.step):
            self._sync_from_rank_zero()
            self.on_step_end(self.step)
            self._record(self.step, time.perf_counter() - self._step_clock, time.process_time() - self._step_cpu_clock)
            if self.step + 1 == self.scenario.num_steps:
                self.done = True
                self.trainer.should_stop = True
                rank_zero_info(cl_metrics.format_table(self.results(), title=f"{type(self).__name__} results"))
            else:
                self._begin_step(self.step + 1)

    @torch.no_grad()
    def _sync_from_rank_zero(self) -> None:
        """Give every rank rank 0's parameters and buffers where DDP does not keep them equal:
        batch-norm statistics drift apart, and the rows of new classes are initialised from each
        rank's own random stream. Features, herding and evaluation then agree across ranks."""
        if self.trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            for tensor in [*self.parameters(), *self.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)

    @torch.no_grad()
    def predict(self, split: str, indices: Tensor, num_seen: int) -> Tensor:
        """Predicted labels (among the first ``num_seen``) of rows ``indices`` of a split.

        With a frozen backbone the features come from the cache (each test sample is encoded
        once per run, not once per step).
        """
        was_training = self.training
        self.eval()
        if self.feature_cache is not None:
            features, _ = self.feature_cache.get(split, indices)
            scores = [self.classify_features(features.to(self.device))] if len(features) else []
        else:
            loader = self.scenario.loader(self.scenario.subset(split, indices), train=False)
            scores = [self.classify(x.to(self.device)) for x, _ in loader]
        self.train(was_training)
        preds = [s[:, :num_seen].argmax(1).cpu() for s in scores]
        return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)

    def eval_counts(self, step: int) -> tuple[list[int], list[int]]:
        """Correct predictions and samples of the evaluation split at ``step``, per step's classes."""
        scenario = self.scenario
        indices = scenario.eval_indices(step)
        labels = scenario.labels(scenario.eval_split)[indices]
        preds = self.predict(scenario.eval_split, indices, scenario.seen_classes(step))
        task = scenario.class_step()[labels]
        hits = preds == labels
        steps = range(scenario.num_steps)
        return [int(hits[task == t].sum()) for t in steps], [int((task == t).sum()) for t in steps]

    def _record(self, step: int, seconds: float, cpu_seconds: float | None = None) -> None:
        scenario = self.scenario
        correct, total = self.eval_counts(step)
        self.correct.append(correct)
        self.total.append(total)
        self.step_seconds.append(seconds)
        if cpu_seconds is not None:
            self.step_cpu_seconds.append(cpu_seconds)
        results = self.results()
        self._log_step(step, results["accuracy"][-1])
        rank_zero_info(
            f"step {step}: {scenario.seen_classes(step)} classes, accuracy {results['accuracy'][-1]:.2f}%"
        )
        self._write(results)

    def method_metrics(self) -> dict[str, Any]:
        """Figures of this method's own (e.g. WA's gammas) added to metrics.json; none by default."""
        return {}

    def results(self) -> dict[str, Any]:
        """The metrics of the steps done so far (DESIGN.md "Outputs"), accuracies in percent."""
        return cl_metrics.summarize(self.correct, self.total, few_shot=self.scenario.few_shot)

    @rank_zero_only
    def _log_step(self, step: int, accuracy: float) -> None:
        # Straight to the loggers: this may run in on_fit_start, where self.log is not allowed.
        for logger in self.trainer.loggers:
            logger.log_metrics({"continual/accuracy": accuracy, "continual/step": step}, step=self.global_step)

    def _write(self, results: dict[str, Any]) -> None:
        # trainer.log_dir broadcasts from rank 0: every rank must ask, only rank 0 writes.
        self._write_files(results, self.trainer.log_dir or self.trainer.default_root_dir)

    @rank_zero_only
    def _write_files(self, results: dict[str, Any], log_dir: str) -> None:
        payload = {
            "method": type(self).__name__,
            "steps_done": len(self.correct),
            **results,
            "step_seconds": self.step_seconds,
            "step_cpu_seconds": self.step_cpu_seconds,
            **self.method_metrics(),
        }
        write_atomic(os.path.join(log_dir, "metrics.json"), json.dumps(cl_metrics.to_json(payload), indent=1))
        rows = cl_metrics.to_csv_rows(results)
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(cl_metrics.to_json(rows))
        write_atomic(os.path.join(log_dir, "results.csv"), table.getvalue())
        write_atomic(os.path.join(log_dir, "scenario.json"), json.dumps(self.scenario.describe()))

    # -- features and memory -------------------------------------------------------------------
    def features_of(self, split: str, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone features (eval mode) and remapped labels of rows of a split of the wrapped data."""
        scenario = self.scenario
        clean = scenario.subset(split, indices, augment=False)
        return extract_features(self.backbone, scenario.loader(clean, train=False), self.device)

    def train_features(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Features and labels of training rows (from the cache once the backbone is frozen)."""
        if self.feature_cache is not None:
            return self.feature_cache.get("train", indices)
        return self.features_of("train", indices)

    def freeze_backbone(self) -> None:
        """Freeze the extractor (eval mode for good) and start caching its features (idempotent)."""
        if self.feature_cache is not None:
            return
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.feature_cache = FeatureCache(self.features_of)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.feature_cache is not None:
            self.backbone.eval()  # frozen: batch-norm statistics must not move
        return self

    def per_class_memory(self, seen: int) -> int:
        """Exemplars kept per class when ``seen`` classes are known."""
        if self.memory_per_class is not None:
            return self.memory_per_class
        return self.memory_size // seen if seen else 0

    def update_memory(self, step: int) -> None:
        """Herding selection for the step's new classes; old classes keep their first m exemplars."""
        seen = self.scenario.seen_classes(step)
        m = self.per_class_memory(seen)
        if m == 0:
            self.memory = {}
            return
        self.memory = {c: ix[:m] for c, ix in self.memory.items()}
        indices = self.scenario.train_indices(step)
        features, labels = self.train_features(indices)
        start, end = self.scenario.step_range(step)
        for c in labels.unique().tolist():
            if not start <= c < end:
                continue  # a generalized step's samples of old classes (revisit): those keep their exemplars
            rows = torch.nonzero(labels == c).flatten()
            self.memory[c] = indices[rows[herding(features[rows], m)]]


class DistillingModule(ContinualModule):
    """A ContinualModule that keeps the previous step's model, frozen, for distillation (WA, iCaRL).

    Args:
        temperature: Distillation temperature T.
        **kwargs: The arguments of :class:`ContinualModule`.
    """

    def __init__(self, temperature: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = temperature
        # The previous step's model, frozen; submodules so that checkpoints carry it.
        self.old_backbone = copy.deepcopy(self.backbone).requires_grad_(False).eval()
        self.old_head = copy.deepcopy(self.head).requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "old_backbone"):
            self.old_backbone.eval()
            self.old_head.eval()
        return self

    def ce_and_kd(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """Cross-entropy over the seen classes and KD (T = ``temperature``) on the old classes'
        logits against the previous model (None at the base step); KD is logged as ``train/kd``."""
        logits = self(x)[:, : self.seen]
        ce = F.cross_entropy(logits, y)
        if self.step == 0:
            return ce, None
        known = self.known
        with torch.no_grad():
            old_logits = self.old_head(self.old_backbone(x))[:, :known]
        kd = distillation_loss(logits[:, :known], old_logits, self.temperature)
        self.log("train/kd", kd)
        return ce, kd

    def keep_previous_model(self) -> None:
        """The current model becomes the previous one (call at the end of a step)."""
        self.old_backbone.load_state_dict(self.backbone.state_dict())
        self.old_head.load_state_dict(self.head.state_dict())


def _concat(datasets: list[Dataset]) -> Dataset:
    """One dataset from several (in-memory ones are concatenated as tensors)."""
    from framework.data.base import InMemoryDataset

    if all(isinstance(d, InMemoryDataset) for d in datasets) and len({id(d.transform) for d in datasets}) == 1:
        return InMemoryDataset(torch.cat([d.x for d in datasets]), torch.cat([d.y for d in datasets]), datasets[0].transform)
    return ConcatDataset(datasets)
