"""Memorisation check of generated samples: distances to the nearest training image, against real held-out images.

A generator that copies its training set puts samples much nearer to a training image than
real unseen images are. With ``d(x) = min_j ||x - t_j||`` (Euclidean, pixel space) over the
training images ``t_j``, :func:`memorization_check` compares ``d`` of the generated samples
with ``d`` of the test images: the medians, and the fraction of generated samples nearer
than the ``quantile`` of the test images' distances (``quantile`` itself for a generator
that memorises no more than real data would; much more flags copies).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["memorization_check", "nearest_distances"]


def nearest_distances(x: Tensor, reference: Tensor, chunk: int = 1024) -> Tensor:
    """Euclidean distance of each sample of ``x`` to its nearest sample of ``reference`` (both flattened)."""
    x = x.flatten(1).double()
    reference = reference.flatten(1).double()
    return torch.cat([torch.cdist(part, reference).min(1).values for part in torch.split(x, chunk)]).float()


def memorization_check(generated: Tensor, train: Tensor, test: Tensor, quantile: float = 0.05) -> dict[str, float]:
    """Nearest-training-image distances of generated samples beside those of real test images.

    Returns ``nn_train_median`` (generated), ``nn_train_median_test`` (real test images: the
    reference), their ratio ``nn_ratio`` (about 1 for no memorisation, near 0 for copies),
    ``near_copy_fraction`` (generated samples nearer to a training image than the
    ``quantile`` of the test images' distances) and ``near_copy_expected`` (= ``quantile``).
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    d_gen, d_test = nearest_distances(generated, train), nearest_distances(test, train)
    threshold = torch.quantile(d_test.double(), quantile).float()
    gen_median, test_median = d_gen.median().item(), d_test.median().item()
    return {
        "nn_train_median": gen_median,
        "nn_train_median_test": test_median,
        "nn_ratio": gen_median / test_median,
        "near_copy_fraction": (d_gen < threshold).double().mean().item(),
        "near_copy_expected": quantile,
    }
