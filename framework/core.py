"""The base LightningModule of every registered model."""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch


class ClasszooModule(L.LightningModule):
    """Base of the registered models: knows the number of classes and the data shape.

    The CLI links both from the DataModule (``data.num_classes``, ``data.data_shape``), so
    recipes never repeat them; in a notebook pass them yourself or keep the digits defaults.

    Args:
        num_classes: Number of classes of the data (0 for an unconditional generator).
        data_shape: Shape of one sample, ``(C, H, W)`` for images or ``(D,)`` for vectors.
    """

    # Constructor arguments that are not plain data (callables, modules) and so stay out of
    # ``hparams``: checkpoints must pickle without them.
    hparams_ignore: tuple[str, ...] = ("optimizer", "scheduler")

    def __init__(self, num_classes: int = 10, data_shape: Sequence[int] = (1, 8, 8)) -> None:
        super().__init__()
        if num_classes < 0:
            from framework.errors import ConfigError

            raise ConfigError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = int(num_classes)
        self.data_shape = tuple(int(s) for s in data_shape)

    def configure_model(self) -> None:
        """Under Lightning's ``ModelParallelStrategy``: shard the nets (FSDP2) by their ``fsdp_units``.

        Any other strategy leaves the model as it is. Subclasses that override this hook call
        ``super().configure_model()``. See :mod:`framework.parallel`.
        """
        from lightning.pytorch.strategies import ModelParallelStrategy

        trainer = self._trainer
        if trainer is None or not isinstance(trainer.strategy, ModelParallelStrategy):
            return
        if getattr(self, "_sharded", False):  # Lightning may call the hook again (e.g. fit, then test)
            return
        from framework.parallel import shard_children

        mesh = self.device_mesh
        if mesh.ndim != 1 and mesh["tensor_parallel"].size() != 1:
            from framework.errors import ConfigError

            raise ConfigError("classzoo shards data-parallel only: set the strategy's tensor_parallel_size: 1")
        shard_children(self, mesh["data_parallel"] if mesh.ndim > 1 else mesh)
        self._sharded = True

    def on_fit_start(self) -> None:
        # Adam's second moments of zero-initialised layers decay into subnormal floats, and
        # subnormal arithmetic is ~30x slower on x86 CPUs (measured on a digits U-Net: 15 ms
        # vs 430 ms per step). Flushing them to zero changes nothing above 1e-38.
        # Subclasses that override this hook (or teardown) call super().
        if self.device.type == "cpu" and getattr(self, "_flush_restore", None) is None:
            self._flush_restore = flushing_subnormals()  # a fit inside a fit finds it on and leaves it on
            torch.set_flush_denormal(True)
            # A fit that raises skips the module's teardown; Lightning still calls the
            # callbacks' on_exception, so one of those gives the flag back then.
            self.trainer.callbacks.append(_RestoreSubnormalsOnException())
        if self.trainer.world_size > 1:
            _fork_stream_per_rank(self.trainer.global_rank)

    def teardown(self, stage: str) -> None:
        # The flag is process-wide: give it back when the fit ends, so code run after a fit in
        # the same process (a notebook, a test) computes as it would without one.
        if stage == "fit":
            self._restore_subnormals()

    def _restore_subnormals(self) -> None:
        if getattr(self, "_flush_restore", None) is not None:
            torch.set_flush_denormal(self._flush_restore)
            self._flush_restore = None
        trainer = self._trainer
        if trainer is not None:
            trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, _RestoreSubnormalsOnException)]

    # -- random streams: one per rank, saved for exact resume -----------------------------------
    # ``seed_everything`` gives every DDP rank the same seed, so without a fork each rank would
    # draw the same noise levels, noise, dropout masks and augmentations for its own shard of
    # the batch (EDM seeds each rank apart for this reason). The fork happens after DDP has
    # broadcast rank 0's initial weights, so the replicas still start equal.
    # Lightning checkpoints do not hold the random number generators, so a resumed run would
    # also draw differently from an uninterrupted one. Every rank's states are saved with the
    # checkpoint and restored when the first training epoch after loading starts. (Our
    # DataModules' loaders shuffle by (seed, epoch) and seed workers from their own
    # generator, so the sanity check and the loaders never draw from these.)
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from framework.loading import CLASS_KEY

        # compositions rebuild a part from its checkpoint alone (framework.loading.load_trained)
        checkpoint[CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"
        states = _rng_states()
        checkpoint["rng_states"] = states
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            # Lightning builds the checkpoint on every rank (rank 0 writes it), so all ranks are here.
            checkpoint["rng_states_per_rank"] = _all_gather_objects(states, trainer.world_size)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_checkpoint = {k: checkpoint[k] for k in ("rng_states", "rng_states_per_rank") if k in checkpoint}

    def on_train_epoch_start(self) -> None:
        saved = getattr(self, "_rng_checkpoint", None)
        self._rng_checkpoint = None
        if not saved or "rng_states" not in saved:
            return
        rank, world_size = self.trainer.global_rank, self.trainer.world_size
        per_rank = saved.get("rng_states_per_rank")
        if world_size == 1 or (per_rank is not None and len(per_rank) == world_size):
            _set_rng_states(per_rank[rank] if world_size > 1 else saved["rng_states"])
            return
        # Saved by another number of processes: continue from rank 0's streams, forked apart again.
        _set_rng_states(saved["rng_states"])
        _fork_stream_per_rank(rank)
        if rank == 0:
            warnings.warn(
                f"the checkpoint was saved by {len(per_rank or [None])} process(es) and resumed by {world_size}: "
                "random draws continue, but not exactly as an uninterrupted run's",
                stacklevel=1,
            )

    def save_hyperparameters(self, *args, **kwargs) -> None:  # noqa: D102 - same as Lightning's
        ignore = list(kwargs.pop("ignore", None) or []) + list(self.hparams_ignore)
        super().save_hyperparameters(*args, ignore=ignore, frame=kwargs.pop("frame", None) or _caller_frame(), **kwargs)


def _rng_states() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # plain types and tensors only: Lightning loads checkpoints with weights_only=True
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": random.getstate(),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(_numpy_state_from_plain(states["numpy"]))
    random.setstate(states["python"])


class _RestoreSubnormalsOnException(L.Callback):
    """Gives the subnormal flag back when a fit raises (Lightning then skips the module's teardown)."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(pl_module, ClasszooModule):
            pl_module._restore_subnormals()


def flushing_subnormals() -> bool:
    """Whether torch flushes subnormal floats to zero in this thread (probed by arithmetic)."""
    return (torch.tensor([1e-39]) * torch.tensor([1.0])).item() == 0.0


def _fork_stream_per_rank(rank: int) -> None:
    """Reseed torch, NumPy and Python from the current (shared) torch state folded with ``rank``."""
    base = int(torch.randint(0, 2**62, (1,)))  # the same on every rank: their states are equal here
    seed = (base + 0x9E3779B97F4A7C15 * (rank + 1)) % 2**63
    torch.manual_seed(seed)  # also every CUDA device
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _all_gather_objects(obj: Any, world_size: int) -> list[Any]:
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def _numpy_state_to_plain(state: tuple) -> list:
    name, key, pos, has_gauss, cached = state
    return [name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _numpy_state_from_plain(state: list) -> tuple:
    name, key, pos, has_gauss, cached = state
    return name, key.numpy().astype(np.uint32), pos, has_gauss, cached


def _caller_frame():
    import inspect

    # Lightning reads the constructor's arguments from the calling frame; skip our wrapper.
    return inspect.currentframe().f_back.f_back
