"""Run a notebook of docs/notebooks from a clean slate, as the suite checks every notebook."""

from __future__ import annotations

from pathlib import Path

import pytest


def execute_notebook(path: Path, workdir: Path, monkeypatch, timeout: int = 300) -> tuple[str, list[dict]]:
    """Execute ``path`` in ``workdir`` (kernel ``python3``: the interpreter running the tests).

    Returns the concatenated stdout and the PNG figures it displayed. Committed outputs are
    dropped first, so what is checked is what this run printed; a failing cell raises
    ``CellExecutionError``.
    """
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    figures = [o for o in outputs if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
    return text, figures
