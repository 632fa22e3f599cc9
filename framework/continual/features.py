"""Features of a frozen extractor, computed once per sample and cached (FeTrIL, NCM, TEEN sessions)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader


@torch.no_grad()
def extract_features(net: nn.Module, loader: DataLoader, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """``(features, labels)`` of every batch of ``loader`` through ``net`` in eval mode, on the CPU."""
    was_training = net.training
    net.eval()
    features, labels = [], []
    for x, y in loader:
        features.append(net(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    net.train(was_training)
    if not features:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels).long()


class FeatureCache:
    """Per-split feature rows of a frozen extractor, filled on demand and never recomputed.

    Args:
        extract: ``extract(split, indices) -> (features, labels)`` for rows of a split.
    """

    def __init__(self, extract: Callable[[str, Tensor], tuple[Tensor, Tensor]]) -> None:
        self.extract = extract
        self._features: dict[str, dict[int, Tensor]] = {}
        self._labels: dict[str, dict[int, int]] = {}
        self.computed = 0  # rows extracted so far (tests check that nothing is extracted twice)

    def get(self, split: str, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Features and labels of rows ``indices`` of ``split``, extracting only the missing ones."""
        feats = self._features.setdefault(split, {})
        labels = self._labels.setdefault(split, {})
        missing = [int(i) for i in indices.tolist() if int(i) not in feats]
        if missing:
            f, y = self.extract(split, torch.tensor(missing, dtype=torch.long))
            for i, row, label in zip(missing, f, y.tolist()):
                feats[i], labels[i] = row, label
            self.computed += len(missing)
        if len(indices) == 0:
            return torch.empty(0), torch.empty(0, dtype=torch.long)
        rows = [int(i) for i in indices.tolist()]
        return torch.stack([feats[i] for i in rows]), torch.tensor([labels[i] for i in rows], dtype=torch.long)

    def clear(self) -> None:
        self._features.clear()
        self._labels.clear()
