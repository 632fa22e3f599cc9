"""Labelled 2-D toy distributions (8gaussians, moons, checkerboard, spirals, swissroll) and the
``toy2d`` DataModule.

Each generator is a pure function ``f(n, generator=None, **options) -> (points, labels)``:
``points`` float32 (n, 2), ``labels`` int64 (n,) naming the part of the distribution a point
came from (mixture component, moon, checkerboard cell, spiral arm, roll segment). Every random
draw goes through ``generator`` (a ``torch.Generator``; None means torch's global RNG), so a
seeded generator gives the same points on every machine, and one generator per sample gives
per-sample seeding (what :mod:`framework.generative.flow.sources` does).

The geometry follows the references the flow-matching literature benchmarks on:
torchcfm's ``sample_8gaussians`` / ``sample_moons`` and FFJORD's ``toy_data`` (checkerboard,
2spirals, swissroll).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from framework.data.base import ClasszooDataModule, InMemoryDataset
from framework.errors import ConfigError
from registry import register

__all__ = [
    "DISTRIBUTIONS",
    "Toy2DDataModule",
    "checkerboard",
    "eight_gaussians",
    "moons",
    "sample_toy2d",
    "spirals",
    "swissroll",
    "toy2d_class_names",
]

Toy = tuple[Tensor, Tensor]

# torchcfm's eight_normal_sample centre order: E, W, N, S, NE, SE, NW, SW on the unit circle.
_R = 1.0 / math.sqrt(2.0)
_EIGHT_CENTERS = ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0), (_R, _R), (_R, -_R), (-_R, _R), (-_R, -_R))
_EIGHT_NAMES = ("E", "W", "N", "S", "NE", "SE", "NW", "SW")


def _uniform(n: int, generator: torch.Generator | None, *shape: int) -> Tensor:
    return torch.rand(n, *shape, generator=generator)


def _normal(n: int, generator: torch.Generator | None, *shape: int) -> Tensor:
    return torch.randn(n, *shape, generator=generator)


def _labels(n: int, k: int, generator: torch.Generator | None) -> Tensor:
    return torch.randint(0, k, (n,), generator=generator)


def eight_gaussians(
    n: int, generator: torch.Generator | None = None, *, scale: float = 5.0, noise: float = 0.1**0.25
) -> Toy:
    """Eight Gaussians centred on a circle of radius ``scale``; label = component (torchcfm's order).

    torchcfm's ``sample_8gaussians`` calls ``eight_normal_sample(n, 2, scale=5, var=0.1)``,
    which builds the covariance as ``sqrt(var) * I``: its per-coordinate standard deviation is
    ``0.1 ** 0.25`` (about 0.562), the default ``noise`` here, so the two match in distribution.
    """
    labels = _labels(n, 8, generator)
    centers = torch.tensor(_EIGHT_CENTERS, dtype=torch.float32) * scale
    points = centers[labels] + noise * _normal(n, generator, 2)
    return points, labels


def moons(n: int, generator: torch.Generator | None = None, *, noise: float = 0.2) -> Toy:
    """Two interleaved half circles mapped by ``3 x - 1``; label 0 = upper moon, 1 = lower moon.

    torchcfm's ``sample_moons`` is torchdyn's ``generate_moons(n, noise=0.2) * 3 - 1``: points
    on the two arcs plus ONE uniform draw in ``[0, noise)`` added to both coordinates (torchdyn's
    noise model, kept for fidelity). Here the arc position is uniform in angle (the limit of
    torchdyn's evenly spaced points) and the moon is drawn at random, so any ``n`` (and
    one-point draws) have the same distribution.
    """
    labels = _labels(n, 2, generator)
    theta = math.pi * _uniform(n, generator)
    lower = labels == 1
    x = torch.where(lower, 1.0 - torch.cos(theta), torch.cos(theta))
    y = torch.where(lower, 0.5 - torch.sin(theta), torch.sin(theta))
    shift = noise * _uniform(n, generator)
    points = torch.stack([x + shift, y + shift], dim=1) * 3.0 - 1.0
    return points, labels


def checkerboard(n: int, generator: torch.Generator | None = None, *, noise: float = 0.0) -> Toy:
    """FFJORD's checkerboard: 8 occupied 2x2 cells of a 4x4 board on [-4, 4]^2; label = cell.

    Cell label ``2 c + r`` for column ``c`` (0..3, left to right) and the column's two occupied
    cells ``r`` (0 = upper, 1 = lower); ``noise`` adds isotropic Gaussian jitter (FFJORD: none).
    """
    x1 = 4.0 * _uniform(n, generator) - 2.0
    row = _labels(n, 2, generator)
    x2 = _uniform(n, generator) - 2.0 * row + torch.remainder(torch.floor(x1), 2.0)
    points = torch.stack([x1, x2], dim=1) * 2.0
    if noise:
        points = points + noise * _normal(n, generator, 2)
    column = (torch.floor(x1) + 2).long().clamp(0, 3)
    return points, 2 * column + row


def spirals(n: int, generator: torch.Generator | None = None, *, noise: float = 0.1, arms: int = 2) -> Toy:
    """FFJORD's 2spirals generalised to ``arms`` arms (arm k rotated by 2 pi k / arms); label = arm.

    Per arm: radius-angle ``r = sqrt(u) * 540 deg`` (u uniform), point ``(-r cos r, r sin r)``
    plus a uniform ``[0, 0.5)`` offset per coordinate, divided by 3, plus Gaussian ``noise``.
    With 2 arms the second arm is the first negated, exactly as in FFJORD.
    """
    if arms < 1:
        raise ConfigError(f"spirals needs at least one arm, got {arms}")
    labels = _labels(n, arms, generator)
    r = torch.sqrt(_uniform(n, generator)) * (540.0 * 2.0 * math.pi / 360.0)
    offset = 0.5 * _uniform(n, generator, 2)
    arm = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], dim=1) + offset
    angle = 2.0 * math.pi * labels.to(torch.float32) / arms
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotated = torch.stack([cos * arm[:, 0] - sin * arm[:, 1], sin * arm[:, 0] + cos * arm[:, 1]], dim=1)
    points = rotated / 3.0 + noise * _normal(n, generator, 2)
    return points, labels


def swissroll(n: int, generator: torch.Generator | None = None, *, noise: float = 1.0, segments: int = 3) -> Toy:
    """FFJORD's swissroll: scikit-learn's 3-D roll (noise 1) projected on (x, z) and divided by 5.

    The roll parameter ``t = 1.5 pi (1 + 2 u)`` spans three half-turns; the label is the index
    of ``segments`` equal pieces of ``t`` (default: one per half-turn). The unused height
    coordinate of the 3-D roll is not drawn.
    """
    if segments < 1:
        raise ConfigError(f"swissroll needs at least one segment, got {segments}")
    u = _uniform(n, generator)
    t = 1.5 * math.pi * (1.0 + 2.0 * u)
    points = (torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) + noise * _normal(n, generator, 2)) / 5.0
    labels = torch.floor(u * segments).long().clamp(max=segments - 1)
    return points, labels


@dataclass(frozen=True)
class _Distribution:
    sample: Callable[..., Toy]
    class_names: Callable[..., list[str]]


def _checker_names() -> list[str]:
    names = []
    for c in range(4):
        for r in range(2):
            x0 = 2 * (c - 2)
            y0 = 2 * ((c - 2) % 2 - 2 * r)
            names.append(f"[{x0},{x0 + 2})x[{y0},{y0 + 2})")
    return names


DISTRIBUTIONS: dict[str, _Distribution] = {
    "8gaussians": _Distribution(eight_gaussians, lambda **_: list(_EIGHT_NAMES)),
    "moons": _Distribution(moons, lambda **_: ["upper", "lower"]),
    "checkerboard": _Distribution(checkerboard, lambda **_: _checker_names()),
    "spirals": _Distribution(spirals, lambda arms=2, **_: [f"arm{k}" for k in range(arms)]),
    "swissroll": _Distribution(swissroll, lambda segments=3, **_: [f"segment{k}" for k in range(segments)]),
}
"""Name -> generator and class names of every toy distribution."""


def _distribution(name: str) -> _Distribution:
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"unknown toy2d distribution {name!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    return DISTRIBUTIONS[name]


def sample_toy2d(name: str, n: int, generator: torch.Generator | None = None, **options) -> Toy:
    """``n`` labelled points of the named distribution (options: its keyword arguments)."""
    sample = _distribution(name).sample
    known = [k for k, p in inspect.signature(sample).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"toy2d {name!r} has no option {', '.join(unknown)}; its options: {', '.join(known)}")
    return sample(n, generator, **options)


def toy2d_class_names(name: str, **options) -> list[str]:
    """Class names of the named distribution (their number is its number of classes)."""
    return _distribution(name).class_names(**options)


@register("data", "toy2d")
class Toy2DDataModule(ClasszooDataModule):
    """A labelled 2-D toy distribution (8gaussians, moons, checkerboard, spirals, swissroll) in memory.

    Train, validation and test points are independent draws from one generator seeded with
    ``seed``; the label is the mixture component / moon / cell / arm / roll segment.

    Args:
        distribution: ``8gaussians`` (8 classes), ``moons`` (2), ``checkerboard`` (8), ``spirals``
            (``arms``, default 2) or ``swissroll`` (``segments``, default 3).
        size: Number of training points.
        val_size: Number of validation points.
        test_size: Number of test points.
        seed: Seed of the generator that draws all points.
        noise: The distribution's noise level (None: its reference default; see
            :mod:`framework.data.toy2d`).
        options: Other keyword arguments of the generator (``scale``, ``arms``, ``segments``).
        batch_size: Training batch size.
        eval_batch_size: Evaluation batch size (default: batch_size).
        num_workers: DataLoader workers (0: the data is already in memory).
    """

    def __init__(
        self,
        distribution: str = "8gaussians",
        size: int = 10000,
        val_size: int = 1000,
        test_size: int = 1000,
        seed: int = 0,
        noise: float | None = None,
        options: dict | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers)
        if size < 1 or val_size < 0 or test_size < 0:
            raise ConfigError(f"toy2d sizes must be size >= 1, val/test >= 0; got {size}, {val_size}, {test_size}")
        self.distribution = distribution
        self.sizes = (size, val_size, test_size)
        self.seed = seed
        self.options = dict(options or {})
        if noise is not None:
            self.options["noise"] = noise
        self.class_names = toy2d_class_names(distribution, **self.options)
        # Fail on a bad option now, at configuration time, rather than in setup().
        sample_toy2d(distribution, 1, torch.Generator().manual_seed(0), **self.options)
        self.num_classes = len(self.class_names)
        self.data_shape = (2,)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        generator = torch.Generator().manual_seed(self.seed)
        points, labels = sample_toy2d(self.distribution, sum(self.sizes), generator, **self.options)
        train, val, test = torch.split(torch.arange(len(labels)), self.sizes)
        self.train_dataset = InMemoryDataset(points[train], labels[train])
        self.val_dataset = InMemoryDataset(points[val], labels[val])
        self.test_dataset = InMemoryDataset(points[test], labels[test])
