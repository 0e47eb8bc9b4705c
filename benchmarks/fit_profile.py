"""Where a scan's block tasks spend their time: the per-variant fits against the rotation.

On a simulated set (default 400 samples x 300,000 variants, ``dlmm.simulate``, as
``vs_gemma.py`` makes it, held in memory so no I/O is timed) with its centred
GRM as the kinship, ``dlmm.scan`` runs on an in-process distributed cluster (one
worker, a thread per core, as ``dlmm scan`` starts it).  Inside every block task
the rotation (``kernels.rotate``), the fits and tests of one trait
(``kernels._test_block``) and the whole task (``kernels.scan_block``) are timed
in the task thread's CPU time (BLAS runs on that thread inside the scan, so
this is their own cost, whatever else runs on the machine).  Printed per
block and in total; goal of issue 17: at n = 400 the fits take at most as
long as the rotation.

Two traits, unless ``--trait``: the simulated one with the GRM (unlinked
variants make it close to the identity plus a few population axes, so the ML
lambda of the null model sits on the upper bound, 1e5, where every fit stops at
once), and one drawn with sa2 = se2 = 1 from the kinship of families of four
(two parents, two children), scanned with that kinship (an interior lambda:
the Newton steps run).

    python benchmarks/fit_profile.py [--samples 400] [--variants 300000]
        [--trait simulated|pedigree] [--test lrt|wald|score|all] [--blocks]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import defaultdict

import numpy as np

_lock = threading.Lock()
_times: dict = defaultdict(lambda: defaultdict(float))
_block = threading.local()


def _timed(name, f):
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return f(*args, **kwargs)
        finally:
            with _lock:
                _times[getattr(_block, "key", None)][name] += time.thread_time() - t0
    return wrapper


def _instrument(kernels) -> None:
    """Time ``rotate`` and ``_test_block`` inside ``scan_block``, keyed by block."""
    kernels.rotate = _timed("rotation", kernels.rotate)
    kernels._test_block = _timed("fits", kernels._test_block)
    scan_block = kernels.scan_block

    def timed_scan_block(dosage, **kw):
        _block.key = (float(dosage[:, 0].sum()), dosage.shape[0], time.perf_counter())
        try:
            return _timed("task", scan_block)(dosage, **kw)
        finally:
            _block.key = None
    kernels.scan_block = timed_scan_block


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--variants", type=int, default=300_000)
    ap.add_argument("--chunk-size", type=int, default=10_000)
    ap.add_argument("--trait", choices=("simulated", "pedigree"), nargs="+",
                    default=["simulated", "pedigree"])
    ap.add_argument("--test", default="lrt")
    ap.add_argument("--blocks", action="store_true", help="print every block")
    a = ap.parse_args()
    import logging

    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    import dlmm
    from dlmm import kernels
    from dlmm.simulate import pedigree_kinship, simulate_population

    n = a.samples
    ds, y = simulate_population(n, a.variants, chunk_size=a.chunk_size, seed=3)
    # families of four (two parents, two children) for the pedigree trait
    A = pedigree_kinship(-(-n // 4), 2)[:n, :n]
    y_ped = np.linalg.cholesky(A) @ np.random.default_rng(7).standard_normal(n) \
        + np.random.default_rng(8).standard_normal(n)
    _instrument(kernels)
    with LocalCluster(n_workers=1, threads_per_worker=CPU_COUNT, processes=False,
                      dashboard_address=None, silence_logs=logging.WARNING) as cluster, \
            Client(cluster):
        # the GRM before the genotypes are persisted: its pass computes each block with
        # the synchronous scheduler, which cannot read a persisted array's futures
        grm = np.asarray(dlmm.grm(ds, np.ones(n, dtype=bool)).compute())
        # genotypes held by the worker: no I/O or simulation inside the timed scans
        ds = ds.assign(call_dosage=(("variants", "samples"), ds["call_dosage"].data.persist()))
        traits = {"simulated": (y, grm), "pedigree": (y_ped, A)}
        dlmm.scan(ds.isel(variants=slice(0, a.chunk_size)), y, kinship=grm,
                  tests=a.test).compute()  # compiled code loaded
        for name in a.trait:
            _times.clear()
            res = dlmm.scan(ds, traits[name][0], kinship=traits[name][1], tests=a.test)
            t0 = time.perf_counter()
            res = res.compute()
            wall = time.perf_counter() - t0
            blocks = sorted((k for k in _times if k is not None), key=lambda k: k[2])
            tot = {c: sum(_times[k][c] for k in blocks) for c in ("rotation", "fits", "task")}
            m = int(res["variant_lmm_tested"].sum())
            print(f"{name} trait: n = {n}, {a.variants:,} variants ({m:,} tested) in "
                  f"{len(blocks)} blocks, test {a.test}, ML lambda of the null "
                  f"{float(res['null_mle_lambda'][0]):.4g}; scan {wall:.2f} s wall on "
                  f"{CPU_COUNT} threads")
            if a.blocks:
                for i, k in enumerate(blocks):
                    t = _times[k]
                    print(f"  block {i:3d} ({k[1]} variants): rotation {t['rotation']:.3f} s, "
                          f"fits {t['fits']:.3f} s, task {t['task']:.3f} s")
            per = [(_times[k]["fits"], _times[k]["rotation"]) for k in blocks]
            ratios = [f / r for f, r in per]
            print(f"  per block: rotation median {np.median([r for _, r in per]):.3f} s, "
                  f"fits median {np.median([f for f, _ in per]):.3f} s; fits / rotation "
                  f"median {np.median(ratios):.2f}, max {max(ratios):.2f}")
            print(f"  total CPU: rotation {tot['rotation']:.2f} s "
                  f"({tot['rotation'] / m * 1e6:.2f} us/variant), fits {tot['fits']:.2f} s "
                  f"({tot['fits'] / m * 1e6:.2f} us/variant), whole tasks "
                  f"{tot['task']:.2f} s; "
                  f"fits / rotation {tot['fits'] / tot['rotation']:.2f} (goal <= 1)",
                  flush=True)


if __name__ == "__main__":
    main()
