"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random, differentiable transforms are applied to every image D sees, real or fake, in
both D's and G's steps. Operations follow the reference ``DiffAugment_pytorch.py``; images are
in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.errors import ConfigError


def _uniform(x: Tensor, *shape: int) -> Tensor:
    return torch.rand(x.shape[0], *shape, dtype=x.dtype, device=x.device)


def brightness(x: Tensor) -> Tensor:
    """Add one offset in [-0.5, 0.5) per image."""
    return x + (_uniform(x, 1, 1, 1) - 0.5)


def saturation(x: Tensor) -> Tensor:
    """Scale the deviation from the channel mean by a factor in [0, 2) per image."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x, 1, 1, 1) * 2) + mean


def contrast(x: Tensor) -> Tensor:
    """Scale the deviation from the image mean by a factor in [0.5, 1.5) per image."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, 1, 1, 1) + 0.5) + mean


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ``ratio`` of its size in each direction, filling with zeros."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero one square of ``ratio`` times the image size at a random centre per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch) & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"color": (brightness, saturation, contrast), "translation": (translation,), "cutout": (cutout,)}


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """``"color,translation,cutout"`` (or a list) as a tuple of known policy names; "" is none."""
    names = tuple(p.strip() for p in (policy.split(",") if isinstance(policy, str) else policy) if p.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ConfigError(f"unknown DiffAugment policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    return names


def diff_augment(x: Tensor, policy: str | Sequence[str]) -> Tensor:
    """Apply the DiffAugment ``policy`` (e.g. ``"color,translation,cutout"``) to a batch of images."""
    for name in parse_policy(policy):
        for op in POLICIES[name]:
            x = op(x)
    return x
