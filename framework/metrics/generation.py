"""torchmetrics FID/KID over a registered feature extractor, and batched feature extraction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

import registry
from framework.errors import ConfigError


def build_extractor(name: str, **kwargs: Any) -> nn.Module:
    """The feature extractor registered as ``feature``/``name`` (e.g. ``classifier``, ``inception``)."""
    extractor = registry.create("feature", name, **kwargs)
    if not isinstance(getattr(extractor, "num_features", None), int):
        raise ConfigError(f"feature extractor {name!r} has no integer num_features attribute")
    return extractor.eval()


def fid_metric(extractor: nn.Module, **kwargs: Any):
    """torchmetrics' FrechetInceptionDistance computed in ``extractor``'s feature space.

    Real statistics are kept across ``reset()`` (``reset_real_features=False``): feed the
    real data once. Its states are sums, so under DDP every rank feeds a disjoint share and
    ``compute()``, called on every rank, sums them.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=extractor, reset_real_features=False, **kwargs)


def kid_metric(extractor: nn.Module, subset_size: int = 1000, **kwargs: Any):
    """torchmetrics' KernelInceptionDistance in ``extractor``'s feature space (real features kept across resets)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    return KernelInceptionDistance(feature=extractor, subset_size=subset_size, reset_real_features=False, **kwargs)


@torch.no_grad()
def extract(
    extractor: nn.Module,
    images: Tensor | Iterable[Any],
    batch_size: int = 500,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Features (N, D) and logits (N, K) or None of ``images`` (a tensor, or batches / (x, y) batches), on the CPU."""
    device = device or next(iter(extractor.parameters()), torch.empty(0)).device
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    features, logits = [], []
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = torch.as_tensor(x).to(device=device, dtype=torch.float32)
        if hasattr(extractor, "features_and_logits"):
            f, l = extractor.features_and_logits(x)
        else:
            f, l = extractor(x), None
        features.append(f.double().cpu())
        if l is not None:
            logits.append(l.double().cpu())
    if not features:
        raise ConfigError("no samples to extract features from")
    return torch.cat(features), (torch.cat(logits) if logits else None)
