"""Small classification backbones for digits and toy data: ``cnn`` and ``mlp``.

Backbones follow one convention: ``factory(data_shape, **kwargs)`` returns a module with a
``num_features`` attribute whose ``forward(x)`` gives ``(B, num_features)`` features; the
LightningModule owns the head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from framework.errors import ConfigError
from registry import register


def require_image_shape(net: str, data_shape: Sequence[int]) -> tuple[int, int, int]:
    """``data_shape`` as (C, H, W), or a ConfigError naming the net."""
    if len(data_shape) != 3:
        raise ConfigError(f"net {net!r} needs image data (C, H, W) but the data has shape {tuple(data_shape)}")
    return tuple(int(s) for s in data_shape)  # type: ignore[return-value]


@register("net", "cnn")
class CNN(nn.Module):
    """Small VGG-style CNN (conv-BN-ReLU pairs, max-pool between stages) for 8-32 px images.

    Args:
        data_shape: (C, H, W) of the input images.
        channels: Width of each stage; a stage halves the resolution while it is above 2 px.
        dropout: Dropout before the features are returned.
    """

    def __init__(self, data_shape: Sequence[int], channels: Sequence[int] = (32, 64, 128), dropout: float = 0.1):
        super().__init__()
        c, h, w = require_image_shape("cnn", data_shape)
        layers: list[nn.Module] = []
        size = min(h, w)
        for width in channels:
            layers += [
                nn.Conv2d(c, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if size > 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c = width
        self.body = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.num_features = c

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.body(x))


@register("net", "mlp")
class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs (vectors or small images).

    Args:
        data_shape: Shape of one input; it is flattened.
        hidden: Width of each hidden layer; the last one is ``num_features``.
        dropout: Dropout after each hidden layer.
    """

    def __init__(self, data_shape: Sequence[int], hidden: Sequence[int] = (256, 256), dropout: float = 0.1):
        super().__init__()
        if not hidden:
            raise ConfigError("net 'mlp' needs at least one hidden layer")
        dims = [math.prod(data_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.body = nn.Sequential(*layers)
        self.num_features = dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def load_state_dict_file(path: str) -> dict[str, Tensor]:
    """A state dict from a local ``.pth``/``.pt``/``.bin`` (torch) or ``.safetensors`` file.

    Lightning checkpoints (with a ``state_dict`` key) are unwrapped.
    """
    import os

    from framework.errors import DataNotFoundError

    if not os.path.isfile(path):
        raise DataNotFoundError(f"weights file not found: {path}")
    from framework.errors import ConfigError

    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, safetensors header, truncated file: all "not a weights file"
        raise ConfigError(f"cannot read weights from {path}: {str(err).splitlines()[0]}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state
