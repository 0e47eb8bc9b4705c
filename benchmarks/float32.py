"""``--rotation-dtype float32`` against float64 on mouse_hs1940, and both against GEMMA.

mouse_hs1940 (Debian's gemma-doc) phenotype 1, 1,410 analysed samples, the centred GRM
(``dlmm.grm``, = ``gemma -gk 1``) given to every scan:

* the rotation of one block of ``--chunk-size`` variants by ``U`` (``kernels.rotate``)
  as a scan task runs it (one BLAS thread), in float64 and in float32, alternated
  ``--reps`` times over the scan's blocks; medians per block and their ratio;
* ``dlmm.scan(..., rotation_dtype=...)`` of every variant on the local threaded
  scheduler, both dtypes alternated; medians and their ratio;
* the p-values: float32 against float64, and each against GEMMA 0.98.5's ``-lmm 2``
  (run here on the same files with its own ``-gk 1`` kinship): max and median
  |d(-log10 p)|, the figures ``tests/test_gemma.py`` bounds.

    python benchmarks/float32.py [--reps 3] [--chunk-size 5000]

Hold the machine's lock while it runs: ``flock /tmp/dlmm-heavy.lock python
benchmarks/float32.py``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_gemma import mouse


def rotation_times(U: np.ndarray, blocks: list[np.ndarray], reps: int) -> dict[str, float]:
    """Median seconds per block of ``kernels.rotate`` on one BLAS thread, per dtype."""
    from dlmm import kernels
    from dlmm.blas import single_threaded

    Us = {"float64": U, "float32": U.astype(np.float32)}
    times: dict[str, list[float]] = {"float64": [], "float32": []}
    with single_threaded():
        for rep in range(reps):
            for dt in (("float64", "float32") if rep % 2 == 0 else ("float32", "float64")):
                for b in blocks:
                    x = b.astype(dt)
                    t0 = time.perf_counter()
                    kernels.rotate(Us[dt], x)
                    times[dt].append(time.perf_counter() - t0)
    return {dt: statistics.median(t) for dt, t in times.items()}


def neglog10(res) -> pd.Series:
    p = pd.Series(res["variant_lmm_p_value"].values[:, 0],
                  index=res["variant_id"].values.astype(str))
    return -np.log10(p.dropna())


def spread(a: pd.Series, b: pd.Series) -> tuple[float, float, int]:
    d = (a - b.reindex(a.index)).abs().dropna()
    return float(d.max()), float(d.median()), len(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=5000)
    a = ap.parse_args()
    import dask

    import dlmm
    from dlmm import kernels

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prefix = mouse(d)
        subprocess.run(["gemma", "-bfile", str(prefix), "-gk", "1", "-o", "g"], cwd=d,
                       check=True, capture_output=True)
        subprocess.run(["gemma", "-bfile", str(prefix), "-k", "output/g.cXX.txt", "-lmm", "2",
                        "-n", "1", "-o", "g_lmm"], cwd=d, check=True, capture_output=True)
        gemma = pd.read_csv(d / "output/g_lmm.assoc.txt", sep="\t").set_index("rs")
        gemma = -np.log10(gemma["p_lrt"])
        ds = dlmm.read_plink(prefix, chunk_size=a.chunk_size)
        y = dlmm.read_fam_phenotype(prefix, 1)
        mask = ~np.isnan(y)
        with dask.config.set(scheduler="threads"):
            K = dlmm.grm(ds, mask).values
            dos = ds["call_dosage"].values[:, mask]
        n = int(mask.sum())
        U = np.linalg.eigh(kernels.center_kinship(K[np.ix_(mask, mask)]))[1]
        blocks = [np.nan_to_num(dos[i:i + a.chunk_size], nan=1.0)
                  for i in range(0, dos.shape[0] - a.chunk_size + 1, a.chunk_size)]
        rot = rotation_times(U, blocks, a.reps)
        scans: dict[str, list[float]] = {"float64": [], "float32": []}
        p = {}
        for rep in range(a.reps):
            for dt in (("float64", "float32") if rep % 2 == 0 else ("float32", "float64")):
                t0 = time.perf_counter()
                with dask.config.set(scheduler="threads"):
                    res = dlmm.scan(ds, y, kinship=K, rotation_dtype=dt).compute()
                scans[dt].append(time.perf_counter() - t0)
                p[dt] = neglog10(res)
    scan = {dt: statistics.median(t) for dt, t in scans.items()}
    print(f"mouse_hs1940 phenotype 1: {n:,} analysed samples, {ds.sizes['variants']:,} "
          f"variants, {a.reps} alternated reps (medians)")
    print(f"  rotation of {a.chunk_size:,} variants (one BLAS thread): float64 "
          f"{rot['float64']:.3f} s, float32 {rot['float32']:.3f} s, "
          f"ratio {rot['float64'] / rot['float32']:.2f}")
    print(f"  dlmm.scan(...).compute() (threaded scheduler): float64 {scan['float64']:.2f} s, "
          f"float32 {scan['float32']:.2f} s, ratio {scan['float64'] / scan['float32']:.2f}")
    for what, x, ref in (("float32 vs float64", p["float32"], p["float64"]),
                         ("float64 vs GEMMA -lmm 2", p["float64"], gemma),
                         ("float32 vs GEMMA -lmm 2", p["float32"], gemma)):
        mx, md, k = spread(x, ref)
        print(f"  |d(-log10 p)| {what}: max {mx:.2g}, median {md:.2g} ({k:,} variants)",
              flush=True)


if __name__ == "__main__":
    main()
