"""Source distributions of a flow: N(0, I), or a toy 2-D distribution for source-to-target transport."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from framework.errors import ConfigError
from framework.generative.noise import _seed_list, seeded_randn

__all__ = ["GaussianSource", "Source", "ToySource", "build_source"]


class Source(ABC):
    """Draws the t = 0 end of a flow."""

    name: str

    @abstractmethod
    def sample(self, n: int, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` draws from the global RNG (training)."""

    @abstractmethod
    def sample_seeded(self, seeds: Tensor | Sequence[int], device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """One draw per seed; draw i depends on ``seeds[i]`` only (sampling)."""


class GaussianSource(Source):
    """The standard normal N(0, I) over the data shape."""

    name = "gaussian"

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)

    def sample(self, n, device=None, dtype=torch.float32):
        return torch.randn(n, *self.shape, device=device, dtype=dtype)

    def sample_seeded(self, seeds, device=None, dtype=torch.float32):
        return seeded_randn(seeds, self.shape, device=device, dtype=dtype)


class ToySource(Source):
    """A toy 2-D distribution of :mod:`framework.data.toy2d` (``8gaussians``, ``moons``, ...).

    Args:
        name: Distribution name.
        sampler: ``sampler(n, generator) -> (n, 2)`` points.
    """

    def __init__(self, name: str, sampler: Callable[[int, torch.Generator | None], Tensor]) -> None:
        self.name, self.sampler = name, sampler

    def sample(self, n, device=None, dtype=torch.float32):
        return self.sampler(n, None).to(device=device, dtype=dtype)

    def sample_seeded(self, seeds, device=None, dtype=torch.float32):
        rows = [self.sampler(1, torch.Generator().manual_seed(s))[0] for s in _seed_list(seeds)]
        return torch.stack(rows).to(device=device, dtype=dtype)


def build_source(name: str, data_shape: Sequence[int], **options) -> Source:
    """``gaussian`` or a toy 2-D distribution name (its ``options`` go to the toy generator)."""
    if name == "gaussian":
        if options:
            raise ConfigError(f"the gaussian source takes no options, got {sorted(options)}")
        return GaussianSource(data_shape)
    if tuple(data_shape) != (2,):
        raise ConfigError(f"toy source {name!r} gives 2-D points but the data shape is {tuple(data_shape)}")
    from framework.data import toy2d

    if name not in toy2d.DISTRIBUTIONS:
        raise ConfigError(f"unknown source {name!r}; choose 'gaussian' or one of {', '.join(toy2d.DISTRIBUTIONS)}")

    def sampler(n: int, generator: torch.Generator | None) -> Tensor:
        return toy2d.sample_toy2d(name, n, generator=generator, **options)[0]

    return ToySource(name, sampler)
