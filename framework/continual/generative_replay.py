"""Deep generative replay (Shin et al., NeurIPS 2017): a solver and a class-conditional generator.

The generator is any registered :class:`~framework.generative.base.GenerativeModule` (``flow``,
``diffusion``, ``adcgan``, ...) built by name, trained inside the protocol with its own
``training_step`` and optimizers; the solver is the usual backbone + head of
:class:`~framework.continual.base.ContinualModule`. docs/continual.md has the algorithm and how
it differs from DGR and Avalanche.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

import registry
from framework.continual.base import ContinualModule
from framework.continual.replay import MixedBatches, keyed_generator, keyed_seed, mix_replay, replay_share
from framework.data.base import EpochShuffleSampler, InMemoryDataset, batch_passthrough
from framework.errors import ConfigError
from framework.generative.base import GenerativeModule
from framework.generative.output import check_options, sample_seeds
from registry import register

__all__ = ["GenerativeReplay", "build_generator"]

STEP_STRIDE = 2**24
"""Replayed sample i of step s is generated from seed index ``s * STEP_STRIDE + i``: every step draws
fresh noise, and a step's replay is the same however often it is regenerated (resume)."""

REPLAY_LABELS = ("generator", "solver")


def build_generator(name: str, args: dict[str, Any] | None, num_classes: int, data_shape: tuple[int, ...]) -> GenerativeModule:
    """A registered class-conditional generator from its name and YAML-style arguments.

    The arguments are parsed against the class signature as LightningCLI parses a model's, so
    nested ``class_path`` values (an ``optimizer``, a ``scheduler``) become the callables the
    class expects. A name that is not a generator, or arguments that do not fit: ConfigError.
    """
    from jsonargparse import ArgumentParser

    cls = registry.get("model", name)
    args = _plain_args(args or {})
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModule)):
        raise ConfigError(f"generator {name!r} is not a generative model (flow, diffusion, adcgan, ...)")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "generator")
    try:
        config = parser.parse_object(
            {"generator": {**args, "num_classes": num_classes, "data_shape": list(data_shape)}}
        )
        built = parser.instantiate_classes(config).generator
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - jsonargparse's errors are several lines
        raise ConfigError(f"generator {name!r}: {str(err).strip().splitlines()[0]}") from None
    return built


def _plain_args(value: Any) -> Any:
    """YAML-style arguments from what LightningCLI hands over for an ``Any``-typed dict.

    The CLI parses a nested ``class_path`` (an optimizer) into a Namespace and fills every
    parameter of the class, the ones a callable leaves out (``params``) with None: back to plain
    dicts, without the None placeholders of parameters that have no default.
    """
    import importlib
    import inspect

    from jsonargparse import Namespace

    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        value = {k: _plain_args(v) for k, v in value.items()}
        if isinstance(value.get("class_path"), str) and isinstance(value.get("init_args"), dict):
            module, _, attr = value["class_path"].rpartition(".")
            try:
                params = inspect.signature(getattr(importlib.import_module(module), attr)).parameters
            except (ImportError, AttributeError, ValueError, TypeError):
                return value
            required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
            value["init_args"] = {k: v for k, v in value["init_args"].items() if not (v is None and k in required)}
        return value
    if isinstance(value, list | tuple):
        return type(value)(_plain_args(v) for v in value)
    return value


