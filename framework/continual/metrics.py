"""Class-incremental metrics from per-step, per-task counts of correct test predictions (pure).

Everything is derived from two (steps x tasks) matrices: ``correct[s][t]`` and ``total[s][t]``,
the correct predictions and the test samples of task t's classes after step s (t <= s; the
rest is unused). Accuracies are in percent, like the papers' tables.

Conventions (REFERENCES.md): ``accuracy`` is per sample over all seen classes and the average
incremental accuracy is its mean over all steps, base step included (PyCIL, FeTrIL, TEEN);
the task-balanced variant averages per-task accuracies instead (Mammoth). Forgetting is
Chaudhry et al.'s: mean over tasks t < T of max_{s<T} a[s][t] - a[T][t].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _pct(correct: float, total: float) -> float:
    return 100.0 * correct / total if total else math.nan


def accuracy_matrix(correct: Sequence[Sequence[int]], total: Sequence[Sequence[int]]) -> list[list[float]]:
    """a[s][t]: accuracy (%) after step s on task t's test classes; NaN for tasks not yet seen."""
    steps = len(correct)
    return [[_pct(correct[s][t], total[s][t]) if t <= s else math.nan for t in range(steps)] for s in range(steps)]


def summarize(
    correct: Sequence[Sequence[int]], total: Sequence[Sequence[int]], few_shot: bool = False
) -> dict[str, Any]:
    """Every metric of DESIGN.md "Outputs" for the steps done so far (NaN where undefined)."""
    steps = len(correct)
    matrix = accuracy_matrix(correct, total)
    accuracy = [_pct(sum(correct[s][: s + 1]), sum(total[s][: s + 1])) for s in range(steps)]
    old = [_pct(sum(correct[s][:s]), sum(total[s][:s])) for s in range(steps)]
    new = [_pct(correct[s][s], total[s][s]) for s in range(steps)]
    task_balanced = [sum(matrix[s][: s + 1]) / (s + 1) for s in range(steps)]
    forgetting = [_forgetting(matrix, s) for s in range(steps)]
    out: dict[str, Any] = {
        "accuracy": accuracy,
        "accuracy_matrix": matrix,
        "average_incremental_accuracy": sum(accuracy) / steps if steps else math.nan,
        "task_balanced_average_incremental_accuracy": sum(task_balanced) / steps if steps else math.nan,
        "last_accuracy": accuracy[-1] if steps else math.nan,
        "forgetting": forgetting[-1] if steps else math.nan,
        "forgetting_per_step": forgetting,
        "old_accuracy": old,
        "new_accuracy": new,
    }
    if few_shot:
        # FSCIL convention (TEEN, CEC): "base" is the base session's classes, "novel" every
        # class added since, and the harmonic mean is taken between the two per session.
        base = [_pct(correct[s][0], total[s][0]) for s in range(steps)]
        novel = [_pct(sum(correct[s][1 : s + 1]), sum(total[s][1 : s + 1])) for s in range(steps)]
        out["base_accuracy"] = base
        out["novel_accuracy"] = novel
        out["harmonic_mean"] = [_harmonic(b, n) for b, n in zip(base, novel)]
        out["performance_drop"] = accuracy[0] - accuracy[-1] if steps else math.nan
    return out


def _forgetting(matrix: list[list[float]], step: int) -> float:
    if step == 0:
        return math.nan
    drops = [max(matrix[s][t] for s in range(t, step)) - matrix[step][t] for t in range(step)]
    return sum(drops) / len(drops)


def _harmonic(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or a + b == 0:
        return math.nan
    return 2 * a * b / (a + b)


def to_json(value: Any) -> Any:
    """``value`` with NaN replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def format_table(metrics: dict[str, Any], title: str = "") -> str:
    """The per-step table and the summary lines, as printed at the end of a run."""
    steps = len(metrics["accuracy"])
    columns = ["accuracy", "old_accuracy", "new_accuracy"]
    if "harmonic_mean" in metrics:
        columns += ["base_accuracy", "novel_accuracy", "harmonic_mean"]
    width = max(len(c) for c in columns) + 2
    lines = [title] if title else []
    lines.append("step".ljust(6) + "".join(c.rjust(width) for c in columns))
    for s in range(steps):
        lines.append(str(s).ljust(6) + "".join(_fmt(metrics[c][s]).rjust(width) for c in columns))
    for key in (
        "average_incremental_accuracy",
        "task_balanced_average_incremental_accuracy",
        "last_accuracy",
        "forgetting",
        "performance_drop",
    ):
        if key in metrics:
            lines.append(f"{key}: {_fmt(metrics[key])}")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def to_csv_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per step (per-step metrics and the accuracy-matrix row) for the CSV file."""
    steps = len(metrics["accuracy"])
    per_step = [k for k, v in metrics.items() if isinstance(v, list) and len(v) == steps and k != "accuracy_matrix"]
    rows = []
    for s in range(steps):
        row: dict[str, Any] = {"step": s}
        row.update({k: metrics[k][s] for k in per_step})
        row.update({f"task_{t}": metrics["accuracy_matrix"][s][t] for t in range(steps)})
        rows.append(row)
    return rows
