"""docs/notebooks/quickstart.ipynb runs top to bottom (so it never rots) and shows what it promises."""

import os
import re
from pathlib import Path

from tests._notebooks import execute_notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    text, figures = execute_notebook(NOTEBOOK, tmp_path, monkeypatch, timeout=120)
    assert len(figures) == 2, "the sample digits and the accuracy curves"
    accuracies = {
        name: float(acc) for name, acc in re.findall(r"(cross-entropy|focal loss):\s+test accuracy ([0-9.]+)", text)
    }
    assert set(accuracies) == {"cross-entropy", "focal loss"}
    assert min(accuracies.values()) > 0.9, accuracies
    assert os.path.isdir(tmp_path / "notebook_logs")  # it wrote its logs where it was run, not in the repo
