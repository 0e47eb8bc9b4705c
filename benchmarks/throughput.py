"""Per-variant throughput in process against GEMMA ``-lmm 2``'s association step.

A notebook's view: the genotypes opened (``dlmm.read_plink``), a distributed
``Client`` running (one worker in the process, a thread per core, as ``dlmm
scan`` starts it), imports done, the kinship given.  Timed: ``dlmm.scan(ds, y,
kinship=K)`` and computing its whole result (reading the ``.bed`` blocks, the
eigendecomposition, the null fit, filters, rotation, fits, LRT), and for
comparison its p-values alone (the same block tasks, without xarray's task per
variable and block).  GEMMA:
``gemma -lmm 2`` given the same kinship (its ``-gk 1`` matrix, computed once),
its own timing of the association step (``total computation time`` in its log:
eigendecomposition, ``U'X``, optimisation, reading the genotypes inside it; it
exceeds the whole process's wall time here, so it counts CPU time over GEMMA's two
threads) and, for reference, that wall time.  Runs alternate GEMMA / dlmm, ``--reps`` of each;
medians.  Printed: variants per second of each, their ratio (goal of issue 17:
dlmm >= 20 x GEMMA on 400 x 300,000), and the p-values' agreement.

    python benchmarks/throughput.py [--reps 3] [--samples 400] [--variants 300000]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from vs_gemma import simulated  # noqa: E402


def gemma_lmm(prefix: Path, d: Path) -> tuple[float, float]:
    """``gemma -lmm 2`` given the kinship: (its logged computation time, wall time), s."""
    t0 = time.perf_counter()
    subprocess.run(["gemma", "-bfile", str(prefix), "-k", "output/g.cXX.txt", "-lmm", "2",
                    "-n", "1", "-o", "g_lmm"], cwd=d, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    log = (d / "output/g_lmm.log.txt").read_text()
    minutes = float(re.search(r"total computation time = ([0-9.eE+-]+) min", log).group(1))
    return 60.0 * minutes, wall


def dlmm_scan(ds, y, K, whole: bool = True):
    """The in-process scan, computed: (seconds, result).  ``whole``: the result Dataset
    (every variable), else its p-values alone (each block task still computes every
    column; xarray then adds no task per variable and block)."""
    import dlmm

    t0 = time.perf_counter()
    res = dlmm.scan(ds, y, kinship=K)
    res = res.compute() if whole else res["variant_lmm_p_value"].values
    return time.perf_counter() - t0, res


def agreement(d: Path, res) -> tuple[float, float, int]:
    g = pd.read_csv(d / "output/g_lmm.assoc.txt", sep="\t")
    o = pd.DataFrame({"rs": res["variant_id"].values.astype(str),
                      "p": res["variant_lmm_p_value"].values[:, 0]})
    both = g.merge(o.dropna(), on="rs")
    diff = np.abs(np.log10(both["p_lrt"]) - np.log10(both["p"]))
    return float(diff.max()), float(diff.median()), len(both)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--variants", type=int, default=300_000)
    a = ap.parse_args()
    if shutil.which("gemma") is None:
        raise SystemExit("gemma is not installed (apt-get install gemma gemma-doc)")
    import logging

    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    import dlmm

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prefix = simulated(d, a.samples, a.variants)
        subprocess.run(["gemma", "-bfile", str(prefix), "-gk", "1", "-o", "g"], cwd=d,
                       check=True, capture_output=True)
        with LocalCluster(n_workers=1, threads_per_worker=CPU_COUNT, processes=False,
                          dashboard_address=None, silence_logs=logging.WARNING) as cluster, \
                Client(cluster):
            ds = dlmm.read_plink(prefix)
            y = dlmm.read_fam_phenotype(prefix, 1)
            K = dlmm.read_kinship(d / "output/g.cXX.txt").values
            dlmm_scan(ds.isel(variants=slice(0, 20_000)), y, K)  # compiled code loaded
            times: dict[str, list[float]] = {"gemma": [], "gemma_wall": [], "dlmm": [],
                                             "dlmm_p": []}
            for rep in range(a.reps):
                tools = ("gemma", "dlmm", "dlmm_p")
                for tool in (tools if rep % 2 == 0 else tools[::-1]):
                    if tool == "gemma":
                        t, wall = gemma_lmm(prefix, d)
                        times["gemma"].append(t)
                        times["gemma_wall"].append(wall)
                    elif tool == "dlmm":
                        t, res = dlmm_scan(ds, y, K)
                        times["dlmm"].append(t)
                    else:
                        times["dlmm_p"].append(dlmm_scan(ds, y, K, whole=False)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        m = int(res["variant_lmm_tested"].sum())
        mx, md, k = agreement(d, res)
    print(f"simulated {a.samples} samples x {a.variants:,} variants ({m:,} tested), "
          f"kinship given, {CPU_COUNT} cores")
    print(f"  GEMMA -lmm 2: {med['gemma']:.2f} s by its log ({m / med['gemma']:,.0f} "
          f"variants/s), wall {med['gemma_wall']:.2f} s")
    print(f"  dlmm in process, scan(...).compute(): {med['dlmm']:.2f} s "
          f"({m / med['dlmm']:,.0f} variants/s)")
    print(f"  throughput ratio dlmm / GEMMA: {med['gemma'] / med['dlmm']:.1f} (goal >= 20)")
    print(f"  dlmm, the p-values alone: {med['dlmm_p']:.2f} s ({m / med['dlmm_p']:,.0f} "
          f"variants/s), ratio {med['gemma'] / med['dlmm_p']:.1f}")
    print("  runs (s): GEMMA " + " ".join(f"{t:.2f}" for t in times["gemma"])
          + "; dlmm " + " ".join(f"{t:.2f}" for t in times["dlmm"])
          + "; dlmm p-values " + " ".join(f"{t:.2f}" for t in times["dlmm_p"]))
    print(f"  {k:,} variants in both: |d(-log10 p)| max {mx:.2e}, median {md:.2e}", flush=True)


if __name__ == "__main__":
    main()
