"""notebooks/quickstart.ipynb executes top to bottom (a real kernel, a real LocalCluster)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # committed without outputs
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code")
    env_path = os.environ.get("PYTHONPATH", "")
    root = str(NOTEBOOK.parent.parent)
    os.environ["PYTHONPATH"] = root + (os.pathsep + env_path if env_path else "")
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
        if not env_path:
            del os.environ["PYTHONPATH"]
    out = {i: "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                      for o in c.get("outputs", []))
           for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    text = "\n".join(out.values())
    assert "dashboard: http" in text
    assert (tmp_path / "dlmm-quickstart" / "results.zarr").is_dir()
    assert (tmp_path / "dlmm-quickstart" / "report.html").stat().st_size > 100_000
    # the plots were displayed as Bokeh output
    mimes = {k for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
             for k in o.get("data", {})}
    assert any("bokeh" in m or m == "text/html" for m in mimes), mimes
    # the demo's top hits include simulated causal variants (marked *)
    (cell,) = [c for c in nb.cells if "top_hits(results, 10)" in c.source]
    assert "*" in cell.outputs[0]["data"]["text/plain"]
