"""CIFAR-style ResNets (He et al. 2016, Sec. 4.2): resnet20/32 (3 stages of 16/32/64 channels) and a
CIFAR resnet18 (3x3 stem, no max-pool, 4 stages of 64..512), the backbones of the
class-incremental references (PyCIL resnet32, TEEN resnet20, FeTrIL/PyCIL resnet18)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from framework.errors import ConfigError
from framework.nets.backbones import require_image_shape
from registry import register


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or projected / zero-padded) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.pad = 0
        self.stride = stride
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            if shortcut == "conv":  # option B: 1x1 projection (TEEN's resnet20, resnet18)
                self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))
            else:  # option A: subsample and zero-pad channels, no parameters (PyCIL's resnet32)
                self.pad = channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        elif self.pad or self.stride != 1:
            identity = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.pad))
        else:
            identity = x
        return F.relu(out + identity)


class CifarResNet(nn.Module):
    """A 3x3 stem, stages of BasicBlocks (the first stage at stride 1), global average pooling.

    Args:
        data_shape: (C, H, W) of the input images.
        blocks: Blocks per stage.
        widths: Channels per stage (the stem has ``widths[0]``).
        shortcut: ``conv`` (1x1 projection, option B) or ``pad`` (zero padding, option A).
    """

    def __init__(self, data_shape: Sequence[int], blocks: Sequence[int], widths: Sequence[int], shortcut: str = "conv"):
        super().__init__()
        c, _, _ = require_image_shape("cifar_resnet", data_shape)
        if shortcut not in ("conv", "pad"):
            raise ConfigError(f"shortcut must be 'conv' or 'pad', got {shortcut!r}")
        if len(blocks) != len(widths):
            raise ConfigError(f"blocks {list(blocks)} and widths {list(widths)} must have the same length")
        self.stem = nn.Sequential(nn.Conv2d(c, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, in_channels = [], widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(in_channels, width, 2 if (i > 0 and j == 0) else 1, shortcut))
                in_channels = width
        self.layers = nn.Sequential(*layers)
        self.num_features = in_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)


@register("net", "cifar_resnet20", aliases=("resnet20",))
def cifar_resnet20(data_shape: Sequence[int], shortcut: str = "conv") -> CifarResNet:
    """CIFAR resnet20 (3 x 3 blocks, 16/32/64 channels, 64 features; TEEN's CIFAR backbone)."""
    return CifarResNet(data_shape, (3, 3, 3), (16, 32, 64), shortcut)


@register("net", "cifar_resnet32", aliases=("resnet32",))
def cifar_resnet32(data_shape: Sequence[int], shortcut: str = "pad") -> CifarResNet:
    """CIFAR resnet32 (3 x 5 blocks, 16/32/64 channels, 64 features; PyCIL's CIFAR backbone, option A)."""
    return CifarResNet(data_shape, (5, 5, 5), (16, 32, 64), shortcut)


@register("net", "cifar_resnet18")
def cifar_resnet18(data_shape: Sequence[int], shortcut: str = "conv") -> CifarResNet:
    """ResNet-18 for 32 px images (3x3 stem, no max-pool, 2 x 4 blocks of 64..512; 512 features)."""
    return CifarResNet(data_shape, (2, 2, 2, 2), (64, 128, 256, 512), shortcut)
