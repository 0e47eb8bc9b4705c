"""What the command's start-up choices save: the collector frozen, and ``--no-dashboard``.

mouse_hs1940 (Debian's gemma-doc) phenotype 1, ``dlmm scan mouse --no-plot`` as its own
process, timed whole (imports, the in-process cluster, GRM, eigendecomposition, null fit,
scan, Zarr and TSV), in three variants run in rotation (A B C, C B A, ...) ``--reps``
times; medians and the differences are printed:

* ``frozen``: the ``dlmm`` executable as installed (``dlmm.cli.run``: the heavy modules
  imported with Python's cyclic collector off, then ``gc.freeze()``, and frozen again
  before exit), with ``--no-dashboard``;
* ``collector``: the same command through ``dlmm.cli.main`` alone (``python -c``), the
  collector as Python leaves it, with ``--no-dashboard``;
* ``dashboard``: ``dlmm.cli.run`` with the Dask dashboard (Bokeh's HTTP server) on.

    python benchmarks/startup.py [--reps 5]

Hold the machine's lock while it runs: ``flock /tmp/dlmm-heavy.lock python
benchmarks/startup.py``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_gemma import mouse

ENTRY = {"frozen": ["-m", "dlmm.cli"],
         "collector": ["-c", "import sys; from dlmm.cli import main; sys.exit(main())"],
         "dashboard": ["-m", "dlmm.cli"]}


def run(variant: str, prefix: Path, out: Path) -> float:
    """Wall seconds of one ``dlmm scan`` process in ``variant``."""
    extra = [] if variant == "dashboard" else ["--no-dashboard"]
    cmd = [sys.executable, *ENTRY[variant], "scan", str(prefix), "--out", str(out),
           "--overwrite", "--no-plot", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    times: dict[str, list[float]] = {v: [] for v in ENTRY}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prefix = mouse(d)
        run("frozen", prefix, d / "warm")  # files in the page cache, numba's cache built
        order = list(ENTRY)
        for rep in range(a.reps):
            for v in (order if rep % 2 == 0 else order[::-1]):
                times[v].append(run(v, prefix, d / "out"))
    med = {v: statistics.median(t) for v, t in times.items()}
    print(f"mouse_hs1940, dlmm scan --no-plot, whole process, {a.reps} reps (medians)")
    for v, t in times.items():
        print(f"  {v:10s} {med[v]:.2f} s  (runs {', '.join(f'{x:.2f}' for x in t)})")
    print(f"  the collector frozen saves {med['collector'] - med['frozen']:.2f} s "
          f"(ratio collector / frozen {med['collector'] / med['frozen']:.3f})")
    print(f"  --no-dashboard saves {med['dashboard'] - med['frozen']:.2f} s "
          f"(ratio dashboard / no dashboard {med['dashboard'] / med['frozen']:.3f})",
          flush=True)


if __name__ == "__main__":
    main()
