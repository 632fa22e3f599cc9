"""The methods' formulas against independent computations on fixed tensors."""

import math

import numpy as np
import pytest
import torch

from framework.continual import functional as CF
from framework.errors import ConfigError


def test_pseudo_features_translate_every_real_feature():
    f = torch.tensor([[1.0, 2.0], [3.0, 0.0], [-1.0, 1.0]])
    mu_new, mu_old = f.mean(0), torch.tensor([10.0, -5.0])
    out = CF.pseudo_features(f, mu_new, mu_old)
    for i in range(3):  # f - mu_n + mu_c, row by row
        assert torch.allclose(out[i], torch.tensor([f[i, 0] - 1.0 + 10.0, f[i, 1] - 1.0 - 5.0]))
    assert torch.allclose(out.mean(0), mu_old)  # the pseudo-class is centred on the old mean


def test_nearest_new_class_euclidean_and_cosine_differ_as_the_references_do():
    old = torch.tensor([[1.0, 0.0]])
    new = torch.tensor([[10.0, 1.0], [0.5, 0.5]])
    # Euclidean: |(1,0)-(10,1)| = 9.06 > |(1,0)-(0.5,0.5)| = 0.71 -> new class 1.
    assert CF.nearest_new_class(old, new, "euclidean").tolist() == [1]
    # Cosine: cos((1,0),(10,1)) = 0.995 > cos((1,0),(.5,.5)) = 0.707 -> new class 0 (PyCIL).
    assert CF.nearest_new_class(old, new, "cosine").tolist() == [0]
    with pytest.raises(ConfigError):
        CF.nearest_new_class(old, new, "manhattan")


def test_weight_align_gamma_l1_l2_and_clamp():
    w = torch.tensor([[1.0, -1.0], [2.0, 0.0], [3.0, 4.0], [0.0, 6.0]])  # 2 old, 2 new rows
    l2_old, l2_new = (math.sqrt(2) + 2.0) / 2, (5.0 + 6.0) / 2
    assert CF.weight_align_gamma(w, 2, norm=2) == pytest.approx(l2_old / l2_new)
    l1_old, l1_new = (2.0 + 2.0) / 2, (7.0 + 6.0) / 2
    assert CF.weight_align_gamma(w, 2, norm=1) == pytest.approx(l1_old / l1_new)
    big_old = torch.tensor([[10.0, 0.0], [1.0, 0.0]])
    assert CF.weight_align_gamma(big_old, 1, norm=1, clamp=False) == pytest.approx(10.0)
    assert CF.weight_align_gamma(big_old, 1, norm=1, clamp=True) == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        CF.weight_align_gamma(w, 4)


def test_distillation_loss_matches_the_written_sum():
    torch.manual_seed(0)
    new, old = torch.randn(3, 4), torch.randn(3, 4)
    expected = 0.0
    for b in range(3):
        q = np.exp(old[b].numpy() / 2) / np.exp(old[b].numpy() / 2).sum()
        logp = new[b].numpy() / 2 - np.log(np.exp(new[b].numpy() / 2).sum())
        expected -= (q * logp).sum() / 3
    assert CF.distillation_loss(new, old, 2.0).item() == pytest.approx(expected, rel=1e-5)


def test_teen_calibration_matches_the_formula_row_by_row():
    torch.manual_seed(1)
    new, base = torch.randn(2, 5), torch.randn(4, 5)
    out = CF.calibrate_prototypes(new, base, tau=16.0, alpha=0.3)
    # tau 2: softmax weights far from one-hot, so every base prototype counts in the alpha = 1 case
    pure = CF.calibrate_prototypes(new, base, tau=2.0, alpha=1.0)
    for c in range(2):
        p = new[c] / new[c].norm()
        units = [b / b.norm() for b in base]
        deltas = {}
        for tau in (16.0, 2.0):
            logits = torch.tensor([tau * float(p @ u) for u in units])
            w = torch.exp(logits - logits.max()) / torch.exp(logits - logits.max()).sum()
            delta = sum(w[i] * units[i] for i in range(4))
            deltas[tau] = delta / delta.norm()
        assert torch.allclose(out[c], 0.7 * p + 0.3 * deltas[16.0], atol=1e-6)
        # alpha = 1: the normalised softmax-weighted sum of the unit base prototypes, nothing of p itself
        assert torch.allclose(pure[c], deltas[2.0], atol=1e-6)
        assert not torch.allclose(pure[c], p, atol=1e-2)
    # alpha = 0 leaves the normalised prototype.
    assert torch.allclose(CF.calibrate_prototypes(new, base, alpha=0.0), new / new.norm(dim=1, keepdim=True))


