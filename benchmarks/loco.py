"""`--loco` against the plain scan on mouse_hs1940: time and peak memory, in the same run.

mouse_hs1940 (Debian's gemma-doc) phenotype 1, 1,410 analysed samples, 19 chromosomes,
each tool computing its own kinship(s).  Two views, each alternating plain / LOCO
(A/B, B/A, ...) ``--reps`` times; medians and the ratio LOCO / plain are printed:

* the command: ``dlmm scan mouse --no-plot --no-dashboard [--loco]`` as its own
  process (imports, the in-process cluster, the GRM pass, eigendecompositions, null
  fits, the scan, Zarr and TSV), its wall time and peak RSS (its VmHWM, from
  ``wait4``: the CLI's cluster is one worker in the same process);
* in Python (a notebook's view: imports done, a ``Client`` of one worker in the
  process with a thread per core): the kinship pass alone (``dlmm.grm`` against
  ``dlmm.kinship.grm_loco``), the set-up (``dlmm.scan(...)`` returns after the
  kinship(s), the eigendecomposition(s) and the null fit(s)) and the scan of the
  variants (``.compute()`` of its result).

    python benchmarks/loco.py [--reps 3]

Hold the machine's lock while it runs: ``flock /tmp/dlmm-heavy.lock python
benchmarks/loco.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_gemma import mouse


def run_cli(prefix: Path, out: Path, loco: bool) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one ``dlmm scan`` process."""
    cmd = [sys.executable, "-m", "dlmm.cli", "scan", str(prefix), "--out", str(out),
           "--overwrite", "--no-plot", "--no-dashboard"] + (["--loco"] if loco else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return wall, usage.ru_maxrss / 2**20  # KiB -> GiB


def run_python(ds, y, loco: bool) -> dict[str, float]:
    """Seconds of the kinship pass, the set-up and the scan of the variants."""
    import numpy as np

    import dlmm
    from dlmm.kinship import grm_loco

    mask = ~np.isnan(y)
    t0 = time.perf_counter()
    _ = (grm_loco(ds, mask) if loco else dlmm.grm(ds, mask)).values
    t_kin = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = dlmm.scan(ds, y, loco=loco)
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = res.compute()
    t_scan = time.perf_counter() - t0
    assert int(res["variant_lmm_tested"].sum()) > 10_000
    return {"kinship": t_kin, "setup": t_setup, "scan": t_scan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    import logging

    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    import dlmm

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prefix = mouse(d)
        cli: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for rep in range(a.reps):
            for loco in ((False, True) if rep % 2 == 0 else (True, False)):
                cli[loco].append(run_cli(prefix, d / "out", loco))
        py: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        with LocalCluster(n_workers=1, threads_per_worker=CPU_COUNT, processes=False,
                          dashboard_address=None, silence_logs=logging.WARNING) as cluster, \
                Client(cluster):
            ds = dlmm.read_plink(prefix)
            y = dlmm.read_fam_phenotype(prefix, 1)
            n_contigs = len(set(ds["variant_contig"].values.tolist()))
            run_python(ds, y, False)  # compiled code loaded
            for rep in range(a.reps):
                for loco in ((False, True) if rep % 2 == 0 else (True, False)):
                    py[loco].append(run_python(ds, y, loco))

    def med(values):
        return statistics.median(values)

    print(f"mouse_hs1940 phenotype 1: 1,410 analysed samples, {n_contigs} chromosomes, "
          f"{CPU_COUNT} cores, {a.reps} alternated reps (medians)")
    print("dlmm scan --no-plot --no-dashboard, whole process:")
    for what, i, unit in (("wall time", 0, "s"), ("peak RSS", 1, "GiB")):
        plain, loco = med([r[i] for r in cli[False]]), med([r[i] for r in cli[True]])
        print(f"  {what}: plain {plain:.2f} {unit}, --loco {loco:.2f} {unit}, "
              f"ratio {loco / plain:.2f}")
    print("in Python (imports done, a Client of one in-process worker):")
    for key, what in (("kinship", "kinship pass (grm / grm_loco)"),
                      ("setup", "set-up (kinships, eigendecompositions, null fits)"),
                      ("scan", "scan of the variants (.compute())")):
        plain, loco = med([r[key] for r in py[False]]), med([r[key] for r in py[True]])
        print(f"  {what}: plain {plain:.2f} s, LOCO {loco:.2f} s, ratio {loco / plain:.2f}")
    extra = (med([r["setup"] - r["kinship"] for r in py[True]])
             - med([r["setup"] - r["kinship"] for r in py[False]]))
    print(f"  set-up beyond the kinship pass, LOCO over plain: {extra:.2f} s, "
          f"{extra / (n_contigs - 1):.2f} s per further eigendecomposition and null fit")
    print("  runs (s) plain: " + "; ".join(
        f"{r['kinship']:.2f}/{r['setup']:.2f}/{r['scan']:.2f}" for r in py[False])
        + "  LOCO: " + "; ".join(
        f"{r['kinship']:.2f}/{r['setup']:.2f}/{r['scan']:.2f}" for r in py[True]), flush=True)


if __name__ == "__main__":
    main()
