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
    "iter_samples",
    "shard_name",
    "SHARD_SIZE",
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
SHARD_SIZE = 10_000
"""Default samples per shard: runs of more samples than this write ``samples-KKKKK-of-NNNNN.npz``
shards as the samples arrive, and ``samples.npz`` holds only the list of shards."""


def shard_name(shard: int, num_shards: int) -> str:
    """File name of shard ``shard`` (from 0) of ``num_shards``: ``samples-00000-of-00005.npz``."""
    return f"samples-{shard:05d}-of-{num_shards:05d}.npz"


class _Preview:
    """What grid.png needs, kept while samples stream past: the ``GRID_COLUMNS`` lowest-index images
    of every class, the count of every class, and (2-D points only, they are small) all points."""

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows
        self.counts = torch.zeros(0, dtype=torch.int64)
        self.kept: dict[int, tuple[Tensor, Tensor]] = {}  # class -> (index, images), at most GRID_COLUMNS
        self.points: list[tuple[Tensor, Tensor]] = []

    def add(self, index: Tensor, images: Tensor, labels: Tensor) -> None:
        counts = torch.bincount(labels, minlength=len(self.counts))
        counts[: len(self.counts)] += self.counts
        self.counts = counts
        if images.dim() == 2 and images.shape[1] == 2:
            self.points.append((images, labels))
        if images.dim() != 4:
            return
        for label in torch.unique(labels).tolist():
            chosen = labels == label
            idx, imgs = index[chosen], images[chosen]
            if label in self.kept:
                idx, imgs = torch.cat([self.kept[label][0], idx]), torch.cat([self.kept[label][1], imgs])
            order = torch.argsort(idx)[:GRID_COLUMNS]
            self.kept[label] = (idx[order], imgs[order].clone())

    def picture(self) -> Image.Image | None:
        per_class = int(self.counts.max()) if len(self.counts) else 1
        if self.points:
            images = torch.cat([p[0] for p in self.points])
            labels = torch.cat([p[1] for p in self.points])
        elif self.kept:
            images = torch.cat([imgs for _, imgs in self.kept.values()])
            labels = torch.cat([torch.full((len(imgs),), k, dtype=torch.int64) for k, (_, imgs) in self.kept.items()])
        else:
            return None
        return render_samples(images, labels, self.num_rows, columns=min(GRID_COLUMNS, per_class))


