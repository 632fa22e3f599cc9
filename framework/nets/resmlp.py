"""``resmlp``: a residual MLP denoiser for toy 2-D data and other flat or small inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from framework.errors import ConfigError
from framework.nets.embedding import Conditioning
from registry import register


class ResMLPBlock(nn.Module):
    """LayerNorm, scale-shift by the conditioning, Linear-SiLU-Linear, residual (zero-initialised)."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.emb = nn.Linear(width, 2 * width)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)
        h = self.norm(x) * (1 + scale) + shift
        return x + self.fc2(self.drop(F.silu(self.fc1(h))))


@register("net", "resmlp")
class ResMLP(nn.Module):
    """Residual MLP denoiser: flatten, residual blocks conditioned on noise level and class, reshape.

    Args:
        data_shape: Shape of one sample (flattened inside).
        num_classes: Number of classes (0: unconditional); label ``num_classes`` is "no label".
        width: Hidden width.
        depth: Number of residual blocks.
        dropout: Dropout inside the blocks.
        embedding: Noise embedding, ``positional`` or ``fourier``.
    """

    def __init__(
        self,
        data_shape: Sequence[int] = (2,),
        num_classes: int = 0,
        width: int = 256,
        depth: int = 4,
        dropout: float = 0.0,
        embedding: str = "positional",
    ) -> None:
        super().__init__()
        if width < 2 or depth < 1:
            raise ConfigError(f"resmlp needs width >= 2 and depth >= 1, got {width}, {depth}")
        self.data_shape = tuple(int(s) for s in data_shape)
        dim = math.prod(self.data_shape)
        self.cond = Conditioning(width, num_classes, noise_channels=min(width, 128) // 2 * 2, embedding=embedding)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResMLPBlock(width, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    def forward(self, x: Tensor, noise_level: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.cond(noise_level, labels)
        h = self.inp(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).reshape(x.shape)
