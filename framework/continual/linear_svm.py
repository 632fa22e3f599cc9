"""One-vs-rest linear SVMs (L2-regularised squared hinge loss) solved jointly in torch over streamed batches.

The objective is the one scikit-learn's ``LinearSVC(penalty="l2", loss="squared_hinge",
dual=False, fit_intercept=True)`` hands liblinear (Fan et al., JMLR 2008; the primal of
``L2R_L2LOSS_SVC``): for every class c, with y_ic = +1 if sample i is of class c, else -1,

    f_c(w, v) = 1/2 (||w||^2 + v^2) + C sum_i max(0, 1 - y_ic (w . x_i + s v))^2

where s is ``intercept_scaling``: liblinear appends a constant feature s to every sample, so the
intercept ``s v`` is regularised like the other weights (scikit-learn's documented semantics).
The C problems are independent; they are solved together, so that every pass over the data is
a few (batch x D) by (D x C) matrix products and memory is O(batch x C + C x D), never the
whole design matrix (liblinear needs it in float64, as 16-byte index-value pairs).

Solver: a Newton method for this piecewise-quadratic, strongly convex objective. From w = 0
every sample is inside every margin, so the first Newton step is exact with one shared
(D+1) x (D+1) Hessian (one pass for the Gram matrix, one Cholesky). Later steps solve the
generalized-Hessian system (I + 2C X_A^T X_A, A the samples inside the margin; Keerthi and
DeCoste, JMLR 2005; liblinear's TRON uses the same Hessian) by conjugate gradients, one pass
per Hessian-vector product, with a backtracking line search evaluated for several step sizes
in one pass. A class stops when ||grad f_c|| <= eps_c ||grad f_c(0)|| with liblinear's
eps_c = tol * max(min(#positive, #negative), 1) / n, so ``tol`` means what it means there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from framework.errors import ConfigError

Batches = Callable[[], Iterable[tuple[Tensor, Tensor]]]
"""Returns a fresh iterator over (features B x D, labels B) batches: one pass over the data."""

_STEPS = (1.0, 0.5, 0.25)  # step sizes the line search evaluates in one pass
_ARMIJO = 1e-4


def _signs(labels: Tensor, classes: Tensor) -> Tensor:
    """y_ic = +1 where sample i is of class c (column k of ``classes``), else -1 (B x K float32)."""
    return torch.where(labels[:, None] == classes[None, :], 1.0, -1.0)


def ovr_objective(weights: Tensor, x: Tensor, labels: Tensor, classes: Tensor, C: float, scaling: float) -> Tensor:
    """f_c for every class (K,), from the whole data in memory, in float64 (for checks).

    Args:
        weights: K x (D + 1): each class's w and the weight v of the constant feature.
        x: N x D features.
        labels: N labels.
        classes: The K class labels, in the order of ``weights``' rows.
        C: The loss weight.
        scaling: liblinear's ``intercept_scaling`` s.
    """
    xa = torch.cat([x.double(), torch.full((len(x), 1), float(scaling), dtype=torch.float64)], dim=1)
    y = _signs(labels, classes).double()
    hinge = (1 - y * (xa @ weights.double().T)).clamp(min=0)
    return 0.5 * weights.double().pow(2).sum(1) + C * hinge.pow(2).sum(0)


class _Passes:
    """The passes over the data that the Newton method needs, for the classes still running.

    Weights are K x (D + 1), the last column v of the constant feature s: a margin is
    x . w + s v (the constant column is never materialised)."""

    def __init__(self, batches: Batches, classes: Tensor, C: float, scaling: float) -> None:
        self.batches, self.classes, self.C, self.s = batches, classes, C, scaling
        self.count = 0  # passes made
        self.work = 0.0  # class-passes: one pass over the data for one class counts 1

    def _iter(self, classes: int) -> Iterator[tuple[Tensor, Tensor]]:
        self.count += 1
        self.work += classes
        for x, labels in self.batches():
            yield x.float(), labels

    def _margins(self, x: Tensor, w32: Tensor) -> Tensor:
        return torch.addmm(w32[:, -1] * self.s, x, w32[:, :-1].T)

    def _project(self, r: Tensor, x: Tensor) -> Tensor:
        """r^T [x, s] (K x D+1) in float64."""
        return torch.cat([r.T @ x, self.s * r.sum(0)[:, None]], dim=1).double()

    def first(self) -> tuple[Tensor, Tensor, Tensor, int]:
        """At w = 0: the Gram matrix of the rows with their constant feature (D+1 square),
        -grad f(0) / 2C = X^T y (K x D+1), the positives per class and n."""
        gram = xty = None
        positives = torch.zeros(len(self.classes), dtype=torch.float64)
        n = 0
        for x, labels in self._iter(len(self.classes)):
            y = _signs(labels, self.classes)
            total = x.sum(0)
            g = torch.zeros(x.shape[1] + 1, x.shape[1] + 1, dtype=torch.float64)
            g[:-1, :-1], g[:-1, -1], g[-1, :-1], g[-1, -1] = (x.T @ x).double(), self.s * total.double(), self.s * total.double(), self.s**2 * len(x)
            gram = g if gram is None else gram.add_(g)
            b = self._project(y, x)
            xty = b if xty is None else xty.add_(b)
            positives += (y > 0).sum(0).double()
            n += len(labels)
        if gram is None:
            raise ConfigError("the SVM has no training sample")
        return gram, xty, positives, n

    def gradient(self, w: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """f and grad f of the classes ``rows`` at ``w`` (their rows)."""
        classes, w32 = self.classes[rows], w.float()
        loss = torch.zeros(len(rows), dtype=torch.float64)
        grad = torch.zeros_like(w)
        for x, labels in self._iter(len(rows)):
            y = _signs(labels, classes)
            m = self._margins(x, w32)
            r = torch.where(y * m < 1, m - y, 0.0)  # y (y m - 1) = m - y where the margin is violated
            loss += (r * r).sum(0).double()  # (1 - y m)^2 = (m - y)^2
            grad += self._project(r, x)
        return 0.5 * w.pow(2).sum(1) + self.C * loss, w + 2 * self.C * grad

    def hessian_product(self, w: Tensor, v: Tensor, rows: Tensor) -> Tensor:
        """(I + 2C X_A^T X_A) v for the classes ``rows``, A the samples inside their margin at w."""
        classes, w32, v32 = self.classes[rows], w.float(), v.float()
        out = torch.zeros_like(v)
        for x, labels in self._iter(len(rows)):
            inside = _signs(labels, classes) * self._margins(x, w32) < 1
            out += self._project(torch.where(inside, self._margins(x, v32), 0.0), x)
        return v + 2 * self.C * out

    def objectives(self, w: Tensor, step: Tensor, rows: Tensor, ts: Tensor) -> Tensor:
        """f at w + t step for every t of ``ts`` (len(ts) x classes)."""
        classes, w32, s32 = self.classes[rows], w.float(), step.float()
        loss = torch.zeros(len(ts), len(rows), dtype=torch.float64)
        for x, labels in self._iter(len(rows)):
            y = _signs(labels, classes)
            slack, ys = 1 - y * self._margins(x, w32), y * self._margins(x, s32)
            for k, t in enumerate(ts.tolist()):
                h = torch.sub(slack, ys, alpha=t).clamp_(min=0)
                loss[k] += (h * h).sum(0).double()
        return 0.5 * (w[None] + ts[:, None, None] * step[None]).pow(2).sum(2) + self.C * loss


def fit_ovr_squared_hinge(
    batches: Batches,
    classes: Tensor,
    C: float = 1.0,
    tol: float = 1e-4,
    intercept_scaling: float = 1.0,
    max_iter: int = 100,
    max_cg: int = 100,
    info: dict | None = None,
) -> tuple[Tensor, Tensor]:
    """Minimise f_c for every class jointly (see the module docstring); returns (coef K x D, intercept K).

    Args:
        batches: A callable giving a fresh iterator of (features, labels) batches per call.
        classes: The K class labels (rows of the result in this order).
        C: The loss weight (scikit-learn's ``C``).
        tol: liblinear's stopping tolerance (scaled per class as liblinear scales it).
        intercept_scaling: The constant feature s (intercept = s v).
        max_iter: Newton iterations at most (after the first, exact one).
        max_cg: Conjugate-gradient iterations per Newton step at most.
        info: If given, filled with ``passes`` over the data, ``newton_iterations``,
            ``cg_iterations``, ``converged`` and ``relative_gradient``, the largest
            ||grad f_c|| / (eps_c ||grad f_c(0)||) at the last check (<= 1 for converged classes);
            during the fit it holds these (and ``running``, the classes not converged) as of the
            last gradient check.
    """
    if C <= 0 or tol <= 0 or intercept_scaling <= 0:
        raise ConfigError(f"the SVM needs C, tol and intercept_scaling > 0, got {C}, {tol}, {intercept_scaling}")
    classes = torch.as_tensor(classes, dtype=torch.long)
    passes = _Passes(batches, classes, C, intercept_scaling)
    gram, xty, positives, n = passes.first()
    minus_grad0 = 2 * C * xty  # grad f_c(0) = -2C X^T y_c
    target = tol * torch.clamp(torch.minimum(positives, n - positives), min=1) / n * minus_grad0.norm(dim=1)
    # Exact Newton step from 0, where every sample is inside every margin: (I + 2C X^T X) s = 2C X^T y_c.
    hess = torch.eye(len(gram), dtype=torch.float64) + 2 * C * gram
    step = torch.cholesky_solve(minus_grad0.T, torch.linalg.cholesky(hess)).T
    every = torch.arange(len(classes))
    f0 = torch.full((len(classes),), C * float(n), dtype=torch.float64)  # f_c(0): every hinge is 1
    w = _line_search(passes, torch.zeros_like(step), step, every, f0, -minus_grad0)
    active, newton, cg_total, ratio = every, 0, 0, float("inf")
    for newton in range(1, max_iter + 1):
        f, g = passes.gradient(w[active], active)
        relative = g.norm(dim=1) / target[active]
        ratio = float(relative.max())
        keep = relative > 1
        active, f, g = active[keep], f[keep], g[keep]
        if info is not None:  # kept current during the fit, for a caller that reports progress
            info.update(passes=passes.count, class_passes=passes.work, newton_iterations=newton, cg_iterations=cg_total, running=len(active), relative_gradient=ratio)
        if not len(active):
            break
        step, its = _conjugate_gradient(passes, w[active], g, active, max_cg)
        cg_total += its
        w = _line_search(passes, w, step, active, f, g)
    if info is not None:
        info.update(passes=passes.count, class_passes=passes.work, newton_iterations=newton, cg_iterations=cg_total, converged=not len(active), relative_gradient=ratio)
    return w[:, :-1].clone(), intercept_scaling * w[:, -1]


def _conjugate_gradient(passes: _Passes, w: Tensor, g: Tensor, rows: Tensor, max_cg: int) -> tuple[Tensor, int]:
    """Approximately solve H s = -g for every class (until |H s + g| <= 0.1 |g|, TRON's rule)."""
    s = torch.zeros_like(g)
    r = -g
    p = r.clone()
    rr = r.pow(2).sum(1)
    stop = (0.1 * g.norm(dim=1)).pow(2)
    its = 0
    while its < max_cg:
        running = rr > stop
        if not bool(running.any()):
            break
        its += 1
        hp = torch.zeros_like(p)
        hp[running] = passes.hessian_product(w[running], p[running], rows[running])
        alpha = torch.where(running, rr / (p * hp).sum(1), 0.0)[:, None]
        s = s + alpha * p
        r = r - alpha * hp
        rr_new = r.pow(2).sum(1)
        p = torch.where(running[:, None], r + (rr_new / rr)[:, None] * p, p)
        rr = torch.where(running, rr_new, rr)
    return s, its


def _line_search(passes: _Passes, w: Tensor, step: Tensor, rows: Tensor, f: Tensor, g: Tensor) -> Tensor:
    """w with rows ``rows`` moved to w + t step, t the largest of 1, 1/2, 1/4, ... that meets Armijo's
    condition (several t per pass); a class with no decrease left at float precision stays."""
    w = w.clone()
    base = w[rows]
    slope = (g * step).sum(1)  # < 0: a descent direction
    pending = torch.arange(len(rows))
    scale = 1.0
    while len(pending) and scale > 1e-10:
        ts = scale * torch.tensor(_STEPS, dtype=torch.float64)
        values = passes.objectives(base[pending], step[pending], rows[pending], ts)
        ok = values <= f[pending][None] + _ARMIJO * ts[:, None] * slope[pending][None]
        found = ok.any(0)
        t = ts[ok.double().argmax(0)]  # the largest accepted t
        done = pending[found]
        w[rows[done]] = base[done] + t[found][:, None] * step[done]
        pending = pending[~found]
        scale = float(ts[-1]) / 2
    return w
