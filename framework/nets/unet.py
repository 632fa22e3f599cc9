"""``unet``: a DDPM++/ADM-style U-Net denoiser for 8x8 to 32x32 (and larger) images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.errors import ConfigError
from framework.nets.backbones import require_image_shape
from framework.nets.embedding import Conditioning
from registry import register


def _norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 2 or g == 1)
    return nn.GroupNorm(groups, channels, eps=1e-6)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the embedding sets a per-channel scale and shift (ADM's scale-shift norm)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.drop = _norm(c_out), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        # DDPM++'s skip rescale keeps the residual stream's variance constant.
        return (self.skip(x) + h) / math.sqrt(2)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the pixels, residual (zero-initialised output)."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ConfigError(f"unet attention: {channels} channels do not split into {num_heads} heads")
        self.heads = num_heads
        self.norm, self.qkv = _norm(channels), nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        return (x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))) / math.sqrt(2)


@register("net", "unet")
class UNet(nn.Module):
    """U-Net denoiser (DDPM++ / ADM style): residual blocks, attention at chosen resolutions.

    ``forward(x, noise_level, labels, augment_labels=None)``: the noise level goes through a
    sinusoidal embedding and an MLP, the class embedding is added to it, and every residual
    block takes the sum. With ``augment_dim`` the net also takes EDM's augment labels
    (:mod:`framework.generative.diffusion.augment`), mapped onto the noise features.

    Args:
        data_shape: (C, H, W) of the images.
        num_classes: Number of classes (0: unconditional); label ``num_classes`` is "no label".
        channels: Width of the first level.
        channel_mult: Width multiplier per level; each level after the first halves the resolution.
        num_res_blocks: Residual blocks per level (the decoder has one more, as in DDPM).
        attn_resolutions: Resolutions (in pixels) with self-attention after each block.
        num_heads: Attention heads.
        dropout: Dropout inside the residual blocks.
        embedding: Noise embedding, ``positional`` or ``fourier``.
        augment_dim: Width of the augment labels (0: none; EDM CIFAR-10: 9). Set by the
            ``diffusion`` model from its augmentation pipeline.
    """

    fsdp_units = (ResBlock, AttentionBlock)  # framework.parallel: one FSDP unit per block

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (4,),
        num_heads: int = 1,
        dropout: float = 0.1,
        embedding: str = "positional",
        augment_dim: int = 0,
    ) -> None:
        super().__init__()
        c, h, w = require_image_shape("unet", data_shape)
        levels = len(channel_mult)
        if levels < 1 or h % 2 ** (levels - 1) or w % 2 ** (levels - 1):
            raise ConfigError(f"unet: {h}x{w} images cannot be halved {levels - 1} times (channel_mult {tuple(channel_mult)})")
        emb_dim = 4 * channels
        self.cond = Conditioning(emb_dim, num_classes, noise_channels=channels, embedding=embedding, augment_dim=augment_dim)
        self.augment_dim = self.cond.augment_dim
        self.stem = nn.Conv2d(c, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, res = [channels], channels, h
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(self._stage(ch, channels * mult, emb_dim, dropout, res in attn_resolutions, num_heads))
                ch = channels * mult
                skips.append(ch)
            if level < levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, emb_dim, dropout), AttentionBlock(ch, num_heads), ResBlock(ch, ch, emb_dim, dropout)]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                out = channels * mult
                self.up.append(self._stage(ch + skips.pop(), out, emb_dim, dropout, res in attn_resolutions, num_heads))
                ch = out
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
                res *= 2
        self.head = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, c, 3, padding=1)))

    @staticmethod
    def _stage(c_in: int, c_out: int, emb_dim: int, dropout: float, attention: bool, heads: int) -> nn.ModuleList:
        blocks = [ResBlock(c_in, c_out, emb_dim, dropout)]
        if attention:
            blocks.append(AttentionBlock(c_out, heads))
        return nn.ModuleList(blocks)

    @staticmethod
    def _run(stage: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
        if isinstance(stage, nn.ModuleList):
            for block in stage:
                h = block(h, emb) if isinstance(block, ResBlock) else block(h)
            return h
        return stage(h)

    def forward(
        self, x: Tensor, noise_level: Tensor, labels: Tensor | None = None, augment_labels: Tensor | None = None
    ) -> Tensor:
        emb = self.cond(noise_level, labels, augment_labels)
        h = self.stem(x)
        hs = [h]
        for stage in self.down:
            h = self._run(stage, h, emb)
            hs.append(h)
        for block in self.mid:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        for stage in self.up:
            if isinstance(stage, nn.ModuleList):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(stage, h, emb)
        return self.head(h)
