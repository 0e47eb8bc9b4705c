"""notebooks/quickstart.ipynb executes top to bottom (a real kernel, a real LocalCluster)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import log_body

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
    assert "dashboard: http://127.0.0.1:" in text
    work = tmp_path / "dlmm-quickstart"
    assert (work / "scan.zarr").is_dir() and (work / "scan.report.html").stat().st_size > 100_000
    # the plots were displayed as Bokeh output, BokehJS inline (no CDN: offline)
    mimes = {k for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
             for k in o.get("data", {})}
    assert any("bokeh" in m or m == "text/html" for m in mimes), mimes
    assert "cdn.bokeh.org" not in nbformat.writes(nb)
    # Dask's progress widgets for the GRM pass and the scan's blocks
    (run_cell,) = [c for c in nb.cells if c.cell_type == "code" and "dlmm.run(" in c.source]
    widgets = [o for o in run_cell.outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) >= 2, [list(o.get("data", {})) for o in run_cell.outputs]
    # the demo's top hits include simulated causal variants (marked *)
    (cell,) = [c for c in nb.cells if "top_hits(results, 10)" in c.source]
    assert "*" in cell.outputs[0]["data"]["text/plain"]
    # the command line on the same inputs writes the same files
    r = subprocess.run([sys.executable, "-m", "dlmm.cli", "scan", "dlmm-quickstart/genotypes.zarr",
                        "--out", "dlmm-quickstart/cli", "--no-dashboard"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (work / "cli.assoc.tsv").read_bytes() == (work / "scan.assoc.tsv").read_bytes()
    assert log_body(work / "cli.log.txt") == log_body(work / "scan.log.txt")
    assert _page(work / "cli.report.html") == _page(work / "scan.report.html")


def _page(path) -> str:
    """A report without what differs between two writings of the same results: Bokeh's
    model and document ids, renamed in order of first appearance."""
    text = path.read_text()
    ids = set(re.findall(r'"id":"([^"]+)"', text))
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    pattern = re.compile("(?<=[\"'])(?:" + "|".join([uuid] + [re.escape(i) for i in sorted(
        ids, key=len, reverse=True)]) + ")(?=[\"'])")
    names: dict[str, str] = {}
    return pattern.sub(lambda m: names.setdefault(m.group(0), f"ID{len(names)}"), text)
