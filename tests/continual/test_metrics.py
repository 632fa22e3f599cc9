"""Continual metrics on fixed counts, against hand-computed values."""

import math

import pytest

from framework.continual import metrics as M

# 3 steps; task sizes 40, 20, 20 test samples.
CORRECT = [[36, 0, 0], [20, 18, 0], [16, 10, 20]]
TOTAL = [[40, 20, 20], [40, 20, 20], [40, 20, 20]]


def test_accuracy_matrix_and_per_sample_accuracy():
    out = M.summarize(CORRECT, TOTAL)
    assert out["accuracy_matrix"][0][0] == pytest.approx(90.0)
    assert math.isnan(out["accuracy_matrix"][0][1])
    assert out["accuracy_matrix"][2] == pytest.approx([40.0, 50.0, 100.0])
    # per sample over seen classes: 36/40, 38/60, 46/80
    assert out["accuracy"] == pytest.approx([90.0, 100 * 38 / 60, 100 * 46 / 80])
    assert out["average_incremental_accuracy"] == pytest.approx((90.0 + 100 * 38 / 60 + 100 * 46 / 80) / 3)
    # task-balanced: mean of per-task accuracies at each step, then over steps
    tb = [90.0, (50.0 + 90.0) / 2, (40.0 + 50.0 + 100.0) / 3]
    assert out["task_balanced_average_incremental_accuracy"] == pytest.approx(sum(tb) / 3)
    assert out["last_accuracy"] == pytest.approx(100 * 46 / 80)


def test_old_new_and_forgetting():
    out = M.summarize(CORRECT, TOTAL)
    assert math.isnan(out["old_accuracy"][0])
    assert out["old_accuracy"][1:] == pytest.approx([50.0, 100 * 26 / 60])
    assert out["new_accuracy"] == pytest.approx([90.0, 90.0, 100.0])
    # task 0: max(90, 50) - 40 = 50; task 1: 90 - 50 = 40 -> 45
    assert out["forgetting"] == pytest.approx(45.0)
    assert out["forgetting_per_step"][1] == pytest.approx(40.0)


def test_few_shot_harmonic_mean_and_performance_drop():
    out = M.summarize(CORRECT, TOTAL, few_shot=True)
    assert out["base_accuracy"] == pytest.approx([90.0, 50.0, 40.0])
    assert math.isnan(out["novel_accuracy"][0])
    assert out["novel_accuracy"][2] == pytest.approx(100 * 30 / 40)
    assert out["harmonic_mean"][2] == pytest.approx(2 * 40.0 * 75.0 / 115.0)
    assert out["performance_drop"] == pytest.approx(90.0 - 100 * 46 / 80)
    assert "harmonic_mean" not in M.summarize(CORRECT, TOTAL)


def test_json_table_and_csv_rows():
    out = M.summarize(CORRECT, TOTAL, few_shot=True)
    js = M.to_json(out)
    assert js["old_accuracy"][0] is None and js["accuracy_matrix"][0][2] is None
    table = M.format_table(out)
    assert "average_incremental_accuracy: 70.28" in table and "harmonic_mean" in table
    rows = M.to_csv_rows(out)
    assert len(rows) == 3 and rows[2]["task_1"] == pytest.approx(50.0) and rows[1]["step"] == 1