def _herding_pycil(vectors: np.ndarray, m: int) -> list[int]:
    """PyCIL's loop (delete chosen rows), tracking original indices."""
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mean = vectors.mean(0)
    remaining = list(range(len(vectors)))
    chosen, picked = [], []
    for k in range(1, m + 1):
        s = np.sum(picked, axis=0) if picked else np.zeros_like(mean)
        mu_p = (vectors[remaining] + s) / k
        i = int(np.argmin(np.sqrt(np.sum((mean - mu_p) ** 2, axis=1))))
        chosen.append(remaining[i])
        picked.append(vectors[remaining[i]])
        del remaining[i]
    return chosen


def test_herding_matches_pycil_selection_order():
    rng = np.random.RandomState(0)
    feats = rng.randn(40, 6)
    ours = CF.herding(torch.tensor(feats), 12).tolist()
    assert ours == _herding_pycil(feats, 12)
    assert len(set(ours)) == 12
    # A smaller budget is a prefix of a larger one (memory reduction keeps the first m).
    assert CF.herding(torch.tensor(feats), 5).tolist() == ours[:5]
    assert CF.herding(torch.tensor(feats[:3]), 10).tolist() == _herding_pycil(feats[:3], 3)


def test_class_means_rows_follow_the_requested_classes():
    f = torch.tensor([[0.0, 0.0], [2.0, 2.0], [4.0, 0.0]])
    y = torch.tensor([1, 1, 0])
    assert torch.equal(CF.class_means(f, y, [0, 1]), torch.tensor([[4.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ConfigError):
        CF.class_means(f, y, [2])


def test_nme_on_fixed_features_matches_a_hand_computation():
    from framework.continual.functional import nme_scores, normalized_class_means

    # class 0: (3, 4) and (0, 2) -> unit (0.6, 0.8) and (0, 1) -> mean (0.3, 0.9) -> / sqrt(0.9)
    # class 1: (2, 0) and (1, -1) -> unit (1, 0) and (0.7071, -0.7071) -> mean (0.85355, -0.35355)
    features = torch.tensor([[3.0, 4.0], [0.0, 2.0], [2.0, 0.0], [1.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    means = normalized_class_means(features, labels, range(2))
    m0 = torch.tensor([0.3, 0.9]) / 0.9**0.5
    m1 = torch.tensor([0.853553, -0.353553]) / (0.853553**2 + 0.353553**2) ** 0.5
    assert torch.allclose(means, torch.stack([m0, m1]), atol=1e-5)
    # query (1, 1): unit (0.7071, 0.7071); distance to m0 = sqrt(2 - 2 * 0.7071 * (0.3162 + 0.9487)) = 0.4595...
    # to m1 = sqrt(2 - 2 * 0.7071 * (0.9239 - 0.3827)) = 1.1111...: class 0 (scores are minus the distances)
    scores = nme_scores(torch.tensor([[1.0, 1.0], [5.0, -1.0]]), means)
    assert torch.allclose(scores[0], -torch.tensor([0.45951, 1.11114]), atol=1e-4)
    assert scores.argmax(1).tolist() == [0, 1]


def test_fetril_pseudo_features_per_batch_are_the_materialised_set_bit_for_bit():
    from framework.continual.fetril import TranslatedFeatures
    from framework.continual.functional import class_means, nearest_new_class, pseudo_features

    g = torch.Generator().manual_seed(0)
    start, new, dim = 7, 3, 6
    counts = torch.tensor([4, 7, 4])  # uneven classes, shuffled rows
    labels = torch.arange(start, start + new).repeat_interleave(counts)[torch.randperm(int(counts.sum()), generator=g)]
    features = torch.randn(len(labels), dim, generator=g) + labels[:, None].float()
    new_means = class_means(features, labels, range(start, start + new))
    old_means = torch.randn(start, dim, generator=g) * 3
    nearest = nearest_new_class(old_means, new_means)
    # the materialised set as FeTrIL built it before (real rows, then each old class in order)
    xs, ys = [features], [labels]
    for c in range(start):
        n = int(nearest[c])
        xs.append(pseudo_features(features[labels == start + n], new_means[n], old_means[c]))
        ys.append(torch.full((int((labels == start + n).sum()),), c))
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    data = TranslatedFeatures(features, labels, new_means, old_means, nearest, start)
    assert len(data) == len(x_all) == len(labels) + int(counts[nearest].sum()) and torch.equal(data.y, y_all)
    order = torch.randperm(len(data), generator=g)
    for batch in order.split(4):  # any batch, any order: the same rows, bit for bit
        x, y = data.__getitems__(batch.tolist())
        assert torch.equal(x, x_all[batch]) and torch.equal(y, y_all[batch])
