"""``song_unet`` (alias ``ddpmpp``): EDM's DDPM++ U-Net, layer for layer.

Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models")
re-implement Song et al.'s DDPM++ as ``SongUNet`` in NVlabs/edm ``training/networks.py``;
``train.py --arch=ddpmpp`` builds it with a positional noise embedding, the standard encoder
and decoder and a [1, 1] resampling filter. This module builds the same layers with the same
initialisation, so a state dict maps one to one (same order, same shapes) and the outputs
agree. It differs from our ``unet`` (:mod:`framework.nets.unet`) in the conditioning path
(labels enter before the embedding MLP, SiLU after both MLP layers, sine half first), the
residual block (the embedding is added before the second norm, no scale-shift by default,
resampling blocks between levels, attention inside the block) and the initialisation
(xavier-uniform, output layers scaled by 1e-5 rather than zeroed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.errors import ConfigError
from framework.nets.backbones import require_image_shape
from framework.nets.embedding import add_augment, augment_map, noise_embedding
from registry import register

#: EDM's init_weight for the layers that end a residual branch and for the net's output layer.
OUTPUT_INIT = 1e-5
#: EDM's init_weight for the attention's qkv projection.
QKV_INIT = math.sqrt(0.2)
#: The residual stream's rescaling after every addition, keeping its variance constant.
SKIP_SCALE = math.sqrt(0.5)


def xavier_(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """EDM's ``init_mode='xavier_uniform'``: weight ~ U(+-sqrt(6 / (fan_in + fan_out))) * ``gain``, zero bias.

    The fans count the kernel's pixels, as :func:`torch.nn.init.xavier_uniform_` does.
    """
    nn.init.xavier_uniform_(layer.weight)
    with torch.no_grad():
        layer.weight.mul_(gain)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def group_norm(channels: int, eps: float) -> nn.GroupNorm:
    """EDM's group norm: 32 groups, fewer when a group would hold under 4 channels."""
    groups = min(32, channels // 4)
    if groups < 1 or channels % groups:
        raise ConfigError(f"song_unet: {channels} channels do not split into min(32, channels // 4) = {groups} groups")
    return nn.GroupNorm(groups, channels, eps=eps)


class ResampleConv(nn.Module):
    """A ``kernel`` x ``kernel`` convolution, after a 2x up- or downsampling by a separable FIR filter.

    The filter is the outer product of ``resample_filter`` with itself, normalised to sum 1;
    [1, 1] makes downsampling a 2x2 average and upsampling nearest-neighbour.

    Args:
        c_in: Input channels.
        c_out: Output channels.
        kernel: Convolution size (odd; padded to keep the resolution).
        up: Upsample 2x before the convolution.
        down: Downsample 2x before the convolution.
        resample_filter: 1-D taps of the resampling filter.
        gain: Scale of the xavier-uniform weights.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        up: bool = False,
        down: bool = False,
        resample_filter: Sequence[float] = (1, 1),
        gain: float = 1.0,
    ) -> None:
        super().__init__()
        if up and down:
            raise ConfigError("a convolution resamples up or down, not both")
        self.up, self.down = up, down
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(c_out))
        xavier_(self, gain)
        taps = torch.as_tensor(resample_filter, dtype=torch.float32)
        self.register_buffer("filter", torch.outer(taps, taps)[None, None] / taps.sum() ** 2, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        f = self.filter.to(x.dtype)
        pad = (f.shape[-1] - 1) // 2
        if self.up:  # transposed conv with 4x the filter: every input pixel spreads over a 2x2 block
            x = F.conv_transpose2d(x, (4 * f).expand(channels, 1, -1, -1), stride=2, padding=pad, groups=channels)
        if self.down:
            x = F.conv2d(x, f.expand(channels, 1, -1, -1), stride=2, padding=pad, groups=channels)
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), padding=self.weight.shape[-1] // 2)


class SongBlock(nn.Module):
    """EDM's ``UNetBlock`` as DDPM++ uses it: a residual block, optionally resampling, optionally with attention.

    ``h = conv0(silu(norm0(x)))``; the embedding's linear map is added to ``h`` before
    ``norm1`` (or, with ``adaptive_scale``, scales and shifts ``norm1(h)``); ``conv1`` after
    dropout closes the branch; the skip (a 1x1 convolution when the width or resolution
    changes) joins it and the sum is scaled by sqrt(1/2). Attention, when on, is one more
    residual step with the same scaling.

    Args:
        c_in: Input channels.
        c_out: Output channels.
        emb_dim: Width of the conditioning embedding.
        up: Upsample 2x.
        down: Downsample 2x.
        attention: Single-head self-attention after the residual step.
        dropout: Dropout before ``conv1``.
        resample_filter: 1-D taps of the resampling filter.
        adaptive_scale: ADM's scale-and-shift by the embedding (DDPM++: off, the embedding is added).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        emb_dim: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        dropout: float = 0.0,
        resample_filter: Sequence[float] = (1, 1),
        adaptive_scale: bool = False,
    ) -> None:
        super().__init__()
        self.c_in, self.c_out, self.dropout, self.adaptive_scale = c_in, c_out, dropout, adaptive_scale
        self.norm0 = group_norm(c_in, eps=1e-6)
        self.conv0 = ResampleConv(c_in, c_out, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = xavier_(nn.Linear(emb_dim, c_out * (2 if adaptive_scale else 1)))
        self.norm1 = group_norm(c_out, eps=1e-6)
        self.conv1 = ResampleConv(c_out, c_out, 3, gain=OUTPUT_INIT)
        self.skip = None
        if c_in != c_out or up or down:  # DDPM++'s resample_proj: a learned 1x1 projection
            self.skip = ResampleConv(c_in, c_out, 1, up=up, down=down, resample_filter=resample_filter)
        self.attention = attention
        if attention:
            self.norm2 = group_norm(c_out, eps=1e-6)
            self.qkv = ResampleConv(c_out, 3 * c_out, 1, gain=QKV_INIT)
            self.proj = ResampleConv(c_out, c_out, 1, gain=OUTPUT_INIT)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        else:
            h = F.silu(self.norm1(h + params))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (self.skip(x) if self.skip is not None else x)) * SKIP_SCALE
        if self.attention:
            x = (self.proj(self._attend(self.norm2(x))) + x) * SKIP_SCALE
        return x

    def _attend(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        # EDM's channel layout of the qkv output: per channel, its q, k and v side by side.
        q, k, v = self.qkv(x).reshape(b, c, 3, height * width).unbind(2)
        # Softmax in float32 whatever the autocast dtype, as EDM's AttentionOp does.
        with torch.autocast(x.device.type, enabled=False):
            out = F.scaled_dot_product_attention(q.float().mT, k.float().mT, v.float().mT)
        return out.mT.reshape(b, c, height, width).to(x.dtype)


@register("net", "song_unet", aliases=("ddpmpp",))
class SongUNet(nn.Module):
    """EDM's DDPM++ U-Net (``SongUNet`` with ``train.py --arch=ddpmpp``'s settings).

    ``forward(x, noise_level, labels, augment_labels=None)``: the noise level (EDM:
    c_noise = ln(sigma) / 4) gets a positional embedding with its sine half first, the
    labels a one-hot vector times sqrt(num_classes) through a linear map (the null label
    ``num_classes`` is the zero vector, which is how EDM drops labels), the augment labels a
    bias-free linear map; their sum goes through two linear layers, each followed by SiLU.
    The encoder has a 3x3 stem, then per level a downsampling block (after the first) and
    ``num_blocks`` residual blocks; the decoder starts with two blocks at the lowest
    resolution (the first with attention), then per level an upsampling block (after the
    first) and ``num_blocks + 1`` blocks that take the encoder's outputs; a group norm, SiLU
    and a 3x3 convolution give the output. The defaults are a small net for 8x8 digits;
    EDM's CIFAR-10 net is ``model_channels=128, channel_mult=[2, 2, 2], num_blocks=4,
    attn_resolutions=[16], dropout=0.13`` (recipes/diffusion_cifar10_edm.yaml).

    Args:
        data_shape: (C, H, W) of the images.
        num_classes: Number of classes (0: unconditional); label ``num_classes`` is "no label".
        model_channels: Width unit: level ``i`` has ``model_channels * channel_mult[i]`` channels.
        channel_mult: Width multiplier per level; each level after the first halves the resolution.
        channel_mult_emb: Embedding width as a multiple of ``model_channels``.
        channel_mult_noise: Noise-embedding width as a multiple of ``model_channels`` (DDPM++: 1).
        num_blocks: Residual blocks per level in the encoder (the decoder has one more).
        attn_resolutions: Resolutions (height in pixels) with self-attention; each must be one
            of the levels' resolutions.
        dropout: Dropout inside the residual blocks.
        embedding: Noise embedding, ``positional`` (DDPM++) or ``fourier``.
        resample_filter: 1-D taps of the up/downsampling filter (DDPM++: [1, 1]).
        adaptive_scale: Scale-and-shift conditioning in the blocks (DDPM++: false).
        augment_dim: Width of the augment labels (0: none; EDM CIFAR-10: 9). Set by the
            ``diffusion`` model from its augmentation pipeline.
    """

    fsdp_units = (SongBlock,)  # framework.parallel: one FSDP unit per block

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        model_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2),
        channel_mult_emb: int = 4,
        channel_mult_noise: int = 1,
        num_blocks: int = 2,
        attn_resolutions: Sequence[int] = (4,),
        dropout: float = 0.1,
        embedding: str = "positional",
        resample_filter: Sequence[float] = (1, 1),
        adaptive_scale: bool = False,
        augment_dim: int = 0,
    ) -> None:
        super().__init__()
        c, h, w = require_image_shape("song_unet", data_shape)
        levels = len(channel_mult)
        if levels < 1 or h % 2 ** (levels - 1) or w % 2 ** (levels - 1):
            raise ConfigError(f"song_unet: {h}x{w} images cannot be halved {levels - 1} times (channel_mult {tuple(channel_mult)})")
        resolutions = [h >> level for level in range(levels)]
        unused = sorted(set(attn_resolutions) - set(resolutions))
        if unused:
            raise ConfigError(f"song_unet: attn_resolutions {unused} are not among the levels' resolutions {resolutions}")
        if num_classes < 0 or num_blocks < 1:
            raise ConfigError(f"song_unet: needs num_classes >= 0 and num_blocks >= 1, got {num_classes}, {num_blocks}")
        self.num_classes = int(num_classes)
        self.augment_dim = int(augment_dim)
        emb_dim = model_channels * channel_mult_emb
        noise_dim = model_channels * channel_mult_noise

        # The conditioning mapping; then the encoder and decoder (EDM's order of modules).
        self.map_noise = noise_embedding(embedding, noise_dim)
        self.map_label = xavier_(nn.Linear(self.num_classes, noise_dim)) if self.num_classes else None
        self.map_augment = augment_map(self.augment_dim, noise_dim)
        self.map_layer0 = xavier_(nn.Linear(noise_dim, emb_dim))
        self.map_layer1 = xavier_(nn.Linear(emb_dim, emb_dim))

        def block(c_in: int, c_out: int, **kwargs) -> SongBlock:
            return SongBlock(c_in, c_out, emb_dim, dropout=dropout, resample_filter=resample_filter,
                             adaptive_scale=adaptive_scale, **kwargs)

        self.enc = nn.ModuleDict()
        width = c
        for level, (res, mult) in enumerate(zip(resolutions, channel_mult)):
            if level == 0:
                self.enc[f"{res}_stem"] = ResampleConv(width, model_channels, 3)
                width = model_channels
            else:
                self.enc[f"{res}_down"] = block(width, width, down=True)
            for i in range(num_blocks):
                self.enc[f"{res}_block{i}"] = block(width, model_channels * mult, attention=res in attn_resolutions)
                width = model_channels * mult
        skips = [m.c_out if isinstance(m, SongBlock) else model_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        #: Names of the decoder blocks that first concatenate an encoder output.
        self.takes_skip: set[str] = set()
        for level in reversed(range(levels)):
            res, mult = resolutions[level], channel_mult[level]
            if level == levels - 1:
                self.dec[f"{res}_in0"] = block(width, width, attention=True)
                self.dec[f"{res}_in1"] = block(width, width)
            else:
                self.dec[f"{res}_up"] = block(width, width, up=True)
            for i in range(num_blocks + 1):
                name = f"{res}_block{i}"
                self.dec[name] = block(width + skips.pop(), model_channels * mult,
                                       attention=i == num_blocks and res in attn_resolutions)
                self.takes_skip.add(name)
                width = model_channels * mult
        self.out_norm = group_norm(width, eps=1e-6)
        self.out_conv = ResampleConv(width, c, 3, gain=OUTPUT_INIT)

    def embed(self, noise_level: Tensor, labels: Tensor | None, augment_labels: Tensor | None = None) -> Tensor:
        """The (B, emb_dim) conditioning vector every block takes."""
        emb = self.map_noise(noise_level).to(noise_level.dtype)
        # DDPM++ orders the embedding sine first; ours yields cosine first: swap the halves.
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)
        if self.map_label is not None:
            if labels is None:  # no label given: the null class
                labels = torch.full((emb.shape[0],), self.num_classes, dtype=torch.long, device=emb.device)
            if labels.min() < 0 or labels.max() > self.num_classes:
                raise ConfigError(f"song_unet: labels must be in [0, {self.num_classes}] ({self.num_classes} = no label)")
            # Row num_classes of the one-hot matrix is cut off: the null label is the zero vector.
            onehot = F.one_hot(labels.long(), self.num_classes + 1)[:, : self.num_classes].to(emb.dtype)
            emb = emb + self.map_label(onehot * math.sqrt(self.num_classes))
        emb = add_augment(emb, self.map_augment, augment_labels)
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def forward(
        self, x: Tensor, noise_level: Tensor, labels: Tensor | None = None, augment_labels: Tensor | None = None
    ) -> Tensor:
        emb = self.embed(noise_level, labels, augment_labels)
        skips = []
        for module in self.enc.values():
            x = module(x, emb) if isinstance(module, SongBlock) else module(x)
            skips.append(x)
        for name, module in self.dec.items():
            if name in self.takes_skip:
                x = torch.cat([x, skips.pop()], dim=1)
            x = module(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))
