"""The kinship's eigendecomposition: LAPACK drivers against each other and against GEMMA.

The matrix is the centred GRM of simulated families (``families.py``, 20,000 variants;
computed once and cached as ``.npy`` and as GEMMA's text). Each driver runs in a fresh
process on all cores (the BLAS thread counts it really used are printed, from
threadpoolctl), with ``check_finite=False`` and ``overwrite_a=True`` (the kinship as
LAPACK's workspace, as ``kernels.eigh_kinship`` does):

* ``scipy.linalg.eigh`` with ``driver=`` ``evd`` (divide and conquer), ``evr`` (MRRR),
  ``evx`` (bisection and inverse iteration) and ``ev`` (QL/QR), the kinship passed in
  C order, and ``evr``/``evd`` in Fortran order (its transpose: the same symmetric
  matrix, which LAPACK can then overwrite without a copy);
* ``numpy.linalg.eigh`` (``syevd``, on numpy's own OpenBLAS);
* ``kernels.eigh_kinship`` as dlmm calls it, also in the same process right after a GRM
  pass on the CLI's in-process cluster (nothing may leave BLAS on one thread);
* GEMMA 0.98.5 (``dsyevr`` on Debian's OpenBLAS): ``gemma -k K.txt -lmm 2`` on a PLINK
  set of the same samples and 100 variants; its log's "time on eigen-decomposition".

Printed per n: each driver's seconds, its peak RSS above the loaded kinship (in n x n
matrices), the largest |eigenvalue difference| against ``evd``, and the ratio of its
time to GEMMA's.

    python benchmarks/eigh.py [--samples 5000 10000] [--drivers ...] [--no-gemma]

Measured on the shared 2-core machine (AMD EPYC, scipy's OpenBLAS 0.3.30, two BLAS
threads in every run; seconds, peak above the kinship in n x n matrices):

    driver              n = 5,000          n = 10,000
    evd (C order)       15.5   3.07        86.0   3.03
    evr (C order)       14.0   2.03       103.3   2.01
    evx                129.5   2.06          -
    ev                 113.4   1.06          -
    evr-F (dlmm)    14.5-15.1  1.03   88.9 / 93.7 / 95.3   1.01  (A/B with evd-F)
    evd-F               13.1   2.07   86.0 / 88.0 / 95.0   2.03
    numpy.linalg.eigh   15.6   4.07        91.7   4.03
    dlmm after a GRM    13.8   1.02        92.4   1.01  (in process: BLAS stays on 2)
    GEMMA 0.98.5        29.9              184.2         (dsyevr, Debian's OpenBLAS)

dsyevr stays: within the run-to-run spread of dsyevd (medians 93.7 and 88.0 s) with
one n x n matrix less, and about half GEMMA's time on the same matrix. A C-ordered
kinship costs a copy (f2py), hence the Fortran order. evx and ev are 8-9x slower at
5,000 and were not rerun at 10,000 (``--drivers`` runs them).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import write_families  # noqa: E402

DRIVERS = ["evd", "evr", "evx", "ev", "evr-F", "evd-F", "numpy", "dlmm", "dlmm-after-grm"]


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(v.split()[1]) * 1024 for v in f if v.startswith(field))


def kinship(cache: Path, n: int, m: int) -> tuple[Path, Path]:
    """The centred GRM of the families set (n x m), as .npy and as GEMMA text (cached)."""
    prefix = write_families(cache / f"fam_{n}x{m}", n, m)
    npy, txt = Path(f"{prefix}.grm.npy"), Path(f"{prefix}.cXX.txt")
    if not npy.exists():
        import dask

        from dlmm import read_plink
        from dlmm.kinship import grm
        from dlmm.store import write_kinship_text

        with dask.config.set(scheduler="threads"):
            K = grm(read_plink(prefix)).values
        write_kinship_text(K, txt)
        tmp = npy.with_name(npy.name + ".partial.npy")
        np.save(tmp, K)
        tmp.rename(npy)
    return npy, txt


def child(driver: str, npy: str) -> dict:
    """One decomposition in this process: seconds, peak RSS above the kinship, threads."""
    import scipy.linalg
    from threadpoolctl import threadpool_info

    from dlmm import kernels

    prefix = str(npy)[:-len(".grm.npy")]
    if driver == "dlmm-after-grm":  # as the CLI: the GRM pass first, on its cluster
        import dask
        from dask.system import CPU_COUNT
        from distributed import Client, LocalCluster

        from dlmm import read_plink
        from dlmm.kinship import grm

        with LocalCluster(n_workers=1, threads_per_worker=CPU_COUNT, processes=False,
                          dashboard_address=None) as c, Client(c):
            K = grm(read_plink(prefix)).values
        _ = dask
    else:
        K = np.load(npy)
    K = kernels.center_kinship(K)
    if driver.endswith("-F"):
        K = K.T  # Fortran order, the same (symmetric) matrix
    threads = sorted({(i["prefix"], i["num_threads"]) for i in threadpool_info()
                      if i["user_api"] == "blas"})
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status("VmRSS:")
    t0 = time.perf_counter()
    if driver == "numpy":
        s, U = np.linalg.eigh(K)
    elif driver.startswith("dlmm"):
        s, U = kernels.eigh_kinship(K, overwrite=True)
    else:
        s, U = scipy.linalg.eigh(K, driver=driver.split("-")[0], overwrite_a=True,
                                 check_finite=False)
    wall = time.perf_counter() - t0
    peak = _status("VmHWM:") - before
    out = Path(f"{npy}.eig-{driver}.npy")
    np.save(out, s)
    return {"wall": wall, "peak": peak, "threads": threads, "n": int(K.shape[0])}


def gemma_eigen_seconds(txt: Path, n: int, work: Path) -> float | None:
    """GEMMA's eigendecomposition time (its log), on the kinship text and n samples."""
    if shutil.which("gemma") is None:
        return None
    small = write_families(work / f"fam_{n}x100", n, 100, n_strong=2, n_small=20)
    d = work / f"gemma_eigh_{n}"
    d.mkdir(exist_ok=True)
    subprocess.run(["gemma", "-bfile", str(small), "-k", str(txt), "-lmm", "2", "-o", "e"],
                   cwd=d, check=True, capture_output=True)
    log = (d / "output" / "e.log.txt").read_text()
    minutes = float(re.search(r"time on eigen-decomposition = ([0-9.eE+-]+)", log).group(1))
    return 60.0 * minutes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[5000, 10000])
    ap.add_argument("--variants", type=int, default=20_000)
    ap.add_argument("--drivers", nargs="+", default=DRIVERS, choices=DRIVERS)
    ap.add_argument("--no-gemma", action="store_true")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dlmm-scale-cache"))
    ap.add_argument("--child", nargs=2)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(*a.child)))
        return
    a.cache.mkdir(parents=True, exist_ok=True)
    for n in a.samples:
        npy, txt = kinship(a.cache, n, a.variants)
        g = None if a.no_gemma else gemma_eigen_seconds(txt, n, a.cache)
        print(f"n = {n}: GEMMA's eigendecomposition "
              + (f"{g:.1f} s (its log)" if g else "not run"), flush=True)
        ref = None
        for d in a.drivers:
            r = subprocess.run([sys.executable, __file__, "--child", d, str(npy)],
                               capture_output=True, text=True)
            if r.returncode:
                print(f"  {d:>15}: failed: {r.stderr.strip().splitlines()[-1]}")
                continue
            x = json.loads(r.stdout.strip().splitlines()[-1])
            s = np.load(f"{npy}.eig-{d}.npy")
            ref = s if ref is None else ref
            diff = np.abs(np.sort(s) - np.sort(ref)).max()
            ratio = f"; / GEMMA {x['wall'] / g:.2f}" if g else ""
            print(f"  {d:>15}: {x['wall']:7.1f} s{ratio}; peak {x['peak'] / (8 * n * n):.2f} "
                  f"n x n above the kinship; max |d eigenvalue| vs {a.drivers[0]} {diff:.1e}; "
                  f"BLAS threads {x['threads']}", flush=True)


if __name__ == "__main__":
    main()
