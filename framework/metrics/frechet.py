"""Fréchet distance between Gaussians fitted to feature sets (Heusel et al. 2017, "FID")."""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (N - 1 denominator, as torchmetrics and pytorch-fid) of (N, D) features, in float64."""
    features = features.detach().double().flatten(1)
    if features.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {features.shape[0]}")
    mean = features.mean(dim=0)
    centred = features - mean
    return mean, centred.T @ centred / (features.shape[0] - 1)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Squared 2-Wasserstein distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``; the last trace equals
    ``tr((S1 S2)^1/2)`` of the usual formula but is the trace of a symmetric PSD matrix, so
    it comes from a symmetric eigendecomposition with no complex parts to drop.
    """
    mu1, mu2, sigma1, sigma2 = (t.detach().double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(
            f"shapes do not fit: mu {tuple(mu1.shape)}, {tuple(mu2.shape)}; sigma {tuple(sigma1.shape)}, {tuple(sigma2.shape)}"
        )
    sqrt_sigma1 = _sqrt_psd((sigma1 + sigma1.T) / 2)
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt


def frechet_distance_of_features(features1: Tensor, features2: Tensor) -> Tensor:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))


def frechet_distance_of_subsets(
    features: Tensor, reference: Tensor, size: int, count: int = 50, seed: int = 0
) -> Tensor:
    """Fréchet distances to ``reference`` of ``count`` seeded random subsets of ``size`` rows of ``features``: (count,) float64.

    The equal-count floor of a Fréchet ratio: a generated set of ``size`` samples is compared
    with real sets of the same size (the distance is biased upwards by ~tr(S)/n terms, so
    only equal counts compare), and one subset alone is noisy when ``size`` is near the
    feature dimension: average these. Subset ``i`` is the first ``size`` rows of
    ``randperm(N)`` drawn from ``torch.Generator().manual_seed(seed)`` (one generator, drawn
    ``count`` times), so the figures depend only on the rows' order, the seed and the sizes.
    A ``size`` of at least ``N`` gives the whole set once.
    """
    n = features.shape[0]
    if size < 2:
        raise ValueError(f"a subset needs at least 2 rows, got size {size}")
    mu_ref, sigma_ref = gaussian_statistics(reference)
    if size >= n:
        return frechet_distance(*gaussian_statistics(features), mu_ref, sigma_ref).view(1)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        rows = torch.randperm(n, generator=generator)[:size]
        out.append(frechet_distance(*gaussian_statistics(features[rows]), mu_ref, sigma_ref))
    return torch.stack(out)


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative rounding-error eigenvalues set to 0)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
