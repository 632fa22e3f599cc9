"""The math of the class-incremental methods as small pure functions (no Lightning).

Each function states the paper (and, where the references differ, which one it follows); the
LightningModules in this package only wire them to nets and data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.errors import ConfigError


def class_means(features: Tensor, labels: Tensor, classes: Tensor | range) -> Tensor:
    """Mean feature of each class in ``classes`` (rows in that order); every class needs a sample."""
    rows = []
    for c in classes:
        mask = labels == int(c)
        if not bool(mask.any()):
            raise ConfigError(f"class {int(c)} has no sample to average")
        rows.append(features[mask].mean(0))
    return torch.stack(rows)


def normalized_class_means(features: Tensor, labels: Tensor, classes: Tensor | range) -> Tensor:
    """iCaRL's class prototypes: the mean of each class's L2-normalised features, normalised again
    (PyCIL's ``_compute_means`` / NME; NCM uses them over all of a class's data)."""
    return F.normalize(class_means(F.normalize(features, dim=1), labels, classes), dim=1)


def nme_scores(features: Tensor, means: Tensor) -> Tensor:
    """Nearest-mean-of-exemplars scores (iCaRL Alg. 1): minus the distance from each L2-normalised
    feature to each prototype; the argmax is the nearest mean."""
    return -torch.cdist(F.normalize(features, dim=1), means.to(features))


def nearest_new_class(old_means: Tensor, new_means: Tensor, distance: str = "euclidean", block: int = 256) -> Tensor:
    """For each old class, the index (into ``new_means``) of the closest new class (FeTrIL, Sec. 3.2).

    ``euclidean`` is the official code's ``pairwise_distances`` argmin (in float64); ``cosine`` is
    PyCIL's argmax of cosine similarity between class means. The old classes are taken ``block``
    at a time, so the temporaries are O(block x D), not O(old classes x D) float64; the cdist
    mode is the one the whole matrix would get, so every row is computed as before.
    """
    if distance not in ("euclidean", "cosine"):
        raise ConfigError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
    if distance == "euclidean":
        mode = "use_mm_for_euclid_dist" if len(old_means) > 25 or len(new_means) > 25 else "donot_use_mm_for_euclid_dist"
        new = new_means.double()
        nearest = [torch.cdist(part.double(), new, compute_mode=mode).argmin(dim=1) for part in old_means.split(block)]
    else:
        new = F.normalize(new_means, dim=1)
        nearest = [(F.normalize(part, dim=1) @ new.T).argmax(dim=1) for part in old_means.split(block)]
    return torch.cat(nearest) if nearest else torch.zeros(0, dtype=torch.long)


def pseudo_features(new_features: Tensor, new_mean: Tensor, old_mean: Tensor, out: Tensor | None = None) -> Tensor:
    """FeTrIL's geometric translation (Eq. 1): f_hat = f - mu_new + mu_old for every real f of the new class.

    ``out`` (may be ``new_features`` itself) receives the result in place; the float operations
    are the same either way.
    """
    return torch.sub(new_features, new_mean, out=out).add_(old_mean)


def weight_align_gamma(weight: Tensor, num_old: int, norm: float = 2.0, clamp: bool = False) -> Tensor:
    """WA's gamma = mean ||w_old|| / mean ||w_new|| over classifier rows (Zhao et al. 2020, Eq. 6).

    ``weight`` holds the rows of every seen class, old classes first. ``norm`` is the p of the
    row norm (official code: 1, PyCIL: 2); ``clamp`` caps gamma at 1 as the official code does.
    """
    if not 0 < num_old < len(weight):
        raise ConfigError(f"weight aligning needs old and new rows, got {num_old} old of {len(weight)}")
    norms = torch.linalg.vector_norm(weight, ord=norm, dim=1)
    gamma = norms[:num_old].mean() / norms[num_old:].mean()
    return gamma.clamp(max=1.0) if clamp else gamma


def distillation_loss(logits: Tensor, old_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """Knowledge distillation as in WA / iCaRL-style code: -sum softmax(old/T) log softmax(new/T), batch mean.

    ``logits`` are the new model's logits restricted to the old classes. Like both WA
    references, there is no T^2 factor.
    """
    log_p = F.log_softmax(logits / temperature, dim=1)
    q = F.softmax(old_logits / temperature, dim=1)
    return -(q * log_p).sum() / logits.shape[0]


def calibrate_prototypes(new_protos: Tensor, base_protos: Tensor, tau: float = 16.0, alpha: float = 0.5) -> Tensor:
    """TEEN's training-free calibration (Wang et al. 2023, Eq. 5-6) of new-class prototypes.

    With unit prototypes p_c (new) and p_b (base): w = softmax_b(tau cos(p_c, p_b)),
    delta = normalize(sum_b w_b p_b), and the result is (1 - alpha) p_c + alpha delta.
    """
    new_unit = F.normalize(new_protos, dim=1)
    base_unit = F.normalize(base_protos, dim=1)
    weights = torch.softmax(tau * new_unit @ base_unit.T, dim=1)
    delta = F.normalize(weights @ base_unit, dim=1)
    return (1 - alpha) * new_unit + alpha * delta


def herding(features: Tensor, m: int) -> Tensor:
    """Indices of ``m`` exemplars chosen by herding (Welling 2009; iCaRL Alg. 4, as in PyCIL).

    Features are L2-normalised; step k picks the sample that brings the mean of the k chosen
    ones closest to the class mean. The order of the result is the selection order, so the
    first m' < m indices are the herding choice for a budget m'.
    """
    vectors = F.normalize(features.double(), dim=1)
    mean = vectors.mean(0)
    m = min(m, len(vectors))
    chosen: list[int] = []
    available = torch.ones(len(vectors), dtype=torch.bool)
    running = torch.zeros_like(mean)
    for k in range(1, m + 1):
        distances = torch.linalg.vector_norm(mean - (running + vectors) / k, dim=1)
        distances[~available] = float("inf")
        i = int(distances.argmin())
        chosen.append(i)
        available[i] = False
        running += vectors[i]
    return torch.tensor(chosen, dtype=torch.long)
