"""FeTrIL (Petit et al., WACV 2023): a frozen extractor and pseudo-features by feature translation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from torch.utils.data import Dataset

from framework.continual.base import ContinualModule
from framework.continual.functional import (
    class_means,
    nearest_new_class,
    pseudo_features,
)
from framework.continual.scenario import IncrementalScenario
from framework.data.base import InMemoryDataset
from framework.errors import ConfigError
from registry import register


class TranslatedFeatures(InMemoryDataset):
    """A step's FeTrIL training set, real features first, then each old class's pseudo-features,
    computed only for the rows a batch asks for.

    Row order and values are those of concatenating ``features`` and, for each old class c in
    order, :func:`pseudo_features` of the new class nearest to c (same float operations, so
    the same bits). Memory: the new classes' real features, the means, two integers per old
    class and one batch, whatever the number of old classes (the materialised set is old
    classes x samples x dim floats).

    Args:
        features: Real features of the step's new classes (N x D).
        labels: Their labels (in ``start + 0 .. start + new - 1``).
        new_means: Means of the new classes (new x D), row k for label ``start + k``.
        old_means: Means of the old classes (start x D).
        nearest: For each old class, the index (into ``new_means``) of its nearest new class.
        start: The number of old classes (the first new label).
    """

    def __init__(self, features: Tensor, labels: Tensor, new_means: Tensor, old_means: Tensor, nearest: Tensor, start: int) -> None:
        self.features, self.labels, self.new_means, self.old_means = features, labels, new_means, old_means
        self.start, self.nearest, self.transform = start, nearest.long(), None
        # The real rows of each new class, grouped by class (O(real rows)), and where each old
        # class's block of pseudo rows begins (O(old classes)): nothing per pseudo row is stored.
        local = labels - start
        self.by_class = torch.argsort(local, stable=True)
        counts = torch.bincount(local, minlength=len(new_means))
        self.class_start = torch.cumsum(counts, 0) - counts
        sizes = counts[self.nearest] if start else torch.zeros(0, dtype=torch.long)
        self.block_end = len(labels) + torch.cumsum(sizes, 0)
        self.total = int(self.block_end[-1]) if start else len(labels)

    @property
    def x(self) -> Tensor:  # the materialised set, only when asked (the SVM needs it)
        return self.__getitems__(range(len(self)))[0]

    @property
    def y(self) -> Tensor:
        return self.__getitems__(range(len(self)))[1] if len(self) else self.labels

    def __len__(self) -> int:
        return self.total

    def _locate(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The real row, the label (an old class for pseudo rows) of output rows ``idx``, and the
        positions of the pseudo rows in ``idx``."""
        pseudo = torch.nonzero(idx >= len(self.labels)).flatten()
        source = idx.clone()
        label = self.labels.index_select(0, idx.clamp(max=len(self.labels) - 1))  # right for the real rows
        if len(pseudo):
            i = idx.index_select(0, pseudo)
            c = torch.searchsorted(self.block_end, i, right=True)  # the old class of each pseudo row
            block_start = torch.where(c > 0, self.block_end[(c - 1).clamp(min=0)], torch.full_like(c, len(self.labels)))
            k = i - block_start  # position inside the block: the k-th real row of the nearest new class
            source[pseudo] = self.by_class[self.class_start[self.nearest[c]] + k]
            label[pseudo] = c
        return source, label, pseudo

    translate_rows = 64
    """Pseudo rows translated at once: the gathered means are 2 x this many rows of floats, not 2 x
    the batch (a batch of 4,096 512-d rows would otherwise make 24 MB of them)."""

    def __getitems__(self, indices) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        source, label, pseudo = self._locate(idx)
        x = self.features.index_select(0, source)
        if len(pseudo):  # translated in place, a few rows at a time: the same float operations per row
            every = len(pseudo) == len(x)
            c = label.index_select(0, pseudo)
            n = self.nearest.index_select(0, c)
            for first in range(0, len(pseudo), self.translate_rows):
                part = slice(first, first + self.translate_rows)
                rows = x[part] if every else x.index_select(0, pseudo[part])
                pseudo_features(rows, self.new_means.index_select(0, n[part]), self.old_means.index_select(0, c[part]), out=rows)
                if not every:
                    x.index_copy_(0, pseudo[part], rows)
        return x, label


