"""Per-sample seeded noise: sample i depends on its seed only, not on batch or device count."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _seed_list(seeds: Tensor | Sequence[int]) -> list[int]:
    return [int(s) for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds)]


def seeded_randn(
    seeds: Tensor | Sequence[int],
    shape: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal tensor of shape ``(len(seeds), *shape)``; row i drawn from ``seeds[i]``.

    Drawn on the CPU and then moved, so the values do not depend on the device either.
    """
    rows = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(s)) for s in _seed_list(seeds)]
    return torch.stack(rows).to(device=device, dtype=dtype)


class PerSampleNoise:
    """Fresh noise for stochastic samplers, one CPU generator per sample.

    ``noise(x)`` returns a standard normal tensor shaped like ``x`` whose row i continues the
    stream of sample i's generator. Seeded with ``seed + offset`` so that it does not repeat
    the initial noise drawn by :func:`seeded_randn` from the same seeds.
    """

    def __init__(self, seeds: Tensor | Sequence[int], offset: int = 1_000_003) -> None:
        self.generators = [torch.Generator().manual_seed(s + offset) for s in _seed_list(seeds)]

    def __call__(self, like: Tensor) -> Tensor:
        if like.shape[0] != len(self.generators):
            raise ValueError(f"noise for {like.shape[0]} samples asked of {len(self.generators)} generators")
        rows = [torch.randn(tuple(like.shape[1:]), generator=g) for g in self.generators]
        return torch.stack(rows).to(device=like.device, dtype=like.dtype)
