"""docs/notebooks/compositions.ipynb runs top to bottom and shows what it promises."""

import os
import re
from pathlib import Path

from tests._notebooks import execute_notebook

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "compositions.ipynb"


def test_compositions_notebook_executes(tmp_path, monkeypatch):
    text, figures = execute_notebook(NOTEBOOK, tmp_path, monkeypatch, timeout=300)
    assert len(figures) == 2, "accuracy against NFE and the generated digits"
    runs = re.findall(r"NFE/image\s+(\d+)\s+accuracy ([0-9.]+)", text)
    assert [int(n) for n, _ in runs] == [20, 50, 100, 200, 50 + 3 * 15, 20 + 2 * 8]  # counted net calls
    assert max(float(a) for _, a in runs) > 0.5, runs  # far above chance (0.1) after seconds of training
    cas = re.search(r"CAS ([0-9.]+), real-data accuracy ([0-9.]+), ratio", text)
    assert cas and float(cas[2]) > 0.8 and 0 <= float(cas[1]) <= 1, text[-500:]
    assert not os.path.exists(NOTEBOOK.parent / "notebook_logs")
