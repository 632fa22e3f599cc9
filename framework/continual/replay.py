"""Generative replay's arithmetic, pure: the replay share, replayed rows per batch, mixed batches.

Deep generative replay (Shin et al. 2017) trains the solver and the generator of step s on the
new data mixed with samples replayed from the previous step's generator, the replayed share
growing with the old classes. Both references use the same share r = old / seen classes:
Avalanche's ``GenerativeReplayPlugin`` appends ``batch * (experiences so far)`` replayed rows to
each batch (equal steps: a share old / seen of the mixed batch); GMvandeVen's DGR weights
``(1 - r) L_new + r L_replay`` over equal-sized batches with r = 1 - 1/contexts (the same share
for equal steps). Here the share is one of *rows*: a batch of ``b`` new samples gets
``round(b r / (1 - r))`` replayed ones, so that any loss that averages over the batch (the
solver's cross-entropy, every generator family's own training loss) gives the replay weight r.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from framework.errors import ConfigError

__all__ = ["MixedBatches", "keyed_generator", "keyed_seed", "mix_replay", "replay_count", "replay_share"]


def replay_share(old: int, seen: int, ratio: float | None = None) -> float:
    """The share r of replayed rows in a mixed batch: ``ratio`` if given, else old / seen (DGR).

    Args:
        old: Classes of the earlier steps (replayed).
        seen: Classes seen so far, the current step's included.
        ratio: A fixed share in [0, 1) instead of old / seen.
    """
    if not 0 <= old < seen:
        raise ConfigError(f"replay needs 0 <= old < seen classes, got old {old}, seen {seen}")
    if old == 0:
        return 0.0
    if ratio is None:
        return old / seen
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"replay_ratio must be in [0, 1), got {ratio}")
    return float(ratio)


def replay_count(batch_size: int, share: float) -> int:
    """Replayed rows added to ``batch_size`` new rows so that they make a share ``share`` of the batch."""
    if not 0.0 <= share < 1.0:
        raise ConfigError(f"the replay share must be in [0, 1), got {share}")
    return int(round(batch_size * share / (1.0 - share)))


def keyed_seed(*keys: int) -> int:
    """A seed in [0, 2**63) from a tuple of integers (seed, step, epoch, batch, ...)."""
    seed = 0x2545F4914F6CDD1D
    for key in keys:  # boost-style hash folding: distinct key tuples give unrelated seeds
        seed = (seed ^ (int(key) + 0x9E3779B97F4A7C15 + (seed << 6) + (seed >> 2))) % 2**63
    return seed


def keyed_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by :func:`keyed_seed` of ``keys``, so the global RNG is left alone."""
    return torch.Generator().manual_seed(keyed_seed(*keys))


def mix_replay(
    x: Tensor, y: Tensor, pool_x: Tensor, pool_y: Tensor, share: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The batch ``(x, y)`` with ``replay_count(len(x), share)`` rows of the pool appended.

    The pool rows are drawn uniformly with replacement from ``generator`` (a keyed one, so the
    same batch of the same step always gets the same rows, resumed or not).
    """
    count = replay_count(len(x), share) if len(pool_y) else 0
    if count == 0:
        return x, y
    rows = torch.randint(len(pool_y), (count,), generator=generator)
    return torch.cat([x, pool_x[rows].to(x)]), torch.cat([y, pool_y[rows].to(y)])


class MixedBatches:
    """Batches of a loader of new data, each with replayed pool rows appended (the generator's data).

    Iterating again is the next epoch; every batch's pool rows come from
    ``keyed_generator(*key, epoch, batch)``. ``class_counts`` counts the labels served so far
    (new and replayed), so one can check what the generator was trained on.

    Args:
        loader: Batches ``(x, y)`` of the step's new data.
        pool_x: Replayed samples (old classes).
        pool_y: Their labels.
        share: Share of replayed rows in each mixed batch.
        num_classes: Length of ``class_counts``.
        key: Integers that seed the draws (e.g. the run's seed and the step).
    """

    def __init__(
        self, loader: Iterable, pool_x: Tensor, pool_y: Tensor, share: float, num_classes: int, key: tuple[int, ...]
    ) -> None:
        self.loader, self.pool_x, self.pool_y, self.share, self.key = loader, pool_x, pool_y, share, key
        self.epoch = 0
        self.class_counts = torch.zeros(num_classes, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        sampler = getattr(self.loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)
        for batch, (x, y) in enumerate(self.loader):
            x, y = mix_replay(x, y, self.pool_x, self.pool_y, self.share, keyed_generator(*self.key, epoch, batch))
            self.class_counts += torch.bincount(y.cpu(), minlength=len(self.class_counts))
            yield x, y
