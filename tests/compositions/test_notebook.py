"""docs/notebooks/compositions.ipynb runs top to bottom and shows what it promises."""

import os
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "compositions.ipynb"


def test_compositions_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # run from a clean slate, not from the committed outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    figures = [o for o in outputs if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
    assert len(figures) == 2, "accuracy against NFE and the generated digits"
    runs = re.findall(r"NFE/image\s+(\d+)\s+accuracy ([0-9.]+)", text)
    assert [int(n) for n, _ in runs] == [20, 50, 100, 200, 50 + 3 * 15, 20 + 2 * 8]  # counted net calls
    assert max(float(a) for _, a in runs) > 0.5, runs  # far above chance (0.1) after seconds of training
    cas = re.search(r"CAS ([0-9.]+), real-data accuracy ([0-9.]+), ratio", text)
    assert cas and float(cas[2]) > 0.8 and 0 <= float(cas[1]) <= 1, text[-500:]
    assert not os.path.exists(NOTEBOOK.parent / "notebook_logs")
