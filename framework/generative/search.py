"""Inference-time search with verifiers (Ma et al. 2025, "Inference-time scaling for diffusion
models beyond scaling denoising steps"; reimplementation read: sayakpaul/tt-scale-flux,
``main.py``, ``utils.generate_neighbors``, ``path_search.py``). Registry kind ``search``.

Every algorithm spends more generator calls on one sample and keeps the candidate a verifier
(:mod:`framework.generative.verifiers`) scores best, the verifier always scoring the denoised
estimate ``x0_hat``. They run on a :class:`Trajectory`, which both families provide
(``Diffusion.trajectory``, ``FlowMatching.trajectory``) on one shared noise level
``level`` in [0, 1]: the noise fraction of the straight path ``(1 - level) x0 + level n``,
i.e. ``x_hat = x0 + sigma n`` with ``sigma = level / (1 - level)`` (level 1: pure noise,
0: data). Candidates' noises come from the sample's own seed (:func:`candidate_seeds`), so a
searched sample depends only on its seed, label and options, and candidate 0 is the plain
sample: ``random`` with ``n = 1`` is plain sampling.

* ``random``: best of ``n`` initial noises.
* ``zero_order``: ``rounds`` rounds around a pivot noise: the pivot and ``n`` neighbours on the
  sphere of the pivot's norm at cosine ``threshold`` (distance ``lambda = ||z|| sqrt(2 (1 -
  threshold))``); the best becomes the pivot, or, when no neighbour beats it, a fresh noise.
* ``paths``: ``n`` paths run to ``sigma_start``; each round noises every path forward by
  ``delta_f`` ``m`` times (the schedule's own marginal), runs each back by ``delta_b``, scores
  ``x0_hat`` and keeps the best ``n``; finally the best one.

NFE (generator calls per returned sample, candidates included) and verifier calls are counted
by the trajectory and the verifier (``SearchResult``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from framework.errors import ConfigError
from framework.generative.noise import seeded_randn
from framework.generative.verifiers import Verifier
from registry import REGISTRY, register

__all__ = [
    "PathSearch",
    "RandomSearch",
    "SearchResult",
    "Trajectory",
    "ZeroOrderSearch",
    "build_search",
    "candidate_seeds",
    "search_generate",
    "sphere_neighbours",
]

#: Stride between a sample's candidate seeds (odd, far from the run stride 0x9E3779B9).
CANDIDATE_STRIDE = 0x632BE5AB


class Trajectory(Protocol):
    """A generator's sampling path on the shared noise level (see the module docstring).

    ``rows_nfe`` accumulates generator calls times the rows they were made for,
    ``rows_classifier`` the guidance classifier's calls likewise.
    """

    shape: tuple[int, ...]
    sigma_max: float
    rows_nfe: float
    rows_classifier: float

    def start(self, z: Tensor) -> Tensor:
        """The state at level 1 from standard normal draws ``z``."""

    def run(self, x: Tensor, labels: Tensor, seeds: Tensor, level_from: float, level_to: float) -> Tensor:
        """Carry states from ``level_from`` down to ``level_to`` (0: the samples)."""

    def denoised(self, x: Tensor, labels: Tensor, level: float) -> Tensor:
        """``x0_hat`` of states at ``level`` (one generator call)."""

    def renoise(self, x: Tensor, level_from: float, level_to: float, noise: Tensor) -> Tensor:
        """States at ``level_from`` noised forward to ``level_to`` with the schedule's marginal."""

    def branches(self, x_hat: Tensor, labels: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """Unconditional and conditional denoised estimates of ``x_hat = x0 + sigma n`` (two generator calls)."""


@dataclass
class SearchResult:
    """Chosen samples, their verifier scores, and the compute spent per sample."""

    x: Tensor
    scores: Tensor
    nfe: float
    verifier_calls: float


def candidate_seeds(seeds: Tensor, n: int, stream: int = 0) -> Tensor:
    """(B, n) seeds of sample ``b``'s candidates: ``seeds[b] + (j + stream * n) * CANDIDATE_STRIDE`` mod 2**32.

    Candidate 0 of stream 0 is the sample's own seed (the plain sample).
    """
    j = torch.arange(n, dtype=torch.int64) + stream * n
    return (seeds.to(torch.int64).view(-1, 1).cpu() + j.view(1, -1) * CANDIDATE_STRIDE) % 2**32


def sphere_neighbours(z: Tensor, n: int, threshold: float, generator: torch.Generator) -> Tensor:
    """``n`` points at cosine ``threshold`` from ``z`` on the sphere of its norm (tt-scale-flux's ``generate_neighbors``).

    ``||z|| (c u + sqrt(1 - c^2) w)`` with ``u = z / ||z||`` and ``w`` a random unit vector
    orthogonal to ``u``: every neighbour is at distance ``||z|| sqrt(2 (1 - c))`` from ``z``.
    Returns (n, *z.shape).
    """
    flat = z.reshape(-1).double()
    norm = flat.norm().clamp_min(1e-12)
    u = flat / norm
    v = torch.randn(n, flat.numel(), generator=generator, dtype=torch.float64)
    w = v - (v @ u).view(-1, 1) * u.view(1, -1)
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out = norm * (threshold * u.view(1, -1) + math.sqrt(1 - threshold**2) * w)
    return out.reshape(n, *z.shape).to(z)


def _best(scores: Tensor, k: int = 1) -> Tensor:
    """Indices of the top-``k`` scores along dim 1 (ties: the lower index first)."""
    n = scores.shape[1]
    # a tiny index penalty makes the order of equal scores the candidates' order, deterministically
    keyed = scores.double() - torch.arange(n, dtype=torch.float64, device=scores.device) * 1e-12
    return keyed.topk(k, dim=1).indices


def _rows(x: Tensor, n: int) -> Tensor:
    return x.repeat_interleave(n, dim=0)


class Search(ABC):
    """Base class: ``search(trajectory, verifier, labels, seeds) -> SearchResult``."""

    #: Whether the algorithm scores candidates (FKC does not: it reweights by its own weights).
    needs_verifier: bool = True

    @abstractmethod
    def __call__(self, trajectory: Trajectory, verifier: Verifier, labels: Tensor, seeds: Tensor) -> SearchResult:
        """The chosen samples of ``labels`` (one per seed) with their scores and costs."""

    @staticmethod
    def _finish(trajectory: Trajectory, verifier: Verifier, x: Tensor, scores: Tensor, calls0: int, batch: int):
        return SearchResult(x, scores, trajectory.rows_nfe / batch, (verifier.evaluations - calls0) / batch)

    @staticmethod
    def _sample(trajectory: Trajectory, z: Tensor, labels: Tensor, seeds: Tensor) -> Tensor:
        return trajectory.run(trajectory.start(z), labels, seeds, 1.0, 0.0)


@register("search", "random", aliases=("best_of_n",))
class RandomSearch(Search):
    """Random search: the best of ``n`` initial noises by the verifier (Ma et al. 2025).

    Args:
        n: Candidates per sample (budget: ``n`` times the plain sampler's NFE).
    """

    def __init__(self, n: int = 4) -> None:
        if n < 1:
            raise ConfigError(f"random search needs n >= 1, got {n}")
        self.n = int(n)

    def __call__(self, trajectory, verifier, labels, seeds):
        b, n, calls0 = len(labels), self.n, verifier.evaluations
        cand = candidate_seeds(seeds, n).reshape(-1)
        z = seeded_randn(cand, trajectory.shape, device=labels.device, dtype=torch.float64)
        rep = _rows(labels, n)
        x = self._sample(trajectory, z, rep, cand)
        scores = verifier(x, rep).view(b, n)
        pick = _best(scores).view(-1)
        rows = torch.arange(b, device=pick.device) * n + pick
        return self._finish(trajectory, verifier, x[rows], scores.gather(1, pick.view(-1, 1)).view(-1), calls0, b)


@register("search", "zero_order")
class ZeroOrderSearch(Search):
    """Zero-order search: ``rounds`` rounds of the pivot and ``n`` neighbours at cosine ``threshold`` (Ma et al. 2025).

    Each round scores the pivot and its neighbours (``n + 1`` samples, as the reference); the best
    becomes the next pivot, or a fresh noise when no neighbour beat the pivot. The best sample
    seen in any round is returned. Budget: ``rounds (n + 1)`` times the plain NFE.

    Args:
        n: Neighbours per round.
        rounds: Search rounds ``K``.
        threshold: Cosine similarity of a neighbour to the pivot (reference: 0.95).
    """

    def __init__(self, n: int = 4, rounds: int = 2, threshold: float = 0.95) -> None:
        if n < 1 or rounds < 1 or not 0 < threshold < 1:
            raise ConfigError("zero_order search needs n >= 1, rounds >= 1 and 0 < threshold < 1")
        self.n, self.rounds, self.threshold = int(n), int(rounds), float(threshold)

    def __call__(self, trajectory, verifier, labels, seeds):
        b, n, calls0 = len(labels), self.n, verifier.evaluations
        shape, device = trajectory.shape, labels.device
        pivot = seeded_randn(seeds, shape, device=device, dtype=torch.float64)
        best_x = best_s = None
        rep = _rows(labels, n + 1)
        for k in range(self.rounds):
            # neighbours drawn from the sample's seed and the round: deterministic per sample
            gens = [torch.Generator().manual_seed(int(s)) for s in candidate_seeds(seeds, 1, stream=k + 1).view(-1)]
            neigh = torch.stack([sphere_neighbours(pivot[i].cpu(), n, self.threshold, gens[i]) for i in range(b)])
            z = torch.cat([pivot.unsqueeze(1), neigh.to(pivot)], dim=1)  # (B, n + 1, ...)
            cand = candidate_seeds(seeds, n + 1, stream=k).reshape(-1)
            x = self._sample(trajectory, z.reshape(b * (n + 1), *shape), rep, cand)
            scores = verifier(x, rep).view(b, n + 1)
            pick = _best(scores).view(-1)
            top = scores.gather(1, pick.view(-1, 1)).view(-1)
            xs = x.view(b, n + 1, *x.shape[1:])[torch.arange(b), pick]
            if best_s is None:
                best_x, best_s = xs, top
            else:
                better = top > best_s
                best_x = torch.where(better.view(-1, *([1] * (xs.ndim - 1))), xs, best_x)
                best_s = torch.maximum(top, best_s)
            improved = top > scores[:, 0]
            fresh = seeded_randn(candidate_seeds(seeds, 1, stream=10_000 + k).view(-1), shape, device=device,
                                 dtype=torch.float64)  # fmt: skip
            chosen = z[torch.arange(b), pick]
            pivot = torch.where(improved.view(-1, *([1] * len(shape))), chosen, fresh)
        return self._finish(trajectory, verifier, best_x, best_s, calls0, b)


@register("search", "paths", aliases=("search_over_paths",))
class PathSearch(Search):
    """Search over paths (Ma et al. 2025; tt-scale-flux ``path_search.py``), scoring ``x0_hat`` at every round.

    Start ``n`` paths and run them to level ``sigma_start``; while the level is above 0, noise
    each path forward to ``level + delta_f`` ``m`` times (the schedule's marginal), run each to
    ``level - delta_b``, score their ``x0_hat`` and keep the ``n`` best; return the best path.

    Args:
        n: Paths kept.
        m: Forward-noised copies per path and round.
        sigma_start: Level at which the search starts (reference: 0.8).
        delta_b: Backward (denoising) increment per round (reference: 0.2).
        delta_f: Forward (noising) increment per round, < ``delta_b`` (reference: 0.1).
    """

    def __init__(self, n: int = 2, m: int = 2, sigma_start: float = 0.8, delta_b: float = 0.2, delta_f: float = 0.1):
        if n < 1 or m < 1:
            raise ConfigError("paths search needs n >= 1 and m >= 1")
        if not 0 < delta_f < delta_b or not 0 < sigma_start < 1 or sigma_start + delta_f >= 1:
            raise ConfigError("paths search needs 0 < delta_f < delta_b and 0 < sigma_start < sigma_start + delta_f < 1")
        self.n, self.m = int(n), int(m)
        self.sigma_start, self.delta_b, self.delta_f = float(sigma_start), float(delta_b), float(delta_f)

    def levels(self) -> list[float]:
        """The levels the rounds start at: ``sigma_start, sigma_start - delta_b, ...`` above 0."""
        out, level = [], self.sigma_start
        while level > 1e-9:
            out.append(round(level, 12))
            level -= self.delta_b
        return out

    def __call__(self, trajectory, verifier, labels, seeds):
        b, n, m, calls0 = len(labels), self.n, self.m, verifier.evaluations
        shape, device = trajectory.shape, labels.device
        cand = candidate_seeds(seeds, n).reshape(-1)
        rep_n, rep_nm = _rows(labels, n), _rows(labels, n * m)
        z = seeded_randn(cand, shape, device=device, dtype=torch.float64)
        x = trajectory.run(trajectory.start(z), rep_n, cand, 1.0, self.sigma_start)  # (B n, ...)
        scores = None
        for r, level in enumerate(self.levels()):
            up, down = level + self.delta_f, max(level - self.delta_b, 0.0)
            noise_seeds = candidate_seeds(seeds, n * m, stream=r + 1).reshape(-1)
            noise = seeded_randn(noise_seeds, shape, device=device, dtype=torch.float64).to(x)
            xs = trajectory.renoise(_rows(x, m), level, up, noise)
            xs = trajectory.run(xs, rep_nm, noise_seeds, up, down)
            x0 = xs if down == 0 else trajectory.denoised(xs, rep_nm, down)
            s = verifier(x0, rep_nm).view(b, n * m)
            keep = _best(s, n)  # (B, n)
            rows = (torch.arange(b, device=keep.device).view(-1, 1) * n * m + keep).view(-1)
            x, scores = xs[rows], s.gather(1, keep)
        if scores is None:
            raise ConfigError("paths search ran no round")
        return self._finish(trajectory, verifier, x.view(b, n, *x.shape[1:])[:, 0], scores[:, 0], calls0, b)


def search_generate(
    model: Any,
    trajectory: Trajectory,
    labels: Tensor,
    seeds: Tensor,
    search: str | Search,
    search_args: dict[str, Any] | None = None,
    verifier: str | Verifier = "classifier",
) -> Tensor:
    """Run a search on a generator's trajectory; set ``model.last_nfe`` and ``last_classifier_evaluations``.

    The verifier is built with the model's ``clean_classifier``; classifier evaluations count
    the verifier's and any guidance classifier's, per returned sample.
    """
    from framework.generative.verifiers import build_verifier

    algorithm = build_search(search, **(search_args or {}))
    judge = None
    if getattr(algorithm, "needs_verifier", True):
        judge = build_verifier(verifier, classifier=getattr(model, "clean_classifier", None))
    seeds = torch.as_tensor(seeds, dtype=torch.int64)
    result = algorithm(trajectory, judge, labels, seeds)
    model.last_nfe = int(round(result.nfe))
    model.last_classifier_evaluations = int(round(result.verifier_calls + trajectory.rows_classifier / len(labels)))
    model.last_search_scores = result.scores
    return result.x


def build_search(search: str | Search, **kwargs: Any) -> Search:
    """A :class:`Search` from a registry name and its arguments, or an instance."""
    if isinstance(search, Search):
        return search
    cls = REGISTRY.get("search", str(search))
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"search {search!r}: {err}") from None