def streamed_svm(
    data: InMemoryDataset, C: float, tol: float, batch_size: int, info: dict | None = None, max_iter: int = 100, max_cg: int = 100
) -> tuple[Tensor, Tensor, Tensor]:
    """FeTrIL's one-vs-rest SVM on L2-normalised rows of ``data`` by the streamed Newton solver:
    (classes, coef, intercept). Rows are made ``batch_size`` at a time, once per pass; ``info``,
    ``max_iter`` and ``max_cg`` are :func:`~framework.continual.linear_svm.fit_ovr_squared_hinge`'s."""
    from framework.continual.linear_svm import fit_ovr_squared_hinge

    def batches():
        for first in range(0, len(data), batch_size):
            x, y = data.__getitems__(torch.arange(first, min(first + batch_size, len(data))))
            yield x.div_(x.norm(dim=1, keepdim=True).clamp_min(1e-12)), y  # F.normalize, in place

    if isinstance(data, TranslatedFeatures):  # pseudo rows carry the old classes 0 .. start - 1
        classes = torch.cat([torch.arange(data.start), torch.unique(data.labels)])
    else:
        classes = torch.unique(data.y)
    coef, intercept = fit_ovr_squared_hinge(batches, classes, C=C, tol=tol, info=info, max_iter=max_iter, max_cg=max_cg)
    return classes, coef, intercept


