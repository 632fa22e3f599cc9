"""benchmarks/continual_growth.py's measurements: the live tensor peak, the SVM's evaluation, and
FeTrIL (linear)'s step holding far less than its materialised pseudo-features."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from framework.continual.linear_svm import ovr_objective

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import continual_growth as bench  # noqa: E402
from tests.continual.test_growth import _step  # noqa: E402


def test_tensor_peak_is_the_most_live_bytes_allocated_while_profiling():
    kept = torch.empty(10)  # allocated before: not counted
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
    profiler.start()
    a = torch.empty(250_000)  # 1 MB
    b = torch.empty(500_000)  # 2 MB: 3 MB live
    del a, kept
    c = torch.empty(200_000)  # 2.8 MB live
    del b, c
    profiler.stop()
    assert bench._tensor_peak(profiler) == 3_000_000


def test_svm_evaluation_objective_and_accuracies_by_hand():
    data, _ = _step(start=6, new=3, per_class=20, dim=8)
    g = torch.Generator().manual_seed(1)
    classes = torch.arange(9)
    coef, intercept = torch.randn(9, 8, generator=g), torch.randn(9, generator=g)
    x, y = data.__getitems__(range(len(data)))
    x = F.normalize(x, dim=1)
    expected = ovr_objective(torch.cat([coef, intercept[:, None]], 1), x, y, classes, 1.0, 1.0).sum()
    scores = x.double() @ coef.double().T + intercept.double()
    centres = torch.randn(9, 8, generator=g)
    got = bench.svm_evaluation(classes, coef, intercept, data, centres, batch_size=7, g=torch.Generator().manual_seed(2), test_per_class=4)
    assert abs(got["objective"] - float(expected)) < 1e-4 * float(expected)
    assert got["train_accuracy"] == float((scores.argmax(1) == y).double().mean())
    g2 = torch.Generator().manual_seed(2)  # the held-out draws, in the same order: classes in parts of 7 // 4 = 1
    right = 0
    for c in range(9):
        t = torch.randn(4, 8, generator=g2).mul_(0.5).add_(centres[c])
        right += int(((F.normalize(t, dim=1) @ coef.T + intercept).argmax(1) == c).sum())
    assert got["test_rows"] == 36 and got["test_accuracy"] == right / 36


def test_fetril_linear_step_holds_far_less_than_its_pseudo_features():
    classes, per_class, dim = 40, 100, 64
    row = bench.one("fetril (linear)", classes, per_class, dim, 10, 16, None, 4096, tensor_peak=True)
    materialised = classes * per_class * dim * 4  # every row of the step as float32
    state = 4 * classes * dim * 4  # head, its gradient, momentum and SGD's weight-decay term, live together
    assert state <= row["tensor_peak_mb"] * 2**20 < materialised / 2


def test_rows_of_a_run_under_glibc_malloc_settings_name_them(monkeypatch, capsys):
    for key in [k for k in os.environ if k == "GLIBC_TUNABLES" or k.startswith("MALLOC_")]:
        monkeypatch.delenv(key)
    plain = bench.one("ncm", 20, 10, 8, 10, 16, None, 4096)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")
    tuned = bench.one("ncm", 20, 10, 8, 10, 16, None, 4096)
    assert "malloc_env" not in plain and tuned["malloc_env"] == {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}
    bench.table([{**plain, "per_class": 10}, {**tuned, "per_class": 10}])
    out = capsys.readouterr().out
    assert "| ncm | 20 |" in out and "| ncm [GLIBC_TUNABLES=glibc.malloc.tcache_count=0] | 20 |" in out
