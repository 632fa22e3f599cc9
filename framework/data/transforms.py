"""Batch-aware augmentations for in-memory NCHW image tensors.

:class:`~framework.data.base.InMemoryDataset` hands its ``transform`` a whole batch, so each
augmentation here draws its random parameters for every sample at once and applies them with
tensor indexing: no per-sample Python loop. Randomness comes from torch's global RNG (seeded by
``seed_everything``; DataLoader workers get their own seeds), drawn on the CPU so that the
same seed gives the same augmentation on any device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.errors import ConfigError

__all__ = ["Compose", "RandomCrop", "RandomHorizontalFlip", "build_augmentation"]


def _check_batch(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"batch augmentations expect an NCHW batch, got shape {tuple(x.shape)}")


class RandomCrop:
    """Pad by ``padding`` on every side, then crop back to the input size at a random offset per sample.

    The batch version of torchvision's ``RandomCrop(size, padding=p)``. Its default fill, 0 on
    a [0, 1] image before normalisation, is black; black is -1 in our [-1, 1] convention, so
    ``fill`` defaults to -1.

    Args:
        padding: Pixels added on each side (the crop offset is uniform in ``0..2*padding``).
        fill: Value of constant padding.
        padding_mode: ``constant``, ``reflect``, ``replicate`` or ``circular`` (``F.pad`` modes).
    """

    def __init__(self, padding: int = 4, fill: float = -1.0, padding_mode: str = "constant") -> None:
        if padding < 0:
            raise ConfigError(f"crop padding must be >= 0, got {padding}")
        if padding_mode not in ("constant", "reflect", "replicate", "circular"):
            raise ConfigError(f"unknown padding_mode {padding_mode!r}")
        self.padding, self.fill, self.padding_mode = padding, fill, padding_mode

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x)
        p = self.padding
        if p == 0:
            return x
        b, _, h, w = x.shape
        if self.padding_mode == "constant":
            padded = F.pad(x, (p, p, p, p), mode="constant", value=self.fill)
        else:
            padded = F.pad(x, (p, p, p, p), mode=self.padding_mode)
        top = torch.randint(0, 2 * p + 1, (b,)).to(x.device)
        left = torch.randint(0, 2 * p + 1, (b,)).to(x.device)
        # Every crop of the padded batch as a strided view (B, C, 2p+1, 2p+1, H, W), no copy;
        # picking one window per sample copies only the output.
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)
        return windows[torch.arange(b, device=x.device), :, top, left]

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding}, fill={self.fill}, padding_mode={self.padding_mode!r})"


class RandomHorizontalFlip:
    """Mirror each sample left-right with probability ``p`` (drawn per sample)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x)
        flip = (torch.rand(x.shape[0]) < self.p).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply batch transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Tensor], Tensor]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"


def build_augmentation(crop_padding: int = 0, horizontal_flip: bool = False) -> Compose | None:
    """The standard augmentation from DataModule options: random crop with padding, then flip."""
    steps: list[Callable[[Tensor], Tensor]] = []
    if crop_padding:
        steps.append(RandomCrop(crop_padding))
    if horizontal_flip:
        steps.append(RandomHorizontalFlip())
    return Compose(steps) if steps else None
