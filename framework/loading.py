"""The one loader of trained parts for compositions (a generator used as a classifier or for
replay, a classifier used as guidance, verifier or judge).

Every composition takes its parts as a checkpoint path, optionally with the registry name of
the model that wrote it, and loads them through :func:`load_trained`, so that a part that does
not fit (another kind of model, another class count, another data shape, a file that is not a
checkpoint) is one :class:`~framework.errors.ConfigError` line everywhere, never a traceback.

Checkpoints written by a :class:`~framework.core.ClasszooModule` record the import path of
their class (``CLASS_KEY``), so the name can be left out; older checkpoints need it.

A checkpoint path may be a glob pattern (:func:`resolve_checkpoint`): the recipes write their
checkpoints where Lightning does, under the run's log folder
(``<default_root_dir>/lightning_logs/version_N/checkpoints/``), and the recipe that reads one
names it as ``lightning_logs/version_*/checkpoints/<name>.ckpt``: the newest match.
"""

from __future__ import annotations

import glob
import importlib
import os
from collections.abc import Sequence
from typing import Any

import torch

import registry
from framework.errors import ConfigError

__all__ = ["CLASS_KEY", "load_trained", "read_checkpoint", "resolve_checkpoint"]

#: Checkpoint key holding ``module.QualifiedName`` of the model class that saved it.
CLASS_KEY = "classzoo_class"


def resolve_checkpoint(path: str | os.PathLike, role: str = "checkpoint") -> str:
    """``path``, or for a glob pattern (``*``, ``?``, ``[``) its newest match (latest modification).

    ``lightning_logs/version_*/checkpoints/flow_digits.ckpt`` is the checkpoint of the latest
    run of ``recipes/flow_digits.yaml`` in the working directory. A pattern that matches no
    file is a one-line error.
    """
    path = os.fspath(path)
    if not glob.has_magic(path):
        return path
    matches = [m for m in glob.glob(path, recursive=True) if os.path.isfile(m)]
    if not matches:
        raise ConfigError(f"{role}: no checkpoint matches {path} (train the recipe that writes it first)")
    return max(matches, key=os.path.getmtime)


def read_checkpoint(path: str | os.PathLike, role: str = "checkpoint") -> dict[str, Any]:
    """The dictionary in a Lightning checkpoint file; one-line errors for a missing or foreign file.

    Args:
        path: The file.
        role: What the file is for, to start the error message with (e.g. ``"guidance classifier"``).
    """
    path = resolve_checkpoint(path, role)
    if not os.path.isfile(path):
        raise ConfigError(f"{role}: checkpoint not found: {path}")
    try:
        # Lightning checkpoints hold NumPy objects (loop and RNG states): they are trusted local
        # files here, read as `lightning fit --ckpt_path` reads them.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"{role}: {path} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{role}: {path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def _model_class(checkpoint: dict[str, Any], path: str, model: str | type | None, role: str) -> type:
    named = registry.get("model", model) if isinstance(model, str) else model
    saved = checkpoint.get(CLASS_KEY)
    if not saved:
        if named is None:
            raise ConfigError(f"{role}: {path} does not record its model class: name it (e.g. model: diffusion)")
        return named
    module_name, _, qualname = saved.rpartition(".")
    try:
        recorded = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError):
        if named is None:
            raise ConfigError(f"{role}: {path} was saved by {saved}, which cannot be imported here") from None
        return named
    # a subclass of the named model (a user's FocalClassifier for `classifier`) rebuilds as itself
    return recorded if named is None or issubclass(recorded, named) else named


def load_trained(
    path: str | os.PathLike,
    model: str | type | None = None,
    *,
    role: str = "checkpoint",
    base: type | tuple[type, ...] | None = None,
    num_classes: int | None = None,
    data_shape: Sequence[int] | None = None,
    conditional: bool = False,
    map_location: str | torch.device = "cpu",
    freeze: bool = True,
    **overrides: Any,
) -> Any:
    """A trained registered model from its checkpoint, checked against what the caller needs.

    Args:
        path: The Lightning checkpoint.
        model: Registry name (or class) of the model that wrote it; None reads it from the
            checkpoint. A recorded subclass of the named model is rebuilt as that subclass.
        role: What the part is for, named in every error (``"guidance classifier"``, ...).
        base: The class(es) the model must be an instance of (e.g. ``GenerativeModule``).
        num_classes: The class count the model must have (None: any).
        data_shape: The sample shape the model must have (None: any).
        conditional: Require a class-conditional model (``num_classes > 0``).
        map_location: Device to load the weights on.
        freeze: Return it in eval mode with gradients off (parts of a composition are not trained).
        **overrides: Constructor arguments that replace the saved ones (e.g. ``init_checkpoint=None``).
    """
    path = resolve_checkpoint(path, role)
    checkpoint = read_checkpoint(path, role)
    cls = _model_class(checkpoint, path, model, role)
    if base is not None and not issubclass(cls, base):
        wanted = " or ".join(b.__name__ for b in (base if isinstance(base, tuple) else (base,)))
        raise ConfigError(f"{role}: {path} holds a {cls.__name__}, not a {wanted}")
    if "hyper_parameters" not in checkpoint:
        raise ConfigError(f"{role}: {path} has no saved hyper-parameters to rebuild {cls.__name__} from")
    try:
        loaded = cls.load_from_checkpoint(path, map_location=map_location, weights_only=False, **overrides)
    except (TypeError, KeyError, RuntimeError, registry.RegistryError) as err:
        # a checkpoint of another model: its arguments or weights do not fit this class
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{role}: cannot rebuild {cls.__name__} from {path}: {message}") from None
    found = getattr(loaded, "num_classes", None)
    if conditional and not found:
        raise ConfigError(f"{role}: {path} holds an unconditional {cls.__name__}; a class-conditional one is needed")
    if num_classes is not None and found is not None and found != num_classes:
        raise ConfigError(f"{role}: {path} was trained on {found} classes, the data have {num_classes}")
    shape = getattr(loaded, "data_shape", None)
    if data_shape is not None and shape is not None and tuple(shape) != tuple(data_shape):
        raise ConfigError(f"{role}: {path} was trained on samples shaped {tuple(shape)}, the data are {tuple(data_shape)}")
    if freeze:
        loaded.eval().requires_grad_(False)
    return loaded
