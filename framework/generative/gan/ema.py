"""Exponential moving average of a network's weights (BigGAN-PyTorch's ``utils.ema``), no Lightning."""

from __future__ import annotations

import torch
from torch import nn


def _is_power_iteration_state(name: str) -> bool:
    # torch's spectral-norm parametrization keeps its power-iteration vectors as buffers
    # `parametrizations.<param>._u` / `._v`; they are unit vectors, so averaging them would
    # shrink them and bias sigma = u^T W v in eval mode.
    return ".parametrizations." in f".{name}" and name.rsplit(".", 1)[-1] in ("_u", "_v")


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, decay: float) -> None:
    """target <- decay * target + (1 - decay) * source, entry by entry of the state dicts.

    As the reference, floating-point parameters and buffers (batch-norm running statistics)
    are averaged and ``decay = 0`` copies; integer buffers (``num_batches_tracked``) and the
    spectral-norm power-iteration vectors are copied from ``source``.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    source_state = source.state_dict()
    for name, value in target.state_dict().items():
        new = source_state[name]
        if value.is_floating_point() and not _is_power_iteration_state(name):
            value.lerp_(new.to(value.dtype), 1.0 - decay)
        else:
            value.copy_(new)
