"""Analytic class-incremental learning (ACIL, Zhuang et al., NeurIPS 2022; G-ACIL, 2024) as pure functions.

A frozen extractor's features f are expanded by a fixed random "buffer" layer
phi = act(W_r f) (``RandomBuffer`` of the official code, ZHUANGHP/Analytic-continual-learning),
and a linear classifier W (d x C) on phi is fitted by ridge regression on one-hot targets. The
recursive form (ACIL Eq. 9-10, in the mini-batch form G-ACIL proposes and the official
``RecursiveLinear`` implements) updates, for each batch X (B x d) with targets Y (B x C),

    K = (I + X R X^T)^-1
    R <- R - R X^T K X R
    W <- W + R X^T (Y - X W)

from R0 = I / gamma, W0 = 0. By the Woodbury identity R is then always
(X_all^T X_all + gamma I)^-1 and W the joint ridge solution R X_all^T Y_all over every batch
seen, whatever the order of classes and the partition into batches ("absolute memorization").
Classes not seen yet are zero target columns; the official code appends those columns when a
batch brings a larger one-hot width, which gives the same W (a zero column stays zero).

Everything is float64, as in the official code (its default dtype).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from framework.errors import ConfigError

__all__ = ["ACTIVATIONS", "buffer_features", "random_buffer_weight", "rls_init", "rls_update", "ridge_solution"]

ACTIVATIONS = {
    "relu": torch.relu,  # the official code
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}


def random_buffer_weight(in_features: int, width: int, seed: int) -> Tensor:
    """The buffer layer's fixed weight (width x in_features, float64): ``nn.Linear``'s default
    initialisation, uniform in +-1/sqrt(in_features), as the official ``RandomBuffer``, drawn
    from its own generator seeded by ``seed``."""
    if width < 1:
        raise ConfigError(f"acil buffer width must be >= 1, got {width}")
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(in_features)
    return (torch.rand(width, in_features, generator=generator, dtype=torch.float64) * 2 - 1) * bound


def buffer_features(features: Tensor, weight: Tensor, activation: str = "relu") -> Tensor:
    """phi = act(f W_r^T) in float64 (B x width)."""
    return ACTIVATIONS[activation](features.to(weight) @ weight.T)


def rls_init(dim: int, num_targets: int, gamma: float, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """R0 = I / gamma (dim x dim) and W0 = 0 (dim x num_targets), float64."""
    check_gamma(gamma)
    eye = torch.eye(dim, dtype=torch.float64, device=device)
    return eye / gamma, torch.zeros(dim, num_targets, dtype=torch.float64, device=device)


def check_gamma(gamma: float) -> None:
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ConfigError(f"acil gamma must be a finite number > 0 (the ridge regularisation), got {gamma}")


def rls_update(R: Tensor, W: Tensor, X: Tensor, Y: Tensor, gamma: float | None = None) -> tuple[Tensor, Tensor]:
    """One recursive least-squares step on a batch: the new (R, W) (inputs are not modified).

    ``Y`` may have more columns than ``W`` (new classes): W gets zero columns first. Fewer
    columns are zero-padded. I + X R X^T is factorised by Cholesky (it is symmetric positive
    definite whenever R is); a failed factorisation or a non-finite result raises one
    ConfigError naming gamma instead of returning NaN weights.
    """
    X, Y = X.to(R), Y.to(R)
    if Y.shape[1] > W.shape[1]:
        W = torch.cat([W, W.new_zeros(W.shape[0], Y.shape[1] - W.shape[1])], dim=1)
    elif Y.shape[1] < W.shape[1]:
        Y = torch.cat([Y, Y.new_zeros(Y.shape[0], W.shape[1] - Y.shape[1])], dim=1)
    where = f" (gamma {gamma})" if gamma is not None else ""
    RXt = R @ X.T  # d x B
    S = torch.eye(len(X), dtype=R.dtype, device=R.device) + X @ RXt  # K^-1
    S = (S + S.T) / 2  # exact symmetry for the factorisation (rounding makes it drift)
    L, info = torch.linalg.cholesky_ex(S)
    if int(info) != 0 or not bool(torch.isfinite(S).all()):
        raise ConfigError(
            f"acil: the recursive least squares became singular{where}; gamma is too small for these "
            "features (increase gamma)"
        )
    KXR = torch.cholesky_solve(RXt.T, L)  # K X R, B x d
    R_new = R - RXt @ KXR
    W_new = W + R_new @ X.T @ (Y - X @ W)
    if not (bool(torch.isfinite(R_new).all()) and bool(torch.isfinite(W_new).all())):
        raise ConfigError(f"acil: the recursive least squares produced non-finite weights{where}; increase gamma")
    return R_new, W_new


def ridge_solution(X: Tensor, Y: Tensor, gamma: float) -> Tensor:
    """Joint ridge regression (X^T X + gamma I)^-1 X^T Y in float64 (the reference the recursion equals)."""
    X, Y = X.double(), Y.double()
    A = X.T @ X + gamma * torch.eye(X.shape[1], dtype=torch.float64)
    return torch.linalg.solve(A, X.T @ Y)
