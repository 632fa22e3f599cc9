"""Conditional GAN networks: BigGAN/SNGAN-style SN-ResNets and a small DCGAN-style pair.

Two conventions (the GAN module relies on them):

* Generators: ``factory(data_shape, num_classes, **kwargs)``; ``forward(z, labels)`` maps
  latents (B, ``latent_dim``) and int64 labels (B,) to images in [-1, 1] (a final tanh).
  Class information enters through conditional batch norm: gain ``1 + g(y)`` and bias ``b(y)``
  from per-layer class embeddings (BigGAN-PyTorch with ``G_shared`` off, as in the ADC-GAN
  CIFAR scripts) or from one shared class embedding (``shared_dim``, BigGAN's ``G_shared``).
* Discriminator trunks: ``factory(data_shape, **kwargs)`` with a ``num_features`` attribute;
  ``forward(x)`` returns h = sum over H, W of ReLU(blocks(x)) (SNGAN's global sum pooling).
  The adversarial and classifier heads belong to
  :class:`framework.generative.gan.discriminator.ConditionalDiscriminator`.

Architectures follow BigGAN-PyTorch's ``BigGAN.py``/``layers.py`` at resolution 32 (the
reference ADC-GAN code): G has three up-sampling residual blocks of width 4 * ``channels`` from a
4x4 start; D has four residual blocks of width 4 * ``channels``, the first two down-sampling.
Other resolutions keep the widths and change the number of (up/down)-sampling blocks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from framework.errors import ConfigError
from framework.nets.backbones import require_image_shape
from registry import register

INIT_STYLES = ("N02", "ortho", "xavier", "default")


def init_gan_weights_(module: nn.Module, style: str = "N02") -> nn.Module:
    """Initialise the weights of every Conv2d, Linear and Embedding in place (BigGAN-PyTorch's ``init_weights``).

    ``N02``: N(0, 0.02) (the ADC-GAN CIFAR scripts); ``ortho``: orthogonal (BigGAN's default);
    ``xavier``: Glorot uniform; ``default``: PyTorch's own. Biases keep PyTorch's init.
    """
    if style not in INIT_STYLES:
        raise ConfigError(f"unknown init {style!r}; choose one of {', '.join(INIT_STYLES)}")
    if style == "default":
        return module
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            if style == "N02":
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif style == "ortho":
                nn.init.orthogonal_(m.weight)
            else:
                nn.init.xavier_uniform_(m.weight)
    return module


def spectral_norm_(module: nn.Module, embeddings: bool = True) -> nn.Module:
    """Put spectral norm (one power iteration per training forward, eps 1e-12) on every conv, linear and embedding.

    ``embeddings=False`` leaves nn.Embedding alone (BigGAN never normalises G's class embeddings).
    Apply it after :func:`init_gan_weights_`: the parametrization takes the weight as it is then.
    """
    kinds: tuple[type, ...] = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear) + ((nn.Embedding,) if embeddings else ())
    for m in list(module.modules()):
        if isinstance(m, kinds):
            # ConvTranspose2d keeps output channels on dim 1.
            _spectral_norm(m, dim=1 if isinstance(m, nn.ConvTranspose2d) else 0, eps=1e-12)
    return module


def _check_resolution(net: str, size: int, bottom: int) -> int:
    """Number of factor-2 stages from ``bottom`` px to ``size`` px, or a ConfigError."""
    stages = math.log2(size / bottom) if size >= bottom else -1
    if stages < 1 or stages != int(stages):
        raise ConfigError(f"net {net!r} needs square images of {bottom} * 2^n px (n >= 1), got {size} px")
    return int(stages)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without affine parameters followed by a class-conditional gain ``1 + g(y)`` and bias ``b(y)``.

    Args:
        num_features: Channels.
        num_classes: Number of classes (used when ``condition_dim`` is None).
        condition_dim: None: g and b are class embeddings looked up by integer labels; an
            int: g and b are bias-free linear maps of a shared class embedding of that size.
        eps: Batch-norm epsilon (BigGAN's ``BN_eps`` 1e-5).
        momentum: Running-statistics momentum.
    """

    def __init__(
        self, num_features: int, num_classes: int, condition_dim: int | None = None, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        # A BatchNorm2d module rather than F.batch_norm on own buffers (as BigGAN-PyTorch's ccbn):
        # torch's convert_sync_batchnorm (Lightning's trainer.sync_batchnorm) and the standing
        # statistics find it by type.
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False)
        if condition_dim is None:
            self.gain: nn.Module = nn.Embedding(num_classes, num_features)
            self.bias: nn.Module = nn.Embedding(num_classes, num_features)
        else:
            self.gain = nn.Linear(condition_dim, num_features, bias=False)
            self.bias = nn.Linear(condition_dim, num_features, bias=False)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        gain = 1.0 + self.gain(condition)
        return self.bn(x) * gain[:, :, None, None] + self.bias(condition)[:, :, None, None]


class GeneratorBlock(nn.Module):
    """BigGAN-PyTorch's ``GBlock``: CBN-ReLU-up-conv3-CBN-ReLU-conv3, plus an up-sampled 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int, condition_dim: int | None) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_channels, num_classes, condition_dim)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn2 = ConditionalBatchNorm2d(out_channels, num_classes, condition_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, condition)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), condition)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class DiscriminatorBlock(nn.Module):
    """BigGAN-PyTorch's ``DBlock`` (wide): [ReLU]-conv3-ReLU-conv3-[avgpool], plus a 1x1 shortcut.

    The first block has no pre-activation and pools before its shortcut conv; later blocks
    apply the shortcut conv first (as the reference).
    """

    def __init__(self, in_channels: int, out_channels: int, preactivation: bool, downsample: bool, wide: bool = True):
        super().__init__()
        hidden = out_channels if wide else in_channels
        self.preactivation, self.downsample = preactivation, downsample
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if (in_channels != out_channels or downsample) else None

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.shortcut is None:
            return x
        if self.preactivation:
            x = self.shortcut(x)
            return F.avg_pool2d(x, 2) if self.downsample else x
        x = F.avg_pool2d(x, 2) if self.downsample else x
        return self.shortcut(x)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivation else x  # out of place: x is also the shortcut's input
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self._shortcut(x)


class _ClassConditionalGenerator(nn.Module):
    """Shared parts of the generators: the class condition (labels or a shared embedding)."""

    latent_dim: int
    num_classes: int

    def _setup_condition(self, num_classes: int, shared_dim: int | None) -> None:
        if num_classes < 1:
            raise ConfigError(f"a class-conditional generator needs num_classes >= 1, got {num_classes}")
        if shared_dim is not None and shared_dim < 1:
            raise ConfigError(f"shared_dim must be >= 1 (or null for per-layer embeddings), got {shared_dim}")
        self.num_classes = num_classes
        self.shared = nn.Embedding(num_classes, shared_dim) if shared_dim is not None else None

    def condition(self, labels: Tensor) -> Tensor:
        """What the conditional batch norms read: the labels, or their shared embedding."""
        return labels if self.shared is None else self.shared(labels)


@register("net", "sn_resnet_generator", aliases=("biggan_generator",))
class ResNetGenerator(_ClassConditionalGenerator):
    """BigGAN/SNGAN-style residual generator with conditional batch norm (BigGAN-PyTorch, resolution 32).

    Args:
        data_shape: (C, H, W) of the images; H = W = ``bottom_width`` * 2^n.
        num_classes: Number of classes.
        channels: Width multiplier ``ch``; every block has 4 * ch channels (BigGAN's 32 px arch).
        latent_dim: Size of z (``dim_z``, 128).
        bottom_width: Spatial size after the first linear layer.
        shared_dim: None: per-layer class embeddings in each CBN (the ADC-GAN CIFAR scripts);
            an int: one shared class embedding of that size (BigGAN's ``G_shared``).
        spectral_norm: Spectral norm on G's convs and linears (the reference's ``G_param SN``).
        init: ``N02`` (the CIFAR scripts), ``ortho``, ``xavier`` or ``default``.
    """

    def __init__(
        self,
        data_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        channels: int = 64,
        latent_dim: int = 128,
        bottom_width: int = 4,
        shared_dim: int | None = None,
        spectral_norm: bool = True,
        init: str = "N02",
    ) -> None:
        super().__init__()
        c, h, w = require_image_shape("sn_resnet_generator", data_shape)
        if h != w:
            raise ConfigError(f"net 'sn_resnet_generator' needs square images, got {h}x{w}")
        stages = _check_resolution("sn_resnet_generator", h, bottom_width)
        self._setup_condition(num_classes, shared_dim)
        width = 4 * channels
        self.latent_dim, self.bottom_width, self.width = latent_dim, bottom_width, width
        self.linear = nn.Linear(latent_dim, width * bottom_width**2)
        self.blocks = nn.ModuleList(GeneratorBlock(width, width, num_classes, shared_dim) for _ in range(stages))
        self.output_bn = nn.BatchNorm2d(width)
        self.output_conv = nn.Conv2d(width, c, 3, padding=1)
        init_gan_weights_(self, init)
        if spectral_norm:
            spectral_norm_(self, embeddings=False)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        condition = self.condition(labels)
        h = self.linear(z).view(z.shape[0], self.width, self.bottom_width, self.bottom_width)
        for block in self.blocks:
            h = block(h, condition)
        return torch.tanh(self.output_conv(F.relu(self.output_bn(h))))


@register("net", "sn_resnet_discriminator", aliases=("biggan_discriminator",))
class ResNetDiscriminator(nn.Module):
    """BigGAN/SNGAN-style residual discriminator trunk; ``forward(x)`` is sum_{H,W} ReLU(blocks(x)).

    Args:
        data_shape: (C, H, W) of the images; H >= 8 a power of two.
        channels: Width multiplier ``ch``; every block has 4 * ch channels (BigGAN's 32 px arch).
        spectral_norm: Spectral norm on every conv (the reference has no option to turn it off).
        init: ``N02`` (the CIFAR scripts), ``ortho``, ``xavier`` or ``default``.
        wide: BigGAN's wide blocks (hidden width = output width); False: SNGAN's skinny blocks.

    Blocks down-sample until the maps are 8x8 (two blocks at 32 px), then two more blocks keep
    the size, as BigGAN-PyTorch's 32 px discriminator.
    """

    def __init__(
        self,
        data_shape: Sequence[int] = (3, 32, 32),
        channels: int = 64,
        spectral_norm: bool = True,
        init: str = "N02",
        wide: bool = True,
    ) -> None:
        super().__init__()
        c, h, w = require_image_shape("sn_resnet_discriminator", data_shape)
        if h != w or h < 8 or h & (h - 1):
            raise ConfigError(f"net 'sn_resnet_discriminator' needs square images of 8, 16, 32, ... px, got {h}x{w}")
        downsamples = [True] * int(math.log2(h // 8)) + [False, False]
        width = 4 * channels
        self.blocks = nn.Sequential(
            *(
                DiscriminatorBlock(c if i == 0 else width, width, preactivation=i > 0, downsample=down, wide=wide)
                for i, down in enumerate(downsamples)
            )
        )
        self.num_features = width
        init_gan_weights_(self, init)
        if spectral_norm:
            spectral_norm_(self)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.blocks(x)).sum(dim=(2, 3))


@register("net", "dcgan_generator")
class DCGANGenerator(_ClassConditionalGenerator):
    """Small DCGAN-style generator for 8x8 / 16x16 images, class-conditional through CBN.

    Linear z -> (ch * 2^n, 4, 4), then n stages of CBN-ReLU-ConvTranspose(4, stride 2)
    halving the width, then CBN-ReLU-conv3-tanh.

    Args:
        data_shape: (C, H, W); H = W = 4 * 2^n.
        num_classes: Number of classes.
        channels: Width of the last stage.
        latent_dim: Size of z.
        shared_dim: None: per-layer class embeddings; an int: one shared class embedding.
        spectral_norm: Spectral norm on G's convs and linears.
        init: ``N02``, ``ortho``, ``xavier`` or ``default``.
    """

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        channels: int = 64,
        latent_dim: int = 64,
        shared_dim: int | None = None,
        spectral_norm: bool = False,
        init: str = "N02",
    ) -> None:
        super().__init__()
        c, h, w = require_image_shape("dcgan_generator", data_shape)
        if h != w:
            raise ConfigError(f"net 'dcgan_generator' needs square images, got {h}x{w}")
        stages = _check_resolution("dcgan_generator", h, 4)
        self._setup_condition(num_classes, shared_dim)
        self.latent_dim, self.width = latent_dim, channels * 2**stages
        self.linear = nn.Linear(latent_dim, self.width * 16)
        widths = [channels * 2 ** (stages - i) for i in range(stages + 1)]
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(wi, num_classes, shared_dim) for wi in widths)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1) for a, b in itertools.pairwise(widths))
        self.output_conv = nn.Conv2d(widths[-1], c, 3, padding=1)
        init_gan_weights_(self, init)
        if spectral_norm:
            spectral_norm_(self, embeddings=False)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        condition = self.condition(labels)
        h = self.linear(z).view(z.shape[0], self.width, 4, 4)
        for norm, up in zip(self.norms, self.ups):
            h = up(F.relu(norm(h, condition)))
        return torch.tanh(self.output_conv(F.relu(self.norms[-1](h, condition))))


@register("net", "dcgan_discriminator")
class DCGANDiscriminator(nn.Module):
    """SNGAN's "standard CNN" discriminator trunk, sized for 8x8 / 16x16 images.

    conv3 (-> ch), then per factor-2 stage conv4 stride 2 and conv3 (doubling the width),
    LeakyReLU(0.1) between convs; ``forward(x)`` is sum_{H,W} ReLU(last conv).

    Args:
        data_shape: (C, H, W); H = W = 4 * 2^n.
        channels: Width of the first conv.
        spectral_norm: Spectral norm on every conv.
        init: ``N02``, ``ortho``, ``xavier`` or ``default``.
    """

    def __init__(
        self, data_shape: Sequence[int] = (1, 8, 8), channels: int = 64, spectral_norm: bool = True, init: str = "N02"
    ) -> None:
        super().__init__()
        c, h, w = require_image_shape("dcgan_discriminator", data_shape)
        if h != w:
            raise ConfigError(f"net 'dcgan_discriminator' needs square images, got {h}x{w}")
        stages = _check_resolution("dcgan_discriminator", h, 4)
        layers: list[nn.Module] = [nn.Conv2d(c, channels, 3, padding=1)]
        width = channels
        for _ in range(stages):
            layers += [nn.LeakyReLU(0.1), nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)]
            layers += [nn.LeakyReLU(0.1), nn.Conv2d(2 * width, 2 * width, 3, padding=1)]
            width *= 2
        self.body = nn.Sequential(*layers)
        self.num_features = width
        init_gan_weights_(self, init)
        if spectral_norm:
            spectral_norm_(self)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x)).sum(dim=(2, 3))