def _save_npz(path: Path, images: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> Path:
    arrays = {
        "images": torch.as_tensor(images).float().numpy().astype(np.float32, copy=False),
        "labels": torch.as_tensor(labels).to(torch.int64).numpy(),
    }
    return write_atomic(path, lambda f: np.savez(f, **arrays))


def _save_extras(directory: Path, preview: _Preview, config: dict[str, Any] | None) -> None:
    picture = preview.picture()
    if picture is not None:
        write_atomic(directory / "grid.png", lambda f: picture.save(f, format="PNG"))
    if config is not None:
        write_atomic(directory / "sample_config.json", json.dumps(config, indent=2, default=str))


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
    npz = _save_npz(directory / "samples.npz", images, labels)
    preview = _Preview(num_rows)
    preview.add(torch.arange(len(labels)), images, labels)
    _save_extras(directory, preview, config)
    return npz


def _sample_files(path: str | os.PathLike) -> list[Path]:
    """The npz files holding the samples of ``path`` (a directory, ``samples.npz`` or a shard), in order."""
    path = Path(path)
    if path.is_dir():
        path = path / "samples.npz"
    if not path.is_file():
        raise ConfigError(f"no samples file at {path}")
    with np.load(path) as data:
        if "shards" in data.files:  # the index of a sharded run
            files = [path.with_name(str(name)) for name in data["shards"]]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise ConfigError(f"{path} lists shards that are missing: {', '.join(missing[:3])}")
            return files
        missing = {"images", "labels"} - set(data.files)
        if missing:
            raise ConfigError(f"{path} lacks {sorted(missing)} (has {data.files})")
    return [path]


def iter_samples(path: str | os.PathLike) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(images, labels)`` of ``path`` one file (shard) at a time, in sample order: memory of one shard.

    Args:
        path: A samples directory, its ``samples.npz`` (a single file or the index of shards),
            or one shard.
    """
    for file in _sample_files(path):
        with np.load(file) as data:
            yield data["images"].astype(np.float32, copy=False), data["labels"].astype(np.int64, copy=False)


def load_samples(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of a ``samples.npz`` (or of the directory holding one), sharded or not."""
    parts = list(iter_samples(path))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# -- the Lightning side --------------------------------------------------------------------
class _OpenShard:
    """A shard being filled in place by sample index (rows arrive in any order, from any rank)."""

    def __init__(self, start: int, size: int, images: Tensor) -> None:
        self.start = start
        self.images = torch.empty((size, *images.shape[1:]), dtype=torch.float32)
        self.labels = torch.empty(size, dtype=torch.int64)
        self.filled = torch.zeros(size, dtype=torch.bool)


class SampleWriter(L.Callback):
    """Takes ``predict_step``'s ``{"index", "labels", "images"}`` and writes them on rank 0.

    Runs of at most ``shard_size`` samples are written at the end as one ``samples.npz``.
    Longer runs are written while they run: every ``shard_size`` consecutive samples (by index)
    become ``samples-KKKKK-of-NNNNN.npz`` as soon as they are all there, so memory does not grow
    with the number of samples; at the end ``samples.npz`` lists the shards (arrays ``shards``,
    ``counts``), so it appears only when every sample was written. Under DDP the ranks send their
    samples to rank 0 every ``gather_every`` batches (over a CPU gloo group, so GPU memory is not
    used for the transfer) and at the end. Rank 0 checks that every requested sample is there
    exactly once.

    Args:
        directory: Output directory.
        num_rows: Rows of the grid (number of classes, at least 1).
        config: Written as ``sample_config.json`` next to the samples.
        shard_size: Samples per shard (runs of at most this many write one file).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        num_rows: int,
        config: dict[str, Any] | None = None,
        shard_size: int = SHARD_SIZE,
    ) -> None:
        if shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
        self.directory = Path(directory)
        self.num_rows = num_rows
        self.config = config
        self.shard_size = shard_size
        self.expected: int | None = None
        self.gather_every = 1
        self.path: Path | None = None
        self._reset()

    def _reset(self) -> None:
        self._parts: list[dict[str, Tensor]] = []  # this rank's samples not yet merged
        self._open: dict[int, _OpenShard] = {}
        self._written: list[str] = []
        self._received = 0
        self._preview = _Preview(self.num_rows)
        self._group: Any = None
        self._sync_batches = 0

    @property
    def _sharded(self) -> bool:
        return self.expected is not None and self.expected > self.shard_size

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import torch.distributed as dist

        self._reset()
        if self._sharded and trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            # Ranks may have one batch more than others: gather only within the smallest count.
            self._group = dist.new_group(backend="gloo")
            batches = torch.tensor([int(trainer.num_predict_batches[0])])
            dist.all_reduce(batches, op=dist.ReduceOp.MIN, group=self._group)
            self._sync_batches = int(batches)

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
        if not self._sharded:
            return  # one file, written at the end
        if self._group is None:
            self._merge([self._take_parts()])
        elif (batch_idx + 1) % self.gather_every == 0 and batch_idx < self._sync_batches:
            self._merge(_gather_to_rank_zero(self._take_parts(), trainer.world_size, trainer.global_rank, self._group))

    def _take_parts(self) -> dict[str, Tensor] | None:
        parts, self._parts = self._parts, []
        return {k: torch.cat([p[k] for p in parts]) for k in ("index", "labels", "images")} if parts else None

    def _merge(self, shares: list[dict[str, Tensor] | None]) -> None:
        """Rank 0: put the samples into their shards; write the shards that are complete."""
        assert self.expected is not None
        num_shards = math.ceil(self.expected / self.shard_size)
        for share in shares:
            if share is None:
                continue
            self._received += len(share["index"])
            valid = (share["index"] >= 0) & (share["index"] < self.expected)
            index, labels, images = share["index"][valid], share["labels"][valid], share["images"][valid]
            for shard in torch.unique(index // self.shard_size).tolist():
                if shard_name(shard, num_shards) in self._written:
                    continue  # repeated samples: the count of received ones shows it at the end
                rows = index // self.shard_size == shard
                start = shard * self.shard_size
                if shard not in self._open:
                    self._open[shard] = _OpenShard(start, min(self.shard_size, self.expected - start), images)
                target = self._open[shard]
                offset = index[rows] - start
                target.images[offset] = images[rows].float()
                target.labels[offset] = labels[rows]
                target.filled[offset] = True
                if bool(target.filled.all()):
                    name = shard_name(shard, num_shards)
                    _save_npz(self.directory / name, target.images, target.labels)
                    self._preview.add(torch.arange(start, start + len(target.labels)), target.images, target.labels)
                    self._written.append(name)
                    del self._open[shard]

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import torch.distributed as dist

        if self.config is not None:
            # Per sample, as the last batch spent them (generator net calls; classifier calls apart).
            for key in ("last_nfe", "last_classifier_evaluations"):
                if isinstance(getattr(pl_module, key, None), int):
                    self.config[key.removeprefix("last_")] = getattr(pl_module, key)
        shares = _gather_to_rank_zero(self._take_parts(), trainer.world_size, trainer.global_rank, self._group)
        error: Exception | None = None
        if trainer.global_rank == 0:
            try:
                if self._sharded:
                    self._merge(shares)
                    self._finish(trainer.world_size)
                else:
                    self._write(shares, trainer.world_size)
            except Exception as caught:  # re-raised after the barrier, so the other ranks do not hang in it
                error = caught
        trainer.strategy.barrier("classzoo_sample_writer")
        if self._group is not None:
            dist.destroy_process_group(self._group)
        self._reset()
        if error is not None:
            raise error

    def _index_error(self, received: int, distinct: int) -> RuntimeError:
        return RuntimeError(
            f"sampling produced indices that are not exactly 0..{self.expected - 1} "
            f"({received} samples, {distinct} distinct)"
        )

    def _finish(self, world_size: int) -> None:
        """Rank 0, sharded runs: check that all shards are whole, then write the index and the grid."""
        assert self.expected is not None
        written = sum(int(o.filled.sum()) for o in self._open.values()) + sum(
            min(self.shard_size, self.expected - self.shard_size * i) for i in range(len(self._written))
        )
        if self._open or self._received != self.expected:
            raise self._index_error(self._received, written)
        if self.config is not None:
            self.config["world_size"] = world_size
            self.config["shard_size"] = self.shard_size
        names = sorted(self._written)
        counts = np.array([min(self.shard_size, self.expected - self.shard_size * i) for i in range(len(names))])
        self.path = write_atomic(
            self.directory / "samples.npz", lambda f: np.savez(f, shards=np.array(names), counts=counts)
        )
        _save_extras(self.directory, self._preview, self.config)

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


def _gather_to_rank_zero(obj: Any, world_size: int, rank: int, group: Any = None) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0 (``[]`` elsewhere); ``[obj]`` without distribution.

    ``group``: a gloo group to use (made and destroyed here when None).
    """
    import torch.distributed as dist

    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    own = group is None
    if own:
        group = dist.new_group(backend="gloo")
    try:
        gathered: list[Any] | None = [None] * world_size if rank == 0 else None
        dist.gather_object(obj, gathered, dst=0, group=group)
    finally:
        if own:
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
