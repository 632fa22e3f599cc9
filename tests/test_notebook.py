"""docs/notebooks/quickstart.ipynb runs top to bottom (so it never rots) and shows what it promises."""

import os
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # run from a clean slate, not from the committed outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # kernel "python3" is the interpreter running the tests (ipykernel in the same venv).
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    figures = [o for o in outputs if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
    assert len(figures) == 2, "the sample digits and the accuracy curves"
    accuracies = {
        name: float(acc) for name, acc in re.findall(r"(cross-entropy|focal loss):\s+test accuracy ([0-9.]+)", text)
    }
    assert set(accuracies) == {"cross-entropy", "focal loss"}
    assert min(accuracies.values()) > 0.9, accuracies
    assert os.path.isdir(tmp_path / "notebook_logs")  # it wrote its logs where it was run, not in the repo
