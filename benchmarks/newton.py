"""The exact fit's Newton stop (``newton_tol``, default 1e-4) against a far tighter one.

mouse_hs1940 (Debian's gemma-doc) phenotype 1, 1,410 analysed samples, the centred GRM
(``dlmm.grm``, = ``gemma -gk 1``): every variant rotated once, then
``kernels.fit_exact`` (the ML fit of the LRT, started at the null model's lambda as the
scan does) with ``newton_tol`` 1e-4 and with ``--tight`` (1e-10), alternated ``--reps``
times, on one BLAS thread as a scan task.  Printed: the medians and their ratio, the
Newton/bisection steps per variant, and how far apart the two optima are (max
|d log(lambda)| and max |d lnL|, over the variants whose lambda is inside the bounds).

    python benchmarks/newton.py [--reps 3] [--tight 1e-10]

Hold the machine's lock while it runs: ``flock /tmp/dlmm-heavy.lock python
benchmarks/newton.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_gemma import mouse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tight", type=float, default=1e-10)
    a = ap.parse_args()
    import dask

    import dlmm
    from dlmm import kernels
    from dlmm.blas import single_threaded

    with tempfile.TemporaryDirectory() as tmp:
        prefix = mouse(Path(tmp))
        ds = dlmm.read_plink(prefix)
        y = dlmm.read_fam_phenotype(prefix, 1)
        keep = ~np.isnan(y)
        with dask.config.set(scheduler="threads"):
            K = dlmm.grm(ds, keep).values
            dosage = ds["call_dosage"].values[:, keep]
    W = np.ones((int(keep.sum()), 1))
    null = dlmm.fit_null_model(y[keep], W, kernels.center_kinship(K[np.ix_(keep, keep)]))
    stats = kernels.block_stats(dosage)
    x = kernels.take(dosage[stats["tested"]], fill=stats["mean"][stats["tested"]])
    Xr = kernels.rotate(null.U, x)[:, None, :]
    lam0 = float(null.ml.lam[0])

    def fit(tol):
        with single_threaded():
            return kernels.fit_exact(null.s, null.Wr, null.yr, Xr, start=lam0, newton_tol=tol)

    fit(1e-4)  # compiled code loaded
    times: dict[float, list[float]] = {1e-4: [], a.tight: []}
    fits = {}
    for rep in range(a.reps):
        for tol in ((1e-4, a.tight) if rep % 2 == 0 else (a.tight, 1e-4)):
            t0 = time.perf_counter()
            fits[tol] = fit(tol)
            times[tol].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    lo, hi = kernels.LOG_LAMBDA_BOUNDS
    f, g = fits[1e-4], fits[a.tight]
    t = np.log(g.lam)
    inside = (t > lo + 1e-6) & (t < hi - 1e-6)
    print(f"mouse_hs1940 phenotype 1: {Xr.shape[2]:,} samples, {Xr.shape[0]:,} variants "
          f"tested, {int(inside.sum()):,} with lambda inside the bounds, {a.reps} reps")
    for tol, fit_ in fits.items():
        print(f"  newton_tol {tol:g}: {med[tol]:.3f} s, {fit_.iterations.mean():.2f} steps "
              f"per variant (runs {', '.join(f'{x:.3f}' for x in times[tol])})")
    print(f"  ratio tight / default: {med[a.tight] / med[1e-4]:.2f}")
    print(f"  default against tight, inside the bounds: max |d log(lambda)| "
          f"{np.abs(np.log(f.lam) - t)[inside].max():.2g}, max |d lnL| "
          f"{np.abs(f.logl - g.logl)[inside].max():.2g} (lnL ~ {np.abs(g.logl).max():.0f})",
          flush=True)


if __name__ == "__main__":
    main()
