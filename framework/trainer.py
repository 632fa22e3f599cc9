"""ClasszooTrainer: Lightning's Trainer plus ``sample``, the engine of ``lightning sample``.

It also makes finished checkpoints safe from interruptions (docs/getting_started.md,
"Interruptions and resuming"): checkpoints are written atomically (:class:`~framework.io.AtomicCheckpointIO`)
and the final state of a fit is saved (:class:`~framework.callbacks.FinalCheckpoint`).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.plugins import CheckpointIO, TorchCheckpointIO
from torch.utils.data import DataLoader

from framework.callbacks.final_checkpoint import FinalCheckpoint
from framework.errors import ClasszooError, ConfigError
from framework.generative.base import GenerativeModule
from framework.generative.output import SHARD_SIZE, SampleRequests, SampleWriter, check_options
from framework.io import AtomicCheckpointIO

__all__ = ["ClasszooTrainer"]

# ckpt_path values that Lightning resolves itself instead of reading a file.
_LIGHTNING_CKPT_ALIASES = ("best", "last", "hpc", "registry")


class ClasszooTrainer(L.Trainer):
    """A :class:`lightning.Trainer` that can also draw samples from a generator (:meth:`sample`).

    Everything else (``fit``, ``validate``, ``test``, ``predict``) is Lightning's, with two
    defaults added: local checkpoints are written atomically (unless ``plugins`` names a
    ``CheckpointIO`` or the strategy brings its own), and a :class:`FinalCheckpoint` callback
    saves the state a fit ends with.
    """

    def __init__(self, **kwargs: Any) -> None:
        # Keyword arguments only, as Lightning's Trainer; LightningCLI reads their types there.
        callbacks = _as_list(kwargs.get("callbacks"))
        if not any(isinstance(c, FinalCheckpoint) for c in callbacks):
            callbacks.insert(0, FinalCheckpoint())
        kwargs["callbacks"] = callbacks
        super().__init__(**kwargs)
        user_io = any(isinstance(p, CheckpointIO) for p in _as_list(kwargs.get("plugins")))
        # Exactly Lightning's default: not a user's plugin, nor a strategy's own (XLA, async).
        if not user_io and type(self.strategy.checkpoint_io) is TorchCheckpointIO:
            self.strategy.checkpoint_io = AtomicCheckpointIO()
        # A ckpt_path that is not a checkpoint, or one of another model, is a user error (one
        # line, exit 2), whatever the entry point (fit, validate, test, predict, sample).
        connector = self._checkpoint_connector
        for name in ("_restore_modules_and_callbacks", "restore_training_state"):
            setattr(connector, name, _checkpoint_errors_as_config_errors(getattr(connector, name), self))

    def sample(
        self,
        model: GenerativeModule,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        num_per_class: int = 10,
        output: str = "samples",
        seed: int = 0,
        batch_size: int = 256,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        options: dict[str, Any] | None = None,
        shard_size: int = SHARD_SIZE,
    ) -> Path:
        """Generate ``num_per_class`` samples of every class and write them to ``output``.

        Writes ``output/samples.npz`` (``images`` float32 in [-1, 1], ``labels`` int64,
        ordered by class), ``output/grid.png`` (one row per class) and
        ``output/sample_config.json``. Runs of more than ``shard_size`` samples write
        ``output/samples-KKKKK-of-NNNNN.npz`` shards while they run (memory independent of the
        number of samples) and a ``samples.npz`` that lists them; :func:`~framework.generative.output.load_samples`
        and :func:`~framework.generative.output.iter_samples` read both layouts. Sample ``i`` has label ``i // num_per_class`` and is
        generated from its own seed (:func:`~framework.generative.output.sample_seeds`), so a run gives the same images on
        one device or many (each rank generates its share; rank 0 merges and writes).
        Prediction runs with inference mode off so that classifier guidance can
        differentiate. Weight-averaging callbacks are left out while sampling: the
        weights used are the checkpoint's ``state_dict``, which under Lightning's
        ``EMAWeightAveraging`` holds the averaged (EMA) weights.

        Args:
            model: The generator (a registered diffusion, flow or GAN model).
            datamodule: The data the model was trained on; only checked against the model's
                number of classes.
            ckpt_path: Checkpoint whose weights to use (a path, or Lightning's ``"best"`` /
                ``"last"`` after ``fit``); None samples from the model as it is.
            num_per_class: Samples per class (unconditional models: samples in all).
            output: Directory to write into (created if needed).
            seed: Seed of the run, in [0, 2**31).
            batch_size: Samples generated at once on each device.
            sampler: Sampler name, for models that have several (diffusion, flow).
            steps: Number of sampler steps.
            guidance: Guidance name (e.g. ``cfg``, ``classifier``).
            guidance_scale: Guidance strength.
            options: Further keyword arguments for the model's ``generate``.
            shard_size: Samples per file; longer runs are written in shards of this many.

        Returns:
            The path of ``samples.npz`` (the samples, or the list of shards).
        """
        if not isinstance(model, GenerativeModule):
            raise ConfigError(f"sample needs a generative model, got {type(model).__name__}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and int(data_classes) != model.num_classes:
            raise ConfigError(
                f"the model has {model.num_classes} classes but the data {type(datamodule).__name__} has {data_classes}"
            )
        if ckpt_path is not None and ckpt_path not in _LIGHTNING_CKPT_ALIASES and not os.path.isfile(ckpt_path):
            raise ConfigError(f"checkpoint not found: {ckpt_path}")

        given = {"sampler": sampler, "steps": steps, "guidance": guidance, "guidance_scale": guidance_scale}
        generate_options = {k: v for k, v in given.items() if v is not None} | dict(options or {})
        check_options(model.generate, generate_options, type(model).__name__)

        requests = SampleRequests(getattr(model, "sample_classes", model.num_classes), num_per_class)
        writer = SampleWriter(
            output,
            num_rows=requests.num_rows,
            config={
                "model": type(model).__name__,
                "ckpt_path": ckpt_path,
                "num_classes": model.num_classes,
                "num_per_class": num_per_class,
                "seed": seed,
                "options": generate_options,
            },
            shard_size=shard_size,
        )
        writer.expected = len(requests)
        writer.gather_every = max(1, shard_size // (batch_size * max(1, self.world_size)))
        loader = DataLoader(requests, batch_size=batch_size, shuffle=False)

        saved_model_state = (model.sample_seed, model.sample_options)
        saved_callbacks = list(self.callbacks)
        saved_inference_mode = self.predict_loop.inference_mode
        model.sample_seed, model.sample_options = seed, generate_options
        # A weight-averaging callback that is still holding its average (fit then sample in
        # one process) would load the checkpoint's non-averaged weights into the model.
        self.callbacks = [c for c in saved_callbacks if not isinstance(c, WeightAveraging)] + [writer]
        self.predict_loop.inference_mode = False
        try:
            with warnings.catch_warnings():
                # Lightning asks for the callbacks that made the checkpoint; leaving out EMA is deliberate.
                warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")
                self.predict(model, dataloaders=loader, ckpt_path=ckpt_path, return_predictions=False)
        finally:
            self.callbacks = saved_callbacks
            self.predict_loop.inference_mode = saved_inference_mode
            model.sample_seed, model.sample_options = saved_model_state
        return Path(output) / "samples.npz"


def _checkpoint_errors_as_config_errors(restore: Callable[..., None], trainer: L.Trainer) -> Callable[..., None]:
    """Wrap a checkpoint connector's restore step: its failures become one-line ConfigErrors."""

    @functools.wraps(restore)
    def wrapped(*args: Any, **kwargs: Any) -> None:
        try:
            restore(*args, **kwargs)
        except ClasszooError:
            raise
        except Exception as err:
            connector = trainer._checkpoint_connector
            path = connector._ckpt_path or (args[0] if args else kwargs.get("checkpoint_path"))
            if not path:
                raise
            raise ConfigError(checkpoint_error_message(str(path), connector._loaded_checkpoint, trainer, err)) from err

    return wrapped


