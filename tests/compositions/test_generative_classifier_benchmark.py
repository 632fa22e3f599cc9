"""benchmarks/generative_classifier_digits.py's analysis: disjoint pair blocks, the shared-vs-independent comparison, the bars."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from framework.generative import classify

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import generative_classifier_digits as bench  # noqa: E402


@pytest.mark.parametrize("n", bench.BLOCKS)
def test_an_aligned_block_of_pairs_is_the_first_n_shifted(n):
    """vdc(k n + j) = vdc(j) + vdc(k) / n for n a power of two: block k is the prefix shifted by a constant."""
    vdc = classify.van_der_corput(64 * n).numpy()
    first = vdc[:n]
    for k in range(64):
        block = vdc[k * n : (k + 1) * n]
        assert np.allclose(block - first, block[0] - first[0])
        assert np.allclose(block[0] - first[0], classify.van_der_corput(k + 1).numpy()[k] / n)


def test_a_block_of_five_is_not_a_shifted_prefix():
    """Why BLOCKS holds powers of two only."""
    vdc = classify.van_der_corput(10).numpy()
    assert not np.allclose(vdc[5:10] - vdc[:5], vdc[5] - vdc[0])


def test_block_accuracies_by_hand():
    # 3 images, 2 classes, 4 pairs; labels 0, 1, 0
    labels = np.array([0, 1, 0])
    e = np.zeros((3, 2, 4))
    e[0] = [[1, 1, 5, 5], [2, 2, 1, 1]]  # image 0: right on pairs 0-1, wrong on 2-3 and on all four
    e[1] = [[3, 3, 3, 3], [1, 1, 1, 1]]  # image 1: always right
    e[2] = [[1, 9, 1, 1], [2, 2, 2, 2]]  # image 2: wrong on pair 1, so on block 0 of 2 and on all four
    assert np.allclose(bench.block_accuracies(e, labels, 1), [1, 2 / 3, 2 / 3, 2 / 3])
    assert np.allclose(bench.block_accuracies(e, labels, 2), [2 / 3, 2 / 3])
    assert np.allclose(bench.block_accuracies(e, labels, 4), [1 / 3])


def test_noise_comparison_mean_and_standard_error():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 20)
    shared, independent = rng.random((20, 3, 8)), rng.random((20, 3, 8))
    (row,) = bench.noise_comparison(shared, independent, labels, sizes=(2,))
    a, b = bench.block_accuracies(shared, labels, 2), bench.block_accuracies(independent, labels, 2)
    assert row["blocks"] == 4
    assert row["shared"] == pytest.approx(a.mean()) and row["independent"] == pytest.approx(b.mean())
    assert row["difference_se"] == pytest.approx(np.std(a - b, ddof=1) / 2)


def test_exact_subset_is_seeded_sorted_and_without_repeats():
    a, b = bench.exact_subset(360, 40, 3), bench.exact_subset(360, 40, 3)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 40 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, bench.exact_subset(360, 40, 4))
    assert np.array_equal(bench.exact_subset(360, 400, 0), np.arange(360))


def _row(noise, n_samples, to_keep, accuracy, nfe, method="full"):
    return {"method": f"edm generative, {method}", "generator": "edm", "noise": noise, "n_samples": n_samples,
            "to_keep": to_keep, "images": 360, "accuracy": accuracy, "nfe": nfe}


def test_bars_report_a_failure():
    rows = [_row("shared", [100], [1], 0.99, 1000), _row("shared", [20, 100], [3, 1], 0.975, 440, "adaptive"),
            _row("independent", [100], [1], 0.995, 1000), _row("independent", [20, 100], [3, 1], 0.9, 440, "adaptive")]
    bars = {b["bar"].split(" ")[0]: b for b in bench._bars(rows, {})}
    assert bars["diffusion"]["status"] == "met"
    assert bars["adaptive"]["status"] == "not met in 1 of 1"  # 1.5 points below full; independent noise is not in the bar
    assert "[not in the bar]" in bars["adaptive"]["detail"]
    assert bars["shared"]["status"] == "not met in 1 of 1"  # shared 99.0% < independent 99.5%
    rows[1]["accuracy"], rows[2]["accuracy"] = 0.98, 0.99
    bars = {b["bar"].split(" ")[0]: b for b in bench._bars(rows, {})}
    assert bars["adaptive"]["status"] == "met" and bars["shared"]["status"] == "met"