@register("model", "generative_replay", aliases=("dgr",))
class GenerativeReplay(ContinualModule):
    """Deep generative replay: the solver and the generator of each step learn the new classes and
    samples of the old ones replayed from the previous step's generator.

    Step s: the generator as trained up to step s - 1 (frozen while the solver trains) draws a
    pool of ``replay_per_class`` samples of every old class, seeded by (``replay_seed``, s, index).
    The solver trains for the step's epochs on batches of new data with pool rows appended, a
    share ``r`` of every batch (``replay_ratio``, default old / seen classes as DGR). Then the
    generator trains for ``generator_epochs`` on the same mixture (new data + the pool, share r)
    with its family's own ``training_step`` and optimizers, in a separate Lightning ``fit`` on the
    same device; the next step replays from it. Replayed samples are labelled by the class they
    were generated for (``replay_labels: generator``), or, as in DGR and Avalanche, by the
    previous step's solver (``replay_labels: solver``: argmax over the old classes).

    Args:
        generator: Registry name of a class-conditional generator (``flow``, ``diffusion``,
            ``adcgan``, ...).
        generator_args: Its arguments, as in its own recipe (``net``, ``net_args``, ``optimizer``, ...).
        generator_epochs: Epochs of the generator's training at every step (over the step's new
            data, each batch with its replayed rows).
        generator_base_epochs: Epochs of the generator at the base step (default: ``generator_epochs``).
        generator_batch_size: Batch size of new data in the generator's training (default: the
            scenario's ``batch_size``); replayed rows come on top.
        generator_ema: Decay of an exponential moving average of the generator's weights over
            each step's training (Lightning's ``EMAWeightAveraging``; the average replaces the
            weights at the end of the step); None: no averaging.
        generator_trainer: Further ``lightning.Trainer`` arguments of the generator's training
            (``gradient_clip_val``, ``precision``, ``max_steps``, ...).
        replay_ratio: Share of replayed rows in every batch; None: old / seen classes (DGR).
        replay_labels: ``generator`` (the class asked for) or ``solver`` (the previous solver's
            prediction, as DGR and Avalanche).
        replay_per_class: Replayed samples generated per old class at each step (default: the
            mean number of training samples per class of the step's new classes).
        replay_seed: Seed of the replayed samples and of the pool rows drawn into each batch.
        sample_options: Options of the generator's ``generate`` for replay (``sampler``,
            ``steps``, ``solver``, ``guidance``, ``guidance_scale``, ``use_ema``, ...).
        replay_batch_size: Samples per ``generate`` call when drawing the pool.
        **kwargs: The arguments of :class:`~framework.continual.base.ContinualModule`
            (``net``, ``net_args``, ``base_epochs``, ``epochs``, optimizers, ``memory_size``...).
    """

    def __init__(
        self,
        generator: str = "flow",
        generator_args: dict[str, Any] | None = None,
        generator_epochs: int = 50,
        generator_base_epochs: int | None = None,
        generator_batch_size: int | None = None,
        generator_ema: float | None = None,
        generator_trainer: dict[str, Any] | None = None,
        replay_ratio: float | None = None,
        replay_labels: str = "generator",
        replay_per_class: int | None = None,
        replay_seed: int = 0,
        sample_options: dict[str, Any] | None = None,
        replay_batch_size: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if replay_labels not in REPLAY_LABELS:
            raise ConfigError(f"replay_labels must be one of {', '.join(REPLAY_LABELS)}, got {replay_labels!r}")
        if generator_epochs < 1 or (generator_base_epochs is not None and generator_base_epochs < 1):
            raise ConfigError("generator_epochs and generator_base_epochs must be >= 1: a generator not trained "
                              "on every step's classes cannot replay them")
        if replay_ratio is not None and not 0.0 <= replay_ratio < 1.0:
            raise ConfigError(f"replay_ratio must be in [0, 1), got {replay_ratio}")
        if replay_per_class is not None and replay_per_class < 1:
            raise ConfigError(f"replay_per_class must be >= 1, got {replay_per_class}")
        if generator_ema is not None and not 0.0 < generator_ema < 1.0:
            raise ConfigError(f"generator_ema must be in (0, 1), got {generator_ema}")
        if replay_batch_size < 1 or (generator_batch_size is not None and generator_batch_size < 1):
            raise ConfigError("replay_batch_size and generator_batch_size must be >= 1")
        sample_seeds(torch.zeros(1), replay_seed)  # checks the seed's range
        generator_args = _plain_args(generator_args or {})
        self.hparams["generator_args"] = generator_args  # plain data in checkpoints, not the CLI's Namespace
        self.generator = build_generator(generator, generator_args, self.num_classes, self.data_shape)
        self.sample_options = dict(sample_options or {})
        check_options(self.generator.generate, self.sample_options, generator)
        self.generator_epochs = generator_epochs
        self.generator_base_epochs = generator_epochs if generator_base_epochs is None else generator_base_epochs
        self.generator_batch_size, self.generator_ema = generator_batch_size, generator_ema
        self.generator_trainer = dict(generator_trainer or {})
        self.replay_ratio, self.replay_labels, self.replay_per_class = replay_ratio, replay_labels, replay_per_class
        self.replay_seed, self.replay_batch_size = replay_seed, replay_batch_size
        # The generator trains only in its own fit: frozen for the solver's optimizer (and DDP).
        self._generator_trainable = [p.requires_grad for p in self.generator.parameters()]
        self.generator.requires_grad_(False).eval()
        if replay_labels == "solver":  # the previous step's solver, frozen; a submodule so checkpoints carry it
            self.old_backbone = copy.deepcopy(self.backbone).requires_grad_(False).eval()
            self.old_head = copy.deepcopy(self.head).requires_grad_(False).eval()
        self.pool: tuple[Tensor, Tensor] | None = None  # (samples, labels) of the current step, on the CPU
        self.replay_log: dict[int, dict[str, Any]] = {}  # step -> what was replayed and how the generator trained

    # -- modes and checkpoints -------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        for name in ("generator", "old_backbone", "old_head"):
            if hasattr(self, name):
                getattr(self, name).eval()  # sampled or labelling only; the generator trains in its own fit
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["generative_replay"] = {"replay_log": {int(s): v for s, v in self.replay_log.items()}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("generative_replay", {}).get("replay_log", {})
        self.replay_log = {int(s): v for s, v in saved.items()}

    def method_metrics(self) -> dict[str, Any]:
        steps = sorted(self.replay_log)
        return {"replay": [{"step": s, **self.replay_log[s]} for s in steps]}

    # -- the share -------------------------------------------------------------------------------
    @property
    def share(self) -> float:
        """Share of replayed rows in the current step's batches (0 at the base step)."""
        return replay_share(self.known, self.seen, self.replay_ratio)

    # -- steps -----------------------------------------------------------------------------------
    def on_step_start(self, step: int) -> None:
        """Draw the step's replay pool from the generator trained so far (idempotent: seeded)."""
        self.pool = None
        if step == 0:
            return
        known = self.known
        per_class = self.replay_per_class
        if per_class is None:
            start, end = self.scenario.step_range(step)
            per_class = max(1, round(len(self.scenario.train_indices(step)) / (end - start)))
        clock = time.process_time()
        labels = torch.arange(known).repeat_interleave(per_class)
        images, nfe = self.generate_replay(labels, step)
        generation_seconds = time.process_time() - clock
        if self.replay_labels == "solver":
            labels = self.label_with_old_solver(images, known)
        self.pool = (images, labels)
        entry = self.replay_log.setdefault(step, {})
        entry.update(
            share=self.share,
            samples=len(labels),
            per_class=per_class,
            nfe_per_sample=nfe,
            generator_nfe=nfe * len(labels),
            generation_cpu_seconds=generation_seconds,
        )
        if self.replay_labels == "solver":  # how often the old solver agrees with the class asked for
            asked = torch.arange(known).repeat_interleave(per_class)
            entry["solver_label_agreement"] = float((labels == asked).float().mean())

    @torch.no_grad()
    def generate_replay(self, labels: Tensor, step: int) -> tuple[Tensor, int]:
        """Samples of the generator for ``labels`` (CPU, clamped to [-1, 1] for images) and the NFE per sample."""
        generator = self.generator
        generator.eval()
        index = torch.arange(len(labels), dtype=torch.int64) + step * STEP_STRIDE
        seeds = sample_seeds(index, self.replay_seed)
        chunks, nfe = [], 1
        for ix in torch.arange(len(labels)).split(self.replay_batch_size):
            out = generator.generate(labels[ix].to(self.device), seeds[ix], **self.sample_options).detach().float()
            nfe = int(getattr(generator, "last_nfe", 0) or 1)  # a GAN calls its net once per sample
            chunks.append(out.cpu())
        images = torch.cat(chunks)
        if not torch.isfinite(images).all():
            raise ConfigError(f"the replay generator produced non-finite samples at step {step}")
        if len(self.data_shape) == 3:
            images = images.clamp(-1, 1)
        return images, nfe

    @torch.no_grad()
    def label_with_old_solver(self, images: Tensor, known: int) -> Tensor:
        """DGR's labels: the previous step's solver's prediction among the old classes."""
        preds = []
        for chunk in images.split(self.replay_batch_size):
            logits = self.old_head(self.old_backbone(chunk.to(self.device)))[:, :known]
            preds.append(logits.argmax(1).cpu())
        return torch.cat(preds)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.pool is not None:
            draws = keyed_generator(self.replay_seed, self.step, self.step_epoch, batch_idx, self.global_rank, 0)
            x, y = mix_replay(x, y, *self.pool, self.share, draws)
        return super().training_step((x, y), batch_idx)

    def on_step_end(self, step: int) -> None:
        self.train_generator(step)
        if self.replay_labels == "solver":
            self.old_backbone.load_state_dict(self.backbone.state_dict())
            self.old_head.load_state_dict(self.head.state_dict())
        super().on_step_end(step)

    # -- the generator's training ------------------------------------------------------------------
    def generator_loader(self, step: int) -> MixedBatches:
        """The generator's training batches at ``step``: the step's new data, each batch with pool rows."""
        data = self.scenario.train_data(step)
        seed_key = (self.replay_seed, step, self.global_rank, 1)
        loader = DataLoader(
            data,
            batch_size=self.generator_batch_size or self.scenario.batch_size,
            sampler=EpochShuffleSampler(data, keyed_seed(*seed_key) % 2**31),
            collate_fn=batch_passthrough if isinstance(data, InMemoryDataset) else None,
        )
        if self.pool is None:
            pool_x, pool_y = torch.empty(0, *self.data_shape), torch.empty(0, dtype=torch.long)
        else:
            pool_x, pool_y = self.pool
        return MixedBatches(loader, pool_x, pool_y, self.share, self.num_classes, key=seed_key)

    def generator_trainer_args(self, epochs: int) -> dict[str, Any]:
        """Arguments of the generator's ``lightning.Trainer``: this device, quiet, no files."""
        from lightning.pytorch.callbacks import EMAWeightAveraging
        from lightning.pytorch.strategies import SingleDeviceStrategy

        accelerator = {"cuda": "gpu"}.get(self.device.type, self.device.type)
        args: dict[str, Any] = {
            "accelerator": accelerator,
            "strategy": SingleDeviceStrategy(device=self.device),
            "devices": 1,
            "max_epochs": epochs,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "limit_val_batches": 0,
            "precision": self.trainer.precision,
            "default_root_dir": self.trainer.default_root_dir,
            "callbacks": [EMAWeightAveraging(decay=self.generator_ema)] if self.generator_ema else [],
        }
        return {**args, **self.generator_trainer}

    def train_generator(self, step: int) -> None:
        """Train the generator on the step's new data mixed with the pool (its own fit, its own optimizers)."""
        epochs = self.generator_base_epochs if step == 0 else self.generator_epochs
        loader = self.generator_loader(step)
        clock = time.process_time()
        for p, trainable in zip(self.generator.parameters(), self._generator_trainable, strict=True):
            p.requires_grad_(trainable)
        self.generator.train_classes = self.seen  # a GAN draws its fakes' labels among the classes seen so far
        try:
            trainer = self._quiet(lambda: L.Trainer(**self.generator_trainer_args(epochs)))
            self._quiet(lambda: trainer.fit(self.generator, train_dataloaders=loader))
        except TypeError as err:
            raise ConfigError(f"generator_trainer: {err}") from None
        finally:
            self.generator.requires_grad_(False)
            self.generator.to(self.device)  # the generator's fit hands its module back on the CPU
            self.generator.eval()
        entry = self.replay_log.setdefault(step, {})
        entry.update(
            generator_epochs=epochs,
            generator_steps=int(trainer.global_step),
            generator_cpu_seconds=time.process_time() - clock,
            generator_class_counts=loader.class_counts.tolist(),
        )
        self._sync_from_rank_zero()  # every rank replays from rank 0's generator

    @staticmethod
    def _quiet(fn):
        """Run ``fn`` without Lightning's info lines and hints (one generator fit per step)."""
        from lightning.fabric.utilities.warnings import PossibleUserWarning

        loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=PossibleUserWarning)
                return fn()
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