def checkpoint_error_message(path: str, loaded: dict[str, Any] | None, trainer: L.Trainer | None, err: Exception) -> str:
    """The one-line message for a ``ckpt_path`` that could not be restored (``loaded``: its contents, if read)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        # torch's weights-only unpickler: the cause is the line before its documentation hint.
        cause = [line for line in lines if not line.startswith(("Check the documentation", "Please file"))]
        lines = [f"torch.load(weights_only=True): {cause[-1]}"]
    if lines and lines[0].startswith("Error(s) in loading state_dict"):
        lines = [" ".join(lines[:2])]  # the first line only names the class
    detail = lines[0] if lines else type(err).__name__
    module = trainer.lightning_module if trainer is not None else None
    model = type(module).__name__ if module is not None else "the model"
    if isinstance(err, FileNotFoundError):
        return f"checkpoint not found: {path}"
    if not loaded and isinstance(err, KeyError):  # read, but Lightning's migration misses its keys
        return f"ckpt_path {path} is not a Lightning checkpoint (it has no {err.args[0]!r})"
    if not loaded:
        return f"ckpt_path {path} is not a readable checkpoint ({type(err).__name__}: {detail[:200]})"
    if "state_dict" not in loaded:
        return f"ckpt_path {path} is not a Lightning checkpoint (it has no state_dict)"
    return f"ckpt_path {path} does not fit {model} (a checkpoint of another model or configuration?): {detail[:300]}"


def _as_list(value: Any) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
