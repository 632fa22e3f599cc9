"""The memorisation check: nearest-training-image distances, by brute force on fixed points."""

import math

import pytest
import torch

from framework.metrics import memorization_check, nearest_distances


def test_nearest_distances_by_brute_force():
    g = torch.Generator().manual_seed(0)
    x, ref = torch.randn(7, 1, 2, 3, generator=g), torch.randn(11, 1, 2, 3, generator=g)
    expected = [min(math.dist(a.flatten().tolist(), b.flatten().tolist()) for b in ref) for a in x]
    torch.testing.assert_close(nearest_distances(x, ref, chunk=3), torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_copies_are_flagged_and_fresh_draws_are_not():
    g = torch.Generator().manual_seed(1)
    train, test, fresh = (torch.randn(n, 4, generator=g) for n in (400, 200, 200))
    copies = train[:200] + 1e-3 * torch.randn(200, 4, generator=g)
    flagged = memorization_check(copies, train, test)
    assert flagged["near_copy_fraction"] == 1.0 and flagged["nn_ratio"] < 0.01
    honest = memorization_check(fresh, train, test)
    assert 0.0 <= honest["near_copy_fraction"] < 0.15 and 0.7 < honest["nn_ratio"] < 1.4
    assert honest["near_copy_expected"] == 0.05
    # On the line: points 0, 10, 20 and test points at distance 1..20 from 0 give the quantile by hand.
    line = memorization_check(torch.tensor([[0.5], [3.0]]), torch.tensor([[0.0], [10.0], [20.0]]),
                              torch.arange(1.0, 21.0)[:, None], quantile=0.5)  # fmt: skip
    # test distances to {0, 10, 20}: 1..5, 4..1, 0, 1..5, 4..1, 0: lower median 2, 0.5-quantile 2.5
    # (between the 10th and 11th of 20); generated distances 0.5 (below 2.5) and 3 (above).
    assert line["nn_train_median_test"] == 2.0 and line["near_copy_fraction"] == 0.5
    assert line["nn_train_median"] == 0.5 and line["nn_ratio"] == 0.25
    with pytest.raises(ValueError):
        memorization_check(fresh, train, test, quantile=1.0)
