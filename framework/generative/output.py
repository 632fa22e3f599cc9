"""What `lightning sample` reads and writes: sample requests, per-sample seeds, samples.npz, grid.png.

Sample ``i`` of a run has label ``i // num_per_class`` and the seed :func:`sample_seeds`
gives it, so the images depend on the seed and the index only, never on the batch size or
the number of devices. :class:`SampleWriter` collects what ``predict_step`` returns on
every rank, merges it on rank 0 and writes (``DESIGN.md``, "Outputs"):

- ``DIR/samples.npz``: ``images`` float32 NCHW (or ``(N, D)`` for vectors) in [-1, 1],
  ``labels`` int64, ordered by sample index;
- ``DIR/grid.png``: one row per class (images), or a scatter plot coloured by class (2-D points);
- ``DIR/sample_config.json``: seed, number per class, generation options, checkpoint.

Files are written with :func:`framework.io.write_atomic`, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import Dataset

from framework.errors import ConfigError
from framework.io import write_atomic

__all__ = [
    "SampleRequests",
    "SampleWriter",
    "sample_seeds",
    "class_grid",
    "scatter_plot",
    "render_samples",
    "save_samples",
    "load_samples",
    "check_options",
]

SEED_STRIDE = 0x9E3779B9
"""Run ``seed`` starts its sample seeds at ``seed * SEED_STRIDE`` (mod 2**32; the golden-ratio
constant spreads runs far apart): torch's CPU generator only uses a seed's low 32 bits, so
``seed * 2**32 + index`` would repeat the same noise for every run."""

GRID_COLUMNS = 16
"""grid.png shows at most this many samples of each class (samples.npz holds them all)."""

# A qualitative palette (Tableau 10) for the scatter plot of 2-D samples; it cycles past 10 classes.
_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def sample_seeds(index: Tensor, seed: int = 0) -> Tensor:
    """Per-sample seeds ``(index + seed * SEED_STRIDE) mod 2**32`` (int64): distinct for distinct indices."""
    if not 0 <= seed < 2**31:
        raise ConfigError(f"seed must be in [0, 2**31), got {seed}")
    return (index.to(torch.int64) + (seed * SEED_STRIDE) % 2**32) % 2**32


class SampleRequests(Dataset):
    """The samples to generate: item ``i`` is ``(i, i // num_per_class)`` as int64 tensors.

    Args:
        num_classes: Number of classes; 0 (an unconditional model) asks for ``num_per_class``
            samples labelled 0.
        num_per_class: Samples per class.
    """

    def __init__(self, num_classes: int, num_per_class: int) -> None:
        if num_per_class < 1:
            raise ConfigError(f"num_per_class must be >= 1, got {num_per_class}")
        if num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.num_rows = max(num_classes, 1)
        self.num_per_class = num_per_class

    def __len__(self) -> int:
        return self.num_rows * self.num_per_class

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return torch.tensor(index, dtype=torch.int64), torch.tensor(index // self.num_per_class, dtype=torch.int64)

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """``(index, labels)`` batches of the share of ``rank``: indices ``rank, rank + world_size, ...``."""
        index = torch.arange(rank, len(self), world_size, dtype=torch.int64)
        for chunk in index.split(batch_size):
            yield chunk, chunk // self.num_per_class


# -- rendering ------------------------------------------------------------------------------
def _to_uint8(images: Tensor) -> Tensor:
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def class_grid(
    images: Tensor, labels: Tensor, num_rows: int, columns: int = GRID_COLUMNS, min_tile: int = 32, padding: int = 2
) -> Image.Image:
    """A grid image of ``images`` (NCHW in [-1, 1]): row k holds the first ``columns`` samples of class k.

    Tiles smaller than ``min_tile`` pixels are enlarged by an integer factor (nearest
    neighbour) so that 8x8 digits stay visible; channels other than 1 or 3 are averaged.
    """
    from torchvision.utils import make_grid

    if images.dim() != 4:
        raise ConfigError(f"class_grid needs NCHW images, got shape {tuple(images.shape)}")
    images = images.detach().float().cpu()
    labels = labels.detach().cpu()
    if images.shape[1] not in (1, 3):
        images = images.mean(dim=1, keepdim=True)
    tiles = torch.full((num_rows, columns, *images.shape[1:]), -1.0)
    for row in range(num_rows):
        chosen = images[labels == row][:columns]
        tiles[row, : len(chosen)] = chosen
    scale = max(1, math.ceil(min_tile / max(images.shape[-2:])))
    tiles = tiles.flatten(0, 1)
    if scale > 1:
        tiles = torch.nn.functional.interpolate(tiles, scale_factor=scale, mode="nearest")
    grid = make_grid(_to_uint8(tiles), nrow=columns, padding=padding, pad_value=255)
    array = grid.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if images.shape[1] == 1 else array)  # mode L or RGB from the shape


def scatter_plot(points: Tensor, labels: Tensor, size: int = 512, radius: int = 2) -> Image.Image:
    """A scatter plot of 2-D ``points`` coloured by label (the 'grid' of vector data such as toy2d)."""
    points = points.detach().double().cpu()
    if points.dim() != 2 or points.shape[1] != 2:
        raise ConfigError(f"scatter_plot needs (N, 2) points, got shape {tuple(points.shape)}")
    finite = points[torch.isfinite(points).all(dim=1)]
    low, high = (finite.min(0).values, finite.max(0).values) if len(finite) else (torch.zeros(2), torch.ones(2))
    span = (high - low).max().clamp_min(1e-8) * 1.1
    centre = (high + low) / 2
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for (x, y), label in zip(finite.tolist(), labels[torch.isfinite(points).all(dim=1)].tolist(), strict=True):
        u = (x - centre[0].item()) / span.item() * size + size / 2
        v = size / 2 - (y - centre[1].item()) / span.item() * size  # y grows upwards
        draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=_PALETTE[int(label) % len(_PALETTE)])
    return image


def render_samples(images: Tensor, labels: Tensor, num_rows: int, columns: int = GRID_COLUMNS) -> Image.Image | None:
    """The picture of a sample set: a class grid for images, a scatter plot for 2-D points, else None."""
    if images.dim() == 4:
        return class_grid(images, labels, num_rows, columns)
    if images.dim() == 2 and images.shape[1] == 2:
        return scatter_plot(images, labels)
    return None


# -- files ----------------------------------------------------------------------------------
def save_samples(
    directory: str | os.PathLike,
    images: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    num_rows: int,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write ``samples.npz`` (and ``grid.png``, ``sample_config.json``) into ``directory``; return the npz path."""
    directory = Path(directory)
    images = torch.as_tensor(images).float()
    labels = torch.as_tensor(labels).to(torch.int64)
    arrays = {"images": images.numpy().astype(np.float32), "labels": labels.numpy().astype(np.int64)}
    npz = write_atomic(directory / "samples.npz", lambda f: np.savez(f, **arrays))
    per_class = int(torch.bincount(labels).max()) if len(labels) else 1
    picture = render_samples(images, labels, num_rows, columns=min(GRID_COLUMNS, per_class))
    if picture is not None:
        write_atomic(directory / "grid.png", lambda f: picture.save(f, format="PNG"))
    if config is not None:
        write_atomic(directory / "sample_config.json", json.dumps(config, indent=2, default=str))
    return npz


def load_samples(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of a ``samples.npz`` (or of the directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "samples.npz"
    if not path.is_file():
        raise ConfigError(f"no samples file at {path}")
    with np.load(path) as data:
        missing = {"images", "labels"} - set(data.files)
        if missing:
            raise ConfigError(f"{path} lacks {sorted(missing)} (has {data.files})")
        return data["images"].astype(np.float32), data["labels"].astype(np.int64)


# -- the Lightning side --------------------------------------------------------------------
class SampleWriter(L.Callback):
    """Collects ``predict_step``'s ``{"index", "labels", "images"}`` and writes them on rank 0.

    Every rank keeps its own share; at the end of prediction rank 0 gathers the shares (over
    a CPU gloo group, so GPU memory is not used for the transfer), orders them by index,
    checks that every requested sample is there exactly once, and writes the files.

    Args:
        directory: Output directory.
        num_rows: Rows of the grid (number of classes, at least 1).
        config: Written as ``sample_config.json`` next to the samples.
    """

    def __init__(self, directory: str | os.PathLike, num_rows: int, config: dict[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        self.num_rows = num_rows
        self.config = config
        self.expected: int | None = None
        self.path: Path | None = None
        self._parts: list[dict[str, Tensor]] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parts = []

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or not {"index", "labels", "images"} <= set(outputs):
            raise ConfigError(
                f"{type(pl_module).__name__}.predict_step must return a dict with 'index', 'labels' and 'images' "
                "(GenerativeModule.predict_step does)"
            )
        self._parts.append({k: outputs[k].detach().cpu() for k in ("index", "labels", "images")})

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.config is not None:
            # Per sample, as the last batch spent them (generator net calls; classifier calls apart).
            for key in ("last_nfe", "last_classifier_evaluations"):
                if isinstance(getattr(pl_module, key, None), int):
                    self.config[key.removeprefix("last_")] = getattr(pl_module, key)
        local = (
            {k: torch.cat([p[k] for p in self._parts]) for k in ("index", "labels", "images")} if self._parts else None
        )
        self._parts = []
        shares = _gather_to_rank_zero(local, trainer.world_size, trainer.global_rank)
        error: Exception | None = None
        if trainer.global_rank == 0:
            try:
                self._write(shares, trainer.world_size)
            except Exception as caught:  # re-raised after the barrier, so the other ranks do not hang in it
                error = caught
        trainer.strategy.barrier("classzoo_sample_writer")
        if error is not None:
            raise error

    def _write(self, shares: list[dict[str, Tensor] | None], world_size: int) -> None:
        if self.config is not None:
            self.config["world_size"] = world_size
        merged = {k: torch.cat([s[k] for s in shares if s is not None]) for k in ("index", "labels", "images")}
        order = torch.argsort(merged["index"])
        index = merged["index"][order]
        expected = self.expected if self.expected is not None else len(index)
        if not torch.equal(index, torch.arange(expected)):
            raise RuntimeError(
                f"sampling produced indices that are not exactly 0..{expected - 1} "
                f"({len(index)} samples, {len(torch.unique(index))} distinct)"
            )
        self.path = save_samples(
            self.directory, merged["images"][order], merged["labels"][order], self.num_rows, self.config
        )


def _gather_to_rank_zero(obj: Any, world_size: int, rank: int) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0 (``[]`` elsewhere); ``[obj]`` without distribution."""
    import torch.distributed as dist

    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    group = dist.new_group(backend="gloo")
    try:
        gathered: list[Any] | None = [None] * world_size if rank == 0 else None
        dist.gather_object(obj, gathered, dst=0, group=group)
    finally:
        dist.destroy_process_group(group)
    return gathered or []


def check_options(generate: Callable[..., Any], options: dict[str, Any], model_name: str) -> None:
    """Raise ConfigError if ``generate`` cannot take one of ``options`` (it has no ``**kwargs``)."""
    import inspect

    params = inspect.signature(generate).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)][2:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{model_name}.generate does not take {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(accepted) or 'none'}"
        )
