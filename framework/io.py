"""Files that an interruption never leaves half-written: result files and checkpoints.

Every file the framework writes as a result (``samples.npz``, ``grid.png``, ``metrics.json``,
``results.csv``, checkpoints) goes through :func:`write_atomic`: the bytes go to a temporary
file in the same directory, are flushed to disk, and the file is renamed over the target. A
rename within one file system is atomic, so a reader (or a run resumed after a crash) finds
either the previous complete file or the new complete one, never a truncated one.

:class:`AtomicCheckpointIO` does the same for checkpoints. Lightning's own ``TorchCheckpointIO``
(2.6) writes through an fsspec transaction whose local temporary file lives in the system temp
directory: when that is another file system (a node-local ``/tmp``, checkpoints on shared
storage) the final move is a copy into the checkpoint file itself, and nothing is fsynced.
:class:`~framework.trainer.ClasszooTrainer` installs it unless the run names its own
``CheckpointIO`` plugin.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch.plugins import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "write_atomic"]


def write_atomic(path: str | os.PathLike, contents: bytes | str | Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` so that it is, at every moment, either its old complete self or the new one.

    Args:
        path: The file to write; its directory is created if needed.
        contents: The bytes, a str (written as UTF-8), or a function that writes into the
            binary file object it is given (``lambda f: np.savez(f, **arrays)``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of our own (not mkstemp) so that the file gets the usual 0666 & ~umask permissions;
    # the dot keeps it out of globs such as *.ckpt, the pid and random part apart from other writers.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(contents):
                contents(f)
            else:
                f.write(contents.encode() if isinstance(contents, str) else contents)
            f.flush()
            os.fsync(f.fileno())  # the data must be on disk before the rename makes it the file
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt included: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable (POSIX); Windows cannot open a directory, nothing to do there.
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO``, but local checkpoints are written with :func:`write_atomic`.

    An interruption while ``last.ckpt`` is being rewritten leaves the previous ``last.ckpt``
    as it was. The checkpoint is serialised straight into the temporary file (Lightning first
    builds it in memory). Remote paths (``s3://`` and other fsspec URLs) keep Lightning's
    behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        fs, local_path = fsspec.core.url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        write_atomic(local_path, lambda f: _torch_save(checkpoint, f))


def _torch_save(checkpoint: dict[str, Any], f: IO[bytes]) -> None:
    try:
        torch.save(checkpoint, f)
    except Exception as err:
        # Closing the archive after an interrupted write, torch.save raises its own error
        # ("unexpected pos") over the KeyboardInterrupt: let Ctrl-C stay a Ctrl-C.
        if isinstance(err.__context__, KeyboardInterrupt):
            raise err.__context__ from None
        raise
