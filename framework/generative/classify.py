"""Generative classification math: shared (level, noise) pairs, the adaptive schedule, Bayes' rule, calibration.

A class-conditional generator classifies ``x`` by Bayes' rule over ``p(x | c)`` (exact mode), or,
as Li et al. (2023, "Your Diffusion Model is Secretly a Zero-Shot Classifier") do, by the class
whose conditional denoising error ``E_{t, noise} || err(x, c, t, noise) ||`` is lowest, averaged
over a set of (level, noise) pairs that is **the same for every class** (the variance of the
pairs cancels in the comparison). Levels are quantiles ``u`` in (0, 1) of the generator's own
training distribution of noise levels (``GenerativeModule.conditional_error`` maps them), so
this module knows nothing of the families. Pure torch/NumPy/SciPy; no Lightning.

Pairs differ from the reference (``diffusion-classifier/eval_prob_adaptive.py``) in one way:
the reference evaluates an evenly spaced grid of timesteps and takes every k-th point of it at
an earlier stage; here pair ``k`` of an image has the level ``frac(vdc(k) + shift)``, the
van der Corput sequence rotated by a per-image random shift (Cranley-Patterson), so that every
prefix of the pairs is spread evenly over (0, 1) whatever the stage sizes, and a later stage
reuses the earlier pairs as the reference does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from framework.errors import ConfigError

__all__ = [
    "LOSSES",
    "ClassifyResult",
    "adaptive_classify",
    "adaptive_nfe",
    "bayes_log_posterior",
    "check_schedule",
    "draw_pairs",
    "expected_calibration_error",
    "fit_temperature",
    "image_seeds",
    "reduce_residual",
    "van_der_corput",
]

LOSSES = ("l2", "l1", "huber")
#: Levels stay this far inside (0, 1), where inverse CDFs such as the log-normal's are finite.
LEVEL_EPS = 1e-6


def van_der_corput(n: int, base: int = 2) -> Tensor:
    """The first ``n`` points of the base-``base`` van der Corput sequence (0, 1/2, 1/4, 3/4, ...), float64."""
    out = np.zeros(n)
    for k in range(n):
        q, denom, i = 0.0, 1.0, k
        while i:
            denom *= base
            i, digit = divmod(i, base)
            q += digit / denom
        out[k] = q
    return torch.from_numpy(out)


def image_seeds(x: Tensor, seed: int = 0, salt: Sequence[int] | None = None) -> list[int]:
    """One 63-bit seed per row of ``x`` from its bytes (and ``seed``, ``salt[i]``).

    The pairs of an image then depend on the image only, never on its batch, its position in
    the split or the number of devices.
    """
    rows = x.detach().to("cpu", torch.float32).contiguous().reshape(len(x), -1).numpy()
    seeds = []
    for i, row in enumerate(rows):
        h = hashlib.blake2b(row.tobytes(), digest_size=8, key=f"{seed}:{'' if salt is None else salt[i]}".encode())
        seeds.append(int.from_bytes(h.digest(), "little") >> 1)
    return seeds


def draw_pairs(seeds: Sequence[int], n: int, data_shape: Sequence[int], dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """``n`` (level, noise) pairs per seed: levels (S, n) in (0, 1) and noise (S, n, *data_shape) ~ N(0, I).

    Pair k of a seed is the same for every ``n > k`` only when drawn with the same ``n`` (draw the
    largest stage once and take prefixes).
    """
    base = van_der_corput(n)
    levels, noise = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        shift = torch.rand(1, generator=g, dtype=torch.float64)
        levels.append(torch.remainder(base + shift, 1.0).clamp(LEVEL_EPS, 1 - LEVEL_EPS))
        noise.append(torch.randn((n, *data_shape), generator=g))
    return torch.stack(levels).to(dtype), torch.stack(noise).to(dtype)


def reduce_residual(residual: Tensor, loss: str = "l2") -> Tensor:
    """Per-sample error (B,) of a residual (B, ...): mean of r^2 (l2), |r| (l1) or Huber(r, delta 1) over dims."""
    flat = residual.reshape(len(residual), -1)
    if loss == "l2":
        return flat.pow(2).mean(1)
    if loss == "l1":
        return flat.abs().mean(1)
    if loss == "huber":
        return F.huber_loss(flat, torch.zeros_like(flat), reduction="none", delta=1.0).mean(1)
    raise ConfigError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


def check_schedule(n_samples: Sequence[int], to_keep: Sequence[int], num_classes: int) -> None:
    """ConfigError unless the stages are well formed: pairs strictly increase, kept classes strictly shrink."""
    n_samples, to_keep = list(n_samples), list(to_keep)
    if not n_samples or len(n_samples) != len(to_keep):
        raise ConfigError(f"n_samples {n_samples} and to_keep {to_keep} must be non-empty lists of the same length")
    if any(n < 1 for n in n_samples) or any(b <= a for a, b in zip(n_samples, n_samples[1:])):
        raise ConfigError(f"n_samples {n_samples} must be positive and strictly increasing (later stages reuse earlier pairs)")
    if any(k < 1 for k in to_keep) or any(b >= a for a, b in zip(to_keep, to_keep[1:])):
        raise ConfigError(f"to_keep {to_keep} must be positive and strictly decreasing (each stage shrinks the candidates)")
    if to_keep[0] > num_classes:
        raise ConfigError(f"to_keep {to_keep} keeps more classes than there are ({num_classes})")


def adaptive_nfe(num_classes: int, n_samples: Sequence[int], to_keep: Sequence[int]) -> int:
    """Net evaluations per image of the adaptive schedule: C n_1 + k_1 (n_2 - n_1) + ..."""
    total, candidates, done = 0, num_classes, 0
    for n, keep in zip(n_samples, to_keep):
        total += candidates * (n - done)
        candidates, done = keep, n
    return total


@dataclass
class ClassifyResult:
    """What :func:`adaptive_classify` finds.

    Attributes:
        errors: (B, C) mean error of each class over the pairs it was evaluated on.
        counts: (B, C) number of pairs each class was evaluated on.
        predictions: (B,) the class with the lowest error among the last stage's candidates.
    """

    errors: Tensor
    counts: Tensor
    predictions: Tensor


def adaptive_classify(
    errors_fn: Callable[[Tensor, int, int], Tensor],
    batch_size: int,
    num_classes: int,
    n_samples: Sequence[int],
    to_keep: Sequence[int],
) -> ClassifyResult:
    """The adaptive evaluation of Li et al. 2023 (``eval_prob_adaptive``): stages of growing pair sets.

    Stage s evaluates the candidate classes of every image on pairs ``[n_{s-1}, n_s)`` (the first
    ``n_{s-1}`` are reused), then keeps the ``to_keep[s]`` classes of lowest mean error. One stage
    with ``to_keep = [1]`` is the full evaluation.

    Args:
        errors_fn: ``errors_fn(candidates (B, k), start, stop) -> (B, k, stop - start)`` errors
            of each image under each candidate class on pairs ``start .. stop - 1``.
        batch_size: Number of images B.
        num_classes: Number of classes C.
        n_samples: Pairs evaluated by the end of each stage (strictly increasing).
        to_keep: Classes kept after each stage (strictly decreasing).
    """
    check_schedule(n_samples, to_keep, num_classes)
    candidates = torch.arange(num_classes).expand(batch_size, num_classes)
    sums = torch.zeros(batch_size, num_classes, dtype=torch.float64)
    counts = torch.zeros(batch_size, num_classes, dtype=torch.long)
    done = 0
    for n, keep in zip(n_samples, to_keep):
        err = errors_fn(candidates, done, n).to(torch.float64)
        sums.scatter_add_(1, candidates, err.sum(-1))
        counts.scatter_add_(1, candidates, torch.full_like(candidates, n - done))
        mean = sums.gather(1, candidates) / counts.gather(1, candidates)
        order = torch.argsort(mean, dim=1, stable=True)[:, :keep]  # ties: the lower class index
        candidates, done = candidates.gather(1, order), n
    errors = sums / counts.clamp_min(1)
    return ClassifyResult(errors=errors, counts=counts, predictions=candidates[:, 0].clone())


def bayes_log_posterior(log_likelihood: Tensor, log_prior: Tensor | None = None) -> Tensor:
    """``log p(c | x) = log p(x | c) + log p(c) - log sum_c' p(x | c') p(c')`` for (B, C) log-likelihoods."""
    joint = log_likelihood if log_prior is None else log_likelihood + log_prior.to(log_likelihood)
    return joint - torch.logsumexp(joint, dim=1, keepdim=True)


def fit_temperature(scores: Tensor, labels: Tensor, bounds: tuple[float, float] = (1e-6, 1e6)) -> float:
    """The temperature T minimising the NLL of ``softmax(scores / T)`` (Guo et al. 2017, temperature scaling).

    The NLL is convex in beta = 1 / T, hence unimodal in log beta: a bounded Brent search on log
    beta finds the global minimum.
    """
    from scipy.optimize import minimize_scalar

    s = scores.detach().to("cpu", torch.float64)
    y = labels.detach().cpu().long()
    if len(s) == 0:
        raise ConfigError("temperature fitting needs at least one validation sample")

    def nll(log_beta: float) -> float:
        return float(F.cross_entropy(s * math.exp(log_beta), y))

    lo, hi = math.log(1 / bounds[1]), math.log(1 / bounds[0])
    found = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(-found.x))


def expected_calibration_error(probabilities: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE = sum_b |B_b| / n |acc(B_b) - conf(B_b)| over ``n_bins`` equal-width confidence bins (Guo et al. 2017).

    Confidence is the top-1 probability; bin b holds confidences in [b / n_bins, (b + 1) / n_bins)
    (the last bin includes 1), torchmetrics' binning.
    """
    p = probabilities.detach().to("cpu", torch.float64)
    conf, pred = p.max(1)
    correct = (pred == labels.detach().cpu()).to(torch.float64)
    bins = torch.clamp(torch.floor(conf * n_bins).long(), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += float(mask.sum()) / len(p) * abs(float(correct[mask].mean() - conf[mask].mean()))
    return ece