@register("model", "fetril")
class FeTrIL(ContinualModule):
    """FeTrIL: train the extractor on the base step, freeze it, and learn later steps from features.

    At step s > 0, the features of the new classes are real; each old class c gets
    pseudo-features f - mu_n + mu_c for every real feature f of the new class n whose mean is
    nearest to mu_c. A classifier over all seen classes is then learned from scratch on
    these features. The frozen extractor's features are computed once per sample and cached.

    Defaults follow the paper and its official code (GregoirePetit/FeTrIL): Euclidean
    nearest class, a one-vs-rest linear SVM (C = 1, tol = 1e-4) on L2-normalised features,
    refitted at every step (the base step included). PyCIL's choices are options:
    ``distance: cosine`` and ``classifier: linear`` (a linear layer on raw features trained
    for ``epochs`` epochs with ``optimizer``; PyCIL: SGD lr 0.05, wd 5e-4, cosine, 50 epochs).

    Args:
        classifier: ``svm`` (paper) or ``linear`` (PyCIL).
        distance: ``euclidean`` (paper) or ``cosine`` (PyCIL) between class means.
        svm_c: The SVM's regularisation C.
        svm_tol: The SVM's stopping tolerance.
        svm_jobs: Processes fitting the one-vs-rest problems in parallel (the official code uses a
            pool; -1: every core). The result is the same as with one. ``liblinear`` only.
        svm_solver: ``liblinear`` (scikit-learn's ``LinearSVC(dual=False)``, the official code's;
            it needs the whole design matrix in float64) or ``newton`` (the same objective,
            all classes at once in torch over batches of pseudo-features made on the fly, memory
            O(batch x classes + classes x features): :mod:`framework.continual.linear_svm`).
        svm_batch_size: Rows per batch of the ``newton`` solver's passes.
        epochs: Epochs of the linear classifier at each later step (``classifier: linear``).
        optimizer: Optimizer of the linear classifier at later steps.
        **kwargs: The arguments of :class:`~framework.continual.base.ContinualModule`.
    """

    def __init__(
        self,
        classifier: str = "svm",
        distance: str = "euclidean",
        svm_c: float = 1.0,
        svm_tol: float = 1e-4,
        svm_jobs: int = 1,
        svm_solver: str = "liblinear",
        svm_batch_size: int = 4096,
        epochs: int = 50,
        optimizer: OptimizerCallable = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        **kwargs: Any,
    ) -> None:
        super().__init__(epochs=epochs, optimizer=optimizer, **kwargs)
        if classifier not in ("svm", "linear"):
            raise ConfigError(f"fetril classifier must be 'svm' or 'linear', got {classifier!r}")
        if distance not in ("euclidean", "cosine"):
            raise ConfigError(f"fetril distance must be 'euclidean' or 'cosine', got {distance!r}")
        if classifier == "svm" and self.head.bias is None:
            raise ConfigError("fetril's svm classifier needs head_bias: true (the SVM has an intercept)")
        if svm_solver not in ("liblinear", "newton"):
            raise ConfigError(f"fetril svm_solver must be 'liblinear' or 'newton', got {svm_solver!r}")
        if svm_batch_size < 1:
            raise ConfigError(f"fetril svm_batch_size must be >= 1, got {svm_batch_size}")
        self.classifier, self.distance, self.svm_c, self.svm_tol = classifier, distance, svm_c, svm_tol
        self.svm_jobs, self.svm_solver, self.svm_batch_size = svm_jobs, svm_solver, svm_batch_size
        # Class means of real features, kept from the step that introduced each class.
        self.register_buffer("means", torch.zeros(self.num_classes, self.num_features))
        self._step_features: InMemoryDataset | None = None

    def step_epochs(self, step: int) -> int:
        if step == 0:
            return self.base_epochs
        return self.epochs if self.classifier == "linear" else 0

    def on_step_start(self, step: int) -> None:
        if step == 0:
            return
        self.freeze_backbone()
        start, end = self.scenario.step_range(step)
        features, labels = self.train_features(self.scenario.train_indices(step))
        new_means = class_means(features, labels, range(start, end))
        self.means[start:end] = new_means.to(self.means)
        old_means = self.means[:start].cpu()
        nearest = nearest_new_class(old_means, new_means, self.distance)
        self._step_features = TranslatedFeatures(features, labels, new_means, old_means, nearest, start)

    def reset_rows(self, start: int, end: int) -> None:
        if self.classifier == "linear":
            super().reset_rows(start, end)

    def train_data(self, scenario: IncrementalScenario) -> Dataset:
        if self.step == 0:
            return super().train_data(scenario)
        if self._step_features is None:
            self.on_step_start(self.step)
        return self._step_features  # pseudo-features made batch by batch: memory O(new data + batch)

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        features = self.backbone(x) if self.step == 0 else x  # later steps train on features
        # Logits of the seen classes only: the head's first ``seen`` rows (B x seen floats, not
        # B x num_classes; the same values as slicing the full logits).
        bias = None if self.head.bias is None else self.head.bias[: self.seen]
        return F.cross_entropy(F.linear(features, self.head.weight[: self.seen], bias), y)

    def on_step_end(self, step: int) -> None:
        if step == 0:
            self.freeze_backbone()
            features, labels = self.train_features(self.scenario.train_indices(0))
            self.means[: self.seen] = class_means(features, labels, range(self.seen)).to(self.means)
            self._step_features = InMemoryDataset(features, labels)
        if self.classifier == "svm":
            self.fit_svm(self._step_features)
        self._step_features = None  # rebuilt from the cache if ever needed again
        super().on_step_end(step)

    def fit_svm(self, data: InMemoryDataset) -> None:
        """One-vs-rest linear SVM on L2-normalised features, copied into the head's rows.

        ``liblinear`` materialises ``data`` (it needs the whole design matrix); ``newton`` reads
        it in batches of ``svm_batch_size`` rows, once per pass.
        """
        if self.svm_solver == "newton":
            self._set_rows(*streamed_svm(data, self.svm_c, self.svm_tol, self.svm_batch_size))
            return
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.svm import LinearSVC

        features, labels = data.__getitems__(range(len(data)))
        svm = LinearSVC(penalty="l2", dual=False, C=self.svm_c, tol=self.svm_tol, multi_class="ovr", fit_intercept=True)
        x, y = F.normalize(features, dim=1).numpy(), labels.numpy()
        if self.svm_jobs == 1:
            svm.fit(x, y)
            classes, coef, intercept = svm.classes_, svm.coef_, svm.intercept_
        else:  # the same binary problems, one per class, fitted by a pool
            ovr = OneVsRestClassifier(svm, n_jobs=self.svm_jobs).fit(x, y)
            classes = ovr.classes_
            coef = np.concatenate([e.coef_ for e in ovr.estimators_])
            intercept = np.concatenate([e.intercept_ for e in ovr.estimators_])
        if len(classes) == 2:  # binary: one hyperplane, decision > 0 means classes[1]
            coef, intercept = np.concatenate([-coef, coef]), np.concatenate([-intercept, intercept])
        self._set_rows(torch.as_tensor(classes, dtype=torch.long), torch.as_tensor(coef), torch.as_tensor(intercept))

    def _set_rows(self, classes: Tensor, coef: Tensor, intercept: Tensor) -> None:
        with torch.no_grad():
            self.head.weight[classes] = coef.to(self.head.weight)
            self.head.bias[classes] = intercept.to(self.head.bias)

    def classify_features(self, features: Tensor) -> Tensor:
        if self.classifier == "svm" and self.feature_cache is not None:
            features = F.normalize(features, dim=1)
        return self.head(features)
